"""Publish tokens (docs/spec.md §5): self-contained, signed claims, verifiable without a database.

A token is `rt1.<claims>.<signature>`: the claims are compact JSON in base64url,
the signature is HMAC-SHA256 over `rt1.<claims>` with the server secret, in
base64url. Every character is URL-safe, so a token survives percent-decoding
clients (librtmp, OBS) and needs no escaping in a stream key.

Verification is pure and bounded: the token's length is checked before anything
else, signatures are compared in constant time, then expiry, revocation (by token
id), the stream name, the allowed source ids and client networks are checked, in
that order; a failure raises `TokenError` whose `fault` says which check failed.
Stream patterns (`*` matches any run of characters, `/` included) are compiled
once into their literal pieces and matched greedily left to right, which is
linear in the name's length whatever the pattern (`*/*/main` included).

Minting refuses every claim set that verification would refuse, so the server
never hands out a token it will not accept (too long, a NaN or infinite expiry,
a pattern longer than any stream path, a network that does not parse).

An expired token cannot start a feed; feeds already on air are never cut by
expiry (the daemon checks tokens only at publish time).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import json
import math
import re
import secrets
from collections.abc import Collection, Iterable, Mapping

import attrs

PREFIX = "rt1"
#: A stream key rarely exceeds a few hundred bytes; bounds the work of verifying garbage.
MAX_TOKEN_BYTES = 4096
#: The bundle's own limit on stream paths (docs/spec.md §2); a longer name is refused
#: before its token is even decoded.
MAX_STREAM_PATH_BYTES = 1024
#: docs/spec.md §2: a sourceId is at most 128 bytes of UTF-8.
MAX_SOURCE_ID_BYTES = 128
#: Labels show in logs and the API; a short phrase ("venue A"), not a document.
MAX_LABEL_CHARS = 128
#: A token lives at most ten years (a "no expiry" token simply has no `exp`).
MAX_TOKEN_TTL_S = 10 * 365 * 86400
#: Shorter secrets are guessable offline from one captured token.
MIN_SECRET_BYTES = 16
#: A duration text ("90s", "24h") longer than this is not a duration.
MAX_DURATION_CHARS = 32
#: Unix times a claim may carry: 1970 to the year 10000 (datetime's range).
MAX_UNIX_S = 253402300799.0


class TokenFault(enum.Enum):
    """Which check a token failed."""

    MALFORMED = "malformed"  # too long, not `rt1.x.y`, unreadable claims
    SIGNATURE = "signature"  # not signed with this server's secret
    EXPIRED = "expired"
    REVOKED = "revoked"
    STREAM = "stream"  # the stream path is not among the token's patterns
    SOURCE = "source"  # the sourceId is not among the token's source ids
    NETWORK = "network"  # the client address is not in the token's networks


class TokenError(ValueError):
    """The token is not valid for this publish; the message is safe to show the encoder."""

    def __init__(self, message: str, fault: TokenFault = TokenFault.MALFORMED) -> None:
        super().__init__(message)
        self.fault = fault


class TokenClaimsError(ValueError):
    """Claims that cannot be minted (the message names the field, for an API 400)."""


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _optional_strings(values: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


@attrs.frozen(kw_only=True)
class TokenClaims:
    token_id: str
    streams: tuple[str, ...] = attrs.field(converter=_strings)
    multisource: bool = False
    source_ids: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_strings)
    networks: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_strings)
    expires_at: float | None = None  #: unix time
    issued_at: float = 0.0
    label: str = ""
    #: record the feeds of this token (None: the app's setting decides)
    record: bool | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.token_id,
            "streams": list(self.streams),
            "multisource": self.multisource,
            "sourceIds": list(self.source_ids) if self.source_ids is not None else None,
            "networks": list(self.networks) if self.networks is not None else None,
            "expiresAt": self.expires_at,
            "issuedAt": self.issued_at,
            "label": self.label,
            "record": self.record,
        }


# -- stream patterns ---------------------------------------------------------------------


@attrs.frozen
class StreamPattern:
    """A stream name or `*` pattern, compiled once into its literal pieces.

    `pieces[0]` must start the name, `pieces[-1]` end it, and the pieces between
    occur in order; taking each at its leftmost occurrence is correct for `*`-only
    patterns, so `matches` is one forward pass over the name (str.find never
    revisits text left of its start), linear in the name's length.
    """

    text: str
    pieces: tuple[str, ...]
    #: the characters a match needs at least (the literal pieces' total)
    min_length: int

    @classmethod
    def compile(cls, text: str) -> StreamPattern:
        pieces = tuple(text.split("*"))
        return cls(text, pieces, sum(map(len, pieces)))

    def matches(self, path: str) -> bool:
        pieces = self.pieces
        if len(pieces) == 1:
            return path == pieces[0]
        if len(path) < self.min_length:
            return False
        first, last = pieces[0], pieces[-1]
        if not (path.startswith(first) and path.endswith(last)):
            return False
        position, end = len(first), len(path) - len(last)
        for piece in pieces[1:-1]:
            if piece:
                found = path.find(piece, position, end)
                if found < 0:
                    return False
                position = found + len(piece)
        return True


def stream_matches(pattern: str, path: str) -> bool:
    """`*` matches any run of characters (`/` included); everything else is literal."""
    return StreamPattern.compile(pattern).matches(path)


def address_allowed(networks: Iterable[str], remote_ip: str) -> bool:
    try:
        address = ipaddress.ip_address(remote_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  #: a dual-stack socket's view of an IPv4 client
    for network in networks:
        try:
            if address in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue
    return False


# -- encoding ----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, message: str) -> str:
    return _b64(hmac.new(secret, message.encode("ascii"), hashlib.sha256).digest())


def new_token_id() -> str:
    return secrets.token_hex(8)


def _finite_unix(value: float | None, field: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenClaimsError(f"{field!r} must be a Unix time in seconds")
    if not math.isfinite(value) or not 0 <= value <= MAX_UNIX_S:
        raise TokenClaimsError(
            f"{field!r} must be a finite Unix time between 0 and {MAX_UNIX_S:.0f}"
        )


def validate_claims(claims: TokenClaims) -> None:
    """Raises TokenClaimsError for claims verification would refuse or never match."""
    if not claims.token_id or not claims.token_id.isascii() or len(claims.token_id) > 64:
        raise TokenClaimsError("'id' must be 1..64 ASCII characters")
    if not claims.streams:
        raise TokenClaimsError("'streams' must name at least one stream or pattern")
    for pattern in claims.streams:
        if not pattern or len(pattern.encode("utf-8", "surrogatepass")) > MAX_STREAM_PATH_BYTES:
            raise TokenClaimsError(
                f"'streams': a pattern must be 1..{MAX_STREAM_PATH_BYTES} bytes long"
            )
    for source_id in claims.source_ids or ():
        if len(source_id.encode("utf-8", "surrogatepass")) > MAX_SOURCE_ID_BYTES:
            raise TokenClaimsError(
                f"'sourceIds': a source id is at most {MAX_SOURCE_ID_BYTES} bytes"
            )
    for network in claims.networks or ():
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise TokenClaimsError(
                f"'networks': {network[:64]!r} is not an address or CIDR network"
            ) from None
    _finite_unix(claims.expires_at, "expiresAt")
    _finite_unix(claims.issued_at, "issuedAt")
    if len(claims.label) > MAX_LABEL_CHARS:
        raise TokenClaimsError(f"'label' must be at most {MAX_LABEL_CHARS} characters")


def mint(claims: TokenClaims, secret: bytes) -> str:
    """Encodes and signs claims; raises TokenClaimsError for a token verification would refuse."""
    validate_claims(claims)
    body: dict[str, object] = {
        "i": claims.token_id,
        "s": list(claims.streams),
        "iat": int(claims.issued_at),
    }
    if claims.multisource:
        body["m"] = 1
    if claims.source_ids is not None:
        body["src"] = list(claims.source_ids)
    if claims.networks is not None:
        body["net"] = list(claims.networks)
    if claims.expires_at is not None:
        body["exp"] = int(claims.expires_at)
    if claims.label:
        body["l"] = claims.label
    if claims.record is not None:
        body["rec"] = int(claims.record)
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise TokenClaimsError("claims must be valid Unicode text") from None
    message = f"{PREFIX}.{_b64(text)}"
    token = f"{message}.{_sign(secret, message)}"
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenClaimsError(
            f"the token would be {len(token)} bytes long; the server accepts at most "
            f"{MAX_TOKEN_BYTES} (fewer or shorter streams, source ids or networks)"
        )
    return token


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not a claim value")


def decode(token: str, secret: bytes) -> TokenClaims:
    """Checks the length and signature and returns the claims (no expiry or revocation check)."""
    if len(token) > MAX_TOKEN_BYTES or not token.isascii():
        raise TokenError("malformed token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenError("malformed token")
    expected = _sign(secret, f"{parts[0]}.{parts[1]}")
    if not hmac.compare_digest(expected.encode("ascii"), parts[2].encode("ascii")):
        raise TokenError("bad token signature", TokenFault.SIGNATURE)
    try:
        body = json.loads(_unb64(parts[1]), parse_constant=_no_constants)
        expires_at = float(body["exp"]) if "exp" in body else None
        return TokenClaims(
            token_id=str(body["i"]),
            streams=[str(s) for s in body["s"]],
            multisource=bool(body.get("m", 0)),
            source_ids=[str(s) for s in body["src"]] if "src" in body else None,
            networks=[str(n) for n in body["net"]] if "net" in body else None,
            expires_at=expires_at,
            issued_at=float(body.get("iat", 0)),
            label=str(body.get("l", "")),
            record=bool(body["rec"]) if "rec" in body else None,
        )
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise TokenError("malformed token claims") from None


def check_claims(
    claims: TokenClaims,
    *,
    stream_path: str,
    source_id: str,
    remote_ip: str,
    revoked: Collection[str] = (),
    now_s: float,
) -> None:
    """The checks after the signature; raises TokenError (with its fault) on the first failure."""
    if claims.expires_at is not None and now_s >= claims.expires_at:
        raise TokenError("token expired", TokenFault.EXPIRED)
    if claims.token_id in revoked:
        raise TokenError("token revoked", TokenFault.REVOKED)
    if not any(StreamPattern.compile(p).matches(stream_path) for p in claims.streams):
        raise TokenError(f"token does not allow stream {stream_path[:200]!r}", TokenFault.STREAM)
    if claims.source_ids is not None and source_id not in claims.source_ids:
        raise TokenError(f"token does not allow sourceId {source_id[:200]!r}", TokenFault.SOURCE)
    if claims.networks is not None and not address_allowed(claims.networks, remote_ip):
        raise TokenError(
            f"token does not allow publishing from {remote_ip[:64]}", TokenFault.NETWORK
        )


def verify(
    token: str,
    secret: bytes,
    *,
    stream_path: str,
    source_id: str,
    remote_ip: str,
    revoked: Collection[str] = (),
    now_s: float,
) -> TokenClaims:
    """Everything a publish needs checked; raises TokenError with the reason and fault."""
    claims = decode(token, secret)
    check_claims(
        claims,
        stream_path=stream_path,
        source_id=source_id,
        remote_ip=remote_ip,
        revoked=revoked,
        now_s=now_s,
    )
    return claims


# -- claims from an API body or CLI options -------------------------------------------------

_DURATION = re.compile(r"\s*(\d{1,12}(?:\.\d{1,9})?)\s*([smhd]?)\s*")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_s(text: str) -> float:
    """'90s', '15m', '24h', '7d' or plain seconds → seconds."""
    match = _DURATION.fullmatch(text) if len(text) <= MAX_DURATION_CHARS else None
    if not match:
        raise ValueError(
            f"not a duration: {text[:MAX_DURATION_CHARS]!r} (use e.g. 90s, 15m, 24h, 7d)"
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _string_list(body: Mapping[str, object], key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokenClaimsError(f"{key!r} must be a list of strings")
    return value


def claims_from_json(
    body: Mapping[str, object], *, now_s: float, token_id: str | None = None
) -> TokenClaims:
    """Validated claims from an API request body (or the CLI's options in the same shape).

    Keys: streams (required), multisource, sourceIds, networks, ttl (seconds or "24h")
    or expiresAt (Unix seconds), label, record. Raises TokenClaimsError naming the key.
    """
    streams = _string_list(body, "streams")
    if not streams:
        raise TokenClaimsError("'streams' is required and must name at least one stream or pattern")
    ttl = body.get("ttl")
    expires_at = body.get("expiresAt")
    if ttl is not None:
        if isinstance(ttl, str):
            try:
                ttl_s = parse_duration_s(ttl)
            except ValueError as exc:
                raise TokenClaimsError(f"'ttl': {exc}") from None
        elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
            ttl_s = float(ttl)
        else:
            raise TokenClaimsError("'ttl' must be seconds or a duration like '24h'")
        if not 1 <= ttl_s <= MAX_TOKEN_TTL_S:  #: also false for NaN
            raise TokenClaimsError(f"'ttl' must be between 1 s and {MAX_TOKEN_TTL_S} s")
        expires_at = now_s + ttl_s
    elif expires_at is not None:
        if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
            raise TokenClaimsError("'expiresAt' must be a Unix time in seconds")
        _finite_unix(float(expires_at), "expiresAt")
    multisource = body.get("multisource", False)
    if not isinstance(multisource, bool):
        raise TokenClaimsError("'multisource' must be true or false")
    record = body.get("record")
    if record is not None and not isinstance(record, bool):
        raise TokenClaimsError("'record' must be true, false or null (the app's setting)")
    label = body.get("label", "")
    if not isinstance(label, str):
        raise TokenClaimsError(f"'label' must be a string of at most {MAX_LABEL_CHARS} characters")
    claims = TokenClaims(
        token_id=token_id or new_token_id(),
        streams=streams,
        multisource=multisource,
        source_ids=_string_list(body, "sourceIds"),
        networks=_string_list(body, "networks"),
        expires_at=float(expires_at) if isinstance(expires_at, (int, float)) else None,
        issued_at=now_s,
        label=label,
        record=record,
    )
    validate_claims(claims)
    return claims

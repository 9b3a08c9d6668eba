"""Publish tokens (SPEC.md §5): self-contained, signed claims, verifiable without a database.

A token is `rt1.<claims>.<signature>`: the claims are compact JSON in base64url,
the signature is HMAC-SHA256 over `rt1.<claims>` with the server secret, in
base64url. Every character is URL-safe, so a token survives percent-decoding
clients (librtmp, OBS) and needs no escaping in a stream key. Verification
compares signatures in constant time, then checks expiry, revocation (by token
id, in `Revocations`), the stream name (exact names and `*` wildcards; `*`
matches any run of characters, `/` included), allowed source ids and client
networks. An expired token cannot start a feed; feeds already on air are never
cut by expiry (the daemon checks tokens only at publish time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

import attrs

PREFIX = "rt1"
#: A stream key rarely exceeds a few hundred bytes; bounds the work of verifying garbage.
MAX_TOKEN_BYTES = 4096
MIN_SECRET_BYTES = 16


class TokenError(ValueError):
    """The token is not valid for this publish; the message is safe to show the encoder."""


@attrs.frozen(kw_only=True)
class TokenClaims:
    token_id: str
    streams: tuple[str, ...] = attrs.field(converter=tuple)
    multisource: bool = False
    source_ids: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )
    networks: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )
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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, message: str) -> str:
    return _b64(hmac.new(secret, message.encode("ascii"), hashlib.sha256).digest())


def new_token_id() -> str:
    return secrets.token_hex(8)


def mint(claims: TokenClaims, secret: bytes) -> str:
    """Encodes and signs claims."""
    body = {"i": claims.token_id, "s": list(claims.streams), "iat": int(claims.issued_at)}
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
    payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    message = f"{PREFIX}.{payload}"
    return f"{message}.{_sign(secret, message)}"


def decode(token: str, secret: bytes) -> TokenClaims:
    """Checks the signature and returns the claims (no expiry or revocation check)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("token too long")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenError("malformed token")
    message = f"{parts[0]}.{parts[1]}"
    try:
        expected = _sign(secret, message)
    except UnicodeEncodeError:
        raise TokenError("malformed token") from None
    if not hmac.compare_digest(expected.encode("ascii"), parts[2].encode("utf-8", "replace")):
        raise TokenError("bad token signature")
    try:
        body = json.loads(_unb64(parts[1]))
        return TokenClaims(
            token_id=str(body["i"]),
            streams=[str(s) for s in body["s"]],
            multisource=bool(body.get("m", 0)),
            source_ids=[str(s) for s in body["src"]] if "src" in body else None,
            networks=[str(n) for n in body["net"]] if "net" in body else None,
            expires_at=float(body["exp"]) if "exp" in body else None,
            issued_at=float(body.get("iat", 0)),
            label=str(body.get("l", "")),
            record=bool(body["rec"]) if "rec" in body else None,
        )
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed token claims") from None


def stream_matches(pattern: str, path: str) -> bool:
    """`*` matches any run of characters; everything else is literal."""
    if "*" not in pattern:
        return pattern == path
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, path, flags=re.DOTALL) is not None


def address_allowed(networks: Iterable[str], remote_ip: str) -> bool:
    try:
        address = ipaddress.ip_address(remote_ip)
    except ValueError:
        return False
    for network in networks:
        try:
            if address in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue
    return False


def verify(
    token: str,
    secret: bytes,
    *,
    stream_path: str,
    source_id: str,
    remote_ip: str,
    revoked: Iterable[str] = (),
    now: float | None = None,
) -> TokenClaims:
    """Everything a publish needs checked; raises TokenError with the reason."""
    claims = decode(token, secret)
    now = time.time() if now is None else now
    if claims.expires_at is not None and now >= claims.expires_at:
        raise TokenError("token expired")
    if claims.token_id in revoked:
        raise TokenError("token revoked")
    if not any(stream_matches(p, stream_path) for p in claims.streams):
        raise TokenError(f"token does not allow stream {stream_path!r}")
    if claims.source_ids is not None and source_id not in claims.source_ids:
        raise TokenError(f"token does not allow sourceId {source_id!r}")
    if claims.networks is not None and not address_allowed(claims.networks, remote_ip):
        raise TokenError(f"token does not allow publishing from {remote_ip}")
    return claims


def parse_duration_s(text: str) -> float:
    """'90s', '15m', '24h', '7d' or plain seconds → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 24h, 7d)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


class Revocations:
    """Revoked token ids, persisted as JSON in the data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids: dict[str, float] = {}
        if path.exists():
            data = json.loads(path.read_text("utf-8") or "{}")
            self._ids = {str(k): float(v) for k, v in data.get("revoked", {}).items()}

    def __contains__(self, token_id: object) -> bool:
        return token_id in self._ids

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def revoke(self, token_id: str, *, now: float | None = None) -> bool:
        """Adds `token_id`; returns False if it was revoked already. Writes atomically."""
        if token_id in self._ids:
            return False
        self._ids[token_id] = time.time() if now is None else now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"revoked": self._ids}, indent=1), "utf-8")
        os.replace(tmp, self.path)
        return True


def load_or_create_secret(path: Path) -> bytes:
    """The server secret from `path`, created (random, 0600) on first use."""
    if path.exists():
        secret = path.read_text("utf-8").strip().encode("utf-8")
        if len(secret) >= MIN_SECRET_BYTES:
            return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32).encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.decode("ascii") + "\n")
    return secret

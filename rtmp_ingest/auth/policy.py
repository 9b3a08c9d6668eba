"""The publish policy: one pure decision, shared by every ingest protocol (docs/style.md §15).

`decide(attempt, ...)` turns what a publisher sent — protocol, stream path,
sourceId, query, client address, token — into a `Permit` (the bundle's
`PublishRequest` and whether to record) or a `Refusal` (an enum code, the
operator's log line, the encoder's status text, the HTTP status for WHIP, the
RTMP status code, the SRT reject code). RTMP, SRT and WHIP drivers call it the
same way; it does no I/O and reads no clock (the caller passes Unix time).

Checks, cheapest and most basic first, so a hostile name costs nothing (issue 16):
  1. lengths — stream path, sourceId, token — before anything parses them;
  2. the stream name (APP/STREAM, no `.`/`..` segments) and `priority`;
  3. a ban from an operator's kick (`BanList`);
  4. in token mode: a token is present and verifies (signature, expiry, revocation,
     stream, source, network — docs/spec.md §5);
  5. the two multisource gates (docs/spec.md §3.7): the app's and the token's.
The bundle re-checks names and permissions and adds its capacity limits; its
`Refused` maps to the same shape with `refusal_from_bundle`.

Client text in log lines and status texts is escaped (`ascii()`, so a newline
cannot forge a log line) and truncated (`MAX_SHOWN_CHARS`), never echoed whole.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any, Literal, Protocol, cast

import attrs

from rtmp_ingest.auth import tokens
from rtmp_ingest.auth.bans import BanList, normalize_ip
from rtmp_ingest.auth.tokens import TokenClaims, TokenError, TokenFault
from rtmp_ingest.bundle import Permissions, PublishRequest, Refused
from rtmp_ingest.bundle import RefusalCode as BundleRefusalCode

IngestProtocol = Literal["rtmp", "rtmps", "srt", "webrtc"]
AuthMode = Literal["open", "token"]

#: Client-supplied text shown in a log line or a status text is cut to this many characters.
MAX_SHOWN_CHARS = 120
#: `priority` is an int32 (docs/spec.md §3.4), written in decimal.
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1
_PRIORITY = re.compile(r"[+-]?[0-9]{1,10}")

RTMP_BAD_NAME = "NetStream.Publish.BadName"
RTMP_REJECTED = "NetStream.Publish.Rejected"


class RefusalCode(enum.Enum):
    """Why a publish was refused; the value is the metrics label (`reason=...`)."""

    INVALID_STREAM_PATH = "invalid-stream-path"
    INVALID_SOURCE_ID = "invalid-source-id"
    NO_STREAM_NAME = "no-stream-name"
    BAD_PRIORITY = "bad-priority"
    ALREADY_PUBLISHING = "already-publishing"
    BANNED = "banned"
    NO_TOKEN = "no-token"
    TOKEN_INVALID = "token-invalid"
    TOKEN_EXPIRED = "token-expired"
    TOKEN_REVOKED = "token-revoked"
    TOKEN_WRONG_STREAM = "token-wrong-stream"
    TOKEN_WRONG_SOURCE = "token-wrong-source"
    TOKEN_WRONG_NETWORK = "token-wrong-network"
    MULTISOURCE_NOT_PERMITTED = "multisource-not-permitted"
    SOURCE_ID_NOT_ALLOWED = "source-id-not-allowed"
    HOOK_DENIED = "hook-denied"
    HOOK_UNAVAILABLE = "hook-unavailable"
    TOO_MANY_STREAMS = "too-many-streams"
    TOO_MANY_SOURCES = "too-many-sources"
    TOO_MANY_FEEDS = "too-many-feeds"
    #: a bundle refusal this module does not know yet (its own code is in the log line)
    OTHER = "refused"


_BAD_NAME = frozenset(
    {
        RefusalCode.INVALID_STREAM_PATH,
        RefusalCode.INVALID_SOURCE_ID,
        RefusalCode.NO_STREAM_NAME,
        RefusalCode.BAD_PRIORITY,
        RefusalCode.ALREADY_PUBLISHING,
    }
)
#: The HTTP status a WHIP client gets for each code (anything unlisted: 403).
HTTP_STATUS: Mapping[RefusalCode, int] = {
    RefusalCode.INVALID_STREAM_PATH: 400,
    RefusalCode.INVALID_SOURCE_ID: 400,
    RefusalCode.NO_STREAM_NAME: 400,
    RefusalCode.BAD_PRIORITY: 400,
    RefusalCode.ALREADY_PUBLISHING: 409,
    RefusalCode.BANNED: 429,  #: with Retry-After: the ban ends by itself
    RefusalCode.NO_TOKEN: 401,
    RefusalCode.TOKEN_INVALID: 401,
    RefusalCode.TOKEN_EXPIRED: 401,
    RefusalCode.HOOK_UNAVAILABLE: 503,
    RefusalCode.TOO_MANY_STREAMS: 503,
    RefusalCode.TOO_MANY_SOURCES: 409,
    RefusalCode.TOO_MANY_FEEDS: 409,
}
#: SRT reject reasons (srt `SRT_REJX_*`, 1000 + the HTTP status); 429 has none, 1402 is
#: "overload", the closest.
_SRT_REJECT = {400: 1400, 401: 1401, 403: 1403, 404: 1404, 409: 1409, 429: 1402, 503: 1503}

_URL_FORM: Mapping[str, str] = {
    "rtmp": "rtmp://HOST/APP/STREAM",
    "rtmps": "rtmps://HOST/APP/STREAM",
    "srt": "srt://HOST:PORT?streamid=APP/STREAM",
    "webrtc": "/whip/APP/STREAM",
}
_TOKEN_HINT: Mapping[str, str] = {
    "rtmp": "add ?token=... to the stream key",
    "rtmps": "add ?token=... to the stream key",
    "srt": "add token=... to the streamid",
    "webrtc": "send Authorization: Bearer TOKEN (or ?token=...)",
}
_TOKEN_CODES: Mapping[TokenFault, RefusalCode] = {
    TokenFault.MALFORMED: RefusalCode.TOKEN_INVALID,
    TokenFault.SIGNATURE: RefusalCode.TOKEN_INVALID,
    TokenFault.EXPIRED: RefusalCode.TOKEN_EXPIRED,
    TokenFault.REVOKED: RefusalCode.TOKEN_REVOKED,
    TokenFault.STREAM: RefusalCode.TOKEN_WRONG_STREAM,
    TokenFault.SOURCE: RefusalCode.TOKEN_WRONG_SOURCE,
    TokenFault.NETWORK: RefusalCode.TOKEN_WRONG_NETWORK,
}


def shown(text: str, *, max_chars: int = MAX_SHOWN_CHARS) -> str:
    """Client text for a log line or a status text: quoted, escaped, truncated."""
    if len(text) <= max_chars:
        return ascii(text)
    return f"{text[:max_chars]!a}... ({len(text)} characters)"


def split_remote(remote: str) -> str:
    """The IP of 'IP:PORT' / '[v6]:PORT' (text without a port is returned as given)."""
    host, sep, port = remote.rpartition(":")
    if sep and port.isdigit() and (host.startswith("[") or ":" not in host):
        return host.strip("[]")
    return remote.strip("[]")


def _pairs(query: Mapping[str, str] | tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    items = query.items() if isinstance(query, Mapping) else query
    return tuple((str(key), str(value)) for key, value in items)


@attrs.frozen(kw_only=True)
class PublishAttempt:
    """What a publisher sent, in any protocol."""

    protocol: IngestProtocol
    #: "APP/STREAM[/MORE]" as the driver parsed it
    stream_path: str
    source_id: str = ""
    #: every query parameter (first value per key), `sourceId`, `token`, `priority` included
    query: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)
    #: "IP:PORT" ("[v6]:PORT")
    remote: str = ""
    remote_ip: str = ""
    #: the token, wherever the protocol carries it (query, Bearer header, SRT streamid)
    token: str | None = None

    @classmethod
    def from_query(
        cls,
        *,
        protocol: IngestProtocol,
        stream_path: str,
        query: Mapping[str, str],
        remote: str,
        token: str | None = None,
    ) -> PublishAttempt:
        """sourceId and token from the query (an explicit `token` wins), the IP from `remote`."""
        return cls(
            protocol=protocol,
            stream_path=stream_path,
            source_id=query.get("sourceId", ""),
            query=query,
            remote=remote,
            remote_ip=split_remote(remote),
            token=token if token is not None else (query.get("token") or None),
        )

    @property
    def app(self) -> str:
        return self.stream_path.partition("/")[0]

    @property
    def stream(self) -> str:
        """The name within the app (the path after its first `/`)."""
        return self.stream_path.partition("/")[2]

    def param(self, key: str, default: str = "") -> str:
        for name, value in self.query:
            if name == key:
                return value
        return default

    def describe(self) -> str:
        """`protocol=... stream=... sourceId=... remote=...` for log lines (escaped)."""
        return (
            f"protocol={self.protocol} stream={shown(self.stream_path)} "
            f"sourceId={shown(self.source_id)} remote={self.remote or self.remote_ip or '-'}"
        )


@attrs.frozen(kw_only=True)
class Permit:
    """The publish may go to the bundle."""

    request: PublishRequest
    #: record this feed (the app's setting, or the token's `record` claim)
    record: bool
    #: the verified token (None in open mode)
    claims: TokenClaims | None = None


@attrs.frozen(kw_only=True)
class Refusal:
    """The publish is refused: what to log, what to tell the encoder, in each protocol's terms."""

    code: RefusalCode
    #: one line for the operator's log (client text escaped and truncated)
    log_text: str
    #: for the encoder (RTMP onStatus description, WHIP body, SRT log)
    status_text: str
    http_status: int
    #: RTMP onStatus code: NetStream.Publish.BadName or NetStream.Publish.Rejected
    rtmp_code: str
    #: when retrying can succeed by itself (a ban's end), seconds from now (HTTP Retry-After)
    retry_after_s: float | None = None

    @property
    def srt_reject_code(self) -> int:
        """The SRT reject reason (`SRT_REJX_*`) to reject the connection with."""
        return _SRT_REJECT.get(self.http_status, 1403)

    @classmethod
    def of(
        cls,
        code: RefusalCode,
        status_text: str,
        *,
        attempt: PublishAttempt | None = None,
        detail: str | None = None,
        retry_after_s: float | None = None,
    ) -> Refusal:
        """A refusal with the HTTP status and RTMP code that belong to `code`.

        `status_text` must already be safe to show (client text through `shown`);
        `detail` (default: the status text) goes into the log line after the context.
        """
        context = f" {attempt.describe()}" if attempt is not None else ""
        return cls(
            code=code,
            log_text=f"publish refused{context} reason={code.value}: {detail or status_text}",
            status_text=status_text,
            http_status=HTTP_STATUS.get(code, 403),
            rtmp_code=RTMP_BAD_NAME if code in _BAD_NAME else RTMP_REJECTED,
            retry_after_s=retry_after_s,
        )


class AppRules(Protocol):
    """An application's publish settings (config's `[apps."NAME"]` satisfies it)."""

    @property
    def multisource(self) -> bool: ...

    @property
    def record(self) -> bool: ...


@attrs.frozen(kw_only=True)
class _DefaultApp:
    multisource: bool = True
    record: bool = False


@attrs.frozen(kw_only=True)
class PolicySettings:
    """The configuration the policy reads (rebuilt and swapped in on SIGHUP)."""

    mode: AuthMode = "open"
    #: app name → rules; "*" applies to every app not named (like `Config.app`)
    apps: Mapping[str, AppRules] = attrs.field(factory=lambda: {"*": _DefaultApp()})
    max_stream_path_bytes: int = tokens.MAX_STREAM_PATH_BYTES
    max_source_id_bytes: int = tokens.MAX_SOURCE_ID_BYTES
    max_token_bytes: int = tokens.MAX_TOKEN_BYTES

    def __attrs_post_init__(self) -> None:
        if self.mode not in ("open", "token"):
            raise ValueError(f'auth mode must be "open" or "token", not {self.mode!r}')

    def app(self, name: str) -> AppRules:
        return self.apps.get(name) or self.apps.get("*") or _DefaultApp()


class TokenVerifier(Protocol):
    """Checks a token (the `Keyring` satisfies it)."""

    def verify(
        self, token: str, *, stream_path: str, source_id: str, remote_ip: str, now_s: float
    ) -> TokenClaims: ...


def _byte_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _too_long(text: str, max_bytes: int) -> bool:
    #: a character is at least one byte: a long text is refused without encoding it
    return len(text) > max_bytes or _byte_length(text) > max_bytes


def _check_shape(attempt: PublishAttempt, settings: PolicySettings) -> Refusal | None:
    path, source_id = attempt.stream_path, attempt.source_id
    url = _URL_FORM.get(attempt.protocol, "APP/STREAM")
    if _too_long(path, settings.max_stream_path_bytes):
        return Refusal.of(
            RefusalCode.INVALID_STREAM_PATH,
            f"Stream name is longer than {settings.max_stream_path_bytes} bytes.",
            attempt=attempt,
        )
    if _too_long(source_id, settings.max_source_id_bytes):
        return Refusal.of(
            RefusalCode.INVALID_SOURCE_ID,
            f"Source id {shown(source_id, max_chars=40)} is longer than "
            f"{settings.max_source_id_bytes} bytes.",
            attempt=attempt,
        )
    token = attempt.token
    if token is not None and len(token) > settings.max_token_bytes:
        return Refusal.of(
            RefusalCode.TOKEN_INVALID,
            f"Publish refused: the token is {len(token)} characters long; the limit is "
            f"{settings.max_token_bytes}.",
            attempt=attempt,
        )
    app, _, stream = path.partition("/")
    if not app or not stream:
        return Refusal.of(
            RefusalCode.NO_STREAM_NAME,
            f"No stream name: publish to {url}.",
            attempt=attempt,
        )
    if any(segment in (".", "..") for segment in path.split("/")):
        return Refusal.of(
            RefusalCode.INVALID_STREAM_PATH,
            f"Stream name {shown(path)} has a '.' or '..' segment; publish to {url}.",
            attempt=attempt,
        )
    return None


def _priority(attempt: PublishAttempt) -> int | Refusal:
    text = attempt.param("priority") or "0"
    if _PRIORITY.fullmatch(text) and MIN_PRIORITY <= (value := int(text)) <= MAX_PRIORITY:
        return value
    return Refusal.of(
        RefusalCode.BAD_PRIORITY,
        f"priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, got "
        f"{shown(text, max_chars=24)}.",
        attempt=attempt,
    )


def _banned(attempt: PublishAttempt, bans: BanList, now_s: float) -> Refusal | None:
    until_s = bans.banned_until(
        stream_path=attempt.stream_path,
        source_id=attempt.source_id,
        remote_ip=normalize_ip(attempt.remote_ip),
        now_s=now_s,
    )
    if until_s is None:
        return None
    wait_s = until_s - now_s
    return Refusal.of(
        RefusalCode.BANNED,
        f"Publish refused: an operator removed this source; it may not publish "
        f"from your address for another {wait_s:.0f} s.",
        attempt=attempt,
        retry_after_s=wait_s,
    )


def decide(
    attempt: PublishAttempt,
    *,
    settings: PolicySettings,
    verifier: TokenVerifier | None,
    bans: BanList | None = None,
    now_s: float,
) -> Permit | Refusal:
    """The publish decision; `now_s` is Unix time (token expiry and bans use it).

    `verifier` is needed in token mode (None there refuses every token-mode publish
    as unverifiable, which is a configuration bug the caller should not make).
    """
    if (refusal := _check_shape(attempt, settings)) is not None:
        return refusal
    priority = _priority(attempt)
    if isinstance(priority, Refusal):
        return priority
    if bans is not None and (refusal := _banned(attempt, bans, now_s)) is not None:
        return refusal
    rules = settings.app(attempt.app)
    claims: TokenClaims | None = None
    if settings.mode == "token":
        if not attempt.token:
            hint = _TOKEN_HINT.get(attempt.protocol, "add ?token=...")
            return Refusal.of(
                RefusalCode.NO_TOKEN,
                f"A publish token is required: {hint}.",
                attempt=attempt,
            )
        if verifier is None:
            return Refusal.of(
                RefusalCode.TOKEN_INVALID,
                "Publish refused: the server cannot verify tokens.",
                attempt=attempt,
                detail="token mode without a keyring (server configuration bug)",
            )
        try:
            claims = verifier.verify(
                attempt.token,
                stream_path=attempt.stream_path,
                source_id=attempt.source_id,
                remote_ip=attempt.remote_ip,
                now_s=now_s,
            )
        except TokenError as exc:
            return Refusal.of(
                _TOKEN_CODES[exc.fault],
                f"Publish refused: {exc}.",
                attempt=attempt,
            )
    token_multisource = True if claims is None else claims.multisource
    if attempt.source_id != "":
        #: docs/spec.md §3.7 — two gates, both required for a non-default source
        if not rules.multisource:
            return Refusal.of(
                RefusalCode.MULTISOURCE_NOT_PERMITTED,
                f"Multisource is not enabled for this application; publish without "
                f"sourceId (source id {shown(attempt.source_id)} was given).",
                attempt=attempt,
            )
        if not token_multisource:
            return Refusal.of(
                RefusalCode.MULTISOURCE_NOT_PERMITTED,
                f"The publish token does not grant multisource; publish without "
                f"sourceId (source id {shown(attempt.source_id)} was given).",
                attempt=attempt,
            )
    record = rules.record
    if claims is not None and claims.record is not None:
        record = claims.record
    allowed: frozenset[str] | None = None
    if claims is not None and claims.source_ids is not None:
        allowed = frozenset(claims.source_ids)
    permissions = Permissions(
        app_multisource=rules.multisource,
        token_multisource=token_multisource,
        #: Any: the bundle's optional(frozenset) converter has no usable static type
        allowed_source_ids=cast(Any, allowed),
    )
    request = PublishRequest(
        stream_path=attempt.stream_path,
        source_id=attempt.source_id,
        priority=priority,
        permissions=permissions,
        remote_addr=attempt.remote,
        #: the token is a credential: it never reaches the API, events or hooks' copies
        query=tuple((k, v) for k, v in attempt.query if k != "token"),
    )
    return Permit(request=request, record=record, claims=claims)


_FROM_BUNDLE: Mapping[BundleRefusalCode, RefusalCode] = {
    BundleRefusalCode(code.value): code
    for code in RefusalCode
    if code.value in {c.value for c in BundleRefusalCode}
}


def refusal_from_bundle(refused: Refused, *, attempt: PublishAttempt | None = None) -> Refusal:
    """The bundle's `Refused` (names, permissions, capacity) in the policy's shape."""
    code = _FROM_BUNDLE.get(refused.code)
    text = refused.reason
    if len(text) > 4 * MAX_SHOWN_CHARS:
        text = text[: 4 * MAX_SHOWN_CHARS] + "..."
    if code is None:  #: a code the bundle added later: still refused, with its text
        return Refusal.of(
            RefusalCode.OTHER, text, attempt=attempt, detail=f"{refused.code.value}: {text}"
        )
    return Refusal.of(code, text, attempt=attempt)


class Policy:
    """`decide` with its collaborators held: the settings (swappable), keyring and bans."""

    def __init__(
        self,
        settings: PolicySettings,
        *,
        verifier: TokenVerifier | None,
        bans: BanList | None = None,
    ) -> None:
        if settings.mode == "token" and verifier is None:
            raise ValueError("token mode needs a token verifier (the keyring)")
        self.settings = settings
        self.verifier = verifier
        self.bans = bans if bans is not None else BanList()

    def configure(self, settings: PolicySettings) -> None:
        """New settings (SIGHUP); feeds already admitted are not re-checked."""
        if settings.mode == "token" and self.verifier is None:
            raise ValueError("token mode needs a token verifier (the keyring)")
        self.settings = settings

    def decide(self, attempt: PublishAttempt, *, now_s: float) -> Permit | Refusal:
        return decide(
            attempt, settings=self.settings, verifier=self.verifier, bans=self.bans, now_s=now_s
        )

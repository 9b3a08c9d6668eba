"""Configuration: TOML on disk → frozen attrs records, with one embedded default.

`DEFAULT_TOML` is both the configuration `make run` uses and its reference
(`rtmp-ingest config --print-default`): every key, its default and what it is
for. A file overrides any subset of it; unknown keys and wrong types are
errors that name the key (`ConfigError`, which the CLI prints as one line and
exits 2).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from rtmp_ingest.bundle import BundleConfig
from rtmp_ingest.rtmp.limits import Limits

DEFAULT_TOML = """\
# rtmp_ingest configuration. Every key is optional; shown here with its default.

# Where tokens' revocation list, the generated secret and recordings live.
data_dir = "data"
# debug | info | warning | error
log_level = "info"

[rtmp]
# Where encoders and players connect (HOST:PORT; port 0 = any free port).
listen = "0.0.0.0:1935"
# Seconds a client may take to complete the handshake.
handshake_timeout_s = 10.0
# Seconds between the handshake and publish/play (connect, createStream, ...).
command_timeout_s = 10.0
# A publisher that sends no media for this long is dropped (its feed ends).
idle_timeout_s = 30.0
# Seconds a write to a slow peer may block before the peer is dropped.
write_timeout_s = 10.0
# Connections at once, in total and from one remote address.
max_connections = 1000
max_connections_per_address = 100
# Largest RTMP message (bytes). 4K keyframes exceed nginx-rtmp's 1 MiB.
max_message_bytes = 33554432
# Bytes all partially received messages of one connection may hold.
max_pending_bytes = 67108864
# Chunk size we send with (the client picks its own).
chunk_size = 4096
# A player of a stream or source that is not live waits this long for it (also after
# it goes away, for a reconnect) before play ends.
play_wait_s = 30.0

[rtmps]
# RTMP over TLS; empty listen = off. PEM certificate chain and key.
listen = ""
cert_file = ""
key_file = ""

[srt]
# SRT ingest (MPEG-TS over SRT, libsrt 1.5: apt-get install libsrt1.5-openssl).
# srt://HOST:8890?streamid=APP/STREAM?sourceId=ID&token=T, or #!::r=APP/STREAM,m=publish,...
enabled = true
listen = "0.0.0.0:8890"
# SRTO_LATENCY (ms): how long the receiver waits for retransmissions; 4 x RTT is SRT's rule.
latency_ms = 120
# SRT connections at once (more are rejected with reason 1429 before they are accepted).
max_connections = 1000
# A publisher that sends no media for this long is dropped (its feed ends).
idle_timeout_s = 30.0
# Threads that wait on libsrt's sockets and hand their data to the server.
reader_threads = 2
# Per-app SRTO_PASSPHRASE (10..79 characters); "*" applies to every app not named.
passphrases = {}

[http]
# Control API, events, metrics, HTTP-FLV.
listen = "0.0.0.0:8080"
# When set, /api/v1/* requires "Authorization: Bearer <admin_key>".
admin_key = ""
# Whether /metrics requires the admin key too.
protect_metrics = false
# Access-Control-Allow-Origin for browser players and pages.
cors_origins = ["*"]
# hls.js for the multiview page (/view/APP/STREAM); self-host it on networks without internet.
hlsjs_url = "https://cdn.jsdelivr.net/npm/hls.js@1/dist/hls.min.js"

[auth]
# "open": anyone may publish anything (development; the server says so at start).
# "token": a publish needs ?token=... signed with the server secret.
mode = "open"
# Secret for signing tokens; empty = generated once into <data_dir>/secret.
secret = ""

[bundle]
# Seconds a source whose feed ended waits for a reconnect before it turns inactive.
reconnect_grace_s = 5.0
# Sources one stream may have.
max_sources_per_stream = 16
# Feeds contending for one source (on air + pending + standby).
max_feeds_per_source = 8
# Streams in total.
max_streams = 4096
# Frames a reader may lag before it skips to the next keyframe.
reader_queue_frames = 512
# Bytes of the current GOP kept so new players start instantly.
max_gop_cache_bytes = 16777216

[hls]
# Low-Latency HLS (fMP4) of every source, served at /hls/APP/STREAM/index.m3u8.
enabled = true
# Target segment duration (segments are cut at the first keyframe after it) and part duration.
segment_s = 2.0
part_s = 0.2
# Complete segments kept in each media playlist (the sliding window).
window_segments = 6
# Seconds the playlists of a source that went off air stay fetchable (with EXT-X-ENDLIST).
linger_s = 30.0
# Also write segments and (non-LL) playlists here, for a CDN origin; empty = memory only.
directory = ""

[record]
# Where recordings go; empty = <data_dir>/recordings. One folder per stream, one fMP4
# file per source and period, and a manifest.json per stream.
directory = ""
# A new file is started at the first keyframe after this many seconds.
file_s = 600.0
# Seconds of media per fMP4 fragment (what a kill -9 can lose at most).
fragment_s = 1.0
# Retention: files older than this many seconds (0 = keep) ...
max_age_s = 604800.0
# ... and the oldest files beyond this many bytes in total (0 = no limit) are deleted.
max_total_bytes = 10737418240

# Per-application settings; "*" applies to every app not named.
[apps."*"]
# Account-level multisource gate (SPEC.md 3.7): may publishers of this app use sourceId?
multisource = true
# Record every source of this app's streams (a token's "record" claim overrides it).
record = false
"""


class ConfigError(ValueError):
    """A configuration problem, worded for the operator (names the key)."""


@attrs.frozen(kw_only=True)
class RtmpConfig:
    listen: str = "0.0.0.0:1935"
    handshake_timeout_s: float = 10.0
    command_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    write_timeout_s: float = 10.0
    max_connections: int = 1000
    max_connections_per_address: int = 100
    max_message_bytes: int = 32 * 1024 * 1024
    max_pending_bytes: int = 64 * 1024 * 1024
    chunk_size: int = 4096
    play_wait_s: float = 30.0

    def limits(self) -> Limits:
        return Limits(
            max_message_bytes=self.max_message_bytes,
            max_pending_bytes=self.max_pending_bytes,
            out_chunk_size=self.chunk_size,
        )


@attrs.frozen(kw_only=True)
class RtmpsConfig:
    listen: str = ""
    cert_file: str = ""
    key_file: str = ""


@attrs.frozen(kw_only=True)
class SrtConfig:
    enabled: bool = True
    listen: str = "0.0.0.0:8890"
    latency_ms: int = 120
    max_connections: int = 1000
    idle_timeout_s: float = 30.0
    reader_threads: int = 2
    passphrases: dict[str, str] = attrs.field(factory=dict)

    def passphrase(self, app: str) -> str:
        """The SRTO_PASSPHRASE callers of `app` must use ("" = none)."""
        return self.passphrases.get(app, self.passphrases.get("*", ""))


@attrs.frozen(kw_only=True)
class HttpConfig:
    listen: str = "0.0.0.0:8080"
    admin_key: str = ""
    protect_metrics: bool = False
    cors_origins: list[str] = attrs.field(factory=lambda: ["*"])
    hlsjs_url: str = "https://cdn.jsdelivr.net/npm/hls.js@1/dist/hls.min.js"


@attrs.frozen(kw_only=True)
class AuthConfig:
    mode: str = "open"
    secret: str = ""


@attrs.frozen(kw_only=True)
class BundleSettings:
    reconnect_grace_s: float = 5.0
    max_sources_per_stream: int = 16
    max_feeds_per_source: int = 8
    max_streams: int = 4096
    reader_queue_frames: int = 512
    max_gop_cache_bytes: int = 16 * 1024 * 1024

    def bundle_config(self) -> BundleConfig:
        return BundleConfig(**attrs.asdict(self))


@attrs.frozen(kw_only=True)
class HlsConfig:
    enabled: bool = True
    segment_s: float = 2.0
    part_s: float = 0.2
    window_segments: int = 6
    linger_s: float = 30.0
    directory: str = ""


@attrs.frozen(kw_only=True)
class RecordConfig:
    directory: str = ""
    file_s: float = 600.0
    fragment_s: float = 1.0
    max_age_s: float = 7 * 86400.0
    max_total_bytes: int = 10 * 1024**3


@attrs.frozen(kw_only=True)
class AppConfig:
    multisource: bool = True
    record: bool = False


@attrs.frozen(kw_only=True)
class Config:
    data_dir: str = "data"
    log_level: str = "info"
    rtmp: RtmpConfig = RtmpConfig()
    rtmps: RtmpsConfig = RtmpsConfig()
    srt: SrtConfig = SrtConfig()
    http: HttpConfig = HttpConfig()
    auth: AuthConfig = AuthConfig()
    bundle: BundleSettings = BundleSettings()
    hls: HlsConfig = HlsConfig()
    record: RecordConfig = RecordConfig()
    apps: dict[str, AppConfig] = attrs.field(factory=lambda: {"*": AppConfig()})

    def app(self, name: str) -> AppConfig:
        return self.apps.get(name) or self.apps.get("*") or AppConfig()


_converter = cattrs.Converter(forbid_extra_keys=True)


def _strict(kind: type, *accepted: type) -> Any:
    def structure(value: Any, _type: Any) -> Any:
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, accepted):
            raise ValueError(f"expected {kind.__name__}, got {value!r}")
        return kind(value)

    return structure


_converter.register_structure_hook(bool, _strict(bool, bool))
_converter.register_structure_hook(int, _strict(int, int))
_converter.register_structure_hook(float, _strict(float, int, float))
_converter.register_structure_hook(str, _strict(str, str))


def _first_problem(exc: BaseException, path: str = "") -> str:
    """One line naming the key of the first problem in a cattrs error tree."""
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = ", ".join(sorted(exc.extra_fields))
        return f"{path or 'top level'}: unknown key(s) {keys}"
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", []):
                if isinstance(note, AttributeValidationNote):
                    sub_path = f"{path}.{note.name}" if path else note.name
                elif isinstance(note, IterableValidationNote):
                    sub_path = f"{path}[{note.index!r}]"
            return _first_problem(sub, sub_path)
    return f"{path or 'top level'}: {exc}"


def _check(config: Config) -> None:
    if config.auth.mode not in ("open", "token"):
        raise ConfigError(f'auth.mode: must be "open" or "token", not {config.auth.mode!r}')
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level: unknown level {config.log_level!r}")
    for key, value in (
        ("rtmp.listen", config.rtmp.listen),
        ("http.listen", config.http.listen),
        ("rtmps.listen", config.rtmps.listen),
        ("srt.listen", config.srt.listen),
    ):
        if value or key != "rtmps.listen":
            parse_host_port(value, key=key)
    if config.rtmps.listen and not (config.rtmps.cert_file and config.rtmps.key_file):
        raise ConfigError("rtmps: listen is set but cert_file/key_file are missing")
    if not 1 <= config.rtmp.chunk_size <= 0x7FFFFFFF:
        raise ConfigError("rtmp.chunk_size: must be 1..2147483647")
    srt = config.srt
    for app, phrase in srt.passphrases.items():
        if not 10 <= len(phrase) <= 79:  #: libsrt's SRTO_PASSPHRASE limits
            raise ConfigError(f"srt.passphrases.{app}: must be 10..79 characters")
    if not 0 <= srt.latency_ms <= 60_000 or not 1 <= srt.reader_threads <= 64:
        raise ConfigError("srt: latency_ms must be 0..60000 and reader_threads 1..64")
    if srt.max_connections < 1 or srt.idle_timeout_s <= 0:
        raise ConfigError("srt: max_connections must be >= 1 and idle_timeout_s > 0")
    hls = config.hls
    if not 0.05 <= hls.part_s <= hls.segment_s / 2:
        raise ConfigError("hls.part_s: must be at least 0.05 and at most half of hls.segment_s")
    if not 0.5 <= hls.segment_s <= 60:
        raise ConfigError("hls.segment_s: must be 0.5..60")
    if not 2 <= hls.window_segments <= 1000:
        raise ConfigError("hls.window_segments: must be 2..1000")
    if hls.linger_s < 0:
        raise ConfigError("hls.linger_s: must be >= 0")
    record = config.record
    if not 0.1 <= record.fragment_s <= record.file_s:
        raise ConfigError("record.fragment_s: must be at least 0.1 and at most record.file_s")
    if record.max_age_s < 0 or record.max_total_bytes < 0:
        raise ConfigError("record: max_age_s and max_total_bytes must be >= 0")
    try:
        config.bundle.bundle_config()
    except ValueError as exc:
        raise ConfigError(f"bundle: {exc}") from None


def parse_host_port(text: str, *, key: str = "address") -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def from_dict(data: dict[str, Any]) -> Config:
    try:
        config = _converter.structure(data, Config)
    except (ClassValidationError, ForbiddenExtraKeysError) as exc:
        raise ConfigError(_first_problem(exc)) from None
    _check(config)
    return config


def default_config() -> Config:
    return from_dict(tomllib.loads(DEFAULT_TOML))


def load(path: str | Path | None, *, overrides: dict[str, Any] | None = None) -> Config:
    """The embedded default, updated by the file at `path`, then by `overrides`."""
    data = tomllib.loads(DEFAULT_TOML)
    if path is not None:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        try:
            _merge(data, tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    _merge(data, overrides or {})
    return from_dict(data)


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "apps":
            _merge(into[key], value)
        else:
            into[key] = value

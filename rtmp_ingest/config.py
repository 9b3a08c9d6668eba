"""Configuration: TOML on disk → frozen attrs records, with one embedded default.

`DEFAULT_TOML` (the file rtmp_ingest/default.toml) is both the configuration
`make run` uses and its reference
(`rtmp-ingest config --print-default`): every key, its default and what it is
for. A file overrides any subset of it; unknown keys and wrong types are
errors that name the key (`ConfigError`, which the CLI prints as one line and
exits 2).
"""

from __future__ import annotations

import os
import ssl
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from rtmp_ingest.auth.authorize import check_hook_settings
from rtmp_ingest.auth.bans import MAX_BAN_S, MAX_BANS
from rtmp_ingest.auth.tokens import MIN_SECRET_BYTES
from rtmp_ingest.bundle import BundleConfig
from rtmp_ingest.rtmp.limits import Limits

#: The embedded default (rtmp_ingest/default.toml, shipped in the package).
DEFAULT_TOML = (resources.files("rtmp_ingest") / "default.toml").read_text(encoding="utf-8")


#: Bounds of webrtc.whep_max_payload_bytes: a payloader needs room for a descriptor and
#: some data; above ~1400 a packet no longer fits a 1500-byte MTU with SRTP and headers
MIN_RTP_PAYLOAD_BYTES = 200
MAX_RTP_PAYLOAD_BYTES = 1400


class ConfigError(ValueError):
    """A configuration problem, worded for the operator (names the key)."""


class StartupError(ConfigError):
    """What `serve` met while starting (a port in use, an unreadable file): one line."""


@attrs.frozen(kw_only=True)
class RtmpConfig:
    listen: str = "0.0.0.0:1935"
    handshake_timeout_s: float = 10.0
    command_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    write_timeout_s: float = 10.0
    max_connections: int = 1000
    max_connections_per_address: int = 100
    max_message_bytes: int = 16 * 1024 * 1024 - 1
    max_command_bytes: int = 64 * 1024
    max_pending_bytes: int = 64 * 1024 * 1024
    max_pending_bytes_unadmitted: int = 1024 * 1024
    max_pending_bytes_total: int = 256 * 1024 * 1024
    chunk_size: int = 4096
    play_wait_s: float = 30.0
    goodbye_s: float = 2.0

    def limits(self) -> Limits:
        return Limits(
            max_message_bytes=self.max_message_bytes,
            max_pending_bytes=self.max_pending_bytes,
            max_command_bytes=self.max_command_bytes,
            max_pending_bytes_unadmitted=self.max_pending_bytes_unadmitted,
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
    hlsjs_url: str = ""
    #: HTTP limits (api/serve.py); 0 would refuse every body, client or connection
    max_body_bytes: int = attrs.field(default=256 * 1024, validator=attrs.validators.gt(0))
    write_timeout_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    max_connections: int = attrs.field(default=1024, validator=attrs.validators.gt(0))
    max_connections_per_address: int = attrs.field(default=64, validator=attrs.validators.gt(0))


@attrs.frozen(kw_only=True)
class HooksConfig:
    url: str = ""
    actions: list[str] = attrs.field(factory=lambda: ["publish", "unpublish", "play"])
    timeout_s: float = 5.0
    on_failure: str = "deny"


@attrs.frozen(kw_only=True)
class AuthConfig:
    mode: str = "open"
    secret: str = ""
    max_ban_s: float = MAX_BAN_S
    max_bans: int = MAX_BANS
    hooks: HooksConfig = HooksConfig()


@attrs.frozen(kw_only=True)
class BundleSettings:
    reconnect_grace_s: float = 5.0
    max_sources_per_stream: int = 16
    max_feeds_per_source: int = 8
    max_streams: int = 4096
    reader_queue_frames: int = 512
    reader_queue_bytes: int = 8 * 1024 * 1024
    max_gop_cache_bytes: int = 16 * 1024 * 1024
    superseded: str = "standby"
    superseded_reconnect_s: float = 60.0
    max_audio_rebase_ms: int = 40

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
    max_segment_bytes: int = 32 * 1024**2
    max_part_bytes: int = 4 * 1024**2
    max_window_bytes: int = 96 * 1024**2


@attrs.frozen(kw_only=True)
class RecordConfig:
    directory: str = ""
    file_s: float = 600.0
    fragment_s: float = 1.0
    max_age_s: float = 7 * 86400.0
    max_total_bytes: int = 10 * 1024**3


@attrs.frozen(kw_only=True)
class WebrtcConfig:
    enabled: bool = False
    ice_servers: list[str] = attrs.field(factory=list)
    turn_username: str = ""
    turn_credential: str = ""
    host_addresses: list[str] = attrs.field(factory=list)
    include_loopback: bool = True
    udp_port_min: int = 0
    udp_port_max: int = 0
    max_sessions: int = 100
    offer_timeout_s: float = 10.0
    connect_timeout_s: float = 15.0
    idle_timeout_s: float = 30.0
    keyframe_on_demand: bool = True
    keyframe_request_interval_s: float = 0.5
    restart_backoff_s: float = 0.5
    max_restart_backoff_s: float = 30.0
    #: WHEP play (server/whep.py): serve viewers at /whep/APP/STREAM
    whep_enabled: bool = True
    #: how long a WHEP POST waits for its source to go live (0: 409 at once)
    whep_wait_s: float = 0.0
    #: how long a viewer stays attached while its source is away before the session ends
    whep_linger_s: float = 10.0
    whep_max_viewers: int = 500
    #: WHEP viewers must show a token (Bearer or ?token=, the publish token format) whose
    #: streams, sources and networks cover what they ask to play
    whep_require_token: bool = False
    #: frames a viewer's send queue in the WebRTC process holds before it skips to a keyframe
    whep_max_queue_frames: int = 64
    #: bitrate of the Opus that AAC sources are transcoded to (once per source)
    whep_opus_bitrate: int = 96000
    #: a viewer's keyframe requests (PLI/FIR) reach a WebRTC publisher at most this often
    whep_pli_interval_s: float = 1.0
    #: largest RTP payload a WHEP sender cuts video into (fits a 1500-byte path with room
    #: for SRTP, RTP extensions and tunnels)
    whep_max_payload_bytes: int = 1200
    #: VP9 payload descriptor mode for WHEP viewers (RFC 9628): flexible (true) or not
    whep_vp9_flexible: bool = True


#: `cluster.pull` values (docs/spec.md §9); a file's true/false mean the first/last.
PULL_MODES = ("always", "on_demand", "never")
PullMode = Literal["always", "on_demand", "never"]


def _pull_mode(value: object) -> PullMode:
    """`cluster.pull` as one of PULL_MODES (true/false kept for older files)."""
    if value is True:
        return "always"
    if value is False:
        return "never"
    if value == "always" or value == "on_demand" or value == "never":
        return value
    raise ValueError(f"expected one of {', '.join(map(repr, PULL_MODES))} or true/false")


@attrs.frozen(kw_only=True)
class ClusterConfig:
    """`[cluster]`: nodes sharing a Redis registry (docs/spec.md §9); see the default TOML."""

    redis: str = ""
    node_id: str = ""
    advertise_rtmp: str = ""
    advertise_http: str = ""
    lease_s: float = 5.0
    renew_s: float = 1.5
    secret: str = ""
    key_prefix: str = "rtmp_ingest"
    timeline_write_s: float = 1.0
    timeline_keep_s: float = 3600.0
    redis_timeout_s: float = 2.0
    relay_connect_timeout_s: float = 5.0
    relay_max_buffer_bytes: int = 8 * 1024**2
    pull_retry_s: float = 0.5
    #: "always" | "on_demand" | "never" (true/false in a file mean "always"/"never")
    pull: PullMode = attrs.field(default="on_demand", converter=lambda v: _pull_mode(v))
    pull_idle_s: float = 10.0
    pull_wait_s: float = 8.0

    @property
    def enabled(self) -> bool:
        return bool(self.redis)


#: Bounds of `cluster.lease_s`: under half a second a busy node loses leases it holds; over
#: five minutes a dead owner's encoders wait that long for another node.
MIN_LEASE_S = 0.5
MAX_LEASE_S = 300.0
#: What a node id may be (it goes into Redis keys, URLs and log lines).
NODE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MAX_NODE_ID_CHARS = 64
#: What a worker adds to its machine's node id (".w255": MAX_WORKERS - 1), within the limit.
WORKER_NODE_SUFFIX_CHARS = 5


def _check_cluster(cluster: ClusterConfig) -> None:
    """`[cluster]`: the values `serve` could not run a node with (only when redis is set)."""
    if not cluster.enabled:
        return
    if not cluster.redis.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("cluster.redis: expected redis://HOST:PORT/DB, rediss://… or unix://…")
    longest = MAX_NODE_ID_CHARS - WORKER_NODE_SUFFIX_CHARS
    if cluster.node_id and (
        len(cluster.node_id) > longest or not set(cluster.node_id) <= NODE_ID_CHARS
    ):
        raise ConfigError(f"cluster.node_id: at most {longest} of letters, digits, '.', '_', '-'")
    worker_like = cluster.node_id.rpartition(".w")
    if worker_like[1] and worker_like[2].isdigit():
        raise ConfigError(
            "cluster.node_id: may not end in .wN (the ids of a machine's workers, docs/spec.md §9)"
        )
    for key in ("advertise_rtmp", "advertise_http"):
        value = getattr(cluster, key)
        if value:
            host, _port = parse_host_port(value, key=f"cluster.{key}")
            if host in ("0.0.0.0", "::"):
                raise ConfigError(f"cluster.{key}: must name an address others can reach")
    if not MIN_LEASE_S <= cluster.lease_s <= MAX_LEASE_S:
        raise ConfigError(f"cluster.lease_s: must be {MIN_LEASE_S}..{MAX_LEASE_S:.0f}")
    if not 0 < cluster.renew_s <= cluster.lease_s / 2:
        raise ConfigError("cluster.renew_s: must be more than 0 and at most half of lease_s")
    if len(cluster.secret.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"cluster.secret: must be at least {MIN_SECRET_BYTES} bytes (nodes authenticate "
            "relays and pulls with it)"
        )
    if not cluster.key_prefix or not set(cluster.key_prefix) <= NODE_ID_CHARS | {":"}:
        raise ConfigError("cluster.key_prefix: letters, digits, '.', '_', '-', ':' only")
    for key in (
        "timeline_write_s",
        "redis_timeout_s",
        "relay_connect_timeout_s",
        "pull_retry_s",
        "pull_idle_s",
        "pull_wait_s",
    ):
        if getattr(cluster, key) <= 0:
            raise ConfigError(f"cluster.{key}: must be > 0")
    if cluster.timeline_keep_s < cluster.lease_s:
        raise ConfigError("cluster.timeline_keep_s: must be at least lease_s")
    if cluster.relay_max_buffer_bytes < 64 * 1024:
        raise ConfigError("cluster.relay_max_buffer_bytes: must be at least 65536")


@attrs.frozen(kw_only=True)
class AppConfig:
    multisource: bool = True
    record: bool = False


@attrs.frozen(kw_only=True)
class Config:
    data_dir: str = "data"
    log_level: str = "info"
    #: "auto" (one per core) or a count of worker processes (cluster/supervisor.py)
    workers: int | str = "auto"
    rtmp: RtmpConfig = RtmpConfig()
    rtmps: RtmpsConfig = RtmpsConfig()
    srt: SrtConfig = SrtConfig()
    http: HttpConfig = HttpConfig()
    auth: AuthConfig = AuthConfig()
    bundle: BundleSettings = BundleSettings()
    hls: HlsConfig = HlsConfig()
    record: RecordConfig = RecordConfig()
    webrtc: WebrtcConfig = WebrtcConfig()
    cluster: ClusterConfig = ClusterConfig()
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
_converter.register_structure_hook_func(lambda kind: kind == PullMode, lambda v, _t: _pull_mode(v))

# -- workers (docs/spec.md §9) ---------------------------------------------------------
#: More workers than this is a typo, not a machine.
MAX_WORKERS = 256


def _structure_workers(value: Any, _type: Any) -> int | str:
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS:
        return value
    raise ValueError(f'expected "auto" or a whole number 1..{MAX_WORKERS}, got {value!r}')


_converter.register_structure_hook_func(lambda kind: kind == (int | str), _structure_workers)


def worker_count(setting: int | str) -> int:
    """The number of workers a `workers` setting means on this machine ("auto": one per
    core, with or without `[cluster]`: each worker is then a node, docs/spec.md §9)."""
    if setting == "auto":
        return max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    return int(setting)


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


def _check_numbers(value: Any, path: str) -> None:
    """No limit, size or duration may be negative; the RTMP ones must be positive."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{path}.{key}")
        return
    if not attrs.has(type(value)):
        return
    for field in attrs.fields(type(value)):
        item = getattr(value, field.name)
        key = f"{path}.{field.name}" if path else field.name
        if isinstance(item, bool):
            continue
        if isinstance(item, (int, float)):
            if item != item or item in (float("inf"), float("-inf")):
                raise ConfigError(f"{key}: must be a finite number, got {item!r}")
            if item < 0:
                raise ConfigError(f"{key}: must be >= 0, got {item!r}")
            if item == 0 and path == "rtmp":
                raise ConfigError(f"{key}: must be > 0 (0 would refuse or drop every client)")
        else:
            _check_numbers(item, key)


def _check_files(config: Config) -> None:
    """What `serve` would fail to open: the TLS certificate and key."""
    if not config.rtmps.listen:
        return
    for key, name in (
        ("rtmps.cert_file", config.rtmps.cert_file),
        ("rtmps.key_file", config.rtmps.key_file),
    ):
        if not Path(name).is_file():
            raise ConfigError(f"{key}: no such file {name!r}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.rtmps.cert_file, config.rtmps.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"rtmps.cert_file/key_file: cannot load {config.rtmps.cert_file!r} with "
            f"{config.rtmps.key_file!r}: {exc}"
        ) from None


def _check(config: Config) -> None:
    _check_numbers(config, "")
    if config.auth.mode not in ("open", "token"):
        raise ConfigError(f'auth.mode: must be "open" or "token", not {config.auth.mode!r}')
    if config.auth.secret and len(config.auth.secret.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ConfigError(f"auth.secret: must be at least {MIN_SECRET_BYTES} bytes (or empty)")
    if not 0 < config.auth.max_ban_s <= 365 * 86400.0:
        raise ConfigError("auth.max_ban_s: must be more than 0 and at most 31536000 (a year)")
    if config.auth.max_bans < 1:
        raise ConfigError("auth.max_bans: must be at least 1")
    if (problem := check_hook_settings(config.auth.hooks)) is not None:
        raise ConfigError(problem)
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level: unknown level {config.log_level!r}")
    for key, value in (
        ("rtmp.listen", config.rtmp.listen),
        ("http.listen", config.http.listen),
        ("rtmps.listen", config.rtmps.listen),
        ("srt.listen", config.srt.listen),
    ):
        if value or key == "rtmp.listen":  #: rtmps and http may be off ("")
            parse_host_port(value, key=key)
    if config.rtmps.listen and not (config.rtmps.cert_file and config.rtmps.key_file):
        raise ConfigError("rtmps: listen is set but cert_file/key_file are missing")
    if not 1 <= config.rtmp.chunk_size <= 0x7FFFFFFF:
        raise ConfigError("rtmp.chunk_size: must be 1..2147483647")
    try:
        config.rtmp.limits()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"rtmp: {exc}") from None
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
    if not 64 * 1024 <= hls.max_part_bytes <= hls.max_segment_bytes <= hls.max_window_bytes:
        raise ConfigError(
            "hls: need 65536 <= max_part_bytes <= max_segment_bytes <= max_window_bytes"
        )
    record = config.record
    if not 0.1 <= record.fragment_s <= record.file_s:
        raise ConfigError("record.fragment_s: must be at least 0.1 and at most record.file_s")
    if record.max_age_s < 0 or record.max_total_bytes < 0:
        raise ConfigError("record: max_age_s and max_total_bytes must be >= 0")
    webrtc = config.webrtc
    if (webrtc.udp_port_min or webrtc.udp_port_max) and not (
        1 <= webrtc.udp_port_min <= webrtc.udp_port_max <= 65535
    ):
        raise ConfigError("webrtc.udp_port_min/udp_port_max: need 1 <= min <= max <= 65535")
    for key in (
        "offer_timeout_s",
        "connect_timeout_s",
        "idle_timeout_s",
        "keyframe_request_interval_s",
        "restart_backoff_s",
        "max_sessions",
    ):
        if getattr(webrtc, key) <= 0:
            raise ConfigError(f"webrtc.{key}: must be > 0")
    if not MIN_RTP_PAYLOAD_BYTES <= webrtc.whep_max_payload_bytes <= MAX_RTP_PAYLOAD_BYTES:
        raise ConfigError(
            f"webrtc.whep_max_payload_bytes: must be {MIN_RTP_PAYLOAD_BYTES}..{MAX_RTP_PAYLOAD_BYTES}"
        )
    if webrtc.max_restart_backoff_s < webrtc.restart_backoff_s:
        raise ConfigError("webrtc.max_restart_backoff_s: must be >= webrtc.restart_backoff_s")
    try:
        config.bundle.bundle_config()
    except ValueError as exc:
        raise ConfigError(f"bundle: {exc}") from None
    _check_cluster(config.cluster)
    _check_files(config)


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


#: Keys whose values `masked` hides (API and `config --print-effective`).
SECRET_KEYS = frozenset({"secret", "admin_key", "passphrase", "passphrases", "redis"})


def masked(config: Config) -> dict[str, Any]:
    """The configuration as plain data, every secret replaced by "***" (empty stays empty)."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: ("***" if key in SECRET_KEYS and item else walk(item))
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    data: dict[str, Any] = walk(_converter.unstructure(config))
    return data


def to_toml(data: dict[str, Any]) -> str:
    """TOML for a configuration dict (scalars, lists of scalars, nested tables)."""
    lines: list[str] = []

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(scalar(item) for item in value) + "]"
        raise TypeError(f"cannot write {value!r} as TOML")

    def table(prefix: str, values: dict[str, Any]) -> None:
        plain = {k: v for k, v in values.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in values.items() if isinstance(v, dict)}
        if prefix and plain:
            lines.append(f"\n[{prefix}]")
        for key, value in plain.items():
            if value is not None:
                lines.append(f"{_toml_key(key)} = {scalar(value)}")
        for key, value in nested.items():
            table(f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key), value)

    table("", data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'

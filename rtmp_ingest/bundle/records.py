# Theory of operation
# -------------------
# The records the bundle exchanges with its drivers: what goes in (frames,
# publish requests, permissions, configuration) and the small enumerations
# that name states and reasons.  They are frozen, slotted attrs classes with no
# behaviour beyond validation, so a driver can hand them across tasks freely.
#
# Frames are opaque to the bundle: `payload` is the RTMP tag body and is never
# parsed here.  The driver (which does parse FLV tags) tells the bundle what a
# frame is through `media`, `codec`, `keyframe`, `config` and, on configuration
# frames, `track_info`.  The bundle emits `OutputFrame`s: a thin wrapper around
# the input frame carrying the rebased timestamp on the source's single output
# timeline (docs/spec.md §3.5).  Presentation time is `dts_ms + frame.cts_ms`.
#
# `Frame` and `OutputFrame` deliberately carry no validators: they are built
# once per media frame on the ingest hot path, and their fields come from the
# driver's own parser, not from the network.
from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

KiB = 1024
MiB = 1024 * KiB

#: docs/spec.md §3.6 — reconnect grace before a silent source turns inactive.
RECONNECT_GRACE_S = 5.0  # an encoder's reconnect after a network blip takes 1–4 s
#: docs/spec.md §3.8 — sources per stream.
MAX_SOURCES_PER_STREAM = 16  # the spec's default; one camera rig rarely exceeds it
#: docs/spec.md §2 — sourceId length limit, in UTF-8 bytes.
MAX_SOURCE_ID_BYTES = 128
MAX_STREAM_PATH_BYTES = 1024  # longer than any RTMP app/stream name clients send
MAX_STREAMS = 4096  # bounds registry memory against a publish flood of distinct names
#: docs/spec.md §3.4 — feeds contending for one source (on air + pending + standby).
MAX_FEEDS_PER_SOURCE = 8  # main + backup encoders plus a few reconnects in flight
READER_QUEUE_BYTES = 8 * 1024 * 1024  # a lagging reader pins at most this much of a feed
READER_QUEUE_FRAMES = 512  # ~5 s of 30 fps video + 48 kHz audio; a driver flushes far sooner
MAX_GOP_CACHE_BYTES = 16 * MiB  # a 10 s GOP at 12 Mbit/s; beyond it readers start live
#: docs/spec.md §3.5 — how far a publisher's clock may wander before the timeline re-anchors.
MAX_JITTER_MS = 500  # A/V interleave skew of real encoders (SRS tolerates 250–500 ms)
DEFAULT_VIDEO_FRAME_MS = 1000.0 / 30.0  # until measured: the commonest frame rate
DEFAULT_AUDIO_FRAME_MS = 1024 * 1000.0 / 48000.0  # one AAC frame at 48 kHz, 21.3 ms
MAX_FRAME_DURATION_MS = 1000.0  # 1 fps slide captures; longer deltas are gaps, not frames
BITRATE_WINDOW_S = 5  # statistics: bitrate is averaged over the last whole seconds
#: docs/spec.md §3.3 — how long after a superseded encoder left its reconnect from the same
#: address still ranks below the feed that superseded it.
SUPERSEDED_RECONNECT_S = 60.0  # OBS retries every 2–20 s (backoff); ffmpeg loops in scripts
#: docs/spec.md §3.5 — audio a waiting feed sent before its sync frame, kept to fill the switch.
PREROLL_AUDIO_FRAMES = 48  # 1 s of AAC at 48 kHz; a 30 fps switch needs the last 33 ms
#: docs/spec.md §3.5 — how far a switch may move a feed's audio against its video to close a gap.
MAX_AUDIO_REBASE_MS = 40  # ITU-R BT.1359: audio leading video by < 45 ms goes unnoticed
SUPERSEDED_MODES = ("standby", "disconnect")


class Media(enum.Enum):
    """What a frame carries; DATA (onMetaData, cue points) passes through."""

    VIDEO = "video"
    AUDIO = "audio"
    DATA = "data"


@attrs.frozen
class TrackInfo:
    """Decoder parameters a driver read from a configuration frame; all optional."""

    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    profile: str | None = None


@attrs.frozen
class Frame:
    """One media frame as a publisher sent it (timestamps in the feed's own clock).

    `config` marks a sequence header / codec configuration record rather than
    a coded frame; `cts_ms` is PTS − DTS.
    """

    track_id: str
    media: Media
    codec: str
    dts_ms: int
    payload: bytes
    keyframe: bool = False
    config: bool = False
    cts_ms: int = 0
    track_info: TrackInfo | None = None


@attrs.frozen
class OutputFrame:
    """A frame as readers get it: on the source's output timeline.

    `discontinuity` means "(re)initialise this track": it is set on the first
    configuration and coded frame of a track on a timeline, and on the
    configuration frame that changes a track's codec or parameters (a switch
    to an encoder with other settings, a mid-stream reconfiguration) and the
    coded frame after it.  Presentation time is `dts_ms + frame.cts_ms`.
    """

    source_id: str
    frame: Frame
    dts_ms: int
    discontinuity: bool


@attrs.frozen
class TrackDescription:
    """A track of a source as events and statistics show it (docs/spec.md §3.10)."""

    track_id: str
    media: Media
    codec: str
    info: TrackInfo | None = None


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _superseded_mode(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in SUPERSEDED_MODES:
        raise ValueError(f"superseded must be one of {SUPERSEDED_MODES}, got {value!r}")


@attrs.frozen(kw_only=True)
class BundleConfig:
    """Limits of the bundle; every field defaults to the module constant."""

    reconnect_grace_s: float = attrs.field(default=RECONNECT_GRACE_S, validator=_non_negative)
    max_sources_per_stream: int = attrs.field(default=MAX_SOURCES_PER_STREAM, validator=_positive)
    max_source_id_bytes: int = attrs.field(default=MAX_SOURCE_ID_BYTES, validator=_positive)
    max_stream_path_bytes: int = attrs.field(default=MAX_STREAM_PATH_BYTES, validator=_positive)
    max_streams: int = attrs.field(default=MAX_STREAMS, validator=_positive)
    max_feeds_per_source: int = attrs.field(default=MAX_FEEDS_PER_SOURCE, validator=_positive)
    reader_queue_frames: int = attrs.field(default=READER_QUEUE_FRAMES, validator=_positive)
    reader_queue_bytes: int = attrs.field(default=READER_QUEUE_BYTES, validator=_positive)
    max_gop_cache_bytes: int = attrs.field(default=MAX_GOP_CACHE_BYTES, validator=_non_negative)
    max_jitter_ms: int = attrs.field(default=MAX_JITTER_MS, validator=_non_negative)
    #: docs/spec.md §3.3 — "standby": a superseded feed stays as a standby below its
    #: successor; "disconnect": it is ended and its driver closes the connection.
    superseded: str = attrs.field(default="standby", validator=_superseded_mode)
    superseded_reconnect_s: float = attrs.field(
        default=SUPERSEDED_RECONNECT_S, validator=_non_negative
    )
    max_audio_rebase_ms: int = attrs.field(default=MAX_AUDIO_REBASE_MS, validator=_non_negative)


@attrs.frozen(kw_only=True)
class Permissions:
    """What a publisher may do, as the driver worked it out (docs/spec.md §3.7, §5).

    `app_multisource` is the server configuration's gate for the application,
    `token_multisource` the publish token's flag; both are needed for a
    non-default source.  `allowed_source_ids`, when not None, lists every
    source id the token may publish (include `""` to allow the default source).
    """

    app_multisource: bool = False
    token_multisource: bool = False
    allowed_source_ids: frozenset[str] | None = attrs.field(
        default=None, converter=attrs.converters.optional(frozenset)
    )


def _query_pairs(
    query: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    items = query.items() if isinstance(query, Mapping) else query
    return tuple((str(key), str(value)) for key, value in items)


@attrs.frozen(kw_only=True)
class PublishRequest:
    """A publisher asking to put a feed on a source of a stream."""

    stream_path: str
    source_id: str = ""
    priority: int = 0
    permissions: Permissions = Permissions()
    remote_addr: str = ""
    #: unknown query keys of the publishing URL, kept for hooks and the API (docs/spec.md §2)
    query: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_query_pairs)


@attrs.frozen(kw_only=True)
class TimelineResume:
    """Where a source's next timeline starts when another process ran it before
    (docs/spec.md §9: a new owner continues the old owner's output timeline).

    The first frame lands `max(frame duration, wall time since at_wall_s)` after
    `last_dts_ms`, on a timeline whose origin stays `origin_wall_s`.
    """

    last_dts_ms: int
    origin_wall_s: float
    #: wall-clock seconds (Unix time) at which `last_dts_ms` was current
    at_wall_s: float


class RefusalCode(enum.Enum):
    """Why a publish was refused (docs/spec.md §3.7, §3.8)."""

    INVALID_STREAM_PATH = "invalid-stream-path"
    INVALID_SOURCE_ID = "invalid-source-id"
    MULTISOURCE_NOT_PERMITTED = "multisource-not-permitted"
    SOURCE_ID_NOT_ALLOWED = "source-id-not-allowed"
    TOO_MANY_STREAMS = "too-many-streams"
    TOO_MANY_SOURCES = "too-many-sources"
    TOO_MANY_FEEDS = "too-many-feeds"


class FeedState(enum.Enum):
    """Where a feed stands within its source."""

    PENDING = "pending"  # outranks the feed on air (or none is); goes on air at a sync frame
    ON_AIR = "on-air"
    #: outranked: a lower priority, a superseded feed (docs/spec.md §3.3) or a superseded
    #: encoder's reconnect; takes over at a sync frame once every feed above it ended
    STANDBY = "standby"
    ENDED = "ended"


class SourceState(enum.Enum):
    """A source as the control API shows it."""

    PENDING = "pending"  # has feeds, none has gone on air yet
    LIVE = "live"
    RECONNECTING = "reconnecting"  # on-air feed ended; grace period running


class EndReason(enum.Enum):
    """Why a feed ended."""

    UNPUBLISH = "unpublish"
    DISCONNECT = "disconnect"
    IDLE_TIMEOUT = "idle-timeout"
    KICKED = "kicked"
    SUPERSEDED = "superseded"
    SHUTDOWN = "shutdown"


class StartMode(enum.Enum):
    """Where a new reader starts."""

    GOP = "gop"  # cached sequence headers + frames since the last keyframe: instant picture
    LIVE = "live"  # sequence headers now, video from the next keyframe

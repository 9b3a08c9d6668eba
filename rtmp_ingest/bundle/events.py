# Theory of operation
# -------------------
# Everything the bundle reports outward: the events of docs/spec.md §3.10 and the
# statistics records of the control API (docs/spec.md §4).
#
# Events are appended to the registry's event log at the instant the bundle
# changes, so draining the log gives them in causal order.  Per source they
# follow this grammar (the stateful test checks it):
#
#     Active ( Updated | Superseded | Reconnecting Active )* [Reconnecting] Inactive
#
# and a stream's `Stopped` follows the `Inactive` of its last source.  A source
# that never went on air (its only feed ended before a keyframe) emits nothing.
# `Superseded` names a feed that lost the source to a newer equal; with
# `disconnect` (bundle.superseded = "disconnect") that feed has ended, else it
# stays connected as a standby (docs/spec.md §3.3).  A kick (`Registry.kick_feed`)
# emits nothing of its own: it is a feed's end like an unpublish.
#
# Statistics are snapshots: frozen records built on request, never updated.
from __future__ import annotations

import attrs

from rtmp_ingest.bundle.records import (
    EndReason,
    FeedState,
    SourceState,
    TrackDescription,
)


@attrs.frozen(kw_only=True)
class Active:
    """A source went on air (first time, or again after reconnecting).

    `timeline_origin_wall_s` is the wall-clock time of output DTS 0, so outputs
    can put the sources of one stream on a common clock.
    """

    stream_path: str
    source_id: str
    feed_id: int
    tracks: tuple[TrackDescription, ...]
    timeline_origin_wall_s: float


@attrs.frozen(kw_only=True)
class Updated:
    """The tracks of a live source changed (new track, codec or parameters)."""

    stream_path: str
    source_id: str
    feed_id: int
    tracks: tuple[TrackDescription, ...]


@attrs.frozen(kw_only=True)
class Superseded:
    """`feed_id` lost its source to `by_feed_id` (docs/spec.md §3.3).

    With `disconnect` the feed has ended (`bundle.superseded = "disconnect"`):
    the driver tells its publisher and closes the connection.  Without, the
    feed stays connected as a standby ranked below `by_feed_id`; the driver
    does nothing.
    """

    stream_path: str
    source_id: str
    feed_id: int
    by_feed_id: int
    disconnect: bool


@attrs.frozen(kw_only=True)
class Reconnecting:
    """The feed on air ended; the source waits for another feed until `deadline_s`."""

    stream_path: str
    source_id: str
    feed_id: int
    reason: EndReason
    deadline_s: float


@attrs.frozen(kw_only=True)
class Inactive:
    """The source is off air for good; its output timeline is closed."""

    stream_path: str
    source_id: str


@attrs.frozen(kw_only=True)
class Stopped:
    """The stream lost its last source."""

    stream_path: str


Event = Active | Updated | Superseded | Reconnecting | Inactive | Stopped


@attrs.frozen(kw_only=True)
class FeedStatistics:
    """One publishing session."""

    feed_id: int
    stream_path: str
    source_id: str
    priority: int
    state: FeedState
    remote_addr: str
    started_at_s: float
    uptime_s: float
    bytes_in: int
    frames_in: int  # every frame, configuration records and metadata included
    video_frames_in: int  # coded video frames
    audio_frames_in: int  # coded audio frames
    keyframes_in: int  # coded video keyframes
    frames_dropped: int  # received but never shown: before going on air, late, off air
    bitrate_kbps: float
    tracks: tuple[TrackDescription, ...]
    end_reason: EndReason | None


@attrs.frozen(kw_only=True)
class SourceStatistics:
    """One source of a stream and every feed contending for it."""

    stream_path: str
    source_id: str
    state: SourceState
    on_air_feed_id: int | None
    feeds: tuple[FeedStatistics, ...]
    tracks: tuple[TrackDescription, ...]
    supersede_count: int
    frames_out: int
    last_dts_ms: int | None
    frame_duration_ms: float
    timeline_origin_wall_s: float | None
    gop_cache_frames: int
    gop_cache_bytes: int
    reconnect_deadline_s: float | None
    readers: int


@attrs.frozen(kw_only=True)
class StreamStatistics:
    """One stream: the bundle of its sources."""

    stream_path: str
    created_at_s: float
    sources: tuple[SourceStatistics, ...]
    readers: int  # whole-stream readers; per-source readers are counted on sources


@attrs.frozen(kw_only=True)
class ReaderStatistics:
    """One reader's queue; `skips` counts the times it lagged and jumped to a keyframe."""

    stream_path: str
    source_id: str | None
    delivered: int
    dropped: int
    skips: int
    queued: int
    max_frames: int
    closed: bool


@attrs.frozen(kw_only=True)
class RegistryStatistics:
    """The whole registry at a glance."""

    streams: int
    sources: int
    feeds: int
    readers: int
    waiting_readers: int  # attached to a stream path or source that is not live
    events_queued: int

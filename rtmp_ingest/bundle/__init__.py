"""The multisource bundle: streams of sources of feeds (docs/spec.md §3), free of I/O.

Synchronous and clock-free: drivers pass `now_s` (monotonic seconds) and get
decisions, events and frames back.  Start at `Registry`.
"""

from rtmp_ingest.bundle.admission import Admitted, Refused
from rtmp_ingest.bundle.events import (
    Active,
    Event,
    FeedStatistics,
    Inactive,
    ReaderStatistics,
    Reconnecting,
    RegistryStatistics,
    SourceStatistics,
    Stopped,
    StreamStatistics,
    Superseded,
    Updated,
)
from rtmp_ingest.bundle.fanout import Reader, SourceView
from rtmp_ingest.bundle.feed import Feed
from rtmp_ingest.bundle.records import (
    BundleConfig,
    EndReason,
    FeedState,
    Frame,
    Media,
    OutputFrame,
    Permissions,
    PublishRequest,
    RefusalCode,
    SourceState,
    StartMode,
    TimelineResume,
    TrackDescription,
    TrackInfo,
)
from rtmp_ingest.bundle.registry import Registry

__all__ = [
    "Active",
    "Admitted",
    "BundleConfig",
    "EndReason",
    "Event",
    "Feed",
    "FeedState",
    "FeedStatistics",
    "Frame",
    "Inactive",
    "Media",
    "OutputFrame",
    "Permissions",
    "PublishRequest",
    "Reader",
    "ReaderStatistics",
    "Reconnecting",
    "RefusalCode",
    "Refused",
    "Registry",
    "RegistryStatistics",
    "SourceState",
    "SourceStatistics",
    "SourceView",
    "StartMode",
    "Stopped",
    "StreamStatistics",
    "Superseded",
    "TimelineResume",
    "TrackDescription",
    "TrackInfo",
    "Updated",
]

"""A fake server satisfying `rtmp_ingest.api.defs.ApiServer`, with statistics built by hand."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import trio

from rtmp_ingest import config as config_mod
from rtmp_ingest.api.defs import ApiServer
from rtmp_ingest.api.events import EventHub
from rtmp_ingest.auth import tokens
from rtmp_ingest.bundle import (
    FeedState,
    FeedStatistics,
    RegistryStatistics,
    SourceState,
    SourceStatistics,
    StreamStatistics,
)
from rtmp_ingest.bundle.records import Media, TrackDescription, TrackInfo
from rtmp_ingest.outputs.hls import HlsSettings

WALL_ORIGIN_S = 1_767_225_600.0  #: 2026-01-01T00:00:00Z

VIDEO = TrackDescription(
    track_id="video0", media=Media.VIDEO, codec="h264", info=TrackInfo(width=1280, height=720)
)
AUDIO = TrackDescription(track_id="audio0", media=Media.AUDIO, codec="aac")


def feed(feed_id: int, *, path: str, source_id: str, state: FeedState) -> FeedStatistics:
    return FeedStatistics(
        feed_id=feed_id,
        stream_path=path,
        source_id=source_id,
        priority=0,
        state=state,
        remote_addr="127.0.0.1:50000",
        started_at_s=10.0,
        uptime_s=5.0,
        bytes_in=1000,
        frames_in=10,
        video_frames_in=6,
        audio_frames_in=4,
        keyframes_in=1,
        frames_dropped=0,
        bitrate_kbps=100.0,
        tracks=(VIDEO, AUDIO),
        end_reason=None,
    )


def source(path: str, source_id: str, *feeds: FeedStatistics) -> SourceStatistics:
    on_air = next((f.feed_id for f in feeds if f.state is FeedState.ON_AIR), None)
    return SourceStatistics(
        stream_path=path,
        source_id=source_id,
        state=SourceState.LIVE if on_air is not None else SourceState.RECONNECTING,
        on_air_feed_id=on_air,
        feeds=feeds,
        tracks=(VIDEO, AUDIO),
        supersede_count=0,
        frames_out=10,
        last_dts_ms=1000,
        frame_duration_ms=33.3,
        timeline_origin_wall_s=WALL_ORIGIN_S + 10.0 if on_air is not None else None,
        gop_cache_frames=10,
        gop_cache_bytes=1000,
        reconnect_deadline_s=None,
        readers=0,
    )


class FakeRegistry:
    def __init__(self) -> None:
        self.wall_origin_s = WALL_ORIGIN_S
        self.streams: dict[str, StreamStatistics] = {}

    def add(self, path: str, *sources: SourceStatistics) -> None:
        self.streams[path] = StreamStatistics(
            stream_path=path, created_at_s=1.0, sources=sources, readers=0
        )

    def stream_paths(self) -> Iterable[str]:
        return list(self.streams)

    def stream_statistics(self, stream_path: str, *, now_s: float) -> StreamStatistics | None:
        return self.streams.get(stream_path)

    def source_statistics(
        self, stream_path: str, source_id: str, *, now_s: float
    ) -> SourceStatistics | None:
        stream = self.streams.get(stream_path)
        return (
            next((s for s in stream.sources if s.source_id == source_id), None) if stream else None
        )

    def statistics(self) -> RegistryStatistics:
        return RegistryStatistics(
            streams=len(self.streams),
            sources=sum(len(s.sources) for s in self.streams.values()),
            feeds=0,
            readers=0,
            waiting_readers=0,
            events_queued=0,
        )


class FakeHls:
    enabled = False

    def __init__(self) -> None:
        self.settings = HlsSettings()
        self.sources: dict[tuple[str, str], Any] = {}
        self.requests: dict[str, int] = {}
        self.bytes_out = 0
        self.errors = 0

    def frames_unused(self) -> int:
        return 0

    def has_stream(self, stream_path: str) -> bool:
        return False

    def multivariant(self, stream_path: str) -> str | None:
        return None

    def stream_sources(self, stream_path: str) -> list[Any]:
        return []

    async def wait_change(self, key: tuple[str, str]) -> None:
        await trio.sleep_forever()

    def viewer_seen(self, stream_path: str) -> bool:
        return False

    async def wait_any_change(self) -> None:
        await trio.sleep_forever()


class FakeRecorder:
    def __init__(self) -> None:
        self.recordings: dict[tuple[str, str], Any] = {}

    def statistics(self) -> dict[str, int]:
        return {"recording": 0, "bytesWritten": 0, "filesDeleted": 0, "errors": 0}


@attrs.define
class FakeMetrics:
    connections_total: int = 0
    connections_refused: int = 0
    protocol_errors: int = 0
    publishes: int = 0
    supersedes: int = 0
    budget_drops: int = 0
    bytes_in_ended: int = 0
    refused: dict[str, int] = attrs.Factory(dict)
    output_errors: dict[str, int] = attrs.Factory(dict)


@attrs.frozen
class FakeBound:
    rtmp: tuple[str, int] = ("127.0.0.1", 1935)
    http: tuple[str, int] = ("127.0.0.1", 8080)


class FakeKeyring:
    """Signs with auth's real `tokens.mint`; remembers what it issued and revoked."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.issued: list[tuple[str, str]] = []
        self.revoked: set[str] = set()

    def mint(self, claims: tokens.TokenClaims, *, via: str = "") -> str:
        token = tokens.mint(claims, self.secret)
        self.issued.append((claims.token_id, via))
        return token

    def revoke(self, token_id: str, *, now_s: float | None = None) -> bool:
        added = token_id not in self.revoked
        self.revoked.add(token_id)
        return added


@attrs.define
class FakeRtmp:
    pending_total: int = 0


class FakeServer:
    """Records kicks; listeners and feeds are whatever the test sets."""

    def __init__(self, **config: Any) -> None:
        self.config = config_mod.load(None, overrides=config)
        self.registry = FakeRegistry()
        self.hub = EventHub()
        self.bound: FakeBound | None = FakeBound()
        self.metrics = FakeMetrics()
        self.sessions: set[object] = set()
        #: feed id → its ingest session (only `.protocol` is read)
        self.publishers: dict[int, Any] = {}
        self.hls = FakeHls()
        self.recorder = FakeRecorder()
        self.secret = b"fake-secret-fake-secret-0123456789"
        self.keyring: FakeKeyring | None = FakeKeyring(self.secret)
        self.rtmp = FakeRtmp()
        self.listeners = {"rtmp": True, "http": True}
        self.kicks: list[tuple[Any, ...]] = []
        self.live_feeds: set[int] = set()

    def players_of(self, stream_path: str, source_id: str) -> list[Any]:
        return []

    def output_statistics(self) -> dict[str, int]:
        return {"players": 0, "bytes_out": 0, "frames_dropped": 0}

    def kick_source(self, stream_path: str, source_id: str, *, ban_s: float = 0.0) -> bool:
        self.kicks.append(("source", stream_path, source_id, ban_s))
        stats = self.registry.source_statistics(stream_path, source_id, now_s=0.0)
        return stats is not None and stats.on_air_feed_id is not None

    def kick_feed(self, feed_id: int, *, ban_s: float = 0.0) -> bool:
        self.kicks.append(("feed", feed_id, ban_s))
        return feed_id in self.live_feeds

    def listeners_up(self) -> dict[str, bool]:
        return dict(self.listeners)


def _typed(server: FakeServer) -> ApiServer:
    return server  # mypy checks here that the fake satisfies the protocol


def live_stream(server: FakeServer, path: str = "live/show") -> None:
    """One stream: source "cam1" with feed 1 on air and feed 2 standby, the default with feed 3."""
    server.registry.add(
        path,
        source(
            path,
            "cam1",
            feed(1, path=path, source_id="cam1", state=FeedState.ON_AIR),
            feed(2, path=path, source_id="cam1", state=FeedState.STANDBY),
        ),
        source(path, "", feed(3, path=path, source_id="", state=FeedState.ON_AIR)),
    )
    server.live_feeds |= {1, 2, 3}

# Theory of operation
# -------------------
# The registry owns all bundle state (STYLE 9): streams keyed by path, sources
# keyed by source id within a stream, feeds keyed by id, and the readers'
# subscriptions.  It is synchronous and never touches I/O or a clock: every
# call that depends on time takes `now_s` (monotonic seconds, the driver's
# trio.current_time()); wall-clock times are `wall_origin_s + now_s`.
#
# Drivers call it and it answers with values and events:
#   request_publish → Admitted(feed) | Refused(code, reason)   (SPEC.md §3.7, §3.8)
#   push_frame      → the hot path; frames reach readers synchronously
#   end_feed        → unpublish, disconnect, idle timeout, kick (SPEC.md §3.6)
#   tick            → expires reconnect grace periods; call it at next_deadline_s()
#   drain_events    → the events of SPEC.md §3.10 in the order they happened
# A superseded feed's driver learns it from the `Superseded` event (drain the
# log when the event wakeup fires), tells its publisher and closes it; frames
# it pushes meanwhile are ignored.
#
# Readers subscribe to a stream path (every source) or to one source of it.
# A subscription lives independently of sources: a reader may wait for a
# stream or source that does not exist yet (RTMP play waits for a publisher)
# and keeps its place across a source's inactivity; it is served whenever a
# source it matches is on air.  How long to wait is the driver's timeout.
from __future__ import annotations

from collections import deque
from collections.abc import Callable

from rtmp_ingest.bundle.admission import (
    Admitted,
    Refused,
    check_names,
    check_permissions,
    refuse_too_many_feeds,
    refuse_too_many_sources,
    refuse_too_many_streams,
)
from rtmp_ingest.bundle.events import (
    Active,
    Event,
    FeedStatistics,
    RegistryStatistics,
    SourceStatistics,
    Stopped,
    StreamStatistics,
)
from rtmp_ingest.bundle.fanout import Reader
from rtmp_ingest.bundle.feed import Feed
from rtmp_ingest.bundle.records import (
    BundleConfig,
    EndReason,
    Frame,
    PublishRequest,
    StartMode,
)
from rtmp_ingest.bundle.source import Source


class _Stream:
    """A stream path and its sources; exists while it has at least one source."""

    __slots__ = ("created_at_s", "ever_active", "sources", "stream_path")

    def __init__(self, stream_path: str, now_s: float) -> None:
        self.stream_path = stream_path
        self.created_at_s = now_s
        self.sources: dict[str, Source] = {}
        self.ever_active = False  # an Active was emitted: its removal emits Stopped


class Registry:
    """All streams, sources, feeds and readers of one server process."""

    def __init__(self, config: BundleConfig | None = None, *, wall_origin_s: float = 0.0) -> None:
        self.config = config if config is not None else BundleConfig()
        #: wall-clock seconds (Unix time) = wall_origin_s + now_s
        self.wall_origin_s = wall_origin_s
        self._streams: dict[str, _Stream] = {}
        self._feeds: dict[int, Feed] = {}
        self._next_feed_id = 1
        self._events: deque[Event] = deque()
        self._event_wakeup: Callable[[], None] | None = None
        self._deadlines: dict[Source, float] = {}
        self._source_taps: dict[tuple[str, str], list[Reader]] = {}
        self._stream_taps: dict[str, list[Reader]] = {}

    # -- publishing --------------------------------------------------------------

    def request_publish(self, request: PublishRequest, *, now_s: float) -> Admitted | Refused:
        """Admit a feed onto its source, or refuse it without changing anything."""
        self._expire_due(now_s)
        refusal = check_names(request, self.config) or check_permissions(request)
        if refusal is not None:
            return refusal
        stream = self._streams.get(request.stream_path)
        source = None if stream is None else stream.sources.get(request.source_id)
        if stream is None and len(self._streams) >= self.config.max_streams:
            return refuse_too_many_streams(self.config)
        if (
            source is None
            and stream is not None
            and len(stream.sources) >= self.config.max_sources_per_stream
        ):
            return refuse_too_many_sources(request, self.config)
        if source is not None and len(source._feeds) >= self.config.max_feeds_per_source:
            return refuse_too_many_feeds(request, self.config)
        if stream is None:
            stream = self._streams[request.stream_path] = _Stream(request.stream_path, now_s)
        if source is None:
            source = stream.sources[request.source_id] = Source(
                self, request.stream_path, request.source_id, now_s
            )
            self._retarget(source)
        feed = Feed(
            feed_id=self._next_feed_id,
            stream_path=request.stream_path,
            source_id=request.source_id,
            priority=request.priority,
            remote_addr=request.remote_addr,
            query=request.query,
            now_s=now_s,
            source=source,
        )
        self._next_feed_id += 1
        self._feeds[feed.feed_id] = feed
        source.add_feed(feed)
        return Admitted(feed, feed.state)

    def push_frame(self, feed: Feed, frame: Frame, *, now_s: float) -> None:
        """Route one frame of `feed` (ignored if the feed has ended or lost its source)."""
        feed._source.push(feed, frame, now_s)

    def end_feed(
        self, feed: Feed, reason: EndReason = EndReason.DISCONNECT, *, now_s: float
    ) -> None:
        """`feed` stopped publishing; idempotent."""
        source = feed._source
        source.end_feed(feed, reason, now_s)
        self._feeds.pop(feed.feed_id, None)
        self._expire_due(now_s)  # a zero grace period expires at once
        if source.is_empty:
            self._remove_source(source)

    def find_feed(self, feed_id: int) -> Feed | None:
        """The live feed with this id (for the control API's kick), if any."""
        return self._feeds.get(feed_id)

    # -- time ----------------------------------------------------------------------

    def next_deadline_s(self) -> float | None:
        """When `tick` has work to do next, or None."""
        return min(self._deadlines.values(), default=None)

    def tick(self, *, now_s: float) -> None:
        """Expire every reconnect grace period due at `now_s` (SPEC.md §3.6)."""
        self._expire_due(now_s)

    def _expire_due(self, now_s: float) -> None:
        while self._deadlines:
            source, deadline_s = min(self._deadlines.items(), key=lambda item: item[1])
            if deadline_s > now_s:
                return
            del self._deadlines[source]
            source.expire()
            if source.is_empty:
                self._remove_source(source)

    def _schedule_deadline(self, source: Source) -> None:
        assert source._deadline_s is not None
        self._deadlines[source] = source._deadline_s

    def _cancel_deadline(self, source: Source) -> None:
        self._deadlines.pop(source, None)

    def _remove_source(self, source: Source) -> None:
        stream = self._streams.get(source.stream_path)
        if stream is None or stream.sources.get(source.source_id) is not source:
            return  # already removed
        del stream.sources[source.source_id]
        self._deadlines.pop(source, None)
        source._targets = ()
        if not stream.sources:
            del self._streams[stream.stream_path]
            if stream.ever_active:
                self._emit(Stopped(stream_path=stream.stream_path))

    def _forget_feed(self, feed: Feed) -> None:
        self._feeds.pop(feed.feed_id, None)

    # -- events --------------------------------------------------------------------

    def drain_events(self) -> list[Event]:
        """Every event since the last drain, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    def set_event_wakeup(self, wakeup: Callable[[], None] | None) -> None:
        """Call `wakeup()` when the event log turns non-empty (now, if it already is).

        Like a reader's hook it must only signal; an exception removes it.
        """
        self._event_wakeup = wakeup
        if self._events:
            self._wake_events()

    def _emit(self, event: Event) -> None:
        if type(event) is Active:
            self._streams[event.stream_path].ever_active = True
        self._events.append(event)
        if len(self._events) == 1:
            self._wake_events()

    def _wake_events(self) -> None:
        wakeup = self._event_wakeup
        if wakeup is None:
            return
        try:
            wakeup()
        except Exception:  # noqa: BLE001 - a subscriber's wakeup must never break the registry
            self._event_wakeup = None

    # -- readers -------------------------------------------------------------------

    def subscribe(
        self,
        stream_path: str,
        source_id: str | None = None,
        *,
        max_frames: int | None = None,
        start: StartMode = StartMode.GOP,
    ) -> Reader:
        """A reader of one source (`source_id`) or of every source of a stream (None).

        It is served at once from the GOP cache (or live, see StartMode) if a
        matching source is on air, otherwise as soon as one goes on air.
        """
        if max_frames is None:
            max_frames = self.config.reader_queue_frames
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames!r}")
        reader = Reader(stream_path, source_id, max_frames=max_frames, on_close=self._detach)
        if source_id is None:
            self._stream_taps.setdefault(stream_path, []).append(reader)
        else:
            self._source_taps.setdefault((stream_path, source_id), []).append(reader)
        for source in self._matching_sources(stream_path, source_id):
            self._retarget(source)
            if source._on_air is not None:
                reader._start(source, from_gop=start is StartMode.GOP)
        return reader

    def _detach(self, reader: Reader) -> None:
        if reader.source_id is None:
            taps = self._stream_taps.get(reader.stream_path, [])
        else:
            taps = self._source_taps.get((reader.stream_path, reader.source_id), [])
        if reader in taps:
            taps.remove(reader)
        if not taps and reader.source_id is None:
            self._stream_taps.pop(reader.stream_path, None)
        elif not taps:
            self._source_taps.pop((reader.stream_path, reader.source_id), None)
        for source in self._matching_sources(reader.stream_path, reader.source_id):
            self._retarget(source)

    def _matching_sources(self, stream_path: str, source_id: str | None) -> list[Source]:
        stream = self._streams.get(stream_path)
        if stream is None:
            return []
        if source_id is None:
            return list(stream.sources.values())
        source = stream.sources.get(source_id)
        return [] if source is None else [source]

    def _retarget(self, source: Source) -> None:
        source._targets = tuple(
            self._source_taps.get((source.stream_path, source.source_id), ())
        ) + tuple(self._stream_taps.get(source.stream_path, ()))

    # -- statistics -------------------------------------------------------------------

    def stream_paths(self) -> tuple[str, ...]:
        return tuple(self._streams)

    def stream_statistics(self, stream_path: str, *, now_s: float) -> StreamStatistics | None:
        stream = self._streams.get(stream_path)
        if stream is None:
            return None
        return StreamStatistics(
            stream_path=stream_path,
            created_at_s=stream.created_at_s,
            sources=tuple(s.statistics(now_s=now_s) for s in stream.sources.values()),
            readers=len(self._stream_taps.get(stream_path, ())),
        )

    def source_statistics(
        self, stream_path: str, source_id: str, *, now_s: float
    ) -> SourceStatistics | None:
        stream = self._streams.get(stream_path)
        source = None if stream is None else stream.sources.get(source_id)
        return None if source is None else source.statistics(now_s=now_s)

    def feed_statistics(self, feed: Feed, *, now_s: float) -> FeedStatistics:
        return feed.statistics(now_s=now_s)

    def statistics(self) -> RegistryStatistics:
        readers = waiting = 0
        for (path, source_id), taps in self._source_taps.items():
            readers += len(taps)
            live = [s for s in self._matching_sources(path, source_id) if s._on_air is not None]
            waiting += 0 if live else len(taps)
        for path, taps in self._stream_taps.items():
            readers += len(taps)
            live = [s for s in self._matching_sources(path, None) if s._on_air is not None]
            waiting += 0 if live else len(taps)
        return RegistryStatistics(
            streams=len(self._streams),
            sources=sum(len(stream.sources) for stream in self._streams.values()),
            feeds=len(self._feeds),
            readers=readers,
            waiting_readers=waiting,
            events_queued=len(self._events),
        )

# Theory of operation
# -------------------
# The registry owns all bundle state (docs/style.md §9): streams keyed by path, sources
# keyed by source id within a stream, feeds keyed by id, and the readers'
# subscriptions.  It is synchronous and never touches I/O or a clock: every
# call that depends on time takes `now_s` (monotonic seconds, the driver's
# trio.current_time()); wall-clock times are `wall_origin_s + now_s`.
#
# Drivers call it and it answers with values and events:
#   request_publish → Admitted(feed) | Refused(code, reason)   (docs/spec.md §3.7, §3.8)
#   push_frame      → the hot path; frames reach readers synchronously
#   end_feed        → unpublish, disconnect, idle timeout (docs/spec.md §3.6)
#   kick_feed       → an operator ends any feed, on air or standby, by id
#   tick            → expires reconnect grace periods; call it at next_deadline_s()
#   drain_events    → the events of docs/spec.md §3.10 in the order they happened
# A superseded feed's driver learns it from the `Superseded` event (drain the
# log when the event wakeup fires); when `disconnect` is set it tells its
# publisher and closes it (frames it pushes meanwhile are ignored), otherwise
# the feed stays connected as a standby (docs/spec.md §3.3).  Refusing a kicked
# client's reconnects for a while (bans) is the auth layer's business.
#
# Sources report to the registry only through the events they emit (`_on_event`):
# it learns reconnect deadlines from `Reconnecting` (cleared by `Active` and
# `Inactive`) and keeps them in a heap with lazy deletion, and it drops a feed
# from its index when it ends: by `end_feed`/`kick_feed`, or by a
# `Superseded` event with `disconnect`.
#
# Readers subscribe to a stream path (every source) or to one source of it.
# A subscription lives independently of sources: a reader may wait for a
# stream or source that does not exist yet (RTMP play waits for a publisher)
# and keeps its place across a source's inactivity; it is served whenever a
# source it matches is on air.  How long to wait is the driver's timeout.
from __future__ import annotations

import heapq
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
    Inactive,
    Reconnecting,
    RegistryStatistics,
    SourceStatistics,
    Stopped,
    StreamStatistics,
    Superseded,
)
from rtmp_ingest.bundle.fanout import Reader
from rtmp_ingest.bundle.feed import Feed
from rtmp_ingest.bundle.records import (
    BundleConfig,
    EndReason,
    Frame,
    PublishRequest,
    StartMode,
    TimelineResume,
)
from rtmp_ingest.bundle.source import Source

#: Timelines to carry on kept for sources not created yet: a node that takes over a
#: dead owner's streams learns every source at once, and a source never published again
#: must not be kept for ever.
MAX_RESUMES = 4096


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
        self._wall_origin_s = wall_origin_s
        self._streams: dict[str, _Stream] = {}
        self._feeds: dict[int, Feed] = {}
        self._next_feed_id = 1
        self._events: deque[Event] = deque()
        self._event_wakeup: Callable[[], None] | None = None
        # Reconnect deadlines: the current one per source, and a heap of
        # (deadline, sequence, key) where entries no longer current are skipped.
        self._deadlines: dict[tuple[str, str], float] = {}
        self._deadline_heap: list[tuple[float, int, tuple[str, str]]] = []
        self._deadline_seq = 0
        self._source_taps: dict[tuple[str, str], list[Reader]] = {}
        self._stream_taps: dict[str, list[Reader]] = {}
        #: timelines to carry on (docs/spec.md §9) for sources not created yet
        self._resumes: dict[tuple[str, str], TimelineResume] = {}

    @property
    def wall_origin_s(self) -> float:
        """Wall-clock seconds (Unix time) = wall_origin_s + now_s."""
        return self._wall_origin_s

    @wall_origin_s.setter
    def wall_origin_s(self, value: float) -> None:
        self._wall_origin_s = value
        for stream in self._streams.values():
            for source in stream.sources.values():
                source.set_wall_origin(value)

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
        if source is not None and source.feed_count >= self.config.max_feeds_per_source:
            return refuse_too_many_feeds(request, self.config)
        if stream is None:
            stream = self._streams[request.stream_path] = _Stream(request.stream_path, now_s)
        if source is None:
            source = stream.sources[request.source_id] = Source(
                request.stream_path,
                request.source_id,
                now_s,
                config=self.config,
                emit=self._on_event,
                wall_origin_s=self._wall_origin_s,
            )
            resume = self._resumes.pop((request.stream_path, request.source_id), None)
            if resume is not None:
                source.resume_from(resume)
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
        source.add_feed(feed, now_s)
        return Admitted(feed, feed.state)

    def resume_timeline(self, stream_path: str, source_id: str, resume: TimelineResume) -> bool:
        """The source's next output timeline continues after `resume` (docs/spec.md §9: a
        stream's new owner carries on where the old one was). Kept for a source that does
        not exist yet (at most MAX_RESUMES of them, the oldest dropped); False when the
        source runs a timeline now, which then carries on unchanged."""
        stream = self._streams.get(stream_path)
        source = None if stream is None else stream.sources.get(source_id)
        if source is not None:
            return source.resume_from(resume)
        self._resumes.pop((stream_path, source_id), None)
        self._resumes[(stream_path, source_id)] = resume
        while len(self._resumes) > MAX_RESUMES:
            del self._resumes[next(iter(self._resumes))]
        return True

    def push_frame(self, feed: Feed, frame: Frame, *, now_s: float) -> None:
        """Route one frame of `feed` (ignored if the feed has ended or lost its source)."""
        feed.source.push(feed, frame, now_s)

    def end_feed(
        self, feed: Feed, reason: EndReason = EndReason.DISCONNECT, *, now_s: float
    ) -> None:
        """`feed` stopped publishing; idempotent."""
        source = feed.source
        source.end_feed(feed, reason, now_s)
        self._feeds.pop(feed.feed_id, None)
        self._expire_due(now_s)  # a zero grace period expires at once
        if source.is_empty:
            self._remove_source(source)

    def kick_feed(self, feed_id: int, *, now_s: float) -> Feed | None:
        """End a connected feed (on air, pending or standby) for an operator (docs/spec.md §3.3).

        Returns the feed, now ended with EndReason.KICKED, so the driver can
        close its publisher; None if no connected feed has this id.
        """
        feed = self._feeds.get(feed_id)
        if feed is None:
            return None
        self.end_feed(feed, EndReason.KICKED, now_s=now_s)
        return feed

    def find_feed(self, feed_id: int) -> Feed | None:
        """The connected feed with this id (on air, pending or standby), if any."""
        return self._feeds.get(feed_id)

    # -- time ----------------------------------------------------------------------

    def next_deadline_s(self) -> float | None:
        """When `tick` has work to do next, or None."""
        heap = self._deadline_heap
        while heap and self._deadlines.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # cancelled or replaced
        return heap[0][0] if heap else None

    def tick(self, *, now_s: float) -> None:
        """Expire every reconnect grace period due at `now_s` (docs/spec.md §3.6)."""
        self._expire_due(now_s)

    def _expire_due(self, now_s: float) -> None:
        while True:
            deadline_s = self.next_deadline_s()
            if deadline_s is None or deadline_s > now_s:
                return
            _, _, key = heapq.heappop(self._deadline_heap)
            del self._deadlines[key]
            stream = self._streams.get(key[0])
            source = None if stream is None else stream.sources.get(key[1])
            if source is None:
                continue
            source.expire(now_s)
            if source.is_empty:
                self._remove_source(source)

    def _remove_source(self, source: Source) -> None:
        stream = self._streams.get(source.stream_path)
        if stream is None or stream.sources.get(source.source_id) is not source:
            return  # already removed
        del stream.sources[source.source_id]
        self._deadlines.pop((source.stream_path, source.source_id), None)
        source.set_readers(())
        if not stream.sources:
            del self._streams[stream.stream_path]
            if stream.ever_active:
                self._emit(Stopped(stream_path=stream.stream_path))

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

    def _on_event(self, event: Event) -> None:
        """A source's report: keep the deadlines and the feed index, then log it."""
        kind = type(event)
        if kind is Active:
            assert isinstance(event, Active)
            self._streams[event.stream_path].ever_active = True
            self._deadlines.pop((event.stream_path, event.source_id), None)
        elif kind is Reconnecting:
            assert isinstance(event, Reconnecting)
            key = (event.stream_path, event.source_id)
            self._deadlines[key] = event.deadline_s
            self._deadline_seq += 1
            heapq.heappush(self._deadline_heap, (event.deadline_s, self._deadline_seq, key))
        elif kind is Inactive:
            assert isinstance(event, Inactive)
            self._deadlines.pop((event.stream_path, event.source_id), None)
        elif kind is Superseded:
            assert isinstance(event, Superseded)
            if event.disconnect:
                self._feeds.pop(event.feed_id, None)
        self._emit(event)

    def _emit(self, event: Event) -> None:
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
        reader = Reader(
            stream_path,
            source_id,
            max_frames=max_frames,
            max_bytes=self.config.reader_queue_bytes,
            on_close=self._detach,
        )
        if source_id is None:
            self._stream_taps.setdefault(stream_path, []).append(reader)
        else:
            self._source_taps.setdefault((stream_path, source_id), []).append(reader)
        for source in self._matching_sources(stream_path, source_id):
            self._retarget(source)
            if source.live:
                reader.start(source, from_gop=start is StartMode.GOP)
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
        elif not taps and reader.source_id is not None:
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
        source.set_readers(
            tuple(self._source_taps.get((source.stream_path, source.source_id), ()))
            + tuple(self._stream_taps.get(source.stream_path, ()))
        )

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
            live = [s for s in self._matching_sources(path, source_id) if s.live]
            waiting += 0 if live else len(taps)
        for path, taps in self._stream_taps.items():
            readers += len(taps)
            live = [s for s in self._matching_sources(path, None) if s.live]
            waiting += 0 if live else len(taps)
        return RegistryStatistics(
            streams=len(self._streams),
            sources=sum(len(stream.sources) for stream in self._streams.values()),
            feeds=len(self._feeds),
            readers=readers,
            waiting_readers=waiting,
            events_queued=len(self._events),
        )

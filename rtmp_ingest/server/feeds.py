"""The publishing side every ingest driver shares: live feeds, the bundle's pump and clock.

A driver (RTMP today; SRT and WHIP beside it) asks the registry for a feed and then
reports it here (`feed_started`, `end_feed`); `Feeds` keeps the session of every live
feed so it can be told to go (supersede in disconnect mode, an operator's kick).

`Feeds.viewers` counts who watches which stream on this node, whatever the protocol
(RTMP and HTTP-FLV players, from their wait for a source to their end; WHEP viewers,
from their POST to their end; HLS clients, as "seen" at each request): the one place a
cluster node's on-demand pulls (cluster/pulls.py, docs/spec.md §9) learn that a stream
is wanted here and, later, that nobody has watched it for a while.

The pump drains bundle events and hands each to the outputs registered as sinks
(events for SSE, HLS, recording) — an exception in one sink's handling of one
stream's event is contained there: logged once per sink and stream, counted in
`rtmp_ingest_output_errors_total{output=...}`, never the pump. The clock calls
`registry.tick` when a reconnect grace period expires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import trio

from rtmp_ingest.bundle import EndReason, Registry, Superseded
from rtmp_ingest.server.counters import Metrics
from rtmp_ingest.server.logtext import quoted, shown

if TYPE_CHECKING:
    from rtmp_ingest.server.ingest import IngestSession
    from rtmp_ingest.server.play import Player

log = logging.getLogger("rtmp_ingest")

#: Streams whose last viewer's time is remembered (paths asked for and gone are forgotten
#: oldest first past this: a client asking for random paths cannot grow it without bound).
MAX_VIEWED_STREAMS = 65536


class Viewers:
    """Local viewers per stream path (see the module docstring); synchronous, no I/O.

    `wanted(path)`, when set, is called at every arrival and sighting (so it must be
    cheap): it returns True when a source of the stream is on its way or here (a cluster
    pull), so a request that would find nothing may wait for it."""

    def __init__(self) -> None:
        self._present: dict[str, int] = {}
        #: stream path → trio time the last viewer left or was seen (oldest first)
        self._last_s: dict[str, float] = {}
        self.wanted: Callable[[str], bool] | None = None
        #: told when a stream's last present viewer left (the idle countdown starts)
        self.left: Callable[[str], None] | None = None

    def arrive(self, stream_path: str) -> bool:
        """A viewer of `stream_path` is here until `leave`; True if a source is coming."""
        count = self._present.get(stream_path, 0)
        self._present[stream_path] = count + 1
        return self._want(stream_path)

    def leave(self, stream_path: str) -> None:
        count = self._present.get(stream_path, 0) - 1
        if count > 0:
            self._present[stream_path] = count
            return
        self._present.pop(stream_path, None)
        self._seen_now(stream_path)
        if self.left is not None:
            self.left(stream_path)

    def seen(self, stream_path: str, *, window_s: float = 0.0) -> bool:
        """A viewer without a session (an HLS request) was here just now and counts as
        watching for `window_s` more (until its next request is due); True if a source of
        the stream is coming (see the class docstring)."""
        wanted = self._want(stream_path)
        until = trio.current_time() + window_s
        if self._last_s.get(stream_path, float("-inf")) < until:
            self._remember(stream_path, until)
        return wanted

    @contextmanager
    def watching(self, stream_path: str) -> Iterator[bool]:
        """`arrive` … `leave` around a block; yields what `arrive` returned."""
        coming = self.arrive(stream_path)
        try:
            yield coming
        finally:
            self.leave(stream_path)

    def present(self, stream_path: str) -> int:
        """Viewers of `stream_path` here now (HLS clients are never "present", only seen)."""
        return self._present.get(stream_path, 0)

    def idle_since(self, stream_path: str) -> float | None:
        """When the last viewer of `stream_path` left or stops counting as seen (trio
        time, maybe ahead); None while one is present; -inf when none ever was (or it
        was forgotten)."""
        if stream_path in self._present:
            return None
        return self._last_s.get(stream_path, float("-inf"))

    def _want(self, stream_path: str) -> bool:
        return self.wanted(stream_path) if self.wanted is not None else False

    def _seen_now(self, stream_path: str) -> None:
        now = trio.current_time()
        self._remember(stream_path, max(now, self._last_s.get(stream_path, now)))

    def _remember(self, stream_path: str, at_s: float) -> None:
        self._last_s.pop(stream_path, None)
        self._last_s[stream_path] = at_s
        while len(self._last_s) > MAX_VIEWED_STREAMS:
            del self._last_s[next(iter(self._last_s))]


class Feeds:
    """Live feeds by id, players, and the bundle's event pump and clock."""

    def __init__(self, registry: Registry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics
        self.publishers: dict[int, IngestSession] = {}
        self.players: set[Player] = set()
        #: viewers per stream, every protocol (see the module docstring)
        self.viewers = Viewers()
        #: set (and replaced) whenever the bundle changed; players wait on it for a source
        self.bundle_changed = trio.Event()
        self._sinks: list[tuple[str, Callable[[Any], None]]] = []
        #: (sink, stream) pairs whose failure was logged already
        self._failures: set[tuple[str, str]] = set()
        self._poke = trio.Event()

    def add_sink(self, name: str, handler: Callable[[Any], None]) -> None:
        """`handler(event)` gets every bundle event, in order (see the module docstring)."""
        self._sinks.append((name, handler))

    # -- feeds -------------------------------------------------------------------------

    def feed_started(self, session: IngestSession) -> None:
        assert session.feed is not None
        self.publishers[session.feed.feed_id] = session
        self.metrics.publishes += 1
        self._poke.set()

    def end_feed(self, session: IngestSession, reason: EndReason) -> None:
        feed = session.feed
        if feed is None:
            return
        if self.publishers.pop(feed.feed_id, None) is None:
            return
        now = trio.current_time()
        stats = feed.statistics(now_s=now)
        self.metrics.bytes_in_ended += stats.bytes_in
        if feed.end_reason is None:
            self.registry.end_feed(feed, reason, now_s=now)
        log.info(
            "unpublish stream=%s sourceId=%s protocol=%s remote=%s feed=%d reason=%s bytes=%d "
            "uptime=%.1fs%s",
            shown(feed.stream_path),
            quoted(feed.source_id),
            session.protocol,
            session.remote,
            feed.feed_id,
            (feed.end_reason or reason).value,
            stats.bytes_in,
            stats.uptime_s,
            f" malformed={session.malformed}" if session.malformed else "",
        )
        self._poke.set()

    def kick_source(self, stream_path: str, source_id: str) -> bool:
        """Ends the feed on air of a source (operator action); False if none."""
        stats = self.registry.source_statistics(stream_path, source_id, now_s=trio.current_time())
        if stats is None or stats.on_air_feed_id is None:
            return False
        return self.kick_feed(stats.on_air_feed_id)

    def kick_feed(self, feed_id: int) -> bool:
        """Ends one feed, on air or standby (operator action); False if it is not live."""
        session = self.publishers.get(feed_id)
        if session is None or session.feed is None:
            return False
        feed = session.feed
        self.registry.kick_feed(feed_id, now_s=trio.current_time())
        session.kick(EndReason.KICKED, "Your feed was stopped by the server operator.")
        log.info(
            "kick stream=%s sourceId=%s protocol=%s remote=%s feed=%d",
            shown(feed.stream_path),
            quoted(feed.source_id),
            session.protocol,
            session.remote,
            feed_id,
        )
        return True

    # -- the pump and the clock ----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump_events)
            nursery.start_soon(self._clock)
            task_status.started()

    async def _pump_events(self) -> None:
        wake = trio.Event()
        self.registry.set_event_wakeup(wake.set)
        while True:
            await wake.wait()
            wake = trio.Event()
            self.registry.set_event_wakeup(wake.set)
            for event in self.registry.drain_events():
                self._on_bundle_event(event)
            self.bundle_changed.set()
            self.bundle_changed = trio.Event()

    def _on_bundle_event(self, event: Any) -> None:
        if isinstance(event, Superseded):
            self.metrics.supersedes += 1
            session = self.publishers.get(event.feed_id)
            log.info(
                "supersede stream=%s sourceId=%s protocol=%s remote=%s feed=%d by_feed=%d %s",
                shown(event.stream_path),
                quoted(event.source_id),
                session.protocol if session else "-",
                session.remote if session else "-",
                event.feed_id,
                event.by_feed_id,
                "disconnected" if event.disconnect else "standby",
            )
            if session is not None and event.disconnect:
                session.kick(
                    EndReason.SUPERSEDED,
                    f"Superseded: a newer feed took over sourceId {event.source_id!r} "
                    f"of {event.stream_path}.",
                )
        else:
            source = getattr(event, "source_id", None)
            log.info(
                "%s stream=%s%s",
                type(event).__name__.lower(),
                shown(event.stream_path),
                f" sourceId={quoted(source)}" if source is not None else "",
            )
        for name, handler in self._sinks:
            self._deliver(name, handler, event)

    def _deliver(self, name: str, handler: Callable[[Any], None], event: Any) -> None:
        try:
            handler(event)
        except Exception as exc:  #: one stream's output must never stop the daemon
            self.metrics.output_errors[name] = self.metrics.output_errors.get(name, 0) + 1
            stream_path = getattr(event, "stream_path", "")
            if (name, stream_path) not in self._failures:
                self._failures.add((name, stream_path))
                log.error(
                    "output error output=%s stream=%s event=%s: %s: %s "
                    "(logged once per output and stream; counted in metrics)",
                    name,
                    shown(stream_path),
                    type(event).__name__,
                    type(exc).__name__,
                    shown(str(exc)),
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )

    async def _clock(self) -> None:
        """Calls registry.tick when a grace period expires."""
        while True:
            deadline = self.registry.next_deadline_s()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._poke.wait()
            self._poke = trio.Event()
            self.registry.tick(now_s=trio.current_time())

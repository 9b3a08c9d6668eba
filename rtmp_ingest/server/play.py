"""Playing one source: find it (or wait for it), read it, hand frames to a sender.

RTMP play and HTTP-FLV share this loop; they differ only in how a frame goes out
(`send` writes an RTMP message or an FLV tag). The player asks for
`APP/STREAM?sourceId=cam1`; with no sourceId it gets the default source, or,
when the stream has no default source, the live source whose feed on air has
the highest priority (the oldest among equals). A stream or source that is not
live yet is waited for up to `play_wait_s` (nginx-rtmp's idle streams); so is
one that goes away: the reader stays attached across a reconnect, and only
when nothing comes back within `play_wait_s` does the play end. From its wait to its
end a player counts as a viewer of its stream (`Feeds.viewers`): on a cluster node that
is what starts and keeps the pulls of a stream owned elsewhere (docs/spec.md §9).

A slow player never slows ingest: the bundle's reader queue drops and skips to
the next keyframe (counted) while `send` is blocked on the socket.

Eager delivery (RTMP play on plain TCP): the consumer may pass `deliver`, which
the reader's wakeup calls synchronously, inside the publisher's push, to send
the new frames at once (one non-blocking write) instead of waking the player's
task one scheduler round later. It returns False when it cannot finish (the
socket is full, a write is in progress): the task is woken as usual and gets an
empty batch, its cue to flush what `deliver` left over.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

import attrs
import trio

from rtmp_ingest.bundle import SourceState, StartMode
from rtmp_ingest.outputs.flv import PlayerTrack

if TYPE_CHECKING:
    from rtmp_ingest.bundle import Reader
    from rtmp_ingest.server.feeds import Feeds


@attrs.define(eq=False)
class Player:
    """One viewer connection (RTMP or HTTP-FLV), for statistics and the API."""

    kind: str  #: "rtmp" | "flv"
    stream_path: str
    source_id: str | None
    remote: str
    track: PlayerTrack
    started_at: float = attrs.Factory(time.time)
    reader: Reader | None = None
    #: reader statistics of readers this player closed
    dropped_before: int = 0
    skips_before: int = 0
    end_reason: str = "closed"

    def dropped(self) -> int:
        stats = self.reader.statistics() if self.reader is not None else None
        return self.dropped_before + (stats.dropped if stats else 0)

    def skips(self) -> int:
        stats = self.reader.statistics() if self.reader is not None else None
        return self.skips_before + (stats.skips if stats else 0)


def resolve_source(feeds: Feeds, stream_path: str, requested: str | None) -> str | None:
    """The source a player of `stream_path` gets now, or None if it must wait."""
    registry = feeds.registry
    stats = registry.stream_statistics(stream_path, now_s=trio.current_time())
    if stats is None:
        return None
    live = [
        s for s in stats.sources if s.state is SourceState.LIVE and s.on_air_feed_id is not None
    ]
    if requested is not None:
        return requested if any(s.source_id == requested for s in live) else None
    if any(s.source_id == "" for s in live):
        return ""
    best = None
    for source in live:
        feed = next((f for f in source.feeds if f.feed_id == source.on_air_feed_id), None)
        if feed is None:
            continue
        key = (feed.priority, -feed.feed_id)
        if best is None or key > best[0]:
            best = (key, source.source_id)
    return best[1] if best else None


def _eager_hook(
    deliver: Callable[[Reader], bool], reader: Reader, wake: trio.Event, delivered: list[int]
) -> Callable[[], None]:
    def hook() -> None:
        try:
            if deliver(reader):
                delivered[0] += 1
                return
        except Exception:  # noqa: BLE001 - never into the publisher's push: the task reports it
            pass
        wake.set()

    return hook


async def wait_for_source(
    feeds: Feeds, stream_path: str, requested: str | None, timeout_s: float
) -> str | None:
    """Waits until a source to play is live; None after `timeout_s`. The waiting viewer
    counts as one of the stream's (a cluster node starts pulling it)."""
    with feeds.viewers.watching(stream_path), trio.move_on_after(timeout_s):
        while True:
            changed = feeds.bundle_changed
            source_id = resolve_source(feeds, stream_path, requested)
            if source_id is not None:
                return source_id
            await changed.wait()
    return None


async def play_batches(
    feeds: Feeds,
    player: Player,
    *,
    wait_s: float,
    deliver: Callable[[Reader], bool] | None = None,
) -> AsyncGenerator[list[tuple[int, int, bytes]]]:
    """Yields batches of (type, timestamp, body) for a player until its source is gone.

    Ends when no source turned up within `wait_s` (`player.end_reason` "not-found")
    or the source stayed away for `wait_s` ("ended"); the consumer may stop earlier.
    """
    feeds.viewers.arrive(player.stream_path)
    try:
        source_id = await wait_for_source(feeds, player.stream_path, player.source_id, wait_s)
        if source_id is None:
            player.end_reason = "not-found"
            return
        reader = feeds.registry.subscribe(player.stream_path, source_id, start=StartMode.GOP)
        player.reader = reader
        feeds.players.add(player)
        convert = player.track.convert
        #: frames `deliver` sent without waking this task: the idle wait counts from the last
        delivered = [0]
        try:
            while True:
                wake = trio.Event()
                if deliver is None:
                    reader.set_wakeup(wake.set)
                else:
                    reader.set_wakeup(_eager_hook(deliver, reader, wake, delivered))
                frames = reader.drain_nowait()
                if frames:
                    batch = [m for m in map(convert, frames) if m is not None]
                    if batch:
                        yield batch
                    continue
                before = delivered[0]
                with trio.move_on_after(wait_s) as idle:
                    await wake.wait()
                if idle.cancelled_caught:
                    if delivered[0] != before:
                        continue  #: frames went out meanwhile: not idle, wait again from now
                    if resolve_source(feeds, player.stream_path, source_id) is None:
                        player.end_reason = "ended"
                        return
                elif deliver is not None:
                    yield []  #: `deliver` could not finish: the consumer flushes what it left
        finally:
            feeds.players.discard(player)
            feeds.metrics.player_bytes_ended += player.track.bytes
            feeds.metrics.player_dropped_ended += reader.statistics().dropped
            player.dropped_before += reader.statistics().dropped
            player.skips_before += reader.statistics().skips
            reader.close()
            player.reader = None
    finally:
        feeds.viewers.leave(player.stream_path)

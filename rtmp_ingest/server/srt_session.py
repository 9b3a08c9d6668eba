"""One SRT publisher in the trio thread: its TS demuxer, its feed, its end.

The server (server/srt.py) creates a session when libsrt accepts a caller that
the listen callback admitted, hands it each batch its reader thread read
(`receive`, in the trio thread), and tells it when the connection broke
(`end`). `run` waits for the end — disconnect, the idle timeout, or `kick()`
(supersede, operator, shutdown) — then ends the feed and asks the server to
close the socket. SRT has no status message after the handshake: a kicked
caller sees the connection close; the reason is in the server's log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs
import trio

from rtmp_ingest.bundle import Admitted, EndReason, Refused
from rtmp_ingest.server.placement import PlacementError, RemoteOwner
from rtmp_ingest.server.srt_relay import RelayedMedia
from rtmp_ingest.srt import lib
from rtmp_ingest.srt.streamid import StreamId
from rtmp_ingest.ts import TsError, TsMedia

if TYPE_CHECKING:
    from rtmp_ingest.server.srt import SrtServer

log = logging.getLogger("rtmp_ingest.srt")

#: The idle deadline moves at most this often.
IDLE_DEADLINE_STEP_S = 1.0


@attrs.define
class Pending:
    """An admitted caller between the listen callback and srt_accept."""

    feed: Any
    record: bool
    stream_id: StreamId
    remote: str
    deadline_s: float
    #: the bundle request a publish to be relayed makes if it is served here after all
    request: Any = None
    #: the other process known to hold the stream: the session relays it (no `feed`)
    holder: str | None = None


class SrtSession:
    """One SRT publisher: its socket, its TS demuxer and its feed."""

    protocol = "srt"

    @property
    def malformed(self) -> int:
        """Frames dropped as damaged (lost or corrupt TS packets) so far."""
        return int(self.media.dropped)

    reconnect_capable = False  #: SRT has no E-RTMP ReconnectRequest

    def __init__(self, server: SrtServer, sock: int, pending: Pending) -> None:
        self.server = server
        self.sock = sock
        self.remote = pending.remote
        self.remote_ip = pending.remote.rsplit(":", 1)[0].strip("[]")
        self.feed: Any = pending.feed
        self.record = pending.record
        self.stream_path = pending.stream_id.path
        self.pending_query = pending.stream_id.query
        self.source_id = pending.stream_id.source_id
        self.media = TsMedia()
        self.bytes_in = 0
        self._ended = trio.Event()
        self._end_reason = EndReason.DISCONNECT
        self._kick: tuple[EndReason, str] | None = None
        self._scope = trio.CancelScope()
        self._deadline = trio.CancelScope()
        self._media_at = 0.0
        self._reported_drops = 0
        #: a publish of a stream served elsewhere (server/srt_relay.py): its media and
        #: the bundle request to make if it turns out to be served here after all
        self.relayed: RelayedMedia | None = None
        self._request = pending.request
        self._holder = pending.holder
        self.owner: RemoteOwner | None = None
        self._relay_end = ""
        if self.feed is None:
            self.relayed = RelayedMedia(max_backlog_bytes=server.relay_backlog_bytes)

    def kick(self, reason: EndReason, description: str) -> None:
        """Ends the session from outside (supersede, operator, shutdown); idempotent."""
        if self._kick is None:
            self._kick = (reason, description)
        self._scope.cancel()

    def statistics(self) -> dict[str, Any]:
        """SRT link statistics for the API (RTT, loss, retransmits), {} once closed."""
        try:
            stats = lib.statistics(self.sock)
        except lib.SrtError:
            return {}
        return {
            **attrs.asdict(stats),
            "ts_packets": self.media.demux.packets,
            "ts_continuity_errors": self.media.demux.cc_errors,
            "frames_dropped": self.media.dropped,
        }

    # -- in the trio thread ---------------------------------------------------------

    def receive(self, data: bytes, now_s: float) -> None:
        """Demuxes bytes from the worker and pushes the frames."""
        self.bytes_in += len(data)
        try:
            frames = self.media.receive(data)
        except TsError as exc:
            log.info(
                "protocol error remote=%s stream=%s sourceId=%r srt: %s",
                self.remote,
                self.stream_path,
                self.source_id,
                exc,
            )
            self.end(EndReason.DISCONNECT)
            return
        feed = self.feed
        if feed is None:
            assert self.relayed is not None
            stop = self.relayed.push(frames)
            if stop is not None:
                self._stop(stop)
        else:
            registry = self.server.host.registry
            for frame in frames:
                registry.push_frame(feed, frame, now_s=now_s)
        if frames and now_s - self._media_at > IDLE_DEADLINE_STEP_S:
            self._media_at = now_s
            self._deadline.deadline = now_s + self.server.config.idle_timeout_s
        if self.media.dropped and not self._reported_drops:
            self._reported_drops = self.media.dropped
            log.warning(
                "damaged media dropped remote=%s stream=%s sourceId=%r srt: %s",
                self.remote,
                self.stream_path,
                self.source_id,
                self.media.first_error,
            )

    def end(self, reason: EndReason) -> None:
        self._end_reason = reason
        self._ended.set()

    def _stop(self, why: str) -> None:
        """A relayed publish ends (the owner's refusal or goodbye, a relay too slow)."""
        if not self._ended.is_set():
            self._relay_end = why
            self.end(EndReason.DISCONNECT)

    async def run(self) -> None:
        reason = EndReason.DISCONNECT
        try:
            with self._scope:
                self._deadline.deadline = trio.current_time() + self.server.config.idle_timeout_s
                with self._deadline:
                    async with trio.open_nursery() as nursery:
                        if self.relayed is not None:
                            nursery.start_soon(self._place)
                        await self._ended.wait()
                        nursery.cancel_scope.cancel()
                    reason = self._end_reason
                if self._deadline.cancelled_caught:
                    reason = EndReason.IDLE_TIMEOUT
                    log.info(
                        "timeout remote=%s stream=%s sourceId=%r srt: no media for %.0f s",
                        self.remote,
                        self.stream_path,
                        self.source_id,
                        self.server.config.idle_timeout_s,
                    )
        finally:
            if self._kick is None and self.server.stopping:
                reason = EndReason.SHUTDOWN
            if self._kick is not None:
                reason, description = self._kick
                log.info(
                    "closing remote=%s stream=%s sourceId=%r srt: %s",
                    self.remote,
                    self.stream_path,
                    self.source_id,
                    description,
                )
            if self.feed is None:
                log.info(
                    "relay end stream=%s sourceId=%r protocol=srt remote=%s owner=%s: %s",
                    self.stream_path,
                    self.source_id,
                    self.remote,
                    self.owner.node_id if self.owner is not None else self._holder,
                    self._relay_end or (self._kick[1] if self._kick else f"encoder {reason.value}"),
                )
            relayed = self.relayed
            if relayed is not None and relayed.relay is not None:
                relayed.relay.close()
            if self.feed is not None:
                self.server.host.end_feed(self, reason)
            self.server.release(self)

    # -- a publish of a stream served elsewhere (server/srt_relay.py) --------------------

    async def _place(self) -> None:
        """Finds the owner; publishes here after all, or relays there until either ends."""
        placement = self.server.placement
        assert placement is not None and self.relayed is not None
        try:
            owner = await placement.owner_of(self.stream_path)
            if owner is None:
                self._publish_here()
                return
            self.owner = owner
            relay = placement.open_relay(
                owner,
                stream_path=self.stream_path,
                query=dict(self.pending_query),
                app=self.stream_path.partition("/")[0],
                remote=self.remote,
                protocol=self.protocol,  #: the owner shows the source as SRT
            )
            refusal = await relay.open()
        except PlacementError as exc:
            self._stop(f"refused: {exc}")
            return
        if refusal is not None:
            self._stop(f"refused by the owner: {refusal}")
            return
        log.info(
            "relay stream=%s sourceId=%r protocol=srt remote=%s owner=%s rtmp=%s:%d",
            self.stream_path,
            self.source_id,
            self.remote,
            owner.node_id,
            owner.rtmp_host,
            owner.rtmp_port,
        )
        try:
            stop = self.relayed.attach(relay)
            if stop is not None:
                self._stop(stop)
            self._stop(await relay.run())
        finally:
            relay.close()

    def _publish_here(self) -> None:
        """The stream is served by this process after all: an ordinary SRT feed."""
        assert self.relayed is not None
        now = trio.current_time()
        registry = self.server.host.registry
        result = registry.request_publish(self._request, now_s=now)
        if isinstance(result, Refused):
            self._stop(f"refused here: {result.reason}")
            return
        assert isinstance(result, Admitted)
        backlog = self.relayed.take_backlog()
        self.relayed = None
        self.feed = result.feed
        self.server.host.feed_started(self)
        log.info(
            "publish stream=%s sourceId=%r remote=%s feed=%d srt (served here after all)",
            self.stream_path,
            self.source_id,
            self.remote,
            self.feed.feed_id,
        )
        for frame in backlog:
            registry.push_frame(self.feed, frame, now_s=now)

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

from rtmp_ingest.bundle import EndReason
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
        registry = self.server.host.registry
        feed = self.feed
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

    async def run(self) -> None:
        reason = EndReason.DISCONNECT
        try:
            with self._scope:
                self._deadline.deadline = trio.current_time() + self.server.config.idle_timeout_s
                with self._deadline:
                    await self._ended.wait()
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
            self.server.host.end_feed(self, reason)
            self.server.release(self)

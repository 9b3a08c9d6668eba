"""What an RTMP connection does as a player: play, pause, and the end of a play.

`RtmpSession` (server/rtmp.py) is one connection; this mixin is the part of it that
serves a player (docs/spec.md §4):

- `_on_play` checks the request (one play per connection, `layer=N`), hands it to the
  stream's worker when another one owns it (server/elsewhere.py), counts a pull from
  another node apart (its credentials vouch for it), accepts, and starts `_play`.
- `_play` follows the source through `play_batches` (server/play.py): a GOP to start
  from, then live frames. New frames go out from inside the publisher's push when
  the socket takes them at once (`deliver`, the eager path measured in bench_play);
  otherwise the task writes them. A play ends with a status the player logs: the
  stream is not found, or it ended.
- A paused player is written nothing, so `_check_paused_peer` pings it to notice one
  that stopped reading.

The state it uses is the session's own (a mixin, so the session's attributes are its
attributes); `_on_play` is called from the session's event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

import trio

from rtmp_ingest.outputs.flv import PlayerTrack
from rtmp_ingest.rtmp import ProtocolError, StreamState
from rtmp_ingest.rtmp import events as ev
from rtmp_ingest.server.logtext import quoted, shown
from rtmp_ingest.server.play import Player, play_batches

if TYPE_CHECKING:
    from rtmp_ingest.rtmp import ServerConnection
    from rtmp_ingest.server.listener import RtmpListener

log = logging.getLogger("rtmp_ingest.rtmp")

#: How often a paused player is pinged to see that it still reads.
PAUSED_PING_INTERVAL_S = 5.0


class Playing:
    """An RTMP player's part of the session (see above)."""

    if TYPE_CHECKING:
        #: the session's own, used here (server/rtmp.py `RtmpSession`)
        server: RtmpListener
        conn: ServerConnection
        remote: str
        counted_ip: str | None
        stream_path: str
        source_id: str
        fourcc_list: list[str]
        player: Player | None
        _fd: int
        _outbox: bytearray
        _out_wake: trio.Event
        _writing: bool
        _closing: bool
        _closed: bool
        _broken: bool
        _farewell: bool
        _paused: bool
        _pong: trio.Event
        _play_stopped: bool
        _play_scope: trio.CancelScope | None
        _scope: trio.CancelScope
        _deadline: trio.CancelScope
        _nursery: trio.Nursery | None

        def queue_output(self) -> None: ...
        def _owned_elsewhere(self, request: ev.PublishRequested | ev.PlayRequested) -> bool: ...
        async def _flush(self) -> None: ...

    def _on_play(self, event: ev.PlayRequested) -> None:
        address = event.address
        if self.server.handoff is not None and self._owned_elsewhere(event):
            return
        self.stream_path = address.path
        requested = address.query.get("sourceId")
        self.source_id = requested or ""
        layer = address.query.get("layer", "0") or "0"
        if self.player is not None or not address.stream or not layer.isdigit():
            self.conn.reject_play(
                event.stream_id,
                "Bad play request: one play per connection, "
                "rtmp://HOST/APP/STREAM[?sourceId=ID][&layer=N].",
                code="NetStream.Play.Failed",
            )
            return
        placement = self.server.placement
        if placement is not None and placement.inbound(address.path, address.query, "")[1]:
            self.server.uncount(self)  #: another node's pull (cluster/relay.py `pull_source`)
        self.conn.accept_play(event.stream_id)
        self._deadline.deadline = float("inf")  #: players may stay silent for hours
        self.player = Player(
            "rtmp",
            address.path,
            requested,
            self.remote,
            PlayerTrack(video_track=f"video{int(layer)}", legacy_only=not self.fourcc_list),
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._play, event.stream_id)
        log.info(
            "play stream=%s sourceId=%s remote=%s layer=%s",
            shown(address.path),
            quoted(requested),
            self.remote,
            layer,
        )

    async def _play(self, stream_id: int) -> None:
        assert self.player is not None
        conn = self.conn
        senders = {8: conn.send_audio, 9: conn.send_video, 18: conn.send_data}
        player = self.player
        reason = "stopped"
        convert = player.track.convert
        fd = self._fd
        self._play_stopped = False

        def deliver(reader: Any) -> bool:
            """Sends new frames now, from inside the publisher's push (see play.py)."""
            if self._outbox or self._writing or self._closing or self._closed or self._play_stopped:
                return False
            for message in map(convert, reader.drain_nowait()):
                if message is not None:
                    senders[message[0]](stream_id, message[1], message[2])
            data = conn.data_to_send()
            if not data:
                return True
            try:
                sent = os.write(fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  #: the task's flush meets the error and ends the play
            if sent == len(data):
                return True
            self._outbox += data[sent:]
            self._out_wake.set()
            return False

        try:
            with trio.CancelScope() as scope:
                self._play_scope = scope
                try:
                    # aclosing: the reader (and its eager hook) is detached the moment the
                    # loop ends, not whenever the generator is collected
                    async with contextlib.aclosing(
                        play_batches(
                            self.server.feeds,
                            player,
                            wait_s=self.server.config.rtmp.play_wait_s,
                            deliver=deliver if fd >= 0 else None,
                        )
                    ) as batches:
                        async for batch in batches:
                            for type_id, timestamp_ms, body in batch:
                                senders[type_id](stream_id, timestamp_ms, body)
                            await self._flush()
                    reason = player.end_reason
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    reason = "disconnected"
                    self._scope.cancel()
                except ProtocolError:
                    reason = "protocol-error"  #: the peer broke the protocol: nothing more to send
                    self._scope.cancel()
                except trio.TooSlowError:
                    reason = "too-slow"
                    self._broken = True  #: a full socket: no goodbye to wait for
                    self._scope.cancel()
        finally:
            self._play_stopped = True
            log.info(
                "play end stream=%s sourceId=%s remote=%s reason=%s bytes=%d dropped=%d",
                shown(player.stream_path),
                quoted(player.source_id),
                self.remote,
                reason,
                player.track.bytes,
                player.dropped(),
            )
        if (
            reason in ("not-found", "ended")
            and conn.error is None
            and conn.stream_state(stream_id) is StreamState.PLAYING
        ):
            description = (
                "No such stream or source is live."
                if reason == "not-found"
                else "The stream ended."
            )
            conn.end_play(
                stream_id,
                description,
                code="NetStream.Play.StreamNotFound"
                if reason == "not-found"
                else "NetStream.Play.UnpublishNotify",
            )
            self._farewell = True
            await self._flush()
            self._scope.cancel()

    async def _check_paused_peer(self) -> None:
        """While a player is paused nothing is written, so nothing would notice a peer that
        stopped reading: it is pinged every PAUSED_PING_INTERVAL_S and dropped when an
        answer does not come within `rtmp.write_timeout_s`, like any peer that does not
        read (players answer pings while paused: librtmp, FFmpeg, OBS do)."""
        timeout_s = self.server.config.rtmp.write_timeout_s
        while self._paused and not self._closing and self.conn.error is None:
            self._pong = trio.Event()
            self.conn.ping(int(trio.current_time() * 1000) & 0xFFFFFFFF)
            self.queue_output()
            with trio.move_on_after(timeout_s) as waited:
                await self._pong.wait()
            if waited.cancelled_caught:
                log.info(
                    "paused player not answering remote=%s stream=%s: dropped after %.0fs",
                    self.remote,
                    shown(self.stream_path or "-"),
                    timeout_s,
                )
                self._broken = True
                self._scope.cancel()
                return
            await trio.sleep(PAUSED_PING_INTERVAL_S)

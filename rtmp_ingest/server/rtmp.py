"""The RTMP connection driver: one trio task per connection around the sans-IO core.

Shape (trio-websocket): one reader loop feeds socket bytes to the core and acts
on its events; writes go through a `StrictFIFOLock` with a write timeout; every
wait on the peer has a deadline — the handshake (`handshake_timeout_s`), the
commands up to publish/play (`command_timeout_s`), and for a publisher the idle
timeout, pushed forward by every media message. A player's reads have no
deadline (players may send nothing for hours); its writes do.

Publishing: the address and token become a `PublishRequest`; the bundle admits
or refuses it. A refusal sends the error status and closes the connection
(librtmp clients hang otherwise). An admitted feed's media is parsed into
frames and pushed into the bundle synchronously — the bundle never blocks.
When the bundle supersedes the feed, the operator kicks it, or the server
shuts down, `kick()` cancels the reader loop; the session then tells the
publisher why (an error status it will log) and closes.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, cast

import trio

from rtmp_ingest.auth import (
    Permit,
    PublishAttempt,
    Refusal,
    RefusalCode,
    TokenClaims,
    refusal_from_bundle,
)
from rtmp_ingest.bundle import Admitted, EndReason, Refused
from rtmp_ingest.cluster.handoff import Handoff
from rtmp_ingest.rtmp import (
    NEED_DATA,
    PAUSED,
    ProtocolError,
    ServerConnection,
    StreamState,
)
from rtmp_ingest.rtmp import events as ev
from rtmp_ingest.server.elsewhere import IDLE_DEADLINE_STEP_S, OwnerElsewhere
from rtmp_ingest.server.logtext import quoted, shown
from rtmp_ingest.server.media import FeedMedia
from rtmp_ingest.server.play import Player
from rtmp_ingest.server.rtmp_play import Playing

if TYPE_CHECKING:
    from rtmp_ingest.bundle import Feed
    from rtmp_ingest.server.listener import RtmpListener

log = logging.getLogger("rtmp_ingest.rtmp")


#: Bytes per socket read: several video chunks at once keeps per-read overhead low.
RECEIVE_BYTES = 65536


class RtmpSession(OwnerElsewhere, Playing):
    """One RTMP connection: a publisher, or a player (server/rtmp_play.py)."""

    def __init__(
        self,
        server: RtmpListener,
        stream: trio.abc.Stream,
        remote: str,
        *,
        secure: bool,
        handed_in: Handoff | None = None,
    ) -> None:
        self.server = server
        self.stream = stream
        self.remote = remote
        #: the relay's address when another node or worker vouched for the encoder
        #: (server/elsewhere.py `_vouched`: `remote` is then the encoder's)
        self.relayed_by: str | None = None
        #: the address this connection counts against (None: not counted, server/listener.py
        #: `uncount`)
        self.counted_ip: str | None = None
        self.remote_ip = remote.rsplit(":", 1)[0].strip("[]")
        self.secure = secure
        self.protocol = "rtmps" if secure else "rtmp"
        self.conn = ServerConnection(limits=server.config.rtmp.limits())
        #: bytes taken from the core, not yet on the socket; only `_writer` sends them
        self._outbox = bytearray()
        self._out_wake = trio.Event()
        #: set (and replaced) each time the writer finished a send
        self._sent = trio.Event()
        self._writing = False
        #: the socket failed or a write was cut: nothing more may be written
        self._broken = False
        #: a status was sent that the peer must get to read (refusal, kick, shutdown)
        self._farewell = False
        #: the publish as the policy saw it, and the token's claims (for the unpublish hook)
        self._attempt: PublishAttempt | None = None
        self._claims: TokenClaims | None = None
        #: this connection's share of the listener's `pending_total` (partial input bytes)
        self._pending = 0
        #: the most partial input it ever held (big ones ask for memory to be given back)
        self.pending_peak = 0
        #: a player that paused: pinged, and dropped if it stops answering (see below)
        self._paused = False
        self._pong = trio.Event()
        #: the first malformed media message of the feed was logged (later ones are counted)
        self._drop_logged = False
        self.feed: Feed | None = None
        #: whether this publisher's feeds are recorded (app setting, or the token's claim)
        self.record = False
        self.publish_stream_id: int | None = None
        self.stream_path = ""
        self.source_id = ""
        self.media = FeedMedia()
        self.reconnect_capable = False
        self._scope = trio.CancelScope()
        self._deadline = trio.CancelScope()
        self._kick: tuple[EndReason, str] | None = None
        self._closing = False
        self.app = ""
        self.fourcc_list: list[str] = []
        self._nursery: trio.Nursery | None = None
        self._play_scope: trio.CancelScope | None = None
        self.player: Player | None = None
        self._media_at = 0.0
        #: the socket's descriptor for the fast read path (-1: TLS, use the stream)
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._idle_timeout_s = server.config.rtmp.idle_timeout_s
        #: set before the socket is closed / when play ends (eager delivery checks them)
        self._closed = False
        self._play_stopped = False
        #: hand-off to another worker, relay to another node (server/elsewhere.py)
        self._init_elsewhere(server, handed_in)

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        config = self.server.config.rtmp
        reason = EndReason.DISCONNECT
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer)
                with self._scope:
                    self._deadline.deadline = trio.current_time() + config.handshake_timeout_s
                    try:
                        with self._deadline:
                            await self._serve()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self._broken = True
                    except trio.TooSlowError:
                        self._broken = True
                        log.info(
                            "write timeout remote=%s stream=%s sourceId=%s: peer too slow, dropped",
                            self.remote,
                            shown(self.stream_path or "-"),
                            quoted(self.source_id),
                        )
                if self._deadline.cancelled_caught:
                    reason = (
                        EndReason.IDLE_TIMEOUT if self.feed is not None else EndReason.DISCONNECT
                    )
                    what = (
                        "media"
                        if self.feed is not None
                        else (
                            "the handshake" if not self.conn.handshake_complete else "publish/play"
                        )
                    )
                    log.info(
                        "timeout remote=%s stream=%s sourceId=%s waiting for %s",
                        self.remote,
                        shown(self.stream_path or "-"),
                        quoted(self.source_id),
                        what,
                    )
                if self._play_scope is not None:
                    self._play_scope.cancel()
                if self._handoff_to is not None and not self._broken and self._kick is None:
                    if await self._hand_over(*self._handoff_to):
                        nursery.cancel_scope.cancel()
                        return
                reason = self._end_feed_now(reason)
                if not self._broken:
                    await self._goodbye()
                nursery.cancel_scope.cancel()
        finally:
            self._closed = True  #: no eager delivery may touch the descriptor from here on
            self.server.pending_total -= self._pending
            self._pending = 0
            self._end_feed_now(reason)
            await trio.aclose_forcefully(self.stream)

    @property
    def malformed(self) -> int:
        return self.media.dropped

    def kick(self, reason: EndReason, description: str) -> None:
        """Ends this session from outside (supersede, operator, shutdown); idempotent."""
        if self._kick is None:
            self._kick = (reason, description)
        self._scope.cancel()

    def queue_output(self) -> None:
        """Hands what the core has to send to the writer, without waiting for it."""
        data = self.conn.data_to_send()
        if data:
            self._outbox += data
            self._out_wake.set()

    def _end_feed_now(self, reason: EndReason) -> EndReason:
        """Tells the publisher why (if kicked) and ends its feed; returns the reason used."""
        if self._kick is not None:
            reason, description = self._kick
            if (
                self.conn.error is None
                and self.publish_stream_id is not None
                and self.conn.stream_state(self.publish_stream_id)
                in (StreamState.PUBLISHING, StreamState.PUBLISH_PENDING)
            ):
                self.conn.end_publish(self.publish_stream_id, description)
                self._farewell = True
            elif self._kick[0] is EndReason.SHUTDOWN or self.player is not None:
                self._farewell = True
        if self.feed is not None:
            self._feed_ended(reason)
        return reason

    async def _goodbye(self) -> None:
        """The last words: status out, write side shut, then wait for the peer to close.

        Closing a socket that still has unread input sends RST, and the peer's stack
        then drops what it had not yet read — the error status the encoder would log.
        So after the status the write side is shut (FIN), and input is read and thrown
        away until the peer closes or `rtmp.goodbye_s` passes. The whole goodbye is
        bounded by `goodbye_s` however stalled the peer is.
        """
        data = self.conn.data_to_send()
        if data:
            self._outbox += data
            self._farewell = True
        if not self._farewell and not self._outbox and not self._writing:
            return
        with trio.move_on_after(self.server.config.rtmp.goodbye_s):
            self._out_wake.set()
            while self._outbox or self._writing:
                await self._sent.wait()
            if self._farewell:
                send_eof = getattr(self.stream, "send_eof", None)
                if send_eof is not None:
                    try:
                        await send_eof()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        return
                try:
                    while await self.stream.receive_some(RECEIVE_BYTES):
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  #: the peer reset instead of closing: nothing more to wait for

    async def _writer(self) -> None:
        """The one task that writes to the socket: sends the outbox, in order.

        Bytes leave the core only synchronously (`_take`), straight into the outbox, so
        no cancellation can lose or split a chunk; this task is cancelled only when the
        session is over, when a half-sent chunk no longer matters.
        """
        try:
            while True:
                while not self._outbox:
                    await self._out_wake.wait()
                    self._out_wake = trio.Event()
                data = bytes(self._outbox)
                self._outbox.clear()
                self._writing = True
                try:
                    await self.stream.send_all(data)
                finally:
                    self._writing = False
                    self._sent.set()
                    self._sent = trio.Event()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._broken = True
            self._sent.set()
            self._scope.cancel()

    async def _flush(self) -> None:
        """Sends what the core has to send; returns when it is on the socket.

        Raises TooSlowError when the peer has not taken it within `write_timeout_s`.
        """
        data = self.conn.data_to_send()
        if data:
            if self._fd >= 0 and not self._outbox and not self._writing:
                #: plain TCP with no write in progress: try the socket directly; the common
                #: case (room in the send buffer) then costs one system call and no timer
                try:
                    sent = os.write(self._fd, data)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self._broken = True
                    raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
                if sent == len(data):
                    return
                data = data[sent:]
            self._outbox += data
            self._out_wake.set()
        if not self._outbox and not self._writing:
            return
        if self._broken:
            raise trio.BrokenResourceError("socket connection broken")
        with trio.fail_after(self.server.config.rtmp.write_timeout_s):
            while self._outbox or self._writing:
                await self._sent.wait()
                if self._broken:
                    raise trio.BrokenResourceError("socket connection broken")

    # -- the reader loop -----------------------------------------------------------------

    async def _serve(self) -> None:
        conn = self.conn
        if self._handed_in is not None:
            self._resume(self._handed_in)
            if conn.pending_bytes != self._pending:
                self._account_pending()
            await self._flush()
        while not self._closing:
            data = await self._receive()
            if self._reads is not None:
                self._reads.add(data)
            conn.receive_data(data)
            if not conn.handshake_complete and data:
                await self._flush()
                continue
            self._handle_events()
            if conn.pending_bytes != self._pending:
                self._account_pending()
            await self._flush()
            if not data:
                return

    def _account_pending(self) -> None:
        """Keeps the listener's total of partial input; over budget, someone is dropped.

        `rtmp.max_pending_bytes_total` bounds what all connections' partial messages hold
        together. When this connection's growth crosses it: a stranger (not publishing)
        is dropped itself; an admitted publisher instead has the largest stranger
        dropped, and is dropped itself only when no stranger holds anything.
        """
        server = self.server
        pending = self.conn.pending_bytes
        if pending > self.pending_peak:
            self.pending_peak = pending
        server.pending_total += pending - self._pending
        grew = pending > self._pending
        self._pending = pending
        budget = server.config.rtmp.max_pending_bytes_total
        if not grew or server.pending_total <= budget:
            return
        victim: RtmpSession = self
        if self.feed is not None:
            strangers = [s for s in server.sessions if s.feed is None and s._pending > 0]
            if strangers:
                victim = max(strangers, key=lambda s: s._pending)
        server.metrics.budget_drops += 1
        log.warning(
            "memory budget remote=%s stream=%s: dropped, holding %d bytes of partial input "
            "(all connections: %d > rtmp.max_pending_bytes_total=%d)",
            victim.remote,
            shown(victim.stream_path or "-"),
            victim._pending,
            server.pending_total,
            budget,
        )
        #: its share is released now (its memory goes with it), so it is dropped once
        server.pending_total -= victim._pending
        victim._pending = 0
        victim._broken = True  #: no goodbye: it is the input that is too much
        victim._closing = True
        victim._scope.cancel()

    async def _receive(self) -> bytes:
        """The next bytes from the peer (b"" at EOF).

        For plain TCP this waits for readability and then reads the descriptor, one
        system call per wakeup instead of trio's try-read-then-wait (measured: ~30 %
        less CPU per publisher on loopback at 60 publishers). TLS goes through the stream.
        """
        if self._fd < 0:
            return bytes(await self.stream.receive_some(RECEIVE_BYTES))
        fd = self._fd
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                return os.read(fd, RECEIVE_BYTES)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    def _handle_events(self) -> None:
        conn = self.conn
        registry = self.server.registry
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                log.info(
                    "protocol error remote=%s stream=%s sourceId=%s: %s",
                    self.remote,
                    shown(self.stream_path or "-"),
                    quoted(self.source_id),
                    exc.message,
                )
                self.server.metrics.protocol_errors += 1
                self._closing = True
                return
            if event is NEED_DATA or event is PAUSED:
                return
            cls = type(event)
            if cls is ev.VideoData or cls is ev.AudioData:
                #: the hot path: one type() test for both media kinds
                media = cast("ev.VideoData | ev.AudioData", event)
                feed = self.feed
                if feed is None:
                    if self.relay is not None:
                        self._relay_media(9 if cls is ev.VideoData else 8, media)
                    continue
                frames = (self.media.video if cls is ev.VideoData else self.media.audio)(
                    media.timestamp_ms, media.payload
                )
                now = trio.current_time()
                for frame in frames:
                    registry.push_frame(feed, frame, now_s=now)
                if now - self._media_at > IDLE_DEADLINE_STEP_S:
                    #: moving a trio deadline re-sorts the timer heap: do it about once a second
                    self._media_at = now
                    self._deadline.deadline = now + self._idle_timeout_s
                if self.media.dropped and not self._drop_logged:
                    #: once per feed; the count goes into the unpublish line
                    self._drop_logged = True
                    log.warning(
                        "malformed media dropped remote=%s stream=%s sourceId=%s: %s",
                        self.remote,
                        shown(self.stream_path),
                        quoted(self.source_id),
                        shown(self.media.first_error or ""),
                    )
            elif isinstance(event, ev.DataMessage):
                if self.feed is not None:
                    now = trio.current_time()
                    for frame in self.media.data(
                        event.timestamp_ms, event.name, event.values, event.payload
                    ):
                        registry.push_frame(self.feed, frame, now_s=now)
                elif self.relay is not None:
                    self._relay_media(18, event)
            elif isinstance(event, ev.ConnectRequested):
                self._on_connect(event)
            elif isinstance(event, ev.PublishRequested):
                self._on_publish(event)
            elif isinstance(event, ev.PlayRequested):
                self._on_play(event)
            elif isinstance(event, ev.Unpublished):
                if self.relay is not None and event.stream_id == self.publish_stream_id:
                    self.relay.close()
                if self.feed is not None and event.stream_id == self.publish_stream_id:
                    self._feed_ended(EndReason.UNPUBLISH)
                    #: the connection may publish again (OBS does after a stop/start)
                    self.publish_stream_id = None
                    self.media = FeedMedia()
                    self._drop_logged = False
            elif isinstance(event, ev.PlayStopped):
                self._play_stopped = True
                if self._play_scope is not None:
                    self._play_scope.cancel()
            elif isinstance(event, ev.ReceiveMedia):
                if self.player is not None:
                    setattr(self.player.track, f"want_{event.media}", event.enabled)
            elif isinstance(event, ev.Paused):
                if self.player is not None:
                    self.player.track.want_audio = self.player.track.want_video = not event.paused
                    self._paused = event.paused
                    if event.paused and self._nursery is not None:
                        self._nursery.start_soon(self._check_paused_peer)
            elif isinstance(event, ev.PingResponse):
                self._pong.set()
            elif isinstance(event, ev.ConnectionClosed):
                self._closing = True
                return
            if conn.state.value == "closed":
                self._closing = True
                return

    # -- decisions -----------------------------------------------------------------------

    def _on_connect(self, event: ev.ConnectRequested) -> None:
        self._connected(event)
        self.conn.accept_connect()
        self._deadline.deadline = trio.current_time() + self.server.config.rtmp.command_timeout_s
        log.debug(
            "connect remote=%s app=%s tcUrl=%s flashVer=%s",
            self.remote,
            quoted(event.app),
            quoted(event.tc_url),
            quoted(str(event.properties.get("flashVer"))),
        )

    def _connected(self, event: ev.ConnectRequested) -> None:
        """What the session keeps of the connect (also when a hand-off replays it)."""
        self.app = event.app.partition("?")[0].partition("/")[0]
        self.reconnect_capable = bool(event.caps_ex & 0x1)
        self.fourcc_list = event.fourcc_list

    def _refuse(self, stream_id: int, refusal: Refusal) -> None:
        """Tells the encoder why (its log shows the status text) and ends the session."""
        self.conn.reject_publish(stream_id, refusal.status_text, code=refusal.rtmp_code)
        self.server.metrics.count_refusal(refusal.code.value)
        log.info("%s", refusal.log_text)
        self._closing = True

    def _on_publish(self, event: ev.PublishRequested) -> None:
        if self.server.handoff is not None and self._owned_elsewhere(event):
            return  #: workers: the stream's worker on this machine decides (and places) it
        placement = self.server.placement
        if placement is not None and self.feed is None and self.relay is None:
            #: a cluster: the owner is found first (it may take a Redis round trip)
            assert self._nursery is not None
            self._nursery.start_soon(self._place_then_publish, event, placement)
            return
        hook = self.server.handoff
        if hook is not None:
            #: a worker: another worker's relay (SRT, cluster/relay.py) vouches for the encoder
            query, vouched = hook.inbound(event.address.path, event.address.query, self.remote)
            self._admit(event, query, self._vouched(vouched))
            return
        self._admit(event, event.address.query, self.remote)

    def _admit(self, event: ev.PublishRequested, query: dict[str, str], remote: str) -> None:
        """The publish as this process decides it (policy, hook, bundle)."""
        address = event.address
        self.stream_path = address.path
        self.source_id = query.get("sourceId", "")
        attempt = PublishAttempt.from_query(
            protocol=self.protocol,  # type: ignore[arg-type]
            stream_path=address.path,
            query=query,
            remote=remote,
        )
        if self.feed is not None or self.relay is not None:
            self._refuse(
                event.stream_id,
                Refusal.of(
                    RefusalCode.ALREADY_PUBLISHING,
                    "This connection already publishes a stream.",
                    attempt=attempt,
                ),
            )
            return
        authorizer = self.server.authorizer
        assert authorizer is not None
        hook = authorizer.hook
        if hook is not None and hook.wants("publish"):
            #: the hook answers over HTTP: decide in a task; the core holds the media
            #: behind the publish (PAUSED) until then, within the stranger's allowance
            assert self._nursery is not None
            self._nursery.start_soon(self._authorize_then_decide, event, attempt)
            return
        self._decided(event, attempt, authorizer.decide_nowait(attempt))

    async def _authorize_then_decide(
        self, event: ev.PublishRequested, attempt: PublishAttempt
    ) -> None:
        assert self.server.authorizer is not None
        decision = await self.server.authorizer.authorize(attempt)
        self._decided(event, attempt, decision)
        self._handle_events()  #: what the publisher sent after `publish`, now decided
        if self._closing:
            self._scope.cancel()  #: the reader may be waiting for input: end the session
            return
        try:
            await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            self._scope.cancel()

    def _decided(
        self, event: ev.PublishRequested, attempt: PublishAttempt, decision: Permit | Refusal
    ) -> None:
        if isinstance(decision, Refusal):
            self._refuse(event.stream_id, decision)
            return
        result = self.server.registry.request_publish(decision.request, now_s=trio.current_time())
        if isinstance(result, Refused):
            self._refuse(event.stream_id, refusal_from_bundle(result, attempt=attempt))
            return
        assert isinstance(result, Admitted)
        self.conn.accept_publish(event.stream_id)
        self.feed = result.feed
        self.record = decision.record
        self.publish_stream_id = event.stream_id
        self._attempt = attempt
        self._claims = decision.claims
        self.server.feeds.feed_started(self)
        self._deadline.deadline = trio.current_time() + self.server.config.rtmp.idle_timeout_s
        log.info(
            "publish stream=%s sourceId=%s protocol=%s remote=%s feed=%d priority=%d state=%s%s",
            shown(decision.request.stream_path),
            quoted(self.source_id),
            self.protocol,
            self.remote,
            result.feed.feed_id,
            decision.request.priority,
            result.state.value,
            "" if self.relayed_by is None else f" via={self.relayed_by}",
        )

    def _feed_ended(self, reason: EndReason) -> None:
        """The feed is over (any reason): the bundle, the metrics, the hook hear it."""
        self.server.feeds.end_feed(self, reason)
        authorizer = self.server.authorizer
        if authorizer is not None and self._attempt is not None:
            authorizer.unpublished(self._attempt, reason=reason.value, claims=self._claims)
        self._attempt = None
        self._claims = None
        self.feed = None

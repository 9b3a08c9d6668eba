"""What an RTMP connection does when its stream is served elsewhere (docs/spec.md §9).

`RtmpSession` (server/rtmp.py) is one connection; this mixin is the part of it that
deals with a stream another process owns:

- **another worker of this machine** (`serve --workers N`, cluster/ownership.py):
  once the first publish/play names the stream, the connection stops reading and its
  socket is handed to the owner with the reads so far (`_owned_elsewhere`, then
  `_hand_over` from `RtmpSession.run`); the owner replays them into a fresh core
  (`_resume`, cluster/handoff.py). A later request on the same connection for a
  stream served elsewhere is refused (`_refuse_for_owner`).
- **another node of a cluster** (`[cluster]`, server/placement.py): the publish is
  placed (`_place_then_publish`: this node may take the lease), and a publish whose
  owner is another node is relayed there (`_relay_to`, `_run_relay`, and
  `_relay_media` from the reader loop), one hop, the owner's answer the encoder's.
- **a relay that came here** (from another node, or an SRT publish another worker
  relayed): what its credentials vouch for (`_vouched`) is the encoder's address and
  the protocol it used, which becomes this session's: the owner's API and log lines
  show an SRT publish as SRT, though it came over RTMP (docs/spec.md §9).

Both together (workers in a cluster): the worker check comes first, so a connection
is placed only by the worker that owns its stream on this machine; a relay from
another node that lands on another worker is handed to that one like any connection.

The state it keeps is set up by `_init_elsewhere`; everything else is the session's
own (a mixin, so the session's attributes are its attributes).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from rtmp_ingest.auth import Refusal, RefusalCode
from rtmp_ingest.bundle import EndReason
from rtmp_ingest.cluster.handoff import Handoff, HandoffError, ReadLog, replay
from rtmp_ingest.cluster.ownership import Worker
from rtmp_ingest.rtmp import events as ev
from rtmp_ingest.server.logtext import quoted, shown
from rtmp_ingest.server.placement import (
    Placement,
    PlacementError,
    PublishRelay,
    RemoteOwner,
    Vouched,
)

if TYPE_CHECKING:
    from rtmp_ingest.rtmp import ServerConnection
    from rtmp_ingest.server.listener import RtmpListener

log = logging.getLogger("rtmp_ingest.rtmp")

#: The idle deadline moves at most this often (it is checked to this precision).
IDLE_DEADLINE_STEP_S = 1.0


class OwnerElsewhere:
    """Hand-off to the stream's worker and relay to the stream's node (see above)."""

    if TYPE_CHECKING:
        #: the session's own, used here (server/rtmp.py `RtmpSession`)
        server: RtmpListener
        stream: trio.abc.Stream
        conn: ServerConnection
        remote: str
        relayed_by: str | None
        counted_ip: str | None
        secure: bool
        protocol: str
        app: str
        stream_path: str
        source_id: str
        publish_stream_id: int | None
        _closing: bool
        _closed: bool
        _broken: bool
        _farewell: bool
        _media_at: float
        _idle_timeout_s: float
        _scope: trio.CancelScope
        _deadline: trio.CancelScope
        _nursery: trio.Nursery | None

        def kick(self, reason: EndReason, description: str) -> None: ...
        def _connected(self, event: ev.ConnectRequested) -> None: ...
        def _on_publish(self, event: ev.PublishRequested) -> None: ...
        def _on_play(self, event: ev.PlayRequested) -> None: ...
        def _handle_events(self) -> None: ...
        def _refuse(self, stream_id: int, refusal: Refusal) -> None: ...
        def _admit(
            self, event: ev.PublishRequested, query: dict[str, str], remote: str
        ) -> None: ...
        async def _flush(self) -> None: ...

    def _init_elsewhere(self, server: RtmpListener, handed_in: Handoff | None) -> None:
        # -- workers (docs/spec.md §9, cluster/handoff.py) --
        #: a connection another worker handed over: its reads, replayed before reading
        self._handed_in = handed_in
        #: this worker's reads until the first request, in case its owner is elsewhere
        self._reads = ReadLog() if server.handoff is not None and handed_in is None else None
        #: the worker that owns the stream this connection asked for (set: hand it over)
        self._handoff_to: tuple[Worker, Handoff] | None = None
        self._request: ev.PublishRequested | ev.PlayRequested | None = None
        #: a publish/play was asked on this connection already (only the first can move)
        self._asked = False
        # -- a cluster (server/placement.py) --
        #: a publish this node relays to the stream's owner
        self.relay: PublishRelay | None = None

    # -- workers: hand-off to the stream's owner (docs/spec.md §9) -----------------------

    def _owned_elsewhere(self, request: ev.PublishRequested | ev.PlayRequested) -> bool:
        """True when the request's stream belongs to another worker. For the connection's
        first request the session then stops reading and `run` hands the socket over
        (see cluster/handoff.py); a later one (a second publish or play on a connection
        that stays here) is refused, so a stream is never served in two workers."""
        reads, self._reads = self._reads, None  #: only the first request may move
        first, self._asked = not self._asked, True
        stream_path = request.address.path
        hook = self.server.handoff
        if hook is None or (first and self._handed_in is not None):
            return False  #: a handed-over connection's first request is this worker's
        owner = hook.owner_of(stream_path)
        if not isinstance(owner, Worker):
            return False
        if reads is None:
            self._refuse_for_owner(
                request,
                f"Stream {stream_path} is served by another worker of this server; "
                "publish or play it on a new connection.",
            )
            return True
        if reads.overflowed:
            log.info(
                "not handed over remote=%s stream=%s: over %d bytes before the request",
                self.remote,
                shown(stream_path),
                len(reads.reads),
            )
            self._refuse_for_owner(
                request, f"The worker serving {stream_path} cannot take this connection; reconnect."
            )
            return True
        self._handoff_to = (
            owner,
            Handoff(
                stream_path=stream_path,
                remote=self.remote,
                secure=self.secure,
                from_worker=hook.worker_id,
                reads=reads.reads,
            ),
        )
        self._request = request
        self._closing = True
        return True

    def _refuse_for_owner(self, request: ev.PublishRequested | ev.PlayRequested, text: str) -> None:
        """The request cannot be served here nor handed over: say why, and close."""
        if isinstance(request, ev.PublishRequested):
            self.conn.reject_publish(request.stream_id, text, code="NetStream.Publish.Rejected")
        else:
            self.conn.reject_play(request.stream_id, text, code="NetStream.Play.Failed")
        self._farewell = True
        self._closing = True

    async def _hand_over(self, owner: Worker, handoff: Handoff) -> bool:
        """Gives the connection to `owner`; False (and the client told) when that failed."""
        hook = self.server.handoff
        assert hook is not None
        try:
            await hook.hand_over(self.stream, owner, handoff)
        except HandoffError as exc:
            log.warning(
                "hand-off failed remote=%s stream=%s to worker=%d: %s; connection closed",
                self.remote,
                shown(handoff.stream_path),
                owner.worker_id,
                exc,
            )
            if self._request is not None:
                self._refuse_for_owner(
                    self._request,
                    f"The worker serving {handoff.stream_path} is not reachable; reconnect.",
                )
            return False
        self._closed = True  #: the socket is the owner's now: nothing more from here
        log.info(
            "handed over remote=%s stream=%s protocol=%s to worker=%d",
            self.remote,
            shown(handoff.stream_path),
            self.protocol,
            owner.worker_id,
        )
        return True

    def _resume(self, handoff: Handoff) -> None:
        """A handed-over connection: replays its reads, then decides its request here."""
        try:
            replayed = replay(self.conn, handoff.reads)
        except HandoffError as exc:
            log.warning(
                "hand-off from worker=%d remote=%s unusable: %s; connection closed",
                handoff.from_worker,
                self.remote,
                exc,
            )
            self._broken = True
            self._closing = True
            return
        for event in replayed.events:
            if isinstance(event, ev.ConnectRequested):
                self._connected(event)
        log.info(
            "taken over remote=%s stream=%s protocol=%s from worker=%d",
            self.remote,
            shown(handoff.stream_path),
            self.protocol,
            handoff.from_worker,
        )
        request = replayed.request
        if isinstance(request, ev.PublishRequested):
            self._on_publish(request)
        else:
            self._on_play(request)
        self._handle_events()  #: what the first worker's core held behind the request

    # -- a cluster: the stream's owner first (docs/spec.md §9) -----------------------------

    def _vouched(self, vouched: Vouched | None) -> str:
        """The encoder's address a relay vouched for (else this connection's). Both it and
        the protocol the encoder used, when the relay said, are this session's from now
        on — what its publish, supersede, kick and unpublish log lines name — and the
        relay's own address is kept in `relayed_by` (the publish line says `via=`)."""
        if vouched is None:
            return self.remote
        self.server.uncount(self)  #: internal: not one more client of that address
        if vouched.protocol is not None:
            self.protocol = vouched.protocol
        if vouched.remote != self.remote:
            self.relayed_by = self.remote
            self.remote = vouched.remote
        return vouched.remote

    async def _place_then_publish(self, event: ev.PublishRequested, placement: Placement) -> None:
        """Admits the publish here when this node owns the stream, else relays it there."""
        address = event.address
        query, vouched = placement.inbound(address.path, address.query, self.remote)
        relayed = vouched is not None  #: from another node: never relayed again
        hook = self.server.handoff
        if vouched is None and hook is not None:
            #: an SRT publish worker 0 relayed here (the same node: it may still be placed)
            _, vouched = hook.inbound(address.path, address.query, self.remote)
        remote = self._vouched(vouched)
        self.stream_path = address.path
        self.source_id = query.get("sourceId", "")
        try:
            owner = await placement.owner_of(address.path, relayed=relayed)
            if owner is None:
                self._admit(event, query, remote)
            else:
                await self._relay_to(event, placement, owner, query, remote)
        except PlacementError as exc:
            self._refuse(event.stream_id, Refusal.of(RefusalCode.OTHER, str(exc)))
        self._handle_events()  #: what the publisher sent after `publish`, now decided
        if self._closing:
            self._scope.cancel()
            return
        try:
            await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            self._scope.cancel()

    async def _relay_to(
        self,
        event: ev.PublishRequested,
        placement: Placement,
        owner: RemoteOwner,
        query: dict[str, str],
        remote: str,
    ) -> None:
        relay = placement.open_relay(
            owner,
            stream_path=event.address.path,
            query=query,
            app=self.app,
            remote=remote,
            protocol=self.protocol,  #: the encoder's (`_vouched`): SRT stays SRT on the owner
        )
        refusal = await relay.open()
        if refusal is not None:
            self.conn.reject_publish(event.stream_id, refusal, code="NetStream.Publish.Rejected")
            log.info(
                "publish refused by owner=%s stream=%s sourceId=%s remote=%s: %s",
                owner.node_id,
                shown(event.address.path),
                quoted(self.source_id),
                self.remote,
                shown(refusal),
            )
            self._closing = True
            return
        self.conn.accept_publish(event.stream_id)
        self.relay = relay
        self.publish_stream_id = event.stream_id
        self._deadline.deadline = trio.current_time() + self._idle_timeout_s
        assert self._nursery is not None
        self._nursery.start_soon(self._run_relay, relay, owner)
        log.info(
            "relay stream=%s sourceId=%s remote=%s owner=%s rtmp=%s:%d",
            shown(event.address.path),
            quoted(self.source_id),
            self.remote,
            owner.node_id,
            owner.rtmp_host,
            owner.rtmp_port,
        )

    async def _run_relay(self, relay: PublishRelay, owner: RemoteOwner) -> None:
        reason = await relay.run()
        log.info(
            "relay end stream=%s sourceId=%s remote=%s owner=%s: %s",
            shown(self.stream_path),
            quoted(self.source_id),
            self.remote,
            owner.node_id,
            reason,
        )
        self.kick(EndReason.DISCONNECT, reason)

    def _relay_media(self, type_id: int, event: Any) -> None:
        assert self.relay is not None
        if not self.relay.forward(type_id, event.timestamp_ms, event.payload):
            self.kick(EndReason.DISCONNECT, "The stream's owner does not keep up; reconnect.")
            return
        now = trio.current_time()
        if now - self._media_at > IDLE_DEADLINE_STEP_S:
            self._media_at = now
            self._deadline.deadline = now + self._idle_timeout_s

"""Node-to-node RTMP with the client-role core: publish relays and source pulls (docs/spec.md §9).

Both are one RTMP client connection from this node to the stream's owner, driven
the way the server drives its sessions: one reader, one writer task with an
outbox (bytes leave the sans-IO `ClientConnection` synchronously, so no
cancellation splits a chunk), every wait on the peer bounded.

- `RtmpRelay` (a `server.placement.PublishRelay`): an encoder published to this
  node, which does not own the stream. The relay publishes the same stream path and
  query to the owner, adding internal credentials (`hop_query`) that vouch for the
  encoder's address and the protocol it used (an SRT publish is relayed over RTMP; the
  owner shows it as SRT), and forwards every media message as it came. The owner's answer
  to `publish` is the encoder's answer; when the owner ends the relay (supersede in
  disconnect mode, a kick, its death) the encoder is told and reconnects. One hop:
  the owner never relays such a publish again.
- `pull_source`: a viewer-side copy. This node plays one source from its owner and
  puts what it gets into its own bundle as a feed marked `relayedFrom=NODE` (protocol
  "cluster"), so its local RTMP/FLV players, HLS and WHEP are served from that one pull.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import trio

from rtmp_ingest.bundle import EndReason, Permissions, PublishRequest, TimelineResume
from rtmp_ingest.bundle import Feed as BundleFeed
from rtmp_ingest.rtmp import NEED_DATA, ClientConnection, ProtocolError
from rtmp_ingest.rtmp import events as ev
from rtmp_ingest.rtmp.limits import Limits
from rtmp_ingest.server.feeds import Feeds
from rtmp_ingest.server.logtext import quoted, shown
from rtmp_ingest.server.media import FeedMedia
from rtmp_ingest.server.placement import PlacementError, RemoteOwner, Vouched

log = logging.getLogger("rtmp_ingest.cluster")

#: Query keys of the internal credentials (removed before the policy sees the query).
HOP_NODE = "clusterNode"
HOP_REMOTE = "clusterRemote"
HOP_TIME = "clusterTime"
HOP_AUTH = "clusterAuth"
#: the protocol the encoder used; signed too (absent: a relay of an older version)
HOP_PROTOCOL = "clusterProtocol"
HOP_KEYS = frozenset({HOP_NODE, HOP_REMOTE, HOP_TIME, HOP_AUTH, HOP_PROTOCOL})
#: What a relay itself speaks: the protocol of a relayed publish whose credentials name none.
RELAY_PROTOCOL = "rtmp"
#: Protocols a relay may vouch for (a relayed publish came over one of these; WebRTC
#: is redirected, never relayed); another value counts as not said.
RELAYED_PROTOCOLS = frozenset({"rtmp", "rtmps", "srt"})
#: Query key that marks a pulled feed in this node's bundle (the API shows it).
RELAYED_FROM = "relayedFrom"
#: Credentials older (or further ahead) than this are refused: a captured relay URL
#: cannot be replayed later; nodes' clocks must agree within it (NTP does).
HOP_MAX_AGE_S = 60.0
#: Chunk size on node-to-node connections: fewer chunk headers for big keyframes.
RELAY_CHUNK_SIZE = 65536
#: Bytes per socket read on node-to-node connections.
RECEIVE_BYTES = 65536
#: What the relay announces, so the owner sends Enhanced RTMP as it came.
FOURCC_ANY = ["*"]


def _mac(secret: bytes, *parts: str) -> str:
    return hmac.new(secret, "\n".join(parts).encode("utf-8"), hashlib.sha256).hexdigest()


def hop_query(
    secret: bytes,
    *,
    node_id: str,
    stream_path: str,
    remote: str,
    now_s: float,
    protocol: str | None = None,
) -> dict[str, str]:
    """The internal credentials of a relay of `remote`'s publish of `stream_path` (made
    with `protocol`, when given: the signature covers it). RTMP, the relay's own protocol,
    goes unsaid, so an RTMP publish's credentials are the ones older versions make and
    check (nodes of a cluster upgraded one at a time)."""
    stamp = f"{now_s:.0f}"
    signed: tuple[str, ...] = (node_id, remote, stream_path, stamp)
    query = {HOP_NODE: node_id, HOP_REMOTE: remote, HOP_TIME: stamp}
    if protocol is not None and protocol != RELAY_PROTOCOL:
        signed += (protocol,)
        query[HOP_PROTOCOL] = protocol
    query[HOP_AUTH] = _mac(secret, *signed)
    return query


def check_hop(
    secret: bytes, query: Mapping[str, str], *, stream_path: str, now_s: float
) -> tuple[dict[str, str], Vouched | None]:
    """The query without internal credentials, and what they vouch for when they are
    valid (None: absent, forged, or too old — then the client is an ordinary one). The
    protocol is signed when present, so it can be neither added, changed nor removed."""
    clean = {k: v for k, v in query.items() if k not in HOP_KEYS}
    node, remote, stamp, mac = (
        query.get(k, "") for k in (HOP_NODE, HOP_REMOTE, HOP_TIME, HOP_AUTH)
    )
    protocol = query.get(HOP_PROTOCOL)
    if not (node and remote and stamp.isdigit() and mac):
        return clean, None
    if abs(now_s - int(stamp)) > HOP_MAX_AGE_S:
        return clean, None
    signed = (node, remote, stream_path, stamp) + (() if protocol is None else (protocol,))
    if not hmac.compare_digest(mac, _mac(secret, *signed)):
        return clean, None
    return clean, Vouched(remote, protocol if protocol in RELAYED_PROTOCOLS else None)


class _Upstream:
    """One client connection to another node: the core, the socket, one writer."""

    def __init__(self, owner: RemoteOwner, *, limits: Limits, timeout_s: float) -> None:
        self.owner = owner
        self.conn = ClientConnection(limits=limits, digest_handshake=False)
        self.timeout_s = timeout_s
        self.stream: trio.SocketStream | None = None
        self._outbox = bytearray()
        self._wake = trio.Event()
        self._events: list[Any] = []
        self.closed = False
        self.bytes_out = 0
        #: until the writer task runs, what the core answers is sent by `receive` itself
        self._writing = False

    @property
    def outbox_bytes(self) -> int:
        return len(self._outbox)

    async def open(self) -> None:
        try:
            self.stream = await trio.open_tcp_stream(self.owner.rtmp_host, self.owner.rtmp_port)
        except OSError as exc:
            raise PlacementError(
                f"The stream's owner ({self.owner.node_id}) cannot be reached: {exc.strerror or exc}"
            ) from None

    def queue(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self._outbox += data
            self._wake.set()

    async def writer(self) -> None:
        assert self.stream is not None
        self._writing = True
        while True:
            while not self._outbox:
                await self._wake.wait()
                self._wake = trio.Event()
            data = bytes(self._outbox)
            del self._outbox[:]
            with trio.fail_after(self.timeout_s):
                await self.stream.send_all(data)
            self.bytes_out += len(data)

    async def flush(self) -> None:
        """Sends the outbox now (before the writer runs: the opening commands)."""
        assert self.stream is not None
        self.queue()
        data = bytes(self._outbox)
        del self._outbox[:]
        if data:
            await self.stream.send_all(data)

    async def receive(self) -> list[Any]:
        """The next events from the owner ([] once it closed: `closed` is set); first
        those `wait_for` read past what it waited for (media right behind a status)."""
        assert self.stream is not None
        if self._events:
            out, self._events = self._events, []
            return out
        return await self._read()

    async def _read(self) -> list[Any]:
        assert self.stream is not None
        while True:
            data = await self.stream.receive_some(RECEIVE_BYTES)
            if not data:
                self.closed = True
            self.conn.receive_data(data)
            out: list[Any] = []
            while True:
                event = self.conn.next_event()
                if event is NEED_DATA or isinstance(event, ev.ConnectionClosed):
                    break
                out.append(event)
            if self._writing:
                self.queue()  #: acknowledgements, ping responses, the handshake's C2
            else:
                await self.flush()
            if out or self.closed:
                return out

    async def wait_for(self, predicate: Callable[[Any], bool]) -> Any:
        """The first event `predicate` accepts (None if the owner closed first)."""
        while True:
            for event in self._events:
                if predicate(event):
                    self._events.remove(event)
                    return event
            if self.closed:
                return None
            self._events.extend(await self._read())

    async def start(self, app: str) -> int:
        """connect + createStream; returns the message stream id."""
        conn = self.conn
        conn.connect(
            app,
            tc_url=f"rtmp://{self.owner.rtmp_host}:{self.owner.rtmp_port}/{app}",
            properties={"fourCcList": FOURCC_ANY},
        )
        conn.set_chunk_size(RELAY_CHUNK_SIZE)
        txid = conn.create_stream()
        await self.flush()
        answer = await self.wait_for(
            lambda e: isinstance(e, ev.CommandResponse) and e.transaction_id == txid
        )
        stream_id = None if answer is None else ClientConnection.stream_id_of(answer)
        if answer is None or not answer.ok or stream_id is None:
            raise PlacementError(f"The stream's owner ({self.owner.node_id}) refused the relay.")
        return stream_id

    async def aclose(self) -> None:
        if self.stream is not None:
            await trio.aclose_forcefully(self.stream)


def _name(stream_path: str, query: Mapping[str, str]) -> tuple[str, str]:
    """(app, stream name with query) of `stream_path` as an RTMP client publishes it."""
    app, _, stream = stream_path.partition("/")
    text = urllib.parse.urlencode(dict(query))
    return app, f"{stream}?{text}" if text else stream


class RtmpRelay:
    """One encoder's publish, relayed to the stream's owner (see the module docstring)."""

    def __init__(
        self,
        owner: RemoteOwner,
        *,
        stream_path: str,
        query: Mapping[str, str],
        limits: Limits,
        timeout_s: float,
        max_buffer_bytes: int,
        counters: dict[str, int],
    ) -> None:
        self.owner = owner
        self.stream_path = stream_path
        self.query = dict(query)
        self.max_buffer_bytes = max_buffer_bytes
        self.counters = counters
        self._up = _Upstream(owner, limits=limits, timeout_s=timeout_s)
        self._timeout_s = timeout_s
        self._stream_id = 0
        self._done = trio.Event()
        self._reason = "The stream's owner ended the relay; reconnect."

    async def open(self) -> str | None:
        """Connects and publishes upstream (`PublishRelay.open`). Unless the owner
        accepted, the socket is closed on the way out, whatever the exit: a refusal, a
        failure, or this task's cancellation (the encoder left, a shutdown) — even right
        after the connect — so the owner never keeps a half-open connection; once it
        accepted, `run` owns the socket (and closes it)."""
        up = self._up
        accepted = False
        try:
            refusal = await self._publish()
            accepted = refusal is None
            return refusal
        finally:
            if not accepted:
                await up.aclose()  #: forceful: closes also when cancelled

    async def _publish(self) -> str | None:
        up = self._up
        try:
            with trio.fail_after(self._timeout_s):
                await up.open()
                app, name = _name(self.stream_path, self.query)
                self._stream_id = await up.start(app)
                up.conn.publish(self._stream_id, name)
                await up.flush()
                status = await up.wait_for(
                    lambda e: isinstance(e, ev.Status) and e.stream_id == self._stream_id
                )
        except trio.TooSlowError:
            raise PlacementError(
                f"The stream's owner ({self.owner.node_id}) did not answer in time."
            ) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError) as exc:
            raise PlacementError(f"The relay to {self.owner.node_id} failed: {exc}") from None
        if status is None:
            raise PlacementError(f"The stream's owner ({self.owner.node_id}) closed the relay.")
        if status.code != "NetStream.Publish.Start":
            return status.description or status.code
        self.counters["relays"] += 1
        return None

    async def run(self) -> str:
        up = self._up
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, nursery)
                nursery.start_soon(self._reader, nursery)
                await self._done.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.counters["relays"] -= 1
            self.counters["relay_bytes"] += up.bytes_out
            with trio.CancelScope(shield=True):
                await up.aclose()
        return self._reason

    async def _writer(self, nursery: trio.Nursery) -> None:
        try:
            await self._up.writer()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            self._end("The stream's owner stopped reading; reconnect.")

    async def _reader(self, nursery: trio.Nursery) -> None:
        up = self._up
        try:
            while not up.closed:
                for event in await up.receive():
                    if isinstance(event, ev.Status) and event.level == "error":
                        self._end(event.description or event.code)
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError):
            pass
        self._end("The stream's owner went away; reconnect.")

    def _end(self, reason: str) -> None:
        if not self._done.is_set():
            self._reason = reason
            self._done.set()

    def forward(self, type_id: int, timestamp_ms: int, payload: bytes) -> bool:
        conn = self._up.conn
        timestamp = timestamp_ms & 0xFFFFFFFF
        try:
            if type_id == 9:
                conn.send_video(self._stream_id, timestamp, payload)
            elif type_id == 8:
                conn.send_audio(self._stream_id, timestamp, payload)
            else:
                conn.send_data(self._stream_id, timestamp, payload)
        except ProtocolError:
            self._end("The relay to the stream's owner failed; reconnect.")
            return True
        self._up.queue()
        return self._up.outbox_bytes <= self.max_buffer_bytes

    def close(self) -> None:
        _app, name = _name(self.stream_path, {})
        try:
            self._up.conn.unpublish(self._stream_id, name)
            self._up.queue()
        except ProtocolError:
            pass
        self._end("unpublished")


class PulledFeed:
    """A source pulled from its owner, as the local bundle's feed (an IngestSession)."""

    protocol = "cluster"

    def __init__(self, owner: RemoteOwner) -> None:
        self.owner = owner
        self.remote = f"{owner.rtmp_host}:{owner.rtmp_port}"
        self.feed: BundleFeed | None = None
        self.record = False
        self.media = FeedMedia()
        self.scope = trio.CancelScope()
        self.kicked: tuple[EndReason, str] | None = None

    @property
    def malformed(self) -> int:
        return self.media.dropped

    def kick(self, reason: EndReason, description: str) -> None:
        self.kicked = (reason, description)
        self.scope.cancel()


async def pull_source(
    feeds: Feeds,
    owner: RemoteOwner,
    *,
    stream_path: str,
    source_id: str,
    node_id: str,
    secret: bytes,
    limits: Limits,
    timeout_s: float,
    resume: TimelineResume | None,
    counters: dict[str, int],
) -> str:
    """Plays `source_id` of `stream_path` from its owner into this node's bundle until the
    owner ends it; returns why it ended. `resume` continues a timeline this node showed
    before (a pull that comes back after the source's reconnect grace ran out here). The
    play carries the cluster's internal credentials (`hop_query`, the pulling node as the
    remote), so the owner knows it for a node's, not one more client's from that address."""
    registry = feeds.registry
    up = _Upstream(owner, limits=limits, timeout_s=timeout_s)
    pulled = PulledFeed(owner)
    reason = "ended"
    try:
        with pulled.scope:
            with trio.fail_after(timeout_s):
                await up.open()
                credentials = hop_query(
                    secret,
                    node_id=node_id,
                    stream_path=stream_path,
                    remote=node_id,
                    now_s=time.time(),
                )
                app, name = _name(stream_path, {"sourceId": source_id, **credentials})
                stream_id = await up.start(app)
                up.conn.play(stream_id, name)
                await up.flush()
                status = await up.wait_for(
                    lambda e: isinstance(e, ev.Status) and e.stream_id == stream_id
                )
            if status is None or status.level == "error":
                return "refused" if status is None else status.code
            if resume is not None:
                registry.resume_timeline(stream_path, source_id, resume)
            result = registry.request_publish(
                PublishRequest(
                    stream_path=stream_path,
                    source_id=source_id,
                    permissions=Permissions(app_multisource=True, token_multisource=True),
                    remote_addr=pulled.remote,
                    query={RELAYED_FROM: owner.node_id},
                ),
                now_s=trio.current_time(),
            )
            feed = getattr(result, "feed", None)
            if feed is None:
                return f"refused here: {getattr(result, 'reason', result)}"
            pulled.feed = feed
            feeds.feed_started(pulled)
            counters["pulls"] += 1
            log.info(
                "pull stream=%s sourceId=%s owner=%s rtmp=%s feed=%d",
                shown(stream_path),
                quoted(source_id),
                owner.node_id,
                pulled.remote,
                feed.feed_id,
            )
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(up.writer)
                    reason = await _pull_media(up, pulled, registry)
                    nursery.cancel_scope.cancel()
            finally:
                counters["pulls"] -= 1
        if pulled.kicked is not None:
            reason = pulled.kicked[1]
    except trio.TooSlowError:
        reason = "the owner did not answer in time"
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        reason = f"connection lost: {exc}"
    except (PlacementError, ProtocolError) as exc:
        reason = str(exc)
    finally:
        if pulled.feed is not None:
            feeds.end_feed(pulled, pulled.kicked[0] if pulled.kicked else EndReason.DISCONNECT)
        with trio.CancelScope(shield=True):
            await up.aclose()
    return reason


async def _pull_media(up: _Upstream, pulled: PulledFeed, registry: Any) -> str:
    """Media from the owner into the bundle, until the owner ends the play."""
    media = pulled.media
    feed = pulled.feed
    while not up.closed:
        for event in await up.receive():
            cls = type(event)
            if cls is ev.VideoData or cls is ev.AudioData:
                parse = media.video if cls is ev.VideoData else media.audio
                now = trio.current_time()
                for frame in parse(event.timestamp_ms, event.payload):
                    registry.push_frame(feed, frame, now_s=now)
            elif cls is ev.DataMessage:
                now = trio.current_time()
                for frame in media.data(
                    event.timestamp_ms, event.name, event.values, event.payload
                ):
                    registry.push_frame(feed, frame, now_s=now)
            elif cls is ev.Status and event.code in (
                "NetStream.Play.UnpublishNotify",
                "NetStream.Play.StreamNotFound",
                "NetStream.Play.Stop",
            ):
                return event.code
    return "the owner closed the connection"

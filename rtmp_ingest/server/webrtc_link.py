"""The daemon's side of WebRTC ingest: supervises the WebRTC process, speaks the link.

`WebrtcService.run()` starts `python -m rtmp_ingest.webrtc.process` with one
end of a unix socketpair (`rtmp_ingest.webrtc.link`), configures it, and
restarts it with backoff if it dies (every WHIP feed it carried ends as a
disconnect; RTMP never notices: the RTMP loop never waits on the link). It
ends the process on shutdown.

`publish()` is a WHIP POST: the publish policy decides (the same one RTMP
uses, injected), the process negotiates the offer, the bundle admits the
feed, and the caller gets the answer and the session. From then on media
messages become bundle frames as they arrive — the process already sent
finished FLV tag bodies, so this costs one `Frame` per frame. A session is a
publisher like an RTMP one (`remote`, `feed`, `record`, `kick()`), handed to
the daemon with `feed_started`/`end_feed`, so supersede, operator kicks and
the API treat both alike; a kick closes the peer connection.

Keyframe on demand (docs/spec.md §7): whenever the bundle changes, and every
`keyframe_request_interval_s` while it lasts, a connected WHIP feed that is
waiting to go on air (PENDING: it superseded, reconnected or takes over from
standby) gets a keyframe request (PLI + FIR), so the switch takes about one
round trip instead of the publisher's next GOP. When a WHIP feed ends the
requests go out at once, before its peer connection's close reaches the
process (closing keeps the process busy for a while). The delay from a request
to the keyframe is logged and kept per session (`keyframe_delay_s`).
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import secrets
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from rtmp_ingest.auth import Permit, PublishAttempt, Refusal, refusal_from_bundle
from rtmp_ingest.bundle import (
    Admitted,
    EndReason,
    Feed,
    FeedState,
    Frame,
    Media,
    PublishRequest,
    Refused,
    TrackInfo,
)
from rtmp_ingest.config import WebrtcConfig
from rtmp_ingest.flv import codecs
from rtmp_ingest.outputs.samples import h264_picture_size
from rtmp_ingest.webrtc import link

log = logging.getLogger("rtmp_ingest.webrtc")

RECEIVE_BYTES = 65536
#: A process that ran this long before dying restarts after the base backoff again.
STABLE_RUN_S = 30.0
#: How long the process gets to exit after its link closes before it is killed.
EXIT_TIMEOUT_S = 2.0
_MEDIA = {"video": Media.VIDEO, "audio": Media.AUDIO}
#: Viewer media messages queued to the process beyond which more are dropped (a stalled process).
MAX_QUEUED_MESSAGES = 4096


class Registry(Protocol):
    def request_publish(self, request: PublishRequest, *, now_s: float) -> Admitted | Refused: ...

    def push_frame(self, feed: Feed, frame: Frame, *, now_s: float) -> None: ...


class PublishHost(Protocol):
    """What the service needs of the daemon."""

    registry: Any  #: a `Registry` (bundle.Registry)
    bundle_changed: trio.Event  #: set and replaced on every bundle change

    def feed_started(self, session: Any) -> None: ...

    def end_feed(self, session: Any, reason: EndReason) -> None: ...


#: `authorize(attempt)` → Permit | Refusal: the auth policy (and publish hook), as for RTMP
Authorize = Callable[[PublishAttempt], Awaitable[Permit | Refusal]]


class WhipError(Exception):
    """A WHIP request that fails: the HTTP status and the text/plain body to send."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@attrs.define(eq=False)
class WhipSession:
    """One WHIP publisher, as the daemon sees publishers."""

    service: WebrtcService
    session_id: int
    location: str  #: the unguessable part of the session URL
    remote: str
    stream_path: str
    source_id: str
    protocol: str = "webrtc"
    #: E-RTMP's Reconnect request does not exist in WebRTC (the daemon asks RTMP sessions)
    reconnect_capable: bool = False
    feed: Feed | None = None
    record: bool = False
    answer: str = ""
    #: per link track index: (track id, media, codec, channels)
    tracks: list[tuple[str, Media, str, int | None]] = attrs.Factory(list)
    #: picture sizes the process reported per track (VP9: its vpcC has none)
    sizes: dict[int, tuple[int, int]] = attrs.Factory(dict)
    connected: bool = False
    ended: bool = False
    last_media_s: float = 0.0
    keyframe_requested_s: float = -math.inf
    keyframe_requests: int = 0
    #: when the first keyframe request not yet answered by a keyframe went out (else None)
    keyframe_awaited_since_s: float | None = None
    #: request → keyframe at the daemon, the last time a request was answered (seconds)
    keyframe_delay_s: float | None = None
    frames_in: int = 0
    #: frames the process dropped as broken (never handed over; a PLI asked for the next)
    malformed: int = 0

    @property
    def has_video(self) -> bool:
        return any(media is Media.VIDEO for _, media, _, _ in self.tracks)

    def kick(self, reason: EndReason, description: str) -> None:
        """Ends this feed from outside (supersede, operator, shutdown) and its peer connection."""
        log.info(
            "whip end stream=%s sourceId=%r remote=%s session=%d reason=%s: %s",
            self.stream_path,
            self.source_id,
            self.remote,
            self.session_id,
            reason.value,
            description,
        )
        self.service.end_session(self, reason, close_peer=True)


class WebrtcService:
    """The WebRTC process, supervised, and the WHIP sessions it carries."""

    def __init__(
        self,
        host: PublishHost,
        config: WebrtcConfig,
        authorize: Authorize,
        *,
        python: str = sys.executable,
        log_level: str = "info",
    ) -> None:
        self.host = host
        self.config = config
        self.authorize = authorize
        self.python = python
        self.log_level = log_level
        self.sessions: dict[int, WhipSession] = {}
        self.by_location: dict[str, WhipSession] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[trio.Event, list[dict[str, Any]]]] = {}
        self._out: trio.MemorySendChannel[bytes] | None = None
        self._ready = trio.Event()
        self.process_id: int | None = None
        self.restarts = 0
        #: publishes refused, by refusal code (the policy's and the bundle's)
        self.refused: dict[str, int] = {}
        self.link_errors = 0
        #: control messages of sessions that are not WHIP feeds (WHEP viewers, server/whep.py);
        #: {"op": "process-lost"} when the process dies
        self.viewer_control: Callable[[dict[str, Any]], None] | None = None
        #: link messages queued to the process beyond which viewer media is dropped
        self.max_queued_messages = MAX_QUEUED_MESSAGES

    # -- the process -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keeps the WebRTC process running until cancelled; ready at once (see wait_ready)."""
        task_status.started()
        if importlib.util.find_spec("aiortc") is None:
            log.error(
                "webrtc.enabled is true but aiortc is not installed: "
                "pip install 'rtmp-ingest[webrtc]'. WHIP publishes get 503."
            )
            return
        config = self.config
        backoff = config.restart_backoff_s
        try:
            while True:
                started = trio.current_time()
                try:
                    await self._run_process()
                except (OSError, link.LinkError, trio.BrokenResourceError) as exc:
                    self.link_errors += 1
                    log.error("webrtc process link failed: %s", exc)
                self._process_lost()
                if trio.current_time() - started > STABLE_RUN_S:
                    backoff = config.restart_backoff_s
                log.warning("webrtc process ended; restarting in %.1fs", backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, config.max_restart_backoff_s)
                self.restarts += 1
        finally:
            self.shutdown()

    @property
    def is_ready(self) -> bool:
        """The WebRTC process is up and configured (takes offers now)."""
        return self._ready.is_set()

    async def wait_ready(self, *, timeout_s: float) -> bool:
        with trio.move_on_after(timeout_s):
            await self._ready.wait()
        return self._ready.is_set()

    def _configure_message(self) -> dict[str, Any]:
        config = self.config
        servers = []
        for url in config.ice_servers:
            entry: dict[str, Any] = {"urls": url}
            if url.startswith(("turn:", "turns:")):
                entry["username"] = config.turn_username
                entry["credential"] = config.turn_credential
            servers.append(entry)
        ports = (
            [config.udp_port_min, config.udp_port_max]
            if config.udp_port_min and config.udp_port_max
            else None
        )
        return {
            "op": "configure",
            "ice_servers": servers,
            "host_addresses": list(config.host_addresses),
            "include_loopback": config.include_loopback,
            "udp_ports": ports,
            "connect_timeout_s": config.connect_timeout_s,
            "whep_max_queue_frames": config.whep_max_queue_frames,
            "whep_pli_interval_s": config.whep_pli_interval_s,
            "whep_max_payload_bytes": config.whep_max_payload_bytes,
            "whep_vp9_flexible": config.whep_vp9_flexible,
        }

    async def _run_process(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await trio.lowlevel.open_process(
                [
                    self.python,
                    "-m",
                    "rtmp_ingest.webrtc.process",
                    "--link-fd",
                    str(theirs.fileno()),
                    "--log-level",
                    self.log_level,
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self.process_id = process.pid
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        send, receive = trio.open_memory_channel[bytes](math.inf)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, stream, receive)
                nursery.start_soon(self._watch, nursery.cancel_scope)
                self._out = send
                send.send_nowait(link.encode_control(self._configure_message()))
                await self._reader(stream)
                nursery.cancel_scope.cancel()
        finally:
            self._out = None
            self._ready = trio.Event()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
                with trio.move_on_after(EXIT_TIMEOUT_S):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            log.info("webrtc process pid=%d exited rc=%s", process.pid, process.returncode)

    async def _writer(self, stream: trio.SocketStream, receive: Any) -> None:
        async for data in receive:
            await stream.send_all(data)

    async def _watch(self, scope: trio.CancelScope) -> None:
        """Keyframe requests for WHIP feeds waiting to go on air; idle timeouts."""
        config = self.config
        while True:
            changed = self.host.bundle_changed
            with trio.move_on_after(config.keyframe_request_interval_s):
                await changed.wait()
            now = trio.current_time()
            for session in list(self.sessions.values()):
                if session.feed is None or not session.connected:
                    continue
                if now - session.last_media_s > config.idle_timeout_s:
                    log.info(
                        "timeout stream=%s sourceId=%r remote=%s waiting for media (webrtc)",
                        session.stream_path,
                        session.source_id,
                        session.remote,
                    )
                    self.end_session(session, EndReason.IDLE_TIMEOUT, close_peer=True)
                elif self._wants_keyframe(session, now):
                    self.request_keyframe(session)

    def _wants_keyframe(self, session: WhipSession, now: float) -> bool:
        """A connected video feed waiting to go on air, not asked within the interval."""
        config = self.config
        return (
            config.keyframe_on_demand
            and session.connected
            and session.feed is not None
            and session.feed.state is FeedState.PENDING
            and session.has_video
            and now - session.keyframe_requested_s >= config.keyframe_request_interval_s
        )

    def request_pending_keyframes(self) -> None:
        """Keyframe requests now for every feed the last bundle change left waiting to go on
        air, without waiting for the watcher's turn (it runs after the current task)."""
        now = trio.current_time()
        for session in list(self.sessions.values()):
            if self._wants_keyframe(session, now):
                self.request_keyframe(session)

    async def _reader(self, stream: trio.SocketStream) -> None:
        decoder = link.LinkDecoder()
        registry = self.host.registry
        sessions = self.sessions
        while True:
            data = await stream.receive_some(RECEIVE_BYTES)
            decoder.receive_data(data)
            now = trio.current_time()
            while True:
                event = decoder.next_event()
                if type(event) is link.Media:
                    session = sessions.get(event.session)
                    if (
                        session is None
                        or session.feed is None
                        or event.track >= len(session.tracks)
                    ):
                        continue
                    track_id, media, codec, channels = session.tracks[event.track]
                    info = (
                        _track_info(codec, event.payload, channels, session.sizes.get(event.track))
                        if event.config
                        else None
                    )
                    registry.push_frame(
                        session.feed,
                        Frame(
                            track_id,
                            media,
                            codec,
                            event.dts_ms,
                            event.payload,
                            event.keyframe,
                            event.config,
                            0,
                            info,
                        ),
                        now_s=now,
                    )
                    session.last_media_s = now
                    session.frames_in += 1
                    if (
                        event.keyframe
                        and media is Media.VIDEO
                        and session.keyframe_awaited_since_s is not None
                    ):
                        self._keyframe_arrived(session, now)
                elif type(event) is link.Control:
                    self._on_control(event.message, now)
                else:
                    break
            if not data:
                return

    def _on_control(self, message: dict[str, Any], now: float) -> None:
        op = message["op"]
        session_id = message.get("session")
        if op == "ready":
            log.info("webrtc process ready pid=%s", message.get("pid"))
            self._ready.set()
        elif op in ("answer", "error") and isinstance(session_id, int):
            pending = self._pending.get(session_id)
            if pending is not None:
                pending[1].append(message)
                pending[0].set()
            elif op == "answer":
                self._send({"op": "close", "session": session_id})  #: the request gave up
        elif isinstance(session_id, int) and session_id not in self.sessions:
            if self.viewer_control is not None and op in ("connected", "closed", "pli"):
                self.viewer_control(message)
        elif op == "connected" and isinstance(session_id, int):
            session = self.sessions.get(session_id)
            if session is not None:
                session.connected = True
                session.last_media_s = now
                log.info(
                    "whip connected stream=%s sourceId=%r remote=%s session=%d",
                    session.stream_path,
                    session.source_id,
                    session.remote,
                    session_id,
                )
        elif op == "track-info" and isinstance(session_id, int):
            session = self.sessions.get(session_id)
            width, height, track = message.get("width"), message.get("height"), message.get("track")
            if session is not None and isinstance(track, int):
                if isinstance(width, int) and isinstance(height, int):
                    session.sizes[track] = (width, height)
        elif op == "closed" and isinstance(session_id, int):
            session = self.sessions.get(session_id)
            if session is not None:
                log.info(
                    "whip peer closed stream=%s sourceId=%r session=%d reason=%s dropped=%s",
                    session.stream_path,
                    session.source_id,
                    session_id,
                    message.get("reason"),
                    message.get("framesDropped"),
                )
                self.end_session(session, EndReason.DISCONNECT, close_peer=False)

    def allocate_session_id(self) -> int:
        """A link session id (WHIP feeds and WHEP viewers share one space)."""
        return next(self._ids)

    def send_control(self, message: dict[str, Any]) -> bool:
        """A control message to the process; False when it is not running."""
        return self._send(message)

    def send_media(self, data: bytes) -> bool:
        """An encoded media message to the process; False (dropped) when down or backed up."""
        out = self._out
        if out is None or out.statistics().current_buffer_used >= self.max_queued_messages:
            return False
        out.send_nowait(data)
        return True

    async def negotiate(self, message: dict[str, Any]) -> dict[str, Any]:
        """Sends an offer message (with its "session") and waits for the answer or error."""
        session_id = int(message["session"])
        done = trio.Event()
        replies: list[dict[str, Any]] = []
        self._pending[session_id] = (done, replies)
        try:
            if not self._send(message):
                raise WhipError(503, "WebRTC is not available right now; retry shortly.")
            with trio.move_on_after(self.config.offer_timeout_s):
                await done.wait()
        finally:
            del self._pending[session_id]
        if not replies:
            self._send({"op": "close", "session": session_id})
            raise WhipError(503, "The WebRTC process did not answer the offer in time.")
        return replies[0]

    def _send(self, message: dict[str, Any]) -> bool:
        out = self._out
        if out is None:
            return False
        out.send_nowait(link.encode_control(message))
        return True

    def _process_lost(self) -> None:
        for _event, replies in self._pending.values():
            replies.append({"op": "error", "status": 503, "text": "The WebRTC process restarted."})
            _event.set()
        for session in list(self.sessions.values()):
            self.end_session(session, EndReason.DISCONNECT, close_peer=False)
        if self.viewer_control is not None:
            self.viewer_control({"op": "process-lost"})

    # -- sessions --------------------------------------------------------------------

    def request_keyframe(self, session: WhipSession) -> None:
        """PLI + FIR to the publisher now (keyframe on demand)."""
        now = session.keyframe_requested_s = trio.current_time()
        if self._send({"op": "keyframe", "session": session.session_id}):
            session.keyframe_requests += 1
            if session.keyframe_awaited_since_s is None:
                session.keyframe_awaited_since_s = now

    def _keyframe_arrived(self, session: WhipSession, now: float) -> None:
        """A keyframe after a request: how long the publisher took, round trip included."""
        assert session.keyframe_awaited_since_s is not None
        session.keyframe_delay_s = now - session.keyframe_awaited_since_s
        session.keyframe_awaited_since_s = None
        log.info(
            "keyframe on demand stream=%s sourceId=%r session=%d: keyframe %.1f ms after "
            "the request",
            session.stream_path,
            session.source_id,
            session.session_id,
            session.keyframe_delay_s * 1000,
        )

    def end_session(self, session: WhipSession, reason: EndReason, *, close_peer: bool) -> None:
        """Ends a session's feed (and its peer connection); idempotent."""
        if session.ended:
            return
        session.ended = True
        self.sessions.pop(session.session_id, None)
        self.by_location.pop(session.location, None)
        if session.feed is not None:
            self.host.end_feed(session, reason)
            #: a standby WHIP feed may be the one to go on air now: its PLI goes out before
            #: this peer connection's close, which keeps the process busy for a while
            self.request_pending_keyframes()
        if close_peer:
            self._send({"op": "close", "session": session.session_id})

    def delete(self, location: str) -> bool:
        """WHIP DELETE: the publisher unpublishes; False when no such session."""
        session = self.by_location.get(location)
        if session is None:
            return False
        log.info(
            "whip delete stream=%s sourceId=%r session=%d",
            session.stream_path,
            session.source_id,
            session.session_id,
        )
        self.end_session(session, EndReason.UNPUBLISH, close_peer=True)
        return True

    def shutdown(self) -> None:
        """Ends every WHIP feed (server shutting down)."""
        for session in list(self.sessions.values()):
            self.end_session(session, EndReason.SHUTDOWN, close_peer=True)

    async def publish(
        self, *, app: str, stream: str, query: dict[str, str], token: str, remote: str, offer: str
    ) -> WhipSession:
        """A WHIP POST: policy, negotiation, admission; raises WhipError with the status."""
        config = self.config
        if len(self.sessions) + len(self._pending) >= config.max_sessions:
            raise WhipError(503, f"Too many WebRTC sessions (the limit is {config.max_sessions}).")
        attempt = PublishAttempt.from_query(
            protocol="webrtc",
            stream_path=f"{app}/{stream}" if stream else app,
            query=query,
            remote=remote,
            token=token or None,
        )
        decision = await self.authorize(attempt)
        if isinstance(decision, Refusal):
            log.info("%s", decision.log_text)
            self.refused[decision.code.value] = self.refused.get(decision.code.value, 0) + 1
            raise WhipError(decision.http_status, decision.status_text)
        request: PublishRequest = decision.request
        if not await self.wait_ready(timeout_s=config.offer_timeout_s):
            raise WhipError(503, "WebRTC ingest is not available right now; retry shortly.")
        session = WhipSession(
            service=self,
            session_id=next(self._ids),
            location=secrets.token_urlsafe(24),
            remote=remote,
            stream_path=request.stream_path,
            source_id=request.source_id,
        )
        reply = await self._negotiate(session, offer)
        if reply["op"] == "error":
            raise WhipError(int(reply.get("status", 500)), str(reply.get("text", "")))
        session.answer = str(reply["sdp"])
        for track in reply["tracks"]:
            media = _MEDIA[track["media"]]
            session.tracks.append((track["id"], media, track["codec"], track.get("channels")))
        self.sessions[session.session_id] = session
        now = trio.current_time()
        result = self.host.registry.request_publish(request, now_s=now)
        if isinstance(result, Refused):
            self.sessions.pop(session.session_id, None)
            self._send({"op": "close", "session": session.session_id})
            refusal = refusal_from_bundle(result, attempt=attempt)
            log.info("%s", refusal.log_text)
            self.refused[refusal.code.value] = self.refused.get(refusal.code.value, 0) + 1
            raise WhipError(refusal.http_status, refusal.status_text)
        session.feed = result.feed
        session.record = bool(getattr(decision, "record", False))
        session.last_media_s = now
        self.by_location[session.location] = session
        self.host.feed_started(session)
        log.info(
            "publish stream=%s sourceId=%r remote=%s feed=%d priority=%d state=%s webrtc "
            "session=%d tracks=%s",
            request.stream_path,
            request.source_id,
            remote,
            result.feed.feed_id,
            request.priority,
            result.state.value,
            session.session_id,
            ",".join(f"{t[0]}:{t[2]}" for t in session.tracks),
        )
        return session

    async def _negotiate(self, session: WhipSession, offer: str) -> dict[str, Any]:
        done = trio.Event()
        replies: list[dict[str, Any]] = []
        self._pending[session.session_id] = (done, replies)
        try:
            if not self._send({"op": "offer", "session": session.session_id, "sdp": offer}):
                raise WhipError(503, "WebRTC ingest is not available right now; retry shortly.")
            with trio.move_on_after(self.config.offer_timeout_s):
                await done.wait()
        finally:
            del self._pending[session.session_id]
        if not replies:
            self._send({"op": "close", "session": session.session_id})
            raise WhipError(503, "The WebRTC process did not answer the offer in time.")
        return replies[0]


def _track_info(
    codec: str, body: bytes, channels: int | None, size: tuple[int, int] | None = None
) -> TrackInfo | None:
    """Parameters of a configuration frame (the process sends FLV bodies)."""
    if codec == "h264":
        record = body[5:]
        width, height = 0, 0
        try:
            width, height = h264_picture_size(record)
        except (IndexError, ValueError):
            pass
        profile = codecs.describe_config("h264", record).get("profile")
        return TrackInfo(
            width=width or None,
            height=height or None,
            profile=str(profile) if profile is not None else None,
        )
    if codec == "vp9":
        record = body[5:]  #: after the ExVideoTagHeader and FourCC
        profile = codecs.describe_config("vp9", record).get("profile")
        return TrackInfo(
            width=size[0] if size else None,
            height=size[1] if size else None,
            profile=str(profile) if profile is not None else None,
        )
    if codec == "opus":
        return TrackInfo(sample_rate=48000, channels=channels or 2)
    return None

"""The WebRTC process: aiortc on its own asyncio loop, linked to the daemon.

Started by the daemon as `python -m rtmp_ingest.webrtc.process --link-fd N`,
where N is its end of a unix socketpair (`link`). The daemon sends
"configure" first (ICE servers, addresses, UDP ports, timeouts); the process
answers "ready". Then, per WHIP session the daemon allocated:

    daemon → process   {"op": "offer", "session": S, "sdp": ...}
    process → daemon   {"op": "answer", "session": S, "sdp": ..., "tracks": [...]}
                    or {"op": "error", "session": S, "status": 400|422|503, "text": ...}
    process → daemon   {"op": "connected", "session": S}
    process → daemon   media messages (one per complete encoded frame)
    daemon → process   {"op": "keyframe", "session": S}   PLI + FIR now
    daemon → process   {"op": "close", "session": S}
    process → daemon   {"op": "closed", "session": S, "reason": ...}

and per WHEP viewer (`rtmp_ingest.webrtc.sender`):

    daemon → process   {"op": "whep-offer", "session": S, "sdp": ..., "video": "h264"|"vp9"|"av1"|null,
                        "h264_profile": profile_idc|null, "audio": true|false}
    process → daemon   {"op": "answer", "session": S, "sdp": ...} or {"op": "error", ...}
    process → daemon   {"op": "connected", "session": S}
    daemon → process   media messages (track 0 video, 1 audio; dts = presentation ms)
    process → daemon   {"op": "pli", "session": S}   the viewer asked for a keyframe
    daemon → process   {"op": "close", "session": S}
    process → daemon   {"op": "closed", "session": S, "reason": ..., "framesDropped": N}

A session whose ICE/DTLS does not connect within `connect_timeout_s` closes.
Media never waits for the daemon: when more than `max_backlog_bytes` are
queued on the link, frames are dropped (video then waits for a keyframe and
asks for one), so a stalled daemon costs frames, not memory. The process
exits when the link closes; the daemon restarts it if it dies.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import Any

from aiortc import (
    RTCSessionDescription,
)
from aiortc import clock as aiortc_clock
from aiortc import sdp as aiortc_sdp

from rtmp_ingest.webrtc import link, receiver, sender, stack
from rtmp_ingest.webrtc.clock import SessionClock
from rtmp_ingest.webrtc.peer import PeerBase

log = logging.getLogger("rtmp_ingest.webrtc.process")

#: negotiated codec → bundle codec name
_CODEC_NAMES = {"video/h264": "h264", "video/vp9": "vp9", "audio/opus": "opus"}
#: Bytes queued on the link beyond which frames are dropped (a stalled daemon).
MAX_BACKLOG_BYTES = 8 * 1024 * 1024
#: Seconds an answered session may take to connect (ICE + DTLS).
CONNECT_TIMEOUT_S = 15.0
#: How often video gaps are checked for frames to give up while no packet arrives.
POLL_INTERVAL_S = 0.05
READ_BYTES = 65536


def dtls_server_role(offer: str) -> str:
    """The offer as aiortc is given it: an `actpass` offerer is told to be DTLS client.

    aiortc's certificate is ECDSA and, as DTLS client, it offers only ECDSA cipher
    suites: a DTLS server with an RSA certificate (GStreamer's webrtcbin) then has
    no shared cipher. As DTLS server (the answer says a=setup:passive, which an
    actpass offerer accepts, RFC 8842 §5.3) aiortc picks the suite for its own
    certificate, and every client, browser or GStreamer, offers ECDSA suites.
    """
    return offer.replace("a=setup:actpass", "a=setup:active")


class _TrackSink:
    """A receiver's frames → media messages on the link."""

    def __init__(self, session: PeerSession, index: int, rtp: receiver.EncodedReceiver) -> None:
        self.session = session
        self.index = index
        self.rtp = rtp

    def frame(self, dts_ms: int, body: bytes, *, keyframe: bool, config: bool) -> None:
        session = self.session
        if not session.server.send_media(
            link.encode_media(
                session.session_id, self.index, dts_ms, body, keyframe=keyframe, config=config
            )
        ):
            session.frames_dropped += 1
            if self.rtp.video is not None:
                self.rtp.video.resync()

    def ended(self, reason: str) -> None:
        self.session.close_soon(reason)

    def picture_size(self, width: int, height: int) -> None:
        session = self.session
        session.server.send_control(
            {
                "op": "track-info",
                "session": session.session_id,
                "track": self.index,
                "width": width,
                "height": height,
            }
        )


class PeerSession(PeerBase):
    """One WHIP publisher: its peer connection and receivers."""

    def __init__(self, server: Server, session_id: int) -> None:
        super().__init__(session_id, server.config, server.send_control)
        self.server = server
        self.receivers: list[receiver.EncodedReceiver] = []
        self.frames_dropped = 0

    async def negotiate(self, offer: str) -> dict[str, Any]:
        """The answer message, or an error message with the HTTP status to give."""
        media = self._parse_offer(offer)
        if isinstance(media, dict):
            return media
        pc = self._open_pc()
        transceivers = []
        for section in media:
            #: created before the offer is applied, so our codec order decides the answer
            transceiver = pc.addTransceiver(section.kind, direction="recvonly")
            transceiver.setCodecPreferences(stack.codec_preferences(section.kind))
            transceivers.append(transceiver)
        try:
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=dtls_server_role(offer), type="offer")
            )
        except Exception as exc:  # noqa: BLE001 - aiortc raises several kinds for bad offers
            await self._close_pc()
            text = str(exc)
            if "send parameters" in text or "codec" in text.lower():
                return self._error(
                    422,
                    "No supported codec in the offer: WHIP ingest takes H.264 "
                    "(packetization-mode=1) or VP9 video and Opus audio.",
                )
            return self._error(400, f"Unusable SDP offer: {text}")
        answer = await pc.createAnswer()
        chosen = aiortc_sdp.SessionDescription.parse(answer.sdp).media
        clock = SessionClock()
        tracks: list[dict[str, Any]] = []
        counts = {"audio": 0, "video": 0}
        for transceiver, section, ours in zip(transceivers, media, chosen):
            rtp = transceiver.receiver
            if not isinstance(rtp, receiver.EncodedReceiver) or not ours.rtp.codecs:
                continue
            kind = transceiver.kind
            codec = _CODEC_NAMES.get(ours.rtp.codecs[0].mimeType.lower())
            if codec is None:
                continue
            channels = 1
            for offered in section.rtp.codecs:
                if offered.mimeType.lower() == "audio/opus":
                    stereo = str(offered.parameters.get("sprop-stereo", "0"))
                    channels = 2 if stereo == "1" else 1
                    break
            index = len(tracks)
            rtp.attach(
                _TrackSink(self, index, rtp),
                clock.track(90000 if kind == "video" else 48000),
                codec=codec,
                channels=channels,
            )
            self.receivers.append(rtp)
            tracks.append(
                {
                    "track": index,
                    "id": f"{kind}{counts[kind]}",
                    "media": kind,
                    "codec": codec,
                    "channels": channels if kind == "audio" else None,
                }
            )
            counts[kind] += 1
        await pc.setLocalDescription(answer)
        self._start_connect_deadline(self.config.get("connect_timeout_s") or CONNECT_TIMEOUT_S)
        return {
            "op": "answer",
            "session": self.session_id,
            "sdp": pc.localDescription.sdp,
            "tracks": tracks,
        }

    async def _on_connected(self) -> None:
        for rtp in self.receivers:
            await rtp.request_keyframe(force=True)

    async def request_keyframe(self) -> None:
        for rtp in self.receivers:
            await rtp.request_keyframe(force=True)

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.sessions.pop(self.session_id, None)
        await self._close_pc()
        self.server.send_control(
            {
                "op": "closed",
                "session": self.session_id,
                "reason": reason,
                "framesDropped": self.frames_dropped
                + sum(r.video.frames_dropped for r in self.receivers if r.video is not None),
            }
        )


class Server:
    """The process side of the link: sessions by id, control dispatch, media out."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.sessions: dict[int, PeerSession] = {}
        self.viewers: dict[int, sender.ViewerSession] = {}
        self.config: dict[str, Any] = {}
        self.max_backlog = MAX_BACKLOG_BYTES

    def send_control(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(link.encode_control(message))

    def send_media(self, data: bytes) -> bool:
        """Queues a media message; False (dropped) when the link is backed up."""
        transport = self.writer.transport
        if self.writer.is_closing() or transport.get_write_buffer_size() > self.max_backlog:
            return False
        self.writer.write(data)
        return True

    async def handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        session_id = message.get("session")
        if op == "configure":
            self._configure(message)
            self.send_control({"op": "ready", "pid": os.getpid()})
        elif op == "offer" and isinstance(session_id, int) and isinstance(message.get("sdp"), str):
            session = PeerSession(self, session_id)
            self.sessions[session_id] = session
            try:
                reply = await session.negotiate(message["sdp"])
            except Exception as exc:
                log.exception("negotiation failed session=%d", session_id)
                await session.close("negotiation-error")
                reply = {"op": "error", "session": session_id, "status": 500, "text": str(exc)}
            if reply["op"] == "error":
                self.sessions.pop(session_id, None)
            self.send_control(reply)
        elif (
            op == "whep-offer"
            and isinstance(session_id, int)
            and isinstance(message.get("sdp"), str)
        ):
            await self._whep_offer(session_id, message)
        elif op == "close" and isinstance(session_id, int):
            found = self.sessions.get(session_id)
            if found is not None:
                await found.close("closed-by-server")
            viewer = self.viewers.get(session_id)
            if viewer is not None:
                await viewer.close("closed-by-server")
        elif op == "keyframe" and isinstance(session_id, int):
            found = self.sessions.get(session_id)
            if found is not None:
                await found.request_keyframe()
        else:
            log.warning("unknown link message %r", op)

    async def _whep_offer(self, session_id: int, message: dict[str, Any]) -> None:
        viewer = sender.ViewerSession(
            session_id, self.config, self.send_control, lambda s: self.viewers.pop(s, None)
        )
        self.viewers[session_id] = viewer
        video = message.get("video")
        profile = message.get("h264_profile")
        try:
            reply = await viewer.negotiate(
                message["sdp"],
                video_codec=video if isinstance(video, str) else None,
                h264_profile=profile if isinstance(profile, int) else None,
                audio=bool(message.get("audio")),
            )
        except Exception as exc:
            log.exception("whep negotiation failed session=%d", session_id)
            reply = {"op": "error", "session": session_id, "status": 500, "text": str(exc)}
            await viewer.close("negotiation-error")
        if reply["op"] == "error":
            self.viewers.pop(session_id, None)
        self.send_control(reply)

    def media(self, event: link.Media) -> None:
        """A frame from the daemon for a WHEP viewer."""
        viewer = self.viewers.get(event.session)
        if viewer is not None:
            viewer.push(event.track, event.dts_ms, event.payload, keyframe=event.keyframe)

    def _configure(self, message: dict[str, Any]) -> None:
        self.config = message
        self.max_backlog = int(message.get("max_backlog_bytes") or MAX_BACKLOG_BYTES)
        stack.restrict_host_addresses(
            list(message.get("host_addresses") or []),
            include_loopback=bool(message.get("include_loopback", True)),
        )
        ports = message.get("udp_ports")
        loop = asyncio.get_running_loop()
        if isinstance(loop, stack.PortRangeLoop):
            loop.port_range = (int(ports[0]), int(ports[1])) if ports else None

    async def poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            now_ms = aiortc_clock.current_ms()
            for session in list(self.sessions.values()):
                for rtp in session.receivers:
                    rtp.poll(now_ms)

    async def close_all(self) -> None:
        for session in list(self.sessions.values()):
            await session.close("shutdown")
        for viewer in list(self.viewers.values()):
            await viewer.close("shutdown")


async def serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    server = Server(writer)
    decoder = link.LinkDecoder()
    poller = asyncio.ensure_future(server.poll())
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            data = await reader.read(READ_BYTES)
            decoder.receive_data(data)
            while True:
                event = decoder.next_event()
                if event is link.NEED_DATA or isinstance(event, link.Closed):
                    break
                if isinstance(event, link.Control):
                    #: offers negotiate concurrently; each reply names its session
                    task = asyncio.ensure_future(server.handle(event.message))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif isinstance(event, link.Media):
                    server.media(event)
            if not data:
                break
    except link.LinkError as exc:
        log.error("link protocol error, exiting: %s", exc)
    finally:
        poller.cancel()
        await server.close_all()
        writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rtmp_ingest.webrtc.process")
    parser.add_argument("--link-fd", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s webrtc[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    #: aiortc and aioice narrate every ICE check at INFO; the daemon's log wants outcomes
    quiet = max(logging.getLogger().level, logging.WARNING)
    for name in ("aiortc", "aioice"):
        logging.getLogger(name).setLevel(quiet)
    stack.configure_codecs()
    receiver.install()
    with asyncio.Runner(loop_factory=stack.PortRangeLoop) as runner:
        runner.run(serve(args.link_fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())

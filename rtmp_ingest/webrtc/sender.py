"""WHEP viewers in the WebRTC process: encoded frames from the daemon → aiortc senders.

The daemon sends each viewer's frames already finished: video as one H.264
access unit in Annex B (parameter sets in front of every keyframe), one VP9
frame or one AV1 temporal unit, audio as one Opus packet, each with its
presentation time in ms on the viewer's own continuous timeline. Nothing is
encoded here: the frame is handed to aiortc as an `av.Packet`, which aiortc's
sender only packetizes (RFC 6184 STAP-A/FU-A, RFC 7587, and the payloaders
below), so SSRCs and sequence numbers stay those of one sender for the whole
session whatever the daemon's source does (supersede, reconnect), and RTP
timestamps follow the daemon's timeline.

aiortc has no VP9 or AV1 packetizer: `install_passthrough_encoders()` makes
its sender's encoder lookup (`aiortc.rtcrtpsender.get_encoder`, a module
global of this process) return `Vp9Passthrough` / `Av1Passthrough`, whose
`pack()` cuts a frame with `vp9_payload` (RFC 9628) / `av1_payload` (the AV1
RTP specification); every other codec is aiortc's. It also adds AV1 (and its
RTX) to aiortc's codec table (`aiortc.codecs.CODECS`), which only WHEP answers
use: WHIP's receive preferences (`stack.codec_preferences`) leave out what the
receiver cannot depacketize.

aiortc answers NACKs from its per-sender packet history (the last 128 RTP
packets) and forwards nothing else; a viewer's PLI/FIR cannot be honoured by
passthrough, so it is reported to the daemon (at most once per
`webrtc.whep_pli_interval_s`), which asks a WebRTC publisher for a keyframe
(again at most once per interval, however many viewers ask).

A viewer that cannot keep up (its queue holds `max_queue_frames` frames) loses
its queued video and waits for the next keyframe (counted in `skips`); audio
beyond the bound is dropped (counted), so one slow viewer never holds the link.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCRtpSender,
    RTCSessionDescription,
    rtcrtpsender,
)
from aiortc import sdp as aiortc_sdp
from aiortc.codecs import CODECS
from aiortc.codecs.base import Encoder
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError, convert_timebase

from rtmp_ingest.webrtc.av1_payload import Av1Error, Av1Payloader
from rtmp_ingest.webrtc.peer import PeerBase
from rtmp_ingest.webrtc.vp9_payload import MAX_PAYLOAD_BYTES, Vp9Payloader

log = logging.getLogger("rtmp_ingest.webrtc.sender")

#: Frames a viewer's track may hold before it skips to the next keyframe (~2 s of 30 fps).
MAX_QUEUE_FRAMES = 64
#: At most one keyframe request per this many seconds goes from a viewer to the daemon.
PLI_INTERVAL_S = 1.0
#: Seconds an answered viewer may take to connect (ICE + DTLS).
CONNECT_TIMEOUT_S = 15.0
_MS = fractions.Fraction(1, 1000)

#: Payload types of the AV1 entry (and its RTX) in the codec table; answers use the
#: viewer's own numbers, these only keep the table free of clashes (stack.py has 98-111).
AV1_PAYLOAD_TYPE = 100

#: H.264 profile_idc of the source → the profile-level-id we prefer to answer with
_PROFILE_IDS = {66: "42e0", 77: "4d00", 100: "6400"}


#: How the passthrough encoders cut frames, from the process configuration
#: (`whep_max_payload_bytes`, `whep_vp9_flexible`), set by `install_passthrough_encoders`.
PAYLOAD_SETTINGS: dict[str, Any] = {"max_payload_bytes": MAX_PAYLOAD_BYTES, "vp9_flexible": True}


class Vp9Passthrough(Encoder):
    """aiortc's encoder seat for VP9: frames arrive encoded and are only packetized."""

    def __init__(self) -> None:
        self.payloader = Vp9Payloader(
            max_payload_bytes=PAYLOAD_SETTINGS["max_payload_bytes"],
            flexible=PAYLOAD_SETTINGS["vp9_flexible"],
        )

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise TypeError("WHEP passes VP9 through: its tracks yield packets, never pictures")

    def pack(self, packet: av.Packet) -> tuple[list[bytes], int]:
        assert packet.pts is not None and packet.time_base is not None
        timestamp = convert_timebase(packet.pts, packet.time_base, VIDEO_TIME_BASE)
        return self.payloader.payloads(bytes(packet)), timestamp


class Av1Passthrough(Encoder):
    """aiortc's encoder seat for AV1: temporal units arrive encoded, are only packetized."""

    def __init__(self) -> None:
        self.payloader = Av1Payloader(max_payload_bytes=PAYLOAD_SETTINGS["max_payload_bytes"])
        self.malformed = 0

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise TypeError("WHEP passes AV1 through: its tracks yield packets, never pictures")

    def pack(self, packet: av.Packet) -> tuple[list[bytes], int]:
        assert packet.pts is not None and packet.time_base is not None
        timestamp = convert_timebase(packet.pts, packet.time_base, VIDEO_TIME_BASE)
        try:
            payloads = self.payloader.payloads(bytes(packet), keyframe=packet.is_keyframe)
        except Av1Error:
            self.malformed += 1  #: the daemon checked the TU; nothing broken goes out
            return [], timestamp
        return payloads, timestamp


def _add_av1_codec() -> None:
    """AV1 (and its RTX) in aiortc's codec table, for WHEP answers (idempotent)."""
    video = CODECS["video"]
    if any(c.mimeType.lower() == "video/av1" for c in video):
        return
    from aiortc.rtcrtpparameters import (  # noqa: PLC0415 - with the table it extends
        RTCRtcpFeedback,
        RTCRtpCodecParameters,
    )

    video.append(
        RTCRtpCodecParameters(
            mimeType="video/AV1",
            clockRate=90000,
            payloadType=AV1_PAYLOAD_TYPE,
            rtcpFeedback=[
                RTCRtcpFeedback(type="nack"),
                RTCRtcpFeedback(type="nack", parameter="pli"),
                RTCRtcpFeedback(type="goog-remb"),
            ],
        )
    )
    video.append(
        RTCRtpCodecParameters(
            mimeType="video/rtx",
            clockRate=90000,
            payloadType=AV1_PAYLOAD_TYPE + 1,
            parameters={"apt": AV1_PAYLOAD_TYPE},
        )
    )


def install_passthrough_encoders(config: dict[str, Any] | None = None) -> None:
    """aiortc's senders get `Vp9Passthrough`/`Av1Passthrough` (idempotent; see the module
    docstring), and its codec table an AV1 entry; `config` (the process's) may set
    `whep_max_payload_bytes` and `whep_vp9_flexible`."""
    config = config or {}
    PAYLOAD_SETTINGS["max_payload_bytes"] = int(
        config.get("whep_max_payload_bytes") or MAX_PAYLOAD_BYTES
    )
    flexible = config.get("whep_vp9_flexible")
    PAYLOAD_SETTINGS["vp9_flexible"] = True if flexible is None else bool(flexible)
    _add_av1_codec()
    original = rtcrtpsender.get_encoder
    if getattr(original, "rtmp_ingest_passthrough", False):
        return

    def get_encoder(codec: Any) -> Any:
        mime = codec.mimeType.lower()
        if mime == "video/vp9":
            return Vp9Passthrough()
        if mime == "video/av1":
            return Av1Passthrough()
        return original(codec)

    get_encoder.rtmp_ingest_passthrough = True  # type: ignore[attr-defined]
    rtcrtpsender.get_encoder = get_encoder


class FrameTrack(MediaStreamTrack):
    """A track whose `recv()` yields the daemon's encoded frames as `av.Packet`s."""

    def __init__(self, kind: str, *, max_frames: int = MAX_QUEUE_FRAMES) -> None:
        super().__init__()
        self.kind = kind
        self.max_frames = max_frames
        self._queue: deque[av.Packet] = deque()
        self._ready = asyncio.Event()
        self._waiting_keyframe = False
        self.frames_in = 0
        self.frames_dropped = 0
        self.skips = 0

    def push(self, pts_ms: int, payload: bytes, *, keyframe: bool) -> None:
        """One frame from the daemon; never blocks."""
        self.frames_in += 1
        if self.kind == "video":
            if self._waiting_keyframe and not keyframe:
                self.frames_dropped += 1
                return
            self._waiting_keyframe = False
            if len(self._queue) >= self.max_frames:
                self.frames_dropped += len(self._queue)
                self._queue.clear()
                self.skips += 1
                if not keyframe:
                    self._waiting_keyframe = True
                    self.frames_dropped += 1
                    return
        elif len(self._queue) >= self.max_frames:
            self.frames_dropped += 1
            return
        packet = av.Packet(payload)
        packet.pts = pts_ms
        packet.dts = pts_ms
        packet.time_base = _MS
        packet.is_keyframe = keyframe  #: what the AV1 payloader marks (N)
        self._queue.append(packet)
        self._ready.set()

    async def recv(self) -> av.Packet:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()


def send_preferences(kind: str, *, video_codec: str | None, h264_profile: int | None) -> list[Any]:
    """Send capabilities in preference order: the source's codec (and H.264 profile) first."""
    capabilities = RTCRtpSender.getCapabilities(kind)
    assert capabilities is not None
    wanted = f"video/{video_codec}".lower() if video_codec else ""
    profile = _PROFILE_IDS.get(h264_profile or 0, "")

    def rank(codec: Any) -> tuple[int, int]:
        mime = codec.mimeType.lower()
        if mime == "video/rtx":
            return (1, 0)
        first = 0 if mime == wanted else 2
        pli = str(codec.parameters.get("profile-level-id", "")).lower()
        return (first, 0 if profile and pli.startswith(profile) else 1)

    return sorted(capabilities.codecs, key=rank)


class ViewerSession(PeerBase):
    """One WHEP viewer: a sendonly peer connection fed by the daemon."""

    def __init__(
        self,
        session_id: int,
        config: dict[str, Any],
        send_control: Callable[[dict[str, Any]], None],
        on_closed: Callable[[int], object],
    ) -> None:
        install_passthrough_encoders(config)
        super().__init__(session_id, config, send_control)
        self.on_closed = on_closed
        #: link track index (0 video, 1 audio) → its track
        self.tracks: dict[int, FrameTrack] = {}
        self.pli_last = -math.inf
        self.pli_forwarded = 0

    async def negotiate(
        self, offer: str, *, video_codec: str | None, h264_profile: int | None, audio: bool
    ) -> dict[str, Any]:
        """The answer message, or an error message with the HTTP status to give."""
        media = self._parse_offer(offer)
        if isinstance(media, dict):
            return media
        pc = self._open_pc()
        max_frames = int(self.config.get("whep_max_queue_frames") or MAX_QUEUE_FRAMES)
        used = set()
        for section in media:
            kind = section.kind
            index = 0 if kind == "video" else 1
            wanted = video_codec is not None if kind == "video" else audio
            if index in used or not wanted:
                #: a second section of a kind, or a kind the source lacks: inactive
                pc.addTransceiver(kind, direction="inactive")
                continue
            used.add(index)
            track = FrameTrack(kind, max_frames=max_frames)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(
                send_preferences(kind, video_codec=video_codec, h264_profile=h264_profile)
            )
            self.tracks[index] = track
            if kind == "video":
                self._forward_pli(transceiver.sender)
        if not self.tracks:
            await self._close_pc()
            return self._error(422, "The offer has no section for the source's media.")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            answer = await pc.createAnswer()
        except Exception as exc:  # noqa: BLE001 - aiortc raises several kinds for bad offers
            await self._close_pc()
            text = str(exc)
            if "codec" in text.lower() or "send parameters" in text:
                return self._error(
                    422,
                    f"The offer has no codec the source can be sent in without re-encoding "
                    f"(it is {video_codec or 'audio only'}, Opus audio).",
                )
            return self._error(400, f"Unusable SDP offer: {text}")
        chosen = aiortc_sdp.SessionDescription.parse(answer.sdp).media
        for section in chosen:
            if section.kind == "video" and video_codec and 0 in self.tracks:
                names = [c.mimeType.lower() for c in section.rtp.codecs]
                if f"video/{video_codec}" not in names:
                    await self._close_pc()
                    return self._error(
                        422,
                        f"The source's video is {video_codec}, which the viewer did not offer "
                        "(video is passed through, never re-encoded).",
                    )
        await pc.setLocalDescription(answer)
        timeout = float(self.config.get("connect_timeout_s") or CONNECT_TIMEOUT_S)
        self._start_connect_deadline(timeout)
        return {"op": "answer", "session": self.session_id, "sdp": pc.localDescription.sdp}

    def _forward_pli(self, sender: RTCRtpSender) -> None:
        """The viewer's PLI/FIR → one rate-limited "pli" message to the daemon."""

        def keyframe_wanted() -> None:
            now = time.monotonic()
            interval = float(self.config.get("whep_pli_interval_s") or PLI_INTERVAL_S)
            if now - self.pli_last < interval or self.closed:
                return
            self.pli_last = now
            self.pli_forwarded += 1
            self.send_control({"op": "pli", "session": self.session_id})

        sender._send_keyframe = keyframe_wanted  # type: ignore[method-assign]

    def push(self, track: int, pts_ms: int, payload: bytes, *, keyframe: bool) -> None:
        found = self.tracks.get(track)
        if found is not None and not self.closed:
            found.push(pts_ms, payload, keyframe=keyframe)

    async def _on_connected(self) -> None:
        """Nothing more: the daemon starts sending frames on the "connected" message."""

    async def close(self, reason: str) -> None:
        if self.closed and self.pc is None:
            return
        self.closed = True
        self.on_closed(self.session_id)
        for track in self.tracks.values():
            track.stop()
        await self._close_pc()
        self.send_control(
            {
                "op": "closed",
                "session": self.session_id,
                "reason": reason,
                "framesDropped": sum(t.frames_dropped for t in self.tracks.values()),
                "skips": sum(t.skips for t in self.tracks.values()),
            }
        )

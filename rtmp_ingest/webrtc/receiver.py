"""An aiortc RTP receiver that hands over encoded frames instead of decoding them.

aiortc's `RTCRtpReceiver` reassembles frames in a jitter buffer and decodes
them with PyAV in a thread. We need neither: `EncodedReceiver` takes the RTP
packets at the same place (`_handle_rtp_packet`, called by the DTLS
transport's router), keeps what WebRTC needs from a receiver — RTX
unwrapping, NACKs (aiortc's `NackGenerator`), REMB (aiortc's estimator, so
browsers raise their bitrate), receiver reports with LSR/DLSR, sender reports
for lip sync, PLI and FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1) — and gives
each RTP packet to the track's depacketizer (`h264`, `opus`), whose complete
frames go to a `FrameSink` with their timeline time (`clock`).

aiortc creates its receivers itself, so `install()` makes its peer connection
build ours (one assignment to a module global of aiortc, in the WebRTC process
only). aiortc's internals used, all in this module: `RTCRtpReceiver`'s
constructor and `_set_rtcp_ssrc`, the transport's `_register_rtp_receiver`,
`_unregister_rtp_receiver` and `_send_rtp`, and the RTP/RTCP packet classes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from typing import Any, Protocol

import aiortc.rtcpeerconnection
from aiortc import RTCRtpReceiver
from aiortc.codecs import is_rtx
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unwrap_rtx,
)

from rtmp_ingest.webrtc.clock import TrackClock, ntp_seconds
from rtmp_ingest.webrtc.h264 import AvcTrack, H264Depacketizer
from rtmp_ingest.webrtc.opus import OpusTrack
from rtmp_ingest.webrtc.reorder import AccessUnit, Reassembler
from rtmp_ingest.webrtc.vp9 import Vp9Depacketizer, Vp9Track

log = logging.getLogger("rtmp_ingest.webrtc.receiver")

#: Receiver reports go out every 0.5–1.5 s (RFC 3550 §6.2 randomisation around 1 s).
RTCP_INTERVAL_S = 1.0
#: Keyframe requests (PLI/FIR) for one track at most this often, so a burst of losses
#: does not become a burst of keyframes.
MIN_KEYFRAME_REQUEST_INTERVAL_S = 0.3


class FrameSink(Protocol):
    """Where a receiver's complete frames go."""

    def frame(self, dts_ms: int, body: bytes, *, keyframe: bool, config: bool) -> None: ...

    def ended(self, reason: str) -> None: ...

    def picture_size(self, width: int, height: int) -> None: ...


class EncodedReceiver(RTCRtpReceiver):
    """Receives one track as encoded frames; see the module docstring."""

    def __init__(self, kind: str, transport: Any) -> None:
        super().__init__(kind, transport)
        self.kind = kind
        self.sink: FrameSink | None = None
        self.clock: TrackClock | None = None
        self.video: Reassembler | None = None
        self.video_track: AvcTrack | Vp9Track | None = None
        self.opus: OpusTrack | None = None
        self._own_ssrc: int | None = None
        self._codecs: dict[int, Any] = {}
        self._rtx_ssrc: dict[int, int] = {}
        self._stats: dict[int, StreamStatistics] = {}
        self._lsr: dict[int, tuple[int, float]] = {}
        self._nack = NackGenerator() if kind == "video" else None
        self._remb = RemoteBitrateEstimator() if kind == "video" else None
        self._media_ssrc: int | None = None
        self._rtcp_task: asyncio.Task[None] | None = None
        self._running = False
        self._last_keyframe_request = 0.0
        self._fir_seq = 0
        self.keyframe_requests = 0

    def attach(self, sink: FrameSink, clock: TrackClock, *, codec: str, channels: int) -> None:
        """Sets where frames go; call before the connection starts receiving."""
        self.sink = sink
        self.clock = clock
        if codec == "h264":
            self.video, self.video_track = H264Depacketizer(), AvcTrack()
        elif codec == "vp9":
            self.video, self.video_track = Vp9Depacketizer(), Vp9Track()
        else:
            self.opus = OpusTrack(channels=channels)

    def _set_rtcp_ssrc(self, ssrc: int) -> None:
        super()._set_rtcp_ssrc(ssrc)
        self._own_ssrc = ssrc

    async def receive(self, parameters: Any) -> None:
        if self._running:
            return
        self._running = True
        for codec in parameters.codecs:
            self._codecs[codec.payloadType] = codec
        for encoding in parameters.encodings:
            if encoding.rtx:
                self._rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
        self.transport._register_rtp_receiver(self, parameters)
        self._rtcp_task = asyncio.ensure_future(self._run_rtcp())

    async def stop(self) -> None:
        if self._running:
            self._running = False
            self.transport._unregister_rtp_receiver(self)
            if self._rtcp_task is not None:
                self._rtcp_task.cancel()

    def _handle_disconnect(self) -> None:
        if self.sink is not None:
            self.sink.ended("dtls-closed")

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            self._lsr[packet.ssrc] = ((info.ntp_timestamp >> 16) & 0xFFFFFFFF, time.time())
            if self.clock is not None:
                self.clock.sender_report(ntp_seconds(info.ntp_timestamp), info.rtp_timestamp)
        elif isinstance(packet, RtcpByePacket) and self.sink is not None:
            self.sink.ended("bye")

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        if self._remb is not None and packet.extensions.abs_send_time is not None:
            remb = self._remb.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            if remb is not None and self._own_ssrc is not None:
                await self._send(
                    RtcpPsfbPacket(
                        fmt=RTCP_PSFB_APP,
                        ssrc=self._own_ssrc,
                        media_ssrc=0,
                        fci=pack_remb_fci(*remb),
                    )
                )
        codec = self._codecs.get(packet.payload_type)
        if codec is None:
            return
        stats = self._stats.get(packet.ssrc)
        if stats is None:
            stats = self._stats[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        if is_rtx(codec):
            original = self._rtx_ssrc.get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if original is None or len(packet.payload) < 2 or apt not in self._codecs:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original)
        self._media_ssrc = packet.ssrc
        if self._nack is not None and self._nack.add(packet):
            await self._send_nack(packet.ssrc, sorted(self._nack.missing))
        sink, clock = self.sink, self.clock
        if sink is None or clock is None:
            return
        if self.video is not None:
            units = self.video.push(
                packet.sequence_number,
                packet.timestamp,
                bool(packet.marker),
                packet.payload,
                now_ms=arrival_time_ms,
            )
            self._deliver(units, arrival_time_ms)
            if self.video.keyframe_needed:
                self.video.keyframe_needed = False
                await self.request_keyframe()
        elif self.opus is not None:
            for body, config in self.opus.push(packet.sequence_number, packet.payload):
                dts = clock.time_ms(packet.timestamp, arrival_ms=arrival_time_ms)
                sink.frame(dts, body, keyframe=not config, config=config)

    def _deliver(self, units: list[AccessUnit], now_ms: float) -> None:
        sink, clock, track = self.sink, self.clock, self.video_track
        if sink is None or clock is None or track is None:
            return
        for unit in units:
            dts = clock.time_ms(unit.timestamp, arrival_ms=now_ms)
            for body, keyframe, config in track.bodies(unit):
                if config and isinstance(track, Vp9Track) and track.header is not None:
                    sink.picture_size(track.header.width, track.header.height)
                sink.frame(dts, body, keyframe=keyframe, config=config)

    def poll(self, now_ms: float) -> None:
        """Gives up video gaps that waited too long while no packet came."""
        if self.video is not None:
            self._deliver(self.video.poll(now_ms=now_ms), now_ms)

    async def request_keyframe(self, *, force: bool = False) -> bool:
        """Sends PLI and FIR for the video stream; False when rate-limited or unknown."""
        ssrc = self._media_ssrc
        own = self._own_ssrc
        if self.kind != "video" or ssrc is None or own is None:
            return False
        now = time.monotonic()
        if not force and now - self._last_keyframe_request < MIN_KEYFRAME_REQUEST_INTERVAL_S:
            return False
        self._last_keyframe_request = now
        self.keyframe_requests += 1
        self._fir_seq = (self._fir_seq + 1) & 0xFF
        await self._send(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=own, media_ssrc=ssrc))
        #: FIR FCI (RFC 5104 §4.3.1.1): target SSRC, sequence number, 3 reserved bytes
        fci = struct.pack("!IB3x", ssrc, self._fir_seq)
        await self._send(RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=own, media_ssrc=0, fci=fci))
        return True

    async def _send_nack(self, media_ssrc: int, lost: list[int]) -> None:
        if self._own_ssrc is not None:
            packet = RtcpRtpfbPacket(
                fmt=RTCP_RTPFB_NACK, ssrc=self._own_ssrc, media_ssrc=media_ssrc
            )
            packet.lost = lost
            await self._send(packet)

    async def _send(self, packet: Any) -> None:
        try:
            await self.transport._send_rtp(bytes(packet))
        except ConnectionError:
            pass

    async def _run_rtcp(self) -> None:
        while True:
            await asyncio.sleep(RTCP_INTERVAL_S * (0.5 + random.random()))
            if self._own_ssrc is None:
                continue
            reports = []
            for ssrc, stream in self._stats.items():
                lsr, dlsr = 0, 0
                if ssrc in self._lsr:
                    lsr, at = self._lsr[ssrc]
                    delay = time.time() - at
                    if 0 < delay < 65536:
                        dlsr = int(delay * 65536)
                reports.append(
                    RtcpReceiverInfo(
                        ssrc=ssrc,
                        fraction_lost=stream.fraction_lost,
                        packets_lost=stream.packets_lost,
                        highest_sequence=stream.max_seq or 0,
                        jitter=stream.jitter,
                        lsr=lsr,
                        dlsr=dlsr,
                    )
                )
            if reports:
                await self._send(RtcpRrPacket(ssrc=self._own_ssrc, reports=reports))


def install() -> None:
    """Makes aiortc's peer connections build `EncodedReceiver`s (WebRTC process only)."""
    aiortc.rtcpeerconnection.RTCRtpReceiver = EncodedReceiver  # type: ignore[misc]

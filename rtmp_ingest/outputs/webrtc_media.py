"""What WebRTC viewers can be given of a bundle source, without re-encoding video.

Synchronous and I/O-free (the WHEP service in server/whep.py drives it): H.264 from
length-prefixed samples to Annex B access units with the parameter sets in front of
every keyframe (`avcc_to_annexb`, `H264Access`), VP9 (E-RTMP `vp09`) frames as they
are (`Vp9Access`) and AV1 (`av01`) temporal units with the sequence header in front of
every keyframe (`Av1Access`) — the WebRTC process cuts those two into RTP
(`webrtc.vp9_payload`, `webrtc.av1_payload`) —, whether a source can be carried at all
(`check_playable`: H.264 without B-frames, VP9 profile 0, AV1 Main profile, Opus or
AAC audio), and AAC decoded and encoded to Opus once per source (`AacToOpus`, PyAV).
"""

from __future__ import annotations

import fractions
from typing import Any

import attrs
import av

from rtmp_ingest.bundle import Media, OutputFrame
from rtmp_ingest.flv.tags import PacketType, TagError, parse_audio, parse_video
from rtmp_ingest.webrtc.av1_payload import OBU_SEQUENCE_HEADER, Av1Error, obus
from rtmp_ingest.webrtc.vp9 import keyframe_header

#: An AAC input this far from where the Opus output stands re-anchors the output timeline.
AUDIO_RESYNC_MS = 200
OPUS_RATE = 48_000
OPUS_FRAME_SAMPLES = 960  #: 20 ms
#: Video codecs WHEP passes through (aiortc packetizes H.264; webrtc.vp9_payload VP9,
#: webrtc.av1_payload AV1).
PLAYABLE_VIDEO = ("h264", "vp9", "av1")
#: The VP9 profile the WebRTC process answers (its codec table's profile-id)
VP9_PROFILE = 0
#: The AV1 profile browsers decode (seq_profile 0, Main: 8/10-bit 4:2:0)
AV1_PROFILE = 0
#: AV1CodecConfigurationRecord bytes before its configOBUs (AV1-ISOBMFF §2.3.3)
AV1C_HEADER_BYTES = 4
PLAYABLE_AUDIO = ("opus", "aac")
_START_CODE = b"\x00\x00\x00\x01"


B_FRAMES_REASON = (
    "The source's H.264 has B-frames, which WebRTC cannot carry; "
    "publish without B-frames (e.g. x264 -bf 0 or tune zerolatency)."
)


@attrs.frozen
class Playability:
    playable: bool
    reason: str | None = None


# -- H.264 frames → Annex B (sans-IO) --------------------------------------------------------


def avcc_parameter_sets(record: bytes) -> tuple[bytes, int]:
    """(SPS+PPS in Annex B, NAL length size) of an AVCDecoderConfigurationRecord."""
    if len(record) < 7 or record[0] != 1:
        raise ValueError("not an AVCDecoderConfigurationRecord")
    size = (record[4] & 3) + 1
    out = bytearray()
    pos = 5
    for mask in (0x1F, 0xFF):
        count = record[pos] & mask
        pos += 1
        for _ in range(count):
            length = int.from_bytes(record[pos : pos + 2], "big")
            nal = record[pos + 2 : pos + 2 + length]
            if len(nal) != length or not nal:
                raise ValueError("truncated AVCDecoderConfigurationRecord")
            out += _START_CODE + nal
            pos += 2 + length
    return bytes(out), size


def avcc_to_annexb(data: bytes, length_size: int) -> tuple[bytes, bool]:
    """(Annex B access unit, has SPS) of length-prefixed NAL units."""
    out = bytearray()
    has_sps = False
    pos = 0
    end = len(data)
    while pos + length_size <= end:
        length = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if length == 0 or pos + length > end:
            raise ValueError("NAL unit length runs past the frame")
        if data[pos] & 0x1F == 7:
            has_sps = True
        out += _START_CODE
        out += data[pos : pos + length]
        pos += length
    if pos != end:
        raise ValueError("trailing bytes after the last NAL unit")
    return bytes(out), has_sps


def video_packet(body: bytes) -> tuple[PacketType, bool, int, bytes] | None:
    """(packet type, keyframe, cts, payload) of an H.264 FLV video body."""
    if len(body) > 5 and body[0] & 0x0F == 7 and not body[0] & 0x80:
        cts = int.from_bytes(body[2:5], "big", signed=True)
        kinds = {0: PacketType.SEQUENCE_START, 1: PacketType.CODED_FRAMES}
        kind = kinds.get(body[1])
        if kind is None:
            return None
        return kind, body[0] >> 4 == 1, cts, body[5:]
    try:
        packets = parse_video(body)
    except (TagError, IndexError, ValueError):
        return None
    for packet in packets:
        if packet.packet_type in (PacketType.SEQUENCE_START, PacketType.CODED_FRAMES):
            return packet.packet_type, packet.keyframe, packet.cts_ms, packet.data
    return None


def audio_payload(body: bytes) -> tuple[PacketType, bytes] | None:
    if len(body) > 2 and body[0] >> 4 == 10:
        return (PacketType.SEQUENCE_START if body[1] == 0 else PacketType.CODED_FRAMES), body[2:]
    try:
        packets = parse_audio(body)
    except (TagError, IndexError, ValueError):
        return None
    for packet in packets:
        if packet.packet_type in (PacketType.SEQUENCE_START, PacketType.CODED_FRAMES):
            return packet.packet_type, packet.data
    return None


class H264Access:
    """A source's H.264 frames → Annex B access units, parameter sets on every keyframe."""

    def __init__(self) -> None:
        self.parameter_sets = b""
        self.length_size = 4
        self.b_frames = 0  #: coded frames with a composition offset (B-frames)
        self.malformed = 0

    def push(self, body: bytes) -> tuple[bytes, bool, int] | None:
        """(access unit, keyframe, cts) for a coded frame; None for config/unusable ones."""
        parsed = video_packet(body)
        if parsed is None:
            self.malformed += 1
            return None
        kind, keyframe, cts, data = parsed
        try:
            if kind is PacketType.SEQUENCE_START:
                self.parameter_sets, self.length_size = avcc_parameter_sets(data)
                return None
            unit, has_sps = avcc_to_annexb(data, self.length_size)
        except (ValueError, IndexError):
            self.malformed += 1
            return None
        if cts != 0:
            self.b_frames += 1
        if keyframe and not has_sps:
            unit = self.parameter_sets + unit
        return unit, keyframe, cts


class Vp9Access:
    """A source's VP9 frames (E-RTMP `vp09` bodies) → the frames themselves."""

    def __init__(self) -> None:
        self.malformed = 0

    def push(self, body: bytes) -> tuple[bytes, bool, int] | None:
        """(frame, keyframe, cts=0) for a coded frame; None for config/unusable ones."""
        parsed = video_packet(body)
        if parsed is None:
            self.malformed += 1
            return None
        kind, _, _, data = parsed
        if kind is not PacketType.CODED_FRAMES:
            return None
        if not data:
            self.malformed += 1
            return None
        #: the bitstream decides (VP9 §6.2): a flag that lies would start a viewer on an
        #: inter frame
        return data, keyframe_header(data) is not None, 0


class Av1Access:
    """A source's AV1 temporal units (E-RTMP `av01` bodies) → TUs, the sequence header
    (from the configuration record, if the TU lacks it) in front of every keyframe."""

    def __init__(self) -> None:
        self.config_obus = b""
        self.malformed = 0

    def push(self, body: bytes) -> tuple[bytes, bool, int] | None:
        """(TU, keyframe, cts=0) for a coded frame; None for config/unusable ones."""
        parsed = video_packet(body)
        if parsed is None:
            self.malformed += 1
            return None
        kind, keyframe, _, data = parsed
        try:
            if kind is PacketType.SEQUENCE_START:
                obus(data[AV1C_HEADER_BYTES:])  #: well-formed, or not kept
                self.config_obus = data[AV1C_HEADER_BYTES:]
                return None
            if kind is not PacketType.CODED_FRAMES:
                return None
            elements = obus(data)
        except Av1Error:
            self.malformed += 1
            return None
        if not elements:
            return None
        if keyframe and not any(k == OBU_SEQUENCE_HEADER for k, _ in elements):
            data = self.config_obus + data
        return data, keyframe, 0


def video_access(codec: str) -> H264Access | Vp9Access | Av1Access:
    """What turns a source's video bodies of `codec` into what viewers are sent."""
    if codec == "vp9":
        return Vp9Access()
    if codec == "av1":
        return Av1Access()
    return H264Access()


def check_playable(tracks: list[tuple[Media, str]], gop: list[OutputFrame]) -> Playability:
    """Whether WebRTC can carry a source: its track codecs and its cached GOP's frames."""
    video = [codec for media, codec in tracks if media is Media.VIDEO]
    if video and video[0] not in PLAYABLE_VIDEO:
        return Playability(
            False,
            f"The source's video is {video[0]}; WebRTC viewers get H.264, VP9 or AV1 passed "
            "through, never re-encoded.",
        )
    if video and video[0] == "vp9":
        return _check_vp9(gop)
    if video and video[0] == "av1":
        return _check_av1(gop)
    for out in gop:
        frame = out.frame
        if frame.media is Media.VIDEO and not frame.config:
            parsed = video_packet(frame.payload)
            if (parsed is not None and parsed[2] != 0) or frame.cts_ms != 0:
                return Playability(False, B_FRAMES_REASON)
    return Playability(True)


def _check_vp9(gop: list[OutputFrame]) -> Playability:
    for out in gop:
        frame = out.frame
        if frame.media is Media.VIDEO and not frame.config and frame.codec == "vp9":
            unit = Vp9Access().push(frame.payload)
            header = keyframe_header(unit[0]) if unit is not None else None
            if header is not None and header.profile != VP9_PROFILE:
                return Playability(
                    False,
                    f"The source's VP9 is profile {header.profile} ({header.bit_depth}-bit); "
                    f"WebRTC viewers get VP9 profile {VP9_PROFILE} (8-bit 4:2:0) passed "
                    "through, never re-encoded.",
                )
    return Playability(True)


def _check_av1(gop: list[OutputFrame]) -> Playability:
    for out in gop:
        frame = out.frame
        if frame.media is Media.VIDEO and frame.config and frame.codec == "av1":
            parsed = video_packet(frame.payload)
            record = parsed[3] if parsed is not None else b""
            if len(record) >= 2 and record[1] >> 5 != AV1_PROFILE:
                return Playability(
                    False,
                    f"The source's AV1 is profile {record[1] >> 5}; WebRTC viewers get AV1 "
                    "Main (profile 0) passed through, never re-encoded.",
                )
    return Playability(True)


def h264_profile(gop: list[OutputFrame]) -> int | None:
    """profile_idc of the H.264 configuration record among a GOP's frames."""
    for out in gop:
        frame = out.frame
        if frame.media is Media.VIDEO and frame.config and frame.codec == "h264":
            parsed = video_packet(frame.payload)
            if parsed is not None and len(parsed[3]) > 1:
                return parsed[3][1]
    return None


# -- AAC → Opus, once per source --------------------------------------------------------------


class AacToOpus:
    """AAC access units → Opus packets with their output-timeline ms (PyAV)."""

    def __init__(self, *, bitrate: int) -> None:
        self.bitrate = bitrate
        self._asc: bytes | None = None
        self._decoder: Any = None
        self._resampler: Any = None
        self._fifo: Any = None
        self._encoder: Any = None
        self._samples = 0  #: Opus samples fed to the encoder
        self._origin_ms: float | None = None
        self.errors = 0

    def configure(self, asc: bytes) -> None:

        if asc == self._asc and self._decoder is not None:
            return
        self._asc = asc
        decoder = av.CodecContext.create("aac", "r")
        decoder.extradata = asc
        self._decoder = decoder
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE)
        if self._encoder is None:
            encoder = av.CodecContext.create("libopus", "w")
            encoder.sample_rate = OPUS_RATE
            encoder.layout = "stereo"
            encoder.format = "s16"
            encoder.bit_rate = self.bitrate
            encoder.time_base = fractions.Fraction(1, OPUS_RATE)
            encoder.options = {"application": "lowdelay", "frame_duration": "20"}
            encoder.open()
            self._encoder = encoder
            self._fifo = av.AudioFifo()

    def push(self, dts_ms: int, raw: bytes) -> list[tuple[int, bytes]]:
        """(ms, Opus packet) for one AAC access unit (possibly none yet)."""

        if self._decoder is None:
            return []
        at_ms = self._samples * 1000 / OPUS_RATE
        if self._origin_ms is None or abs(self._origin_ms + at_ms - dts_ms) > AUDIO_RESYNC_MS:
            self._origin_ms = dts_ms - at_ms + self._fifo.samples * 1000 / OPUS_RATE
        out: list[tuple[int, bytes]] = []
        try:
            for frame in self._decoder.decode(av.Packet(raw)):
                frame.pts = None
                for resampled in self._resampler.resample(frame):
                    resampled.pts = None
                    self._fifo.write(resampled)
            while self._fifo.samples >= OPUS_FRAME_SAMPLES:
                chunk = self._fifo.read(OPUS_FRAME_SAMPLES)
                chunk.pts = self._samples
                chunk.time_base = fractions.Fraction(1, OPUS_RATE)
                ms = self._origin_ms + self._samples * 1000 / OPUS_RATE
                self._samples += OPUS_FRAME_SAMPLES
                for packet in self._encoder.encode(chunk):
                    out.append((round(ms), bytes(packet)))
        except (av.FFmpegError, ValueError):
            self.errors += 1
        return out

"""From the bundle's frames (FLV/E-RTMP bodies) to MP4 samples and track descriptions.

`coded_payload` gives a frame's codec payload as MP4 stores it (the FLV
framing removed; H.264/HEVC keep their length-prefixed NAL units, AAC its raw
frames). `track_spec` builds the `TrackSpec` of a track from its
configuration record and what the bundle knows about it (onMetaData); picture
size comes from onMetaData, else from the H.264 SPS, else from PyAV's decoder
opened on the configuration record. `codec_string` is the RFC 6381 name HLS
playlists announce. `audio_frame_samples` is the exact duration of one coded
audio frame where the bitstream says it.
"""

from __future__ import annotations

import logging

from rtmp_ingest.bundle import Frame, Media, TrackInfo
from rtmp_ingest.flv import codecs
from rtmp_ingest.flv.codecs import flac_streaminfo
from rtmp_ingest.flv.tags import PacketType, TagError, parse_audio, parse_video
from rtmp_ingest.outputs.fmp4 import SUPPORTED, TrackSpec

log = logging.getLogger("rtmp_ingest.outputs")

VIDEO_TIMESCALE = 90_000


def coded_payload(frame: Frame) -> bytes | None:
    """The MP4 sample (or, for a config frame, the configuration record) of a frame; None if unusable."""
    body = frame.payload
    if frame.media is Media.VIDEO:
        # fast path: legacy AVC, CodedFrames (0x17/0x27, AVCPacketType 1) or sequence header (0)
        if len(body) > 5 and body[0] & 0x0F == 7 and not body[0] & 0x80 and body[1] in (0, 1):
            return body[5:]
        try:
            packets = parse_video(body)
        except (TagError, IndexError, ValueError):
            return None
    elif frame.media is Media.AUDIO:
        if len(body) > 2 and body[0] >> 4 == 10:
            return body[2:]
        if len(body) > 1 and body[0] >> 4 == 2:
            return body[1:]
        try:
            packets = parse_audio(body)
        except (TagError, IndexError, ValueError):
            return None
    else:
        return None
    for packet in packets:
        if packet.packet_type in (PacketType.SEQUENCE_START, PacketType.CODED_FRAMES):
            return packet.data
    return None


def codec_string(codec: str, config: bytes) -> str:
    """RFC 6381 codec name for HLS CODECS (a generic one where the record is short)."""
    try:
        if codec == "h264":
            return f"avc1.{config[1]:02x}{config[2]:02x}{config[3]:02x}"
        if codec == "hevc":
            space = "ABC"[(config[1] >> 6) - 1] if config[1] >> 6 else ""
            compat = int.from_bytes(config[2:6], "big")
            compat = int(f"{compat:032b}"[::-1], 2)
            constraints = config[6:12].rstrip(b"\x00")
            tier = "H" if config[1] & 0x20 else "L"
            out = f"hvc1.{space}{config[1] & 0x1F}.{compat:X}.{tier}{config[12]}"
            return out + "".join(f".{b:X}" for b in constraints)
        if codec == "av1":
            profile, level = config[1] >> 5, config[1] & 0x1F
            tier = "H" if config[2] & 0x80 else "M"
            depth = 12 if config[2] & 0x20 else 10 if config[2] & 0x40 else 8
            return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"
        if codec == "vp9":
            record = config[4:] if len(config) >= 12 and config[0] == 1 else config
            return f"vp09.{record[0]:02d}.{record[1]:02d}.{record[2] >> 4:02d}"
        if codec == "aac":
            object_type = config[0] >> 3
            if object_type == 31:
                object_type = 32 + ((config[0] & 0x07) << 3 | config[1] >> 5)
            return f"mp4a.40.{object_type}"
    except IndexError:
        pass
    return {
        "h264": "avc1.640028",
        "hevc": "hvc1.1.6.L120",
        "av1": "av01.0.08M.08",
        "vp9": "vp09.00.40.08",
        "aac": "mp4a.40.2",
        "opus": "opus",
        "flac": "fLaC",
        "mp3": "mp4a.40.34",
    }.get(codec, codec)


def track_spec(
    track_number: int, media: Media, codec: str, config: bytes, info: TrackInfo | None
) -> TrackSpec | None:
    """The TrackSpec of a track from its configuration record; None if MP4 cannot carry it."""
    if codec not in SUPPORTED:
        return None
    if media is Media.VIDEO:
        if codec in ("h264", "hevc", "av1") and not config:
            return None
        width = info.width if info and info.width else 0
        height = info.height if info and info.height else 0
        if not (width and height):
            width, height = picture_size(codec, config)
        return TrackSpec(
            track_id=track_number,
            media="video",
            codec=codec,
            timescale=VIDEO_TIMESCALE,
            config=config,
            width=width,
            height=height,
        )
    params = codecs.describe_config(codec, config) if config else {}
    described_rate = params.get("sample_rate")
    described_channels = params.get("channels")
    rate = (
        described_rate
        if isinstance(described_rate, int) and described_rate
        else (info.sample_rate if info and info.sample_rate else 0)
    )
    channels = (
        described_channels
        if isinstance(described_channels, int) and described_channels
        else (info.channels if info and info.channels else 2)
    )
    if codec == "opus":
        rate = 48_000
    if codec == "aac" and not config:
        return None
    if codec in ("opus", "flac") and not config:
        return None
    if not rate:
        rate = 44_100
    return TrackSpec(
        track_id=track_number,
        media="audio",
        codec=codec,
        timescale=rate,
        config=config,
        sample_rate=rate,
        channels=channels,
    )


def picture_size(codec: str, config: bytes) -> tuple[int, int]:
    """Width and height from a configuration record; (0, 0) when it does not say."""
    if codec == "h264":
        try:
            return h264_picture_size(config)
        except (IndexError, ValueError):
            return 0, 0
    if codec in ("hevc", "av1"):
        try:
            import av  # noqa: PLC0415 - outputs are where PyAV lives; only needed here

            context = av.CodecContext.create(codec, "r")
            context.extradata = config
            context.open()
            return context.width, context.height  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - no size is a valid answer; players read the bitstream
            return 0, 0
    return 0, 0


class _Bits:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            value = value << 1 | (byte >> (7 - (self.pos & 7))) & 1
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def h264_picture_size(avcc: bytes) -> tuple[int, int]:
    """Cropped picture size from the first SPS of an AVCDecoderConfigurationRecord (H.264 §7.3.2.1)."""
    if avcc[0] != 1 or avcc[5] & 0x1F == 0:
        raise ValueError("no SPS")
    size = int.from_bytes(avcc[6:8], "big")
    b = _Bits(_unescape(avcc[8 : 8 + size])[1:])
    profile = b.u(8)
    b.u(16)
    b.ue()
    chroma = 1
    if profile in _HIGH_PROFILES:
        chroma = b.ue()
        if chroma == 3:
            b.u(1)
        b.ue()
        b.ue()
        b.u(1)
        if b.u(1):
            for i in range(8 if chroma != 3 else 12):
                if b.u(1):
                    last = next_ = 8
                    for _ in range(16 if i < 6 else 64):
                        if next_:
                            next_ = (last + b.se() + 256) % 256
                        last = next_ or last
    b.ue()
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1)
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()
    b.u(1)
    width_mbs = b.ue() + 1
    height_units = b.ue() + 1
    frame_mbs_only = b.u(1)
    if not frame_mbs_only:
        b.u(1)
    b.u(1)
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_units * 16
    if b.u(1):
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        crop_x = 1 if chroma in (0, 3) else 2
        crop_y = (2 - frame_mbs_only) * (2 if chroma == 1 else 1)
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
    return width, height


_OPUS_FRAME_US = (
    (10_000, 20_000, 40_000, 60_000) * 3 + (10_000, 20_000) * 2 + (2_500, 5_000, 10_000, 20_000) * 4
)


def audio_frame_samples(codec: str, data: bytes, rate: int) -> int | None:
    """Samples in one coded audio frame, from the bitstream; None when it does not say."""
    if not data:
        return None
    if codec == "aac":
        return 1024
    if codec == "mp3":
        return 1152 if rate >= 32_000 else 576
    if codec == "opus":
        toc = data[0]
        count = toc & 3
        frames = (
            1 if count == 0 else 2 if count in (1, 2) else (data[1] & 0x3F if len(data) > 1 else 0)
        )
        return frames * _OPUS_FRAME_US[toc >> 3] * 48 // 1000 or None
    if codec == "flac" and len(data) > 2 and data[0] == 0xFF and data[1] & 0xFE == 0xF8:
        code = data[2] >> 4
        if code == 1:
            return 192
        if 2 <= code <= 5:
            return 576 << (code - 2)
        if code >= 8:
            return 256 << (code - 8)
    return None


def parameter_sets(codec: str, config: bytes) -> bytes:
    """The parameter-set NAL units of an H.264 (avcC) or HEVC (hvcC) configuration record,
    length-prefixed as its samples are (ISO/IEC 14496-15 §5.3.3.1, §8.3.3.1), to put in
    band in a keyframe; b"" for other codecs or a record too short to say."""
    try:
        if codec == "h264" and len(config) >= 7 and config[0] == 1:
            size = (config[4] & 3) + 1
            nals = []
            pos = 5
            for count_mask in (0x1F, 0xFF):
                count = config[pos] & count_mask
                pos += 1
                for _ in range(count):
                    length = int.from_bytes(config[pos : pos + 2], "big")
                    nals.append(config[pos + 2 : pos + 2 + length])
                    pos += 2 + length
            return _length_prefixed(nals, size, config, pos)
        if codec == "hevc" and len(config) >= 23 and config[0] == 1:
            size = (config[21] & 3) + 1
            nals = []
            pos = 23
            for _ in range(config[22]):
                count = int.from_bytes(config[pos + 1 : pos + 3], "big")
                pos += 3
                for _ in range(count):
                    length = int.from_bytes(config[pos : pos + 2], "big")
                    nals.append(config[pos + 2 : pos + 2 + length])
                    pos += 2 + length
            return _length_prefixed(nals, size, config, pos)
    except IndexError:
        return b""
    return b""


def _length_prefixed(nals: list[bytes], size: int, config: bytes, end: int) -> bytes:
    if end > len(config) or size == 3 or not all(nals):
        return b""  #: a truncated record (or the 3-byte length HEVC forbids): nothing in band
    return b"".join(len(nal).to_bytes(size, "big") + nal for nal in nals)


def config_key(codec: str, config: bytes) -> bytes:
    """What of a configuration record makes a new init segment necessary.

    FLAC encoders resend STREAMINFO at the end with frame sizes and the MD5
    filled in; only rate, channels and sample size matter to a player.
    """
    if codec == "flac" and len(config) >= 34:
        info = flac_streaminfo(config)
        return info[10:13] + bytes((info[13] & 0xF0,))
    return config

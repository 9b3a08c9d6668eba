"""Elementary stream syntax carried in MPEG-TS: what the frames need, nothing more.

- H.264 / HEVC Annex B byte streams (ITU-T H.264 Annex B, H.265 Annex B): NAL
  units split at start codes; parameter sets become the MP4/FLV configuration
  records (ISO/IEC 14496-15 §5.3.3.1 AVCDecoderConfigurationRecord, §8.3.3.1
  HEVCDecoderConfigurationRecord) and the rest length-prefixed samples (4-byte
  lengths, lengthSizeMinusOne = 3).
- AAC ADTS (ISO/IEC 13818-7 §6.2 / 14496-3 §1.A.2): frames split at their
  headers; the header becomes the 2-byte AudioSpecificConfig (§1.6.2.1).
- Opus in MPEG-TS (ETSI TS 102 366-style control headers, the Opus project's
  "Opus in MPEG-TS" mapping): packets behind their control header; the channel
  count from the PMT's extension descriptor; OpusHead (RFC 7845 §5.1) built.
- MPEG-1/2 Audio Layer III frames split at their headers (ISO/IEC 11172-3 §2.4.2.3).

Every function takes untrusted bytes and returns a value or raises `EsError`.
"""

from __future__ import annotations

import attrs

from rtmp_ingest.flv.codecs import AAC_SAMPLE_RATES


class EsError(ValueError):
    """Elementary stream bytes that cannot be what the PMT says they are."""


# -- Annex B ------------------------------------------------------------------------------


def split_annex_b(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    units = []
    find = data.find
    start = find(b"\x00\x00\x01")
    if start < 0:
        return []
    start += 3
    while True:
        nxt = find(b"\x00\x00\x01", start)
        if nxt < 0:
            unit = data[start:]
            if unit:
                units.append(unit.rstrip(b"\x00") if unit[-1:] == b"\x00" else unit)
            return units
        end = nxt
        #: a 4-byte start code's leading zero, and trailing_zero_8bits, belong to no unit
        while end > start and data[end - 1] == 0:
            end -= 1
        if end > start:
            units.append(data[start:end])
        start = nxt + 3


def length_prefixed(units: list[bytes]) -> bytes:
    """NAL units as an MP4/FLV sample: each behind its 4-byte big-endian length."""
    return b"".join(len(unit).to_bytes(4, "big") + unit for unit in units)


def rbsp(unit: bytes) -> bytes:
    """A NAL unit without its emulation prevention bytes (00 00 03 → 00 00)."""
    if b"\x00\x00\x03" not in unit:
        return unit
    out = bytearray()
    zeros = 0
    for byte in unit:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class _Bits:
    """An MSB-first bit reader with Exp-Golomb codes (H.264 §9.1)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos_bits: int = 0) -> None:
        self.data = data
        self.pos = pos_bits

    def bit(self) -> int:
        index = self.pos >> 3
        if index >= len(self.data):
            raise EsError("parameter set truncated")
        value = (self.data[index] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.bit():
            zeros += 1
            if zeros > 31:
                raise EsError("Exp-Golomb code too long")
        return (1 << zeros) - 1 + self.bits(zeros)


# -- H.264 --------------------------------------------------------------------------------

AVC_SPS, AVC_PPS, AVC_AUD, AVC_IDR = 7, 8, 9, 5


def avc_record(sps: bytes, pps: bytes) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1) of one SPS and one PPS."""
    if len(sps) < 4 or not pps:
        raise EsError("H.264 SPS shorter than its profile and level")
    return (
        bytes((1, sps[1], sps[2], sps[3], 0xFF, 0xE1))
        + len(sps).to_bytes(2, "big")
        + sps
        + b"\x01"
        + len(pps).to_bytes(2, "big")
        + pps
    )


# -- HEVC ---------------------------------------------------------------------------------

HEVC_VPS, HEVC_SPS, HEVC_PPS, HEVC_AUD = 32, 33, 34, 35
HEVC_IRAP = range(16, 24)  #: BLA, IDR, CRA and the reserved IRAP types


@attrs.frozen
class HevcSps:
    """What the configuration record and the API need from an HEVC SPS (H.265 §7.3.2.2)."""

    general: bytes  #: the 12 general profile_tier_level bytes (§7.3.3)
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int


def hevc_sps(unit: bytes) -> HevcSps:
    data = rbsp(unit)
    if len(data) < 15:
        raise EsError("HEVC SPS shorter than its profile_tier_level")
    max_sub_layers_minus1 = (data[2] >> 1) & 0x7
    general = data[3:15]
    bits = _Bits(data, 15 * 8)
    if max_sub_layers_minus1:
        flags = [(bits.bit(), bits.bit()) for _ in range(max_sub_layers_minus1)]
        if max_sub_layers_minus1 < 8:
            bits.bits(2 * (8 - max_sub_layers_minus1))
        for profile_present, level_present in flags:
            bits.bits(88 if profile_present else 0)
            bits.bits(8 if level_present else 0)
    bits.ue()  #: sps_seq_parameter_set_id
    chroma = bits.ue()
    if chroma > 3:
        raise EsError(f"HEVC chroma_format_idc {chroma}")
    if chroma == 3:
        bits.bit()  #: separate_colour_plane_flag
    width, height = bits.ue(), bits.ue()
    if bits.bit():  #: conformance_window_flag
        sub_w = 2 if chroma in (1, 2) else 1
        sub_h = 2 if chroma == 1 else 1
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    luma, chroma_depth = bits.ue() + 8, bits.ue() + 8
    if not (0 < width < 65536 and 0 < height < 65536) or luma > 16 or chroma_depth > 16:
        raise EsError("HEVC SPS picture size or bit depth out of range")
    return HevcSps(bytes(general), chroma, luma, chroma_depth, width, height)


def hevc_record(vps: bytes, sps: bytes, pps: bytes) -> tuple[bytes, HevcSps]:
    """HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1) and the parsed SPS."""
    parsed = hevc_sps(sps)
    head = (
        b"\x01"
        + parsed.general  #: profile space/tier/idc, compatibility flags, constraints, level
        + b"\xf0\x00"  #: min_spatial_segmentation_idc 0
        + b"\xfc"  #: parallelismType unknown
        + bytes((0xFC | parsed.chroma_format_idc,))
        + bytes((0xF8 | (parsed.bit_depth_luma - 8), 0xF8 | (parsed.bit_depth_chroma - 8)))
        + b"\x00\x00"  #: avgFrameRate unknown
        + b"\x0f"  #: constantFrameRate 0, numTemporalLayers 1, temporalIdNested 1, 4-byte lengths
        + b"\x03"
    )
    arrays = b"".join(
        bytes((0x80 | kind,)) + b"\x00\x01" + len(unit).to_bytes(2, "big") + unit
        for kind, unit in ((HEVC_VPS, vps), (HEVC_SPS, sps), (HEVC_PPS, pps))
    )
    return head + arrays, parsed


# -- AAC ADTS -----------------------------------------------------------------------------


@attrs.frozen
class AdtsFrame:
    config: bytes  #: AudioSpecificConfig (2 bytes)
    sample_rate: int
    channels: int
    data: bytes  #: the raw_data_block(s), header (and CRC) removed
    blocks: int  #: raw data blocks: the frame holds blocks × 1024 samples


def split_adts(data: bytes) -> list[AdtsFrame]:
    """The ADTS frames of a PES payload; EsError if it does not start with one."""
    frames = []
    pos, size = 0, len(data)
    while pos < size:
        if size - pos < 7 or data[pos] != 0xFF or data[pos + 1] & 0xF6 != 0xF0:
            raise EsError("AAC PES is not ADTS (syncword 0xFFF missing)")
        protection_absent = data[pos + 1] & 1
        profile = data[pos + 2] >> 6
        index = (data[pos + 2] >> 2) & 0xF
        channels = ((data[pos + 2] & 1) << 2) | (data[pos + 3] >> 6)
        length = ((data[pos + 3] & 3) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
        blocks = (data[pos + 6] & 3) + 1
        header = 7 if protection_absent else 9
        if index >= len(AAC_SAMPLE_RATES) or length < header or pos + length > size:
            raise EsError("ADTS header with a bad sampling index or frame length")
        object_type = profile + 1
        config = ((object_type << 11) | (index << 7) | (channels << 3)).to_bytes(2, "big")
        frames.append(
            AdtsFrame(
                config, AAC_SAMPLE_RATES[index], channels, data[pos + header : pos + length], blocks
            )
        )
        pos += length
    return frames


# -- Opus ---------------------------------------------------------------------------------

OPUS_SAMPLE_RATE = 48000
#: Opus frame sizes by TOC config (RFC 6716 §3.1), in 48 kHz samples
_OPUS_FRAME_SAMPLES = [480, 960, 1920, 2880] * 3 + [480, 960] * 2 + [120, 240, 480, 960] * 4


def opus_packet_samples(packet: bytes) -> int:
    """Samples (48 kHz) in one Opus packet (RFC 6716 §3.1, §3.2.5)."""
    if not packet:
        raise EsError("empty Opus packet")
    toc = packet[0]
    per_frame = _OPUS_FRAME_SAMPLES[toc >> 3]
    code = toc & 3
    if code == 0:
        return per_frame
    if code in (1, 2):
        return 2 * per_frame
    if len(packet) < 2:
        raise EsError("Opus code 3 packet without a frame count")
    return (packet[1] & 0x3F) * per_frame


def split_opus(data: bytes) -> list[bytes]:
    """Opus packets of a PES payload, each behind its control header (0x7FE0 prefix)."""
    packets = []
    pos, size = 0, len(data)
    while pos < size:
        if size - pos < 3 or data[pos] != 0x7F or data[pos + 1] & 0xE0 != 0xE0:
            raise EsError("Opus PES without its control header")
        flags = data[pos + 1]
        pos += 2
        length = 0
        while True:
            if pos >= size:
                raise EsError("Opus control header truncated")
            byte = data[pos]
            pos += 1
            length += byte
            if byte != 0xFF:
                break
        pos += (2 if flags & 0x10 else 0) + (2 if flags & 0x08 else 0)  #: start/end trim
        if flags & 0x04:  #: control extension
            if pos >= size:
                raise EsError("Opus control extension truncated")
            pos += 1 + data[pos]
        if pos + length > size:
            raise EsError("Opus packet runs past the PES")
        packets.append(data[pos : pos + length])
        pos += length
    return packets


def opus_head(channels: int) -> bytes:
    """OpusHead (RFC 7845 §5.1), mapping family 0 (mono/stereo) or 1 (up to 8 channels)."""
    if not 1 <= channels <= 8:
        raise EsError(f"Opus with {channels} channels")
    family = 0 if channels <= 2 else 1
    head = (
        b"OpusHead\x01"
        + bytes((channels,))
        + b"\x00\x00"  #: pre-skip: MPEG-TS does not carry the encoder delay
        + OPUS_SAMPLE_RATE.to_bytes(4, "little")
        + b"\x00\x00"
        + bytes((family,))
    )
    if family == 1:
        #: Vorbis channel order (RFC 7845 §5.1.1.2): streams, coupled streams, mapping
        coupled = {3: 1, 4: 2, 5: 2, 6: 2, 7: 3, 8: 3}[channels]
        head += bytes((channels - coupled, coupled)) + bytes(range(channels))
    return head


def opus_channels(descriptors: bytes) -> int:
    """Channel count from the PMT's DVB extension descriptor (tag 0x7F, extension 0x80)."""
    pos = 0
    while pos + 2 <= len(descriptors):
        tag, size = descriptors[pos], descriptors[pos + 1]
        body = descriptors[pos + 2 : pos + 2 + size]
        if tag == 0x7F and len(body) >= 2 and body[0] == 0x80:
            code = body[1]
            return code if 1 <= code <= 8 else 2  #: 0 and 0x80+: dual mono / explicit maps
        pos += 2 + size
    return 2


# -- MP3 ----------------------------------------------------------------------------------

_MP3_BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@attrs.frozen
class Mp3Frame:
    sample_rate: int
    channels: int
    samples: int
    data: bytes  #: the whole frame, header included (FLV and MP4 keep it)


def split_mp3(data: bytes) -> list[Mp3Frame]:
    """The Layer III frames of a PES payload."""
    frames = []
    pos, size = 0, len(data)
    while pos + 4 <= size:
        b1, b2, b3 = data[pos + 1], data[pos + 2], data[pos + 3]
        if data[pos] != 0xFF or b1 & 0xE0 != 0xE0:
            raise EsError("MPEG audio PES without a frame sync")
        version = (b1 >> 3) & 3  #: 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
        layer = (b1 >> 1) & 3
        if version == 1 or layer != 1:
            raise EsError("MPEG audio that is not Layer III")
        rate_index, bitrate_index = (b2 >> 2) & 3, b2 >> 4
        if rate_index == 3 or bitrate_index in (0, 15):
            raise EsError("MP3 frame header with a reserved rate")
        rate = _MP3_RATES[version][rate_index]
        bitrate = _MP3_BITRATES[1 if version == 3 else 2][bitrate_index] * 1000
        samples = 1152 if version == 3 else 576
        length = samples // 8 * bitrate // rate + ((b2 >> 1) & 1)
        if length < 4 or pos + length > size:
            raise EsError("MP3 frame runs past the PES")
        channels = 1 if b3 >> 6 == 3 else 2
        frames.append(Mp3Frame(rate, channels, samples, data[pos : pos + length]))
        pos += length
    if pos != size:
        raise EsError("MP3 PES ends inside a frame header")
    return frames

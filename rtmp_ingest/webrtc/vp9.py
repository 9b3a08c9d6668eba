"""VP9 over RTP (RFC 9628) → complete frames and FLV (E-RTMP "vp09") bodies (sans-IO).

Each packet starts with the VP9 payload descriptor (RFC 9628 §4.2):

    |I|P|L|F|B|E|V|Z|   I: picture id follows (7 or 15 bits), L: layer indices,
                        F: flexible mode (P_DIFF bytes when P), B/E: start/end of a
                        layer frame, V: scalability structure follows

The reorder buffer (`reorder.Reassembler`) delivers one picture's packets in
order; the base spatial layer's frame (SID 0, from its B packet to its E
packet) is the sample. Higher spatial layers are dropped (the base layer
decodes alone; carrying them would need a superframe). A frame whose
uncompressed header (VP9 bitstream spec §6.2) says KEY_FRAME is a keyframe; its
profile, bit depth, colour configuration and size become the
VPCodecConfigurationRecord (VP Codec ISO Media File Format Binding §2.3.3)
sent as the E-RTMP sequence start whenever it changes.
"""

from __future__ import annotations

import attrs

from rtmp_ingest.webrtc.reorder import AccessUnit, Reassembler

#: VP9 levels by the largest luma picture size they allow (VP9 levels table, Annex A)
_LEVELS = (
    (36864, 10),
    (73728, 11),
    (122880, 20),
    (245760, 21),
    (552960, 30),
    (983040, 31),
    (2228224, 41),
    (8912896, 51),
    (35651584, 62),
)
#: color_space (§7.2.2) → (colour primaries, transfer, matrix) of ISO/IEC 23091-2
_COLOUR = {
    1: (6, 6, 6),  #: CS_BT_601
    2: (1, 1, 1),  #: CS_BT_709
    3: (6, 6, 6),  #: CS_SMPTE_170
    4: (7, 7, 7),  #: CS_SMPTE_240
    5: (9, 14, 9),  #: CS_BT_2020
    7: (2, 2, 0),  #: CS_RGB (identity matrix)
}
CS_RGB = 7
SYNC_CODE = 0x498342


@attrs.frozen
class Vp9Header:
    """What a keyframe's uncompressed header says about the stream."""

    profile: int
    bit_depth: int
    color_space: int
    full_range: bool
    subsampling: tuple[int, int]
    width: int
    height: int


class _Bits:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        if self.pos + n > len(self.data) * 8:
            raise ValueError("VP9 frame header runs past the frame")
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            value = value << 1 | (byte >> (7 - (self.pos & 7))) & 1
            self.pos += 1
        return value


def keyframe_header(frame: bytes) -> Vp9Header | None:
    """The stream parameters of a keyframe (§6.2); None for other frames or garbage."""
    try:
        bits = _Bits(frame)
        if bits.u(2) != 2:
            return None
        profile = bits.u(1)
        profile |= bits.u(1) << 1
        if profile == 3:
            bits.u(1)
        if bits.u(1):  #: show_existing_frame
            return None
        if bits.u(1) != 0:  #: frame_type: not KEY_FRAME
            return None
        bits.u(2)  #: show_frame, error_resilient_mode
        if bits.u(24) != SYNC_CODE:
            return None
        bit_depth = 8
        if profile >= 2:
            bit_depth = 12 if bits.u(1) else 10
        color_space = bits.u(3)
        if color_space != CS_RGB:
            full_range = bool(bits.u(1))
            if profile in (1, 3):
                subsampling = (bits.u(1), bits.u(1))
                bits.u(1)
            else:
                subsampling = (1, 1)
        else:
            full_range = True
            subsampling = (0, 0)
            if profile in (1, 3):
                bits.u(1)
        width = bits.u(16) + 1
        height = bits.u(16) + 1
    except ValueError:
        return None
    return Vp9Header(profile, bit_depth, color_space, full_range, subsampling, width, height)


def vpcc_record(header: Vp9Header) -> bytes:
    """The vpcC box payload: FullBox version 1, flags 0, then the record (§2.3.3)."""
    area = header.width * header.height
    level = next((lvl for limit, lvl in _LEVELS if area <= limit), 62)
    chroma = {(1, 1): 1, (1, 0): 2, (0, 0): 3}.get(header.subsampling, 1)
    primaries, transfer, matrix = _COLOUR.get(header.color_space, (2, 2, 2))
    return bytes(
        (
            1,
            0,
            0,
            0,
            header.profile,
            level,
            header.bit_depth << 4 | chroma << 1 | int(header.full_range),
            primaries,
            transfer,
            matrix,
            0,
            0,  #: no codec initialization data
        )
    )


def descriptor(payload: bytes) -> tuple[int, int, int] | None:
    """(length, flags byte, spatial layer id) of a payload descriptor; None if truncated."""
    if not payload:
        return None
    flags = payload[0]
    pos = 1
    if flags & 0x80:  #: I: picture id, 7 or 15 bits
        if pos >= len(payload):
            return None
        pos += 2 if payload[pos] & 0x80 else 1
    sid = 0
    if flags & 0x20:  #: L: layer indices
        if pos >= len(payload):
            return None
        sid = (payload[pos] >> 1) & 0x07
        pos += 1
        if not flags & 0x10:  #: non-flexible mode: TL0PICIDX
            pos += 1
    if flags & 0x10 and flags & 0x40:  #: F and P: up to 3 P_DIFF bytes, N chains them
        for _ in range(3):
            if pos >= len(payload):
                return None
            more = payload[pos] & 0x01
            pos += 1
            if not more:
                break
    if flags & 0x02:  #: V: scalability structure
        if pos >= len(payload):
            return None
        ss = payload[pos]
        pos += 1
        spatial = (ss >> 5) + 1
        if ss & 0x10:  #: Y: resolutions
            pos += 4 * spatial
        if ss & 0x08:  #: G: picture group description
            if pos >= len(payload):
                return None
            groups = payload[pos]
            pos += 1
            for _ in range(groups):
                if pos >= len(payload):
                    return None
                refs = (payload[pos] >> 2) & 0x03
                pos += 1 + refs
    if pos > len(payload):
        return None
    return pos, flags, sid


class Vp9Depacketizer(Reassembler):
    """RTP packets of one VP9 stream → complete base-layer frames, in order."""

    def decode(self, payloads: list[bytes]) -> tuple[tuple[bytes, ...], bool] | None:
        frame = bytearray()
        started = ended = False
        for payload in payloads:
            parsed = descriptor(payload)
            if parsed is None:
                return None
            size, flags, sid = parsed
            if sid != 0:
                continue
            begin, end = bool(flags & 0x08), bool(flags & 0x04)
            if begin:
                if started:
                    return None  #: a second base-layer frame in one picture
                started = True
            elif not started or ended:
                return None  #: a continuation without its start
            frame += payload[size:]
            if end:
                ended = True
        if not (started and ended) or not frame:
            return None
        data = bytes(frame)
        return (data,), keyframe_header(data) is not None


#: E-RTMP video (ExVideoTagHeader): IsExHeader | FrameType << 4 | PacketType, FourCC
_CONFIG_HEAD = bytes((0x80 | 1 << 4 | 0,)) + b"vp09"
_KEY_HEAD = bytes((0x80 | 1 << 4 | 1,)) + b"vp09"
_INTER_HEAD = bytes((0x80 | 2 << 4 | 1,)) + b"vp09"


class Vp9Track:
    """VP9 frames → E-RTMP bodies: a vpcC sequence start when it changes, then frames."""

    def __init__(self) -> None:
        self._record: bytes | None = None
        self.header: Vp9Header | None = None

    def bodies(self, unit: AccessUnit) -> list[tuple[bytes, bool, bool]]:
        out: list[tuple[bytes, bool, bool]] = []
        frame = unit.parts[0]
        if unit.keyframe:
            header = keyframe_header(frame)
            if header is not None:
                record = vpcc_record(header)
                self.header = header
                if record != self._record:
                    self._record = record
                    out.append((_CONFIG_HEAD + record, False, True))
        if self._record is None:
            return out
        out.append(((_KEY_HEAD if unit.keyframe else _INTER_HEAD) + frame, unit.keyframe, False))
        return out

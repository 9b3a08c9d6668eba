"""AV1 temporal units → RTP payloads (the AV1 RTP specification §4), for WHEP (sans-IO).

aiortc has no AV1 packetizer, so WHEP viewers of an E-RTMP `av01` source get
their temporal units (TUs) cut here. A TU from the bundle is in the low
overhead bitstream format (AV1 spec §5.2: OBUs with `obu_size` fields). Each
OBU is rewritten without its size field (`obu_has_size_field` = 0, as the RTP
specification §4.3 recommends), temporal delimiters, tile lists and padding
are dropped (§5: they MUST NOT be sent), and the OBUs are packed in order into
payloads of at most `max_payload_bytes` behind an aggregation header
(docs/spec.md §7):

    |Z|Y|W W|N|-|-|-|   Z: the first element continues the previous packet's
                        last OBU; Y: the last element continues in the next;
                        W=0: every element has a LEB128 length;
                        N: the first packet of a coded video sequence (a
                        keyframe whose TU carries the sequence header)

A receiver without the dependency descriptor extension (aiortc offers none)
orders frames by sequence number and takes N as the keyframe mark, which is
what passthrough needs: every TU depends on the previous one and the sender
resumes only at keyframes.
"""

from __future__ import annotations

#: RTP payload bytes per packet (see vp9_payload.MAX_PAYLOAD_BYTES)
MAX_PAYLOAD_BYTES = 1200
#: The smallest limit that can carry anything: the aggregation header, a one-byte
#: length and a byte of an OBU.
MIN_PAYLOAD_BYTES = 3
#: The longest LEB128 value AV1 allows (§4.10.5: at most 8 bytes, values < 2**32)
MAX_LEB128_BYTES = 8
#: OBU types (AV1 spec §6.2.2)
OBU_SEQUENCE_HEADER = 1
OBU_TEMPORAL_DELIMITER = 2
OBU_TILE_LIST = 8
OBU_PADDING = 15
#: OBU types never sent over RTP (AV1 RTP spec §5)
NOT_SENT = frozenset({OBU_TEMPORAL_DELIMITER, OBU_TILE_LIST, OBU_PADDING})
#: obu_header bits: forbidden, obu_extension_flag, obu_has_size_field
FORBIDDEN_BIT, EXTENSION_BIT, SIZE_BIT = 0x80, 0x04, 0x02
#: aggregation header bits
AGG_Z, AGG_Y, AGG_N = 0x80, 0x40, 0x08


class Av1Error(ValueError):
    """A temporal unit that is not a sequence of well-formed OBUs."""


def leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_leb128(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); Av1Error if it runs past the data or is too long."""
    value = 0
    for index in range(MAX_LEB128_BYTES):
        if pos >= len(data):
            raise Av1Error("LEB128 value runs past the data")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, pos
    raise Av1Error("LEB128 value longer than 8 bytes")


def obus(unit: bytes) -> list[tuple[int, bytes]]:
    """(type, OBU without its size field) of a TU, in order, minus those never sent."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(unit):
        header = unit[pos]
        if header & FORBIDDEN_BIT:
            raise Av1Error("OBU forbidden bit set")
        kind = header >> 3 & 0x0F
        head_end = pos + (2 if header & EXTENSION_BIT else 1)
        if head_end > len(unit):
            raise Av1Error("OBU extension header runs past the data")
        if header & SIZE_BIT:
            size, start = read_leb128(unit, head_end)
            end = start + size
            if end > len(unit):
                raise Av1Error("OBU size runs past the data")
        else:
            start, end = head_end, len(unit)  #: the last OBU may omit its size
        if kind not in NOT_SENT:
            out.append(
                (kind, bytes((header & ~SIZE_BIT,)) + unit[pos + 1 : head_end] + unit[start:end])
            )
        pos = end
    return out


class Av1Payloader:
    """One AV1 stream → RTP payloads per TU; the caller sets the marker on the last."""

    def __init__(self, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        if max_payload_bytes < MIN_PAYLOAD_BYTES:
            raise ValueError(f"max_payload_bytes must be at least {MIN_PAYLOAD_BYTES}")
        self.max_payload_bytes = max_payload_bytes
        self.units = 0
        self.sequences = 0  #: TUs sent with N (a keyframe with its sequence header)

    def payloads(self, unit: bytes, *, keyframe: bool) -> list[bytes]:
        """The payloads of one TU (none if it holds only OBUs never sent); Av1Error."""
        elements = obus(unit)
        if not elements:
            return []
        new_sequence = keyframe and any(kind == OBU_SEQUENCE_HEADER for kind, _ in elements)
        self.units += 1
        self.sequences += new_sequence
        out: list[bytes] = []
        packet = bytearray()
        continues = False  #: Z of the packet being filled

        def close(*, fragment: bool) -> None:
            flags = (AGG_Z if continues else 0) | (AGG_Y if fragment else 0)
            flags |= AGG_N if new_sequence and not out else 0
            out.append(bytes((flags,)) + packet)

        for _, obu in elements:
            data = memoryview(obu)
            while data:
                room = self.max_payload_bytes - 1 - len(packet)
                length = leb128(len(data))
                if len(length) + len(data) <= room:
                    packet += length
                    packet += data
                    break
                if room >= 2:
                    #: a fragment as large as fits with its own length field
                    take = room - len(leb128(room))
                    while len(leb128(take)) + take > room:
                        take -= 1
                    packet += leb128(take)
                    packet += data[:take]
                    data = data[take:]
                    close(fragment=True)
                    packet, continues = bytearray(), True
                else:
                    close(fragment=False)
                    packet, continues = bytearray(), False
        if packet:
            close(fragment=False)
        return out

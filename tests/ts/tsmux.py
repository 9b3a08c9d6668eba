"""A minimal MPEG-TS writer for tests: PAT, PMT and PES packets with stuffing.

Deliberately independent of the demuxer (written from ISO/IEC 13818-1 tables),
so round trips test one against the other.
"""

from __future__ import annotations

from rtmp_ingest.ts.packets import crc32_mpeg

PMT_PID = 0x1000


def _ts(pid: int, payload: bytes, *, start: bool, counter: int, af: bytes | None = None) -> bytes:
    """One 188-byte packet; stuffs the adaptation field to fill it."""
    room = 184 - len(payload)
    assert room >= 0
    header = bytes((0x47, (0x40 if start else 0) | (pid >> 8), pid & 0xFF))
    if room == 0 and af is None:
        return header + bytes((0x10 | counter,)) + payload
    field = af if af is not None else b""
    if room == 1 and not field:
        return header + bytes((0x30 | counter,)) + b"\x00" + payload
    body = (field or b"\x00") + b"\xff" * (room - 1 - len(field or b"\x00"))
    return header + bytes((0x30 | counter, len(body))) + body + payload


def section(table_id: int, table_ext: int, body: bytes) -> bytes:
    length = 5 + len(body) + 4
    head = bytes((table_id, 0xB0 | (length >> 8), length & 0xFF)) + table_ext.to_bytes(2, "big")
    head += b"\xc1\x00\x00"
    data = head + body
    return data + crc32_mpeg(data).to_bytes(4, "big")


def pat(counter: int = 0) -> bytes:
    body = (1).to_bytes(2, "big") + bytes((0xE0 | (PMT_PID >> 8), PMT_PID & 0xFF))
    return _ts(0, b"\x00" + section(0x00, 1, body), start=True, counter=counter)


def pmt(streams: list[tuple[int, int, bytes]], counter: int = 0) -> bytes:
    """streams: (stream_type, pid, descriptors)."""
    body = b"\xe1\x00\xf0\x00"  #: PCR PID 0x100, no program info
    for stream_type, pid, descriptors in streams:
        body += bytes((stream_type, 0xE0 | (pid >> 8), pid & 0xFF))
        body += bytes((0xF0 | (len(descriptors) >> 8), len(descriptors) & 0xFF)) + descriptors
    return _ts(PMT_PID, b"\x00" + section(0x02, 1, body), start=True, counter=counter)


def timestamp(prefix: int, value: int) -> bytes:
    return bytes(
        (
            (prefix << 4) | ((value >> 29) & 0x0E) | 1,
            (value >> 22) & 0xFF,
            ((value >> 14) & 0xFE) | 1,
            (value >> 7) & 0xFF,
            ((value << 1) & 0xFE) | 1,
        )
    )


def pes(
    stream_id: int, data: bytes, pts: int | None, dts: int | None = None, *, bounded: bool = True
) -> bytes:
    header = b""
    flags = 0
    if pts is not None:
        if dts is not None and dts != pts:
            flags = 0xC0
            header = timestamp(3, pts) + timestamp(1, dts)
        else:
            flags = 0x80
            header = timestamp(2, pts)
    optional = bytes((0x80, flags, len(header))) + header
    length = len(optional) + len(data)
    size = length if bounded and length <= 0xFFFF else 0
    return b"\x00\x00\x01" + bytes((stream_id,)) + size.to_bytes(2, "big") + optional + data


def packetize(pid: int, data: bytes, counter: int) -> tuple[list[bytes], int]:
    """The packets carrying one PES; returns them and the next continuity counter."""
    packets = []
    first = True
    pos = 0
    while pos < len(data) or first:
        chunk = data[pos : pos + 184]
        packets.append(_ts(pid, chunk, start=first, counter=counter))
        counter = (counter + 1) & 0x0F
        pos += len(chunk)
        first = False
    return packets, counter

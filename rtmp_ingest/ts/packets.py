"""Sans-IO MPEG-TS demultiplexer: 188-byte packets → program tables and PES packets.

Shape (like the RTMP core): `receive_data(data)` with `b""` meaning end of
stream, then `next_event()` until it returns `NEED_DATA`. Events are `Program`
(the PMT's elementary streams, whenever it changes), `Pes` (one complete PES
packet: timestamps and payload) and `Lost` (a PES that was dropped because a
packet of it was lost or damaged).

What a live contribution link needs (ISO/IEC 13818-1 = H.222.0):

- Packets (§2.4.3.2): sync byte 0x47 every 188 bytes. On loss of sync the
  demuxer skips to the next position where two sync bytes 188 apart line up
  (counted in `sync_losses`); only `MAX_UNSYNCED_BYTES` without any sync is a
  `TsError` (the input is not MPEG-TS at all).
- Continuity (§2.4.3.3): a gap in a PID's continuity_counter (not announced by
  the adaptation field's discontinuity_indicator), or a packet with the
  transport_error_indicator, damages the PES being assembled on that PID: it is
  dropped (a `Lost` event), and the next PES starts clean. A repeated packet
  (same counter) is ignored, as the standard allows once.
- PSI (§2.4.4): the PAT names the first program's PMT PID; the PMT lists the
  elementary streams. Sections are reassembled across packets and checked
  with their CRC_32; a damaged section is ignored (the next repetition, every
  ~100 ms, is used).
- PES (§2.4.3.6): a PES ends when its PES_packet_length is reached (audio,
  emitted at once) or when the next PES of the PID starts (video, whose length
  is 0 = unbounded: one frame of latency, inherent in MPEG-TS), or at end of
  stream. PTS/DTS are the 33-bit 90 kHz values, unwrapped by the caller. The
  PCR is not read (the frames' own PTS/DTS time them).
- Scrambled packets (transport_scrambling_control ≠ 0) are dropped as lost.
"""

from __future__ import annotations

import collections
import enum

import attrs

PACKET_BYTES = 188
SYNC = 0x47
#: bytes without a single sync byte pair before the input is judged not MPEG-TS
MAX_UNSYNCED_BYTES = 64 * 1024  # 350 packets; SRT delivers whole 7-packet messages
#: largest PES we assemble: a 4K intra frame at a high bitrate stays well below it
MAX_PES_BYTES = 16 * 1024 * 1024
#: largest PSI section (ISO/IEC 13818-1 §2.4.4.11: section_length ≤ 1021 for PAT/PMT)
MAX_SECTION_BYTES = 4096
PAT_PID = 0
NULL_PID = 0x1FFF


class TsError(ValueError):
    """The input is not an MPEG transport stream (the only error the demuxer raises)."""


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA


@attrs.frozen
class ElementaryStream:
    """One entry of the PMT (§2.4.4.8)."""

    pid: int
    stream_type: int
    #: the ES_info descriptors, raw (registration descriptors name private streams)
    descriptors: bytes = b""

    def registration(self) -> bytes | None:
        """The format_identifier of a registration descriptor (tag 5), e.g. b"Opus"."""
        data, pos = self.descriptors, 0
        while pos + 2 <= len(data):
            tag, size = data[pos], data[pos + 1]
            if tag == 5 and size >= 4 and pos + 6 <= len(data):
                return bytes(data[pos + 2 : pos + 6])
            pos += 2 + size
        return None


@attrs.frozen
class Program:
    """The elementary streams of the program, sent whenever the PMT changes."""

    program_number: int
    streams: tuple[ElementaryStream, ...]


@attrs.frozen
class Pes:
    """One complete PES packet of an elementary stream (timestamps: 33-bit, 90 kHz)."""

    pid: int
    stream_id: int
    pts: int | None
    dts: int | None
    data: bytes


@attrs.frozen
class Lost:
    """A PES of `pid` was dropped: a packet was lost, damaged, scrambled or oversized."""

    pid: int
    reason: str


Event = Program | Pes | Lost


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc32_mpeg(data: bytes | bytearray | memoryview) -> int:
    """CRC_32 of PSI sections (§2.4.4.9, Annex A: polynomial 0x04C11DB7, no reflection)."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def _timestamp(raw: bytes | bytearray, pos: int) -> int:
    #: §2.4.3.7: 33 bits in 5 bytes with marker bits
    return (
        ((raw[pos] & 0x0E) << 29)
        | (raw[pos + 1] << 22)
        | ((raw[pos + 2] & 0xFE) << 14)
        | (raw[pos + 3] << 7)
        | (raw[pos + 4] >> 1)
    )


class _Assembly:
    """A PES being collected on one PID."""

    __slots__ = ("chunks", "damaged", "expected", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.expected = 0  #: PES_packet_length + 6, or 0 when unbounded
        self.damaged = ""


class TsDemuxer:
    """Demultiplexes one transport stream (one program: the first in the PAT)."""

    def __init__(
        self, *, max_pes_bytes: int = MAX_PES_BYTES, max_unsynced_bytes: int = MAX_UNSYNCED_BYTES
    ) -> None:
        self._buffer = bytearray()
        self._events: collections.deque[Event] = collections.deque()
        self._max_pes = max_pes_bytes
        self._max_unsynced = max_unsynced_bytes
        self._unsynced = 0
        self._pmt_pid: int | None = None
        self._program_number = 0
        self._pmt_raw = b""
        #: PID → stream type for the PIDs whose PES we assemble
        self._es: dict[int, int] = {}
        self._cc: dict[int, int] = {}
        self._pes: dict[int, _Assembly] = {}
        self._sections: dict[int, bytearray] = {}
        self.packets = 0
        self.sync_losses = 0
        self.cc_errors = 0
        self.lost_pes = 0
        self.bad_sections = 0
        self._ended = False

    # -- input ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feeds bytes (any split); b"" = end of stream (pending PES are emitted)."""
        if not data:
            if not self._ended:
                self._ended = True
                for pid in list(self._pes):
                    self._finish(pid)
            return
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        pos = 0
        packet = self._packet
        pes = self._pes
        counters = self._cc
        max_pes = self._max_pes
        fast = 0
        while size - pos >= PACKET_BYTES:
            if buffer[pos] != SYNC or (
                size - pos >= 2 * PACKET_BYTES and buffer[pos + PACKET_BYTES] != SYNC
            ):
                pos = self._resync(buffer, pos + 1)
                continue
            b1 = buffer[pos + 1]
            b3 = buffer[pos + 3]
            #: fast path, most packets: the middle of a PES (payload only, no adaptation
            #: field, not scrambled, no error or unit start, the next continuity counter)
            if b3 & 0xF0 == 0x10 and not b1 & 0xC0:
                pid = ((b1 & 0x1F) << 8) | buffer[pos + 2]
                assembly = pes.get(pid)
                counter = b3 & 0x0F
                if (
                    assembly is not None
                    and not assembly.damaged
                    and counters.get(pid, -1) == (counter - 1) & 0x0F
                ):
                    counters[pid] = counter
                    assembly.chunks.append(bytes(buffer[pos + 4 : pos + PACKET_BYTES]))
                    assembly.size += PACKET_BYTES - 4
                    if assembly.expected and assembly.size >= assembly.expected:
                        self._finish(pid)
                    elif assembly.size > max_pes:
                        assembly.damaged = f"PES larger than {max_pes} bytes"
                        assembly.chunks = []
                    fast += 1
                    pos += PACKET_BYTES
                    continue
            packet(buffer, pos)
            pos += PACKET_BYTES
        if fast:
            self.packets += fast
            self._unsynced = 0
        if pos:
            del buffer[:pos]

    def _resync(self, buffer: bytearray, start: int) -> int:
        """The next position where a packet may start (two sync bytes 188 apart)."""
        self.sync_losses += 1
        for pid in self._pes:
            self._damage(pid, "lost sync")  #: everything in flight may have lost bytes
        size = len(buffer)
        pos = start
        while True:
            pos = buffer.find(SYNC, pos)
            if pos < 0:
                pos = size
                break
            if pos + PACKET_BYTES >= size or buffer[pos + PACKET_BYTES] == SYNC:
                break
            pos += 1
        self._unsynced += pos - start + 1
        if self._unsynced > self._max_unsynced:
            raise TsError(f"no MPEG-TS sync in {self._unsynced} bytes: not a transport stream")
        return pos

    # -- packets --------------------------------------------------------------------

    def _packet(self, buffer: bytearray, pos: int) -> None:
        self.packets += 1
        self._unsynced = 0
        b1 = buffer[pos + 1]
        pid = ((b1 & 0x1F) << 8) | buffer[pos + 2]
        if pid == NULL_PID:
            return
        b3 = buffer[pos + 3]
        control = (b3 >> 4) & 0x3
        counter = b3 & 0x0F
        start = pos + 4
        end = pos + PACKET_BYTES
        discontinuity = False
        if control & 0x2:
            length = buffer[start]
            if length and start + 1 < end:
                discontinuity = bool(buffer[start + 1] & 0x80)
            start += 1 + length
            if start > end:
                self._damage(pid, "adaptation field runs past the packet")
                return
        has_payload = control & 0x1
        if has_payload:
            last = self._cc.get(pid)
            self._cc[pid] = counter
            if last is not None and not discontinuity:
                if counter == last:
                    return  #: §2.4.3.3: a duplicate packet, sent once more
                if counter != (last + 1) & 0x0F:
                    self.cc_errors += 1
                    self._damage(pid, "continuity counter gap (packets lost)")
        if b1 & 0x80:
            self._damage(pid, "transport error indicator")
            return
        if not has_payload or start >= end:
            return
        unit_start = b1 & 0x40
        if pid in self._es:
            if b3 & 0xC0:
                self._damage(pid, "scrambled")
                return
            self._pes_payload(pid, bytes(buffer[start:end]), unit_start)
        elif pid == PAT_PID or pid == self._pmt_pid:
            self._psi_payload(pid, buffer[start:end], unit_start)

    def _damage(self, pid: int, reason: str) -> None:
        assembly = self._pes.get(pid)
        if assembly is not None and not assembly.damaged:
            assembly.damaged = reason
        section = self._sections.get(pid)
        if section is not None:
            del self._sections[pid]

    # -- PES ------------------------------------------------------------------------

    def _pes_payload(self, pid: int, payload: bytes, unit_start: int) -> None:
        pes = self._pes
        if unit_start:
            if pid in pes:
                self._finish(pid)
            assembly = _Assembly()
            if len(payload) >= 6 and payload[:3] == b"\x00\x00\x01":
                length = (payload[4] << 8) | payload[5]
                assembly.expected = length + 6 if length else 0
            else:
                assembly.damaged = "PES without a start code"
            pes[pid] = assembly
        else:
            assembly = pes.get(pid)  # type: ignore[assignment]
            if assembly is None:
                return  #: the middle of a PES whose start we never saw (joined mid-stream)
        if assembly.damaged:
            return
        assembly.chunks.append(payload)
        assembly.size += len(payload)
        if assembly.expected and assembly.size >= assembly.expected:
            self._finish(pid)
        elif assembly.size > self._max_pes:
            assembly.damaged = f"PES larger than {self._max_pes} bytes"
            assembly.chunks = []

    def _finish(self, pid: int) -> None:
        assembly = self._pes.pop(pid)
        if assembly.damaged:
            self.lost_pes += 1
            self._events.append(Lost(pid, assembly.damaged))
            return
        raw = b"".join(assembly.chunks)
        if assembly.expected:
            if len(raw) < assembly.expected:
                self.lost_pes += 1
                self._events.append(Lost(pid, "PES shorter than its PES_packet_length"))
                return
            raw = raw[: assembly.expected]
        stream_id = raw[3]
        pts = dts = None
        start = 6
        #: §2.4.3.7: streams without the optional header (padding, private_stream_2, ...)
        if stream_id not in (0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xFF, 0xF2, 0xF8):
            if len(raw) < 9:
                self.lost_pes += 1
                self._events.append(Lost(pid, "PES header truncated"))
                return
            flags = raw[7] >> 6
            start = 9 + raw[8]
            if start > len(raw) or (flags & 2 and len(raw) < 14) or (flags == 3 and len(raw) < 19):
                self.lost_pes += 1
                self._events.append(Lost(pid, "PES header truncated"))
                return
            if flags & 2:
                pts = _timestamp(raw, 9)
                dts = _timestamp(raw, 14) if flags == 3 else pts
        self._events.append(Pes(pid, stream_id, pts, dts, raw[start:]))

    # -- PSI ------------------------------------------------------------------------

    def _psi_payload(self, pid: int, payload: bytearray, unit_start: int) -> None:
        sections = self._sections
        if unit_start:
            pointer = payload[0]
            tail = payload[1 : 1 + pointer]
            if pid in sections and tail:
                sections[pid] += tail
                self._try_section(pid)
            sections[pid] = bytearray(payload[1 + pointer :])
        elif pid in sections:
            sections[pid] += payload
        else:
            return
        self._try_section(pid)

    def _try_section(self, pid: int) -> None:
        data = self._sections.get(pid)
        if data is None or len(data) < 3:
            return
        if data[0] == 0xFF:
            del self._sections[pid]  #: stuffing
            return
        total = 3 + (((data[1] & 0x0F) << 8) | data[2])
        if total > MAX_SECTION_BYTES:
            del self._sections[pid]
            self.bad_sections += 1
            return
        if len(data) < total:
            return
        section = bytes(data[:total])
        del self._sections[pid]
        if total < 12 or crc32_mpeg(section) != 0:
            self.bad_sections += 1
            return
        if pid == PAT_PID and section[0] == 0x00:
            self._pat(section)
        elif pid == self._pmt_pid and section[0] == 0x02:
            self._pmt(section)

    def _pat(self, section: bytes) -> None:
        #: §2.4.4.3: program_number(16) reserved(3) PID(13), after the 8-byte header
        for pos in range(8, len(section) - 4 - 3, 4):
            number = (section[pos] << 8) | section[pos + 1]
            if number != 0:  #: 0 is the network PID
                pmt_pid = ((section[pos + 2] & 0x1F) << 8) | section[pos + 3]
                if pmt_pid != self._pmt_pid:
                    self._pmt_pid = pmt_pid
                    self._program_number = number
                    self._pmt_raw = b""
                return

    def _pmt(self, section: bytes) -> None:
        if section == self._pmt_raw:
            return
        #: §2.4.4.8: PCR_PID, program_info_length, then the elementary stream loop
        info_length = ((section[10] & 0x0F) << 8) | section[11]
        pos = 12 + info_length
        end = len(section) - 4
        streams = []
        while pos + 5 <= end:
            stream_type = section[pos]
            pid = ((section[pos + 1] & 0x1F) << 8) | section[pos + 2]
            es_length = ((section[pos + 3] & 0x0F) << 8) | section[pos + 4]
            descriptors = section[pos + 5 : pos + 5 + es_length]
            pos += 5 + es_length
            if pos > end:
                self.bad_sections += 1
                return
            streams.append(ElementaryStream(pid, stream_type, descriptors))
        self._pmt_raw = section
        wanted = {s.pid: s.stream_type for s in streams}
        for pid in list(self._pes):
            if pid not in wanted:
                del self._pes[pid]
        self._es = wanted
        self._events.append(Program(self._program_number, tuple(streams)))

    # -- output ---------------------------------------------------------------------

    def next_event(self) -> Event | _NeedData:
        """The next event, or NEED_DATA."""
        if self._events:
            return self._events.popleft()
        return NEED_DATA

"""H.264 over RTP (RFC 6184, packetization-mode 1) → complete access units (sans-IO).

Packets go into a reorder buffer keyed by their extended sequence number. An
access unit (AU) is every packet from the one after the previous AU's last
packet up to a packet with the marker bit (or up to the packet before the
next timestamp, for senders that omit the marker), with no sequence number
missing. Complete AUs leave in order; each is depayloaded (single NAL unit
packets, STAP-A §5.7.1, FU-A §5.8) into its NAL units.

A gap that NACK retransmission does not fill within `loss_timeout_ms` (or a
buffer grown past its limit) costs the AUs it touches: they are dropped, never
handed over, every later AU is dropped until the next IDR picture (its
references are gone), and `keyframe_needed` asks the driver to send a PLI. A
malformed payload is treated the same way. Nothing here raises on any input.

`AvcTrack` then turns AUs into FLV video tag bodies: SPS and PPS (from STAP-A
or single packets) become an AVCDecoderConfigurationRecord (ISO/IEC 14496-15
§5.3.3.1) sent whenever they change, and the other NAL units of the AU become
one sample of 4-byte length-prefixed NAL units; an AU with an IDR slice is a
keyframe.
"""

from __future__ import annotations

import attrs

KiB = 1024
MiB = 1024 * KiB

#: How long a gap may wait for a retransmission before its frame is given up (a NACK
#: round trip on a 100 ms RTT path, with room for the retransmission to queue).
LOSS_TIMEOUT_MS = 250.0
#: Packets the reorder buffer holds: a 4K keyframe of ~2 MB is ~1800 packets.
MAX_BUFFERED_PACKETS = 4096
#: A sequence number this far ahead of the expected one means the sender restarted.
MAX_SEQUENCE_JUMP = 8192
#: The largest access unit accepted (bytes of NAL units).
MAX_ACCESS_UNIT_BYTES = 16 * MiB

NAL_SLICE_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
STAP_A = 24
FU_A = 28
#: NAL unit types that do not go into samples: they live in the configuration record
#: (SPS, PPS) or carry nothing a decoder needs (access unit delimiter).
_OUT_OF_BAND = frozenset({NAL_SPS, NAL_PPS, NAL_AUD})


@attrs.frozen
class AccessUnit:
    """One complete coded picture: its NAL units (no start codes) and RTP time."""

    timestamp: int  #: extended (unwrapped) RTP timestamp, 90 kHz
    nals: tuple[bytes, ...]
    keyframe: bool


def depayload(payloads: list[bytes]) -> list[bytes] | None:
    """The NAL units of one AU's packet payloads (RFC 6184 §5.6–5.8); None if malformed."""
    nals: list[bytes] = []
    fragment: bytearray | None = None
    for payload in payloads:
        if not payload:
            return None
        kind = payload[0] & 0x1F
        if kind == FU_A:
            if len(payload) < 3:
                return None
            start, end = payload[1] & 0x80, payload[1] & 0x40
            if start:
                if fragment is not None:
                    return None  #: a new fragmented NAL before the last one ended
                fragment = bytearray(((payload[0] & 0xE0) | (payload[1] & 0x1F),))
            elif fragment is None:
                return None  #: continuation without a start
            fragment += payload[2:]
            if end:
                nals.append(bytes(fragment))
                fragment = None
            continue
        if fragment is not None:
            return None  #: a fragmented NAL unit left unfinished
        if 1 <= kind <= 23:
            nals.append(payload)
        elif kind == STAP_A:
            pos = 1
            while pos < len(payload):
                if pos + 2 > len(payload):
                    return None
                size = int.from_bytes(payload[pos : pos + 2], "big")
                pos += 2
                if size == 0 or pos + size > len(payload):
                    return None
                nals.append(payload[pos : pos + size])
                pos += size
        else:
            return None  #: STAP-B, MTAP, FU-B or reserved: not packetization-mode 1
    if fragment is not None:
        return None
    return nals


class H264Depacketizer:
    """RTP packets of one H.264 stream → complete `AccessUnit`s, in order."""

    def __init__(
        self,
        *,
        loss_timeout_ms: float = LOSS_TIMEOUT_MS,
        max_buffered_packets: int = MAX_BUFFERED_PACKETS,
        max_access_unit_bytes: int = MAX_ACCESS_UNIT_BYTES,
    ) -> None:
        self._loss_timeout_ms = loss_timeout_ms
        self._max_packets = max_buffered_packets
        self._max_au_bytes = max_access_unit_bytes
        #: extended seq → (extended timestamp, marker, payload)
        self._packets: dict[int, tuple[int, bool, bytes]] = {}
        self._next: int | None = None  #: extended seq of the next AU's first packet
        self._highest = 0
        self._ts_last32 = 0
        self._ts_ext: int | None = None
        self._stalled_at_ms: float | None = None
        self._broken_ts: int | None = None  #: a given-up AU's timestamp: its stragglers go too
        self._waiting_keyframe = True
        #: set when a PLI should go out (a frame was dropped); the driver clears it
        self.keyframe_needed = False
        self.frames_out = 0
        self.frames_dropped = 0
        self.packets_late = 0

    def _extend_seq(self, seq: int) -> int:
        if self._next is None:
            return seq
        delta = (seq - self._highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        return self._highest + delta

    def _extend_ts(self, timestamp: int) -> int:
        if self._ts_ext is None:
            self._ts_ext = timestamp
        else:
            delta = (timestamp - self._ts_last32) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000
            self._ts_ext += delta
        self._ts_last32 = timestamp
        return self._ts_ext

    def push(
        self, seq: int, timestamp: int, marker: bool, payload: bytes, *, now_ms: float
    ) -> list[AccessUnit]:
        """One RTP packet (16-bit seq, 32-bit timestamp); returns the AUs it completed."""
        ext = self._extend_seq(seq & 0xFFFF)
        if self._next is None:
            self._next = self._highest = ext
        elif ext < self._next or ext in self._packets:
            self.packets_late += 1
            return []
        elif ext - self._next > MAX_SEQUENCE_JUMP:
            self._reset(ext)
        ts = self._extend_ts(timestamp & 0xFFFFFFFF)
        if self._broken_ts is not None and ts == self._broken_ts:
            self.packets_late += 1
            return []
        self._packets[ext] = (ts, marker, payload)
        if ext > self._highest:
            self._highest = ext
        out = self._assemble()
        return out + self._check_gap(now_ms, progressed=bool(out))

    def _has_gap(self) -> bool:
        #: every buffered packet lies in [next, highest]: a count short of the span is a hole
        assert self._next is not None
        return bool(self._packets) and self._highest - self._next + 1 != len(self._packets)

    def _check_gap(self, now_ms: float, *, progressed: bool) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        while self._has_gap() or len(self._packets) > self._max_packets:
            if self._stalled_at_ms is None or progressed:
                self._stalled_at_ms = now_ms
                progressed = False
            if (
                now_ms - self._stalled_at_ms <= self._loss_timeout_ms
                and len(self._packets) <= self._max_packets
            ):
                return out
            self._give_up()
            self._stalled_at_ms = None
            out += self._assemble()
        self._stalled_at_ms = None
        return out

    def poll(self, *, now_ms: float) -> list[AccessUnit]:
        """Gives up a gap that has waited too long even if no packet arrives."""
        if self._next is None:
            return []
        return self._check_gap(now_ms, progressed=False)

    def _reset(self, ext: int) -> None:
        self._packets.clear()
        self._next = self._highest = ext
        self._broken_ts = None
        self._drop_until_keyframe()

    def resync(self) -> None:
        """Drops every AU until the next IDR picture (a frame was lost downstream)."""
        self._drop_until_keyframe()

    def _drop_until_keyframe(self) -> None:
        self._waiting_keyframe = True
        self.keyframe_needed = True

    def _assemble(self) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        packets = self._packets
        while True:
            assert self._next is not None
            first = packets.get(self._next)
            if first is None:
                return out
            ts = first[0]
            seq = self._next
            end: int | None = None
            while True:
                packet = packets.get(seq)
                if packet is None:
                    break
                if packet[0] != ts:
                    end = seq - 1  #: no marker: the next timestamp closes the AU
                    break
                if packet[1]:
                    end = seq
                    break
                seq += 1
            if end is None:
                return out
            payloads = [packets.pop(s)[2] for s in range(self._next, end + 1)]
            self._next = end + 1
            self._broken_ts = None
            unit = self._unit(ts, payloads)
            if unit is not None:
                out.append(unit)

    def _unit(self, ts: int, payloads: list[bytes]) -> AccessUnit | None:
        if sum(map(len, payloads)) > self._max_au_bytes:
            self.frames_dropped += 1
            self._drop_until_keyframe()
            return None
        nals = depayload(payloads)
        if not nals:
            self.frames_dropped += 1
            self._drop_until_keyframe()
            return None
        keyframe = any(nal[0] & 0x1F == NAL_SLICE_IDR for nal in nals)
        if self._waiting_keyframe:
            if not keyframe:
                self.frames_dropped += 1
                self.keyframe_needed = True
                return None
            self._waiting_keyframe = False
        self.frames_out += 1
        return AccessUnit(ts, tuple(nals), keyframe)

    def _give_up(self) -> None:
        """The AU at the head cannot be completed: drop it and resynchronise."""
        packets = self._packets
        if not packets:
            return
        lowest = min(packets)
        broken_ts = packets[lowest][0]
        for seq in sorted(packets):
            if packets[seq][0] != broken_ts:
                break
            del packets[seq]
        self._broken_ts = broken_ts
        self._next = min(packets) if packets else self._highest + 1
        self.frames_dropped += 1
        self._drop_until_keyframe()


def avc_config_record(sps: bytes, pps: bytes) -> bytes:
    """An AVCDecoderConfigurationRecord with one SPS and one PPS (ISO/IEC 14496-15 §5.3.3.1)."""
    #: version 1, profile, compatibility, level from the SPS; 4-byte NAL lengths
    record = bytearray((1, sps[1], sps[2], sps[3], 0xFF, 0xE1))
    record += len(sps).to_bytes(2, "big") + sps
    record += b"\x01" + len(pps).to_bytes(2, "big") + pps
    return bytes(record)


#: FLV VideoTagHeader (FLV 10.1 §E.4.3.1): frame type << 4 | CodecID 7 (AVC), then
#: AVCPacketType and a zero composition time (WebRTC H.264 has no B-frames)
_CONFIG_HEAD = bytes((0x17, 0, 0, 0, 0))
_KEY_HEAD = bytes((0x17, 1, 0, 0, 0))
_INTER_HEAD = bytes((0x27, 1, 0, 0, 0))


class AvcTrack:
    """Access units → FLV tag bodies: configuration records when SPS/PPS change, samples."""

    def __init__(self) -> None:
        self._sps: bytes | None = None
        self._pps: bytes | None = None
        self._record: bytes | None = None

    def bodies(self, unit: AccessUnit) -> list[tuple[bytes, bool, bool]]:
        """(FLV body, keyframe, config) for one AU: a config body first when it changed."""
        out: list[tuple[bytes, bool, bool]] = []
        sample = bytearray(_KEY_HEAD if unit.keyframe else _INTER_HEAD)
        for nal in unit.nals:
            kind = nal[0] & 0x1F
            if kind == NAL_SPS and len(nal) >= 4:
                self._sps = nal
            elif kind == NAL_PPS:
                self._pps = nal
            if kind in _OUT_OF_BAND:
                continue
            sample += len(nal).to_bytes(4, "big")
            sample += nal
        if self._sps is not None and self._pps is not None:
            record = avc_config_record(self._sps, self._pps)
            if record != self._record:
                self._record = record
                out.append((_CONFIG_HEAD + record, False, True))
        if self._record is None or len(sample) == len(_KEY_HEAD):
            return out  #: no decoder can start without parameter sets; nothing to show
        out.append((bytes(sample), unit.keyframe, False))
        return out

    @property
    def config_record(self) -> bytes | None:
        return self._record

"""A reorder buffer that turns RTP packets into complete frames (sans-IO).

Packets go into a buffer keyed by their extended sequence number. An access
unit (AU: one coded picture) is every packet from the one after the previous
AU's last packet up to a packet with the marker bit (or up to the packet
before the next timestamp, for senders that omit the marker), with no
sequence number missing. Complete AUs leave in order; the codec's subclass
(`h264`, `vp9`) turns each AU's payloads into its parts.

A gap that NACK retransmission does not fill within `loss_timeout_ms` (or a
buffer grown past its limit) costs the AUs it touches: they are dropped, never
handed over, every later AU is dropped until the next keyframe (its
references are gone), and `keyframe_needed` asks the driver to send a PLI. A
malformed payload is treated the same way. Nothing here raises on any input.
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
#: The largest access unit accepted (bytes of payload).
MAX_ACCESS_UNIT_BYTES = 16 * MiB


@attrs.frozen
class AccessUnit:
    """One complete coded picture: its parts (H.264 NAL units, a VP9 frame) and RTP time."""

    timestamp: int  #: extended (unwrapped) RTP timestamp, 90 kHz
    parts: tuple[bytes, ...]
    keyframe: bool


class Reassembler:
    """RTP packets of one video stream → complete `AccessUnit`s, in order.

    Subclasses say how one AU's payloads become its parts (`decode`).
    """

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

    def decode(self, payloads: list[bytes]) -> tuple[tuple[bytes, ...], bool] | None:
        """(parts, keyframe) of one AU's packet payloads; None when malformed."""
        raise NotImplementedError

    def _unit(self, ts: int, payloads: list[bytes]) -> AccessUnit | None:
        if sum(map(len, payloads)) > self._max_au_bytes:
            self.frames_dropped += 1
            self._drop_until_keyframe()
            return None
        decoded = self.decode(payloads)
        if decoded is None or not decoded[0]:
            self.frames_dropped += 1
            self._drop_until_keyframe()
            return None
        parts, keyframe = decoded
        if self._waiting_keyframe:
            if not keyframe:
                self.frames_dropped += 1
                self.keyframe_needed = True
                return None
            self._waiting_keyframe = False
        self.frames_out += 1
        return AccessUnit(ts, parts, keyframe)

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

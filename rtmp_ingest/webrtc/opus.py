"""Opus over RTP (RFC 7587) → FLV audio tag bodies (sans-IO), passed through undecoded.

One RTP packet carries one Opus packet, so nothing is reassembled and nothing
waits: a packet leaves the moment it arrives, in sequence order (a late or
duplicate packet is dropped, so timestamps never go backwards; the decoder's
packet loss concealment covers a lost one). DTX silence is simply no packets.

The configuration record is an OpusHead (RFC 7845 §5.1) for 48 kHz with the
channel count the offer announced (`sprop-stereo`); bodies use E-RTMP's
FourCC framing ("Opus"), the only FLV framing Opus has.
"""

from __future__ import annotations

import struct

#: E-RTMP audio: SoundFormat 9 (ExHeader) << 4 | AudioPacketType, then the FourCC
_CONFIG_HEAD = bytes(((9 << 4) | 0,)) + b"Opus"
_FRAME_HEAD = bytes(((9 << 4) | 1,)) + b"Opus"
OPUS_RATE = 48_000
#: A packet this far behind the newest is a very late retransmission or a duplicate.
MAX_REORDER = 0x8000


def opus_head(channels: int) -> bytes:
    """OpusHead: version 1, channels, pre-skip 0 (live RTP has none), 48 kHz, gain 0, family 0."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, 0, OPUS_RATE, 0, 0)


class OpusTrack:
    """RTP packets of one Opus stream → (FLV body, config) in order."""

    def __init__(self, *, channels: int = 2) -> None:
        self.channels = channels
        self._last_seq: int | None = None
        self._sent_config = False
        self.frames_out = 0
        self.packets_late = 0

    def push(self, seq: int, payload: bytes) -> list[tuple[bytes, bool]]:
        """(FLV body, is-config) for one packet; empty when it is late, duplicate or empty."""
        seq &= 0xFFFF
        if self._last_seq is not None:
            delta = (seq - self._last_seq) & 0xFFFF
            if delta == 0 or delta >= MAX_REORDER:
                self.packets_late += 1
                return []
        self._last_seq = seq
        if not payload:
            return []
        out: list[tuple[bytes, bool]] = []
        if not self._sent_config:
            self._sent_config = True
            out.append((_CONFIG_HEAD + opus_head(self.channels), True))
        self.frames_out += 1
        out.append((_FRAME_HEAD + payload, False))
        return out

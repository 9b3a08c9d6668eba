"""H.264 over RTP (RFC 6184, packetization-mode 1) → complete access units (sans-IO).

The reorder buffer (`reorder.Reassembler`) delivers complete access units in
order; each is depayloaded here (single NAL unit packets, STAP-A §5.7.1, FU-A
§5.8) into its NAL units, and one with an IDR slice is a keyframe. A loss or
a malformed AU drops frames until the next IDR picture and asks for a PLI.

`AvcTrack` then turns AUs into FLV video tag bodies: SPS and PPS (from STAP-A
or single packets) become an AVCDecoderConfigurationRecord (ISO/IEC 14496-15
§5.3.3.1) sent whenever they change, and the other NAL units of the AU become
one sample of 4-byte length-prefixed NAL units; an AU with an IDR slice is a
keyframe.
"""

from __future__ import annotations

from rtmp_ingest.webrtc.reorder import AccessUnit, Reassembler

NAL_SLICE_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
STAP_A = 24
FU_A = 28
#: NAL unit types that do not go into samples: they live in the configuration record
#: (SPS, PPS) or carry nothing a decoder needs (access unit delimiter).
_OUT_OF_BAND = frozenset({NAL_SPS, NAL_PPS, NAL_AUD})


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


class H264Depacketizer(Reassembler):
    """RTP packets of one H.264 stream → complete `AccessUnit`s of NAL units, in order."""

    def decode(self, payloads: list[bytes]) -> tuple[tuple[bytes, ...], bool] | None:
        nals = depayload(payloads)
        if not nals:
            return None
        return tuple(nals), any(nal[0] & 0x1F == NAL_SLICE_IDR for nal in nals)


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
        for nal in unit.parts:
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

"""Fragmented MP4 (ISO/IEC 14496-12, CMAF) boxes: init segments and fragments.

Outputs describe a track once (`TrackSpec`: codec, timescale, configuration
record, picture size or audio layout) and then hand over samples already in
their final form (`Sample`: the codec payload as the configuration record's
framing has it, e.g. length-prefixed NAL units, raw AAC, OBUs). `init_segment`
writes `ftyp` + `moov` (with `mvex`, so every sample lives in fragments) and
`fragment` writes one `moof` + `mdat` holding a run of samples per track.

Why not PyAV's mp4 muxer (the README has the figures): it cannot take a
configuration record for a stream without opening an encoder (PyAV 18 has no
extradata setter for mux streams), and it closes a fragment only when the
next packet arrives, a frame of latency on every LL-HLS part; a fragment here
is written the moment its last sample is known. PyAV still reads every file
we write, in the tests and in `rtmp-ingest export`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import attrs

from rtmp_ingest.flv.codecs import flac_streaminfo

_U32 = struct.Struct(">I")
_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)

#: sample_flags of a sync sample and of a sample that depends on others
SYNC_FLAGS = 0x02000000
NON_SYNC_FLAGS = 0x01010000


def box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return _U32.pack(8 + len(payload)) + kind + payload


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return box(kind, _U32.pack(version << 24 | flags), *parts)


@attrs.frozen(kw_only=True)
class TrackSpec:
    """What an init segment says about one track."""

    track_id: int  #: 1-based, unique in the file
    media: str  #: "video" | "audio"
    codec: str  #: h264 | hevc | av1 | vp9 | aac | opus | flac | mp3
    timescale: int
    config: bytes = (
        b""  #: the codec configuration record (avcC, hvcC, av1C, vpcC, ASC, OpusHead, …)
    )
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 2
    #: samples may carry parameter sets in band (H.264 `avc3`, HEVC `hev1` sample entries,
    #: ISO/IEC 14496-15 §5.4.2.1, §8.4.1.1): after a parameter change, for players that keep
    #: the first init's
    inband_parameter_sets: bool = False


@attrs.frozen
class Sample:
    """One coded frame of a fragment, in its track's timescale."""

    data: bytes
    duration: int
    keyframe: bool
    cts: int = 0  #: composition offset (PTS − DTS)


#: codecs a fragmented MP4 here can carry
SUPPORTED = frozenset({"h264", "hevc", "av1", "vp9", "aac", "opus", "flac", "mp3"})


def init_segment(tracks: list[TrackSpec] | tuple[TrackSpec, ...]) -> bytes:
    """ftyp + moov for `tracks` (every sample in later fragments)."""
    ftyp = box(b"ftyp", b"iso6", _U32.pack(0), b"iso6cmfcisommp41dash")
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, 0),
        _U32.pack(0x00010000),
        struct.pack(">H", 0x0100),
        bytes(10),
        _MATRIX,
        bytes(24),
        _U32.pack(max(t.track_id for t in tracks) + 1),
    )
    traks = [_trak(t) for t in tracks]
    mvex = box(
        b"mvex",
        *(full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)) for t in tracks),
    )
    return ftyp + box(b"moov", mvhd, *traks, mvex)


def _trak(t: TrackSpec) -> bytes:
    video = t.media == "video"
    tkhd = full_box(
        b"tkhd",
        0,
        3,
        struct.pack(">IIII", 0, 0, t.track_id, 0),
        _U32.pack(0),
        bytes(8),
        struct.pack(">hhhH", 0, 0, 0 if video else 0x0100, 0),
        _MATRIX,
        _U32.pack((t.width if video else 0) << 16),
        _U32.pack((t.height if video else 0) << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, t.timescale, 0, 0x55C4, 0))
    hdlr = full_box(
        b"hdlr",
        0,
        0,
        _U32.pack(0),
        b"vide" if video else b"soun",
        bytes(12),
        b"VideoHandler\x00" if video else b"SoundHandler\x00",
    )
    media_header = full_box(b"vmhd", 0, 1, bytes(8)) if video else full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, _U32.pack(1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, _U32.pack(1), sample_entry(t)),
        full_box(b"stts", 0, 0, _U32.pack(0)),
        full_box(b"stsc", 0, 0, _U32.pack(0)),
        full_box(b"stsz", 0, 0, _U32.pack(0), _U32.pack(0)),
        full_box(b"stco", 0, 0, _U32.pack(0)),
    )
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl)))


def sample_entry(t: TrackSpec) -> bytes:
    """The stsd entry of a track (raises ValueError for a codec we cannot carry)."""
    if t.media == "video":
        entries: dict[str, tuple[bytes, Callable[[], bytes]]] = {
            "h264": (
                b"avc3" if t.inband_parameter_sets else b"avc1",
                lambda: box(b"avcC", t.config),
            ),
            "hevc": (
                b"hev1" if t.inband_parameter_sets else b"hvc1",
                lambda: box(b"hvcC", t.config),
            ),
            "av1": (b"av01", lambda: box(b"av1C", t.config)),
            "vp9": (b"vp09", lambda: box(b"vpcC", vpcc_payload(t.config))),
        }
        if t.codec not in entries:
            raise ValueError(f"fMP4 cannot carry video codec {t.codec!r}")
        kind, make_config = entries[t.codec]
        return box(
            kind,
            bytes(6),
            struct.pack(">H", 1),
            bytes(16),
            struct.pack(">HH", t.width & 0xFFFF, t.height & 0xFFFF),
            _U32.pack(0x00480000),
            _U32.pack(0x00480000),
            _U32.pack(0),
            struct.pack(">H", 1),
            bytes(32),
            struct.pack(">Hh", 0x0018, -1),
            make_config(),
        )
    rate = t.sample_rate if t.sample_rate < 65536 else 0
    if t.codec == "aac":
        kind, config = b"mp4a", esds(0x40, t.config)
    elif t.codec == "mp3":
        kind, config = b"mp4a", esds(0x6B, b"")
    elif t.codec == "opus":
        kind, config = b"Opus", box(b"dOps", dops_payload(t.config))
    elif t.codec == "flac":
        kind, config = b"fLaC", full_box(b"dfLa", 0, 0, dfla_payload(t.config))
    else:
        raise ValueError(f"fMP4 cannot carry audio codec {t.codec!r}")
    return box(
        kind,
        bytes(6),
        struct.pack(">H", 1),
        bytes(8),
        struct.pack(">HHHH", t.channels or 2, 16, 0, 0),
        _U32.pack(rate << 16),
        config,
    )


def _descriptor(tag: int, payload: bytes) -> bytes:
    size = len(payload)
    return (
        bytes(
            (
                tag,
                0x80 | (size >> 21) & 0x7F,
                0x80 | (size >> 14) & 0x7F,
                0x80 | (size >> 7) & 0x7F,
                size & 0x7F,
            )
        )
        + payload
    )


def esds(object_type: int, specific: bytes) -> bytes:
    decoder_config = (
        bytes((object_type, 0x15))
        + bytes(3)
        + _U32.pack(0)
        + _U32.pack(0)
        + (_descriptor(0x05, specific) if specific else b"")
    )
    es = struct.pack(">HB", 0, 0) + _descriptor(0x04, decoder_config) + _descriptor(0x06, b"\x02")
    return full_box(b"esds", 0, 0, _descriptor(0x03, es))


def vpcc_payload(record: bytes) -> bytes:
    """vpcC is a full box (version 1); E-RTMP may send the record with or without that header."""
    if len(record) >= 12 and record[0] == 1 and record[1:4] == b"\x00\x00\x00":
        return record
    return b"\x01\x00\x00\x00" + record


def dops_payload(opus_head: bytes) -> bytes:
    """dOps from an OpusHead (RFC 7845 §5.1, little-endian) as E-RTMP carries it."""
    if len(opus_head) < 19 or opus_head[:8] != b"OpusHead":
        raise ValueError("Opus configuration is not an OpusHead")
    channels = opus_head[9]
    pre_skip, rate, gain = struct.unpack_from("<HIh", opus_head, 10)
    family = opus_head[18]
    out = struct.pack(">BBHIhB", 0, channels, pre_skip, rate, gain, family)
    if family:
        out += opus_head[19 : 21 + channels]
    return out


def dfla_payload(config: bytes) -> bytes:
    """The STREAMINFO metadata block (marked last) from a FLAC configuration."""
    info = flac_streaminfo(config)
    if len(info) != 34:
        raise ValueError("FLAC configuration has no STREAMINFO block")
    return bytes((0x80,)) + (34).to_bytes(3, "big") + info


def fragment(sequence: int, runs: list[tuple[int, int, list[Sample]]]) -> bytes:
    """moof + mdat: `runs` are (track_id, base media decode time, samples) per track."""
    trafs: list[tuple[int, int, int, bytes]] = []
    payloads = []
    offsets = []
    mdat_size = 0
    for track_id, base_time, samples in runs:
        table = bytearray()
        pack = struct.Struct(">IIIi").pack
        for s in samples:
            table += pack(
                s.duration, len(s.data), SYNC_FLAGS if s.keyframe else NON_SYNC_FLAGS, s.cts
            )
            payloads.append(s.data)
        offsets.append(mdat_size)
        mdat_size += sum(len(s.data) for s in samples)
        trafs.append((track_id, base_time, len(samples), bytes(table)))
    # trun data offsets are relative to the moof start (default-base-is-moof)
    moof_size = 8 + 16 + sum(8 + 16 + 20 + 20 + len(t[3]) for t in trafs)
    parts = [box(b"mfhd", _U32.pack(0), _U32.pack(sequence))]
    for (track_id, base_time, count, run_table), offset in zip(trafs, offsets):
        parts.append(
            box(
                b"traf",
                full_box(b"tfhd", 0, 0x020000, _U32.pack(track_id)),
                full_box(b"tfdt", 1, 0, struct.pack(">Q", base_time)),
                full_box(
                    b"trun",
                    1,
                    0x000F01,
                    _U32.pack(count),
                    _U32.pack(moof_size + 8 + offset),
                    run_table,
                ),
            )
        )
    moof = box(b"moof", *parts)
    assert len(moof) == moof_size, (len(moof), moof_size)
    payloads[:0] = (moof, _U32.pack(8 + mdat_size), b"mdat")
    return b"".join(payloads)  #: one copy of the media

"""FLV / Enhanced RTMP v2 bodies built from docs/ertmp.md, and hypothesis strategies for them.

The tests build their input bodies here, not with `video_body`/`audio_body`, so that a bug in
the parser and the same bug in the builder cannot cancel out:

    video byte 0: isExHeader(1) FrameType(3) PacketType|CodecID(4)
    audio byte 0: SoundFormat(4) (9 = ExHeader) PacketType|flags(4)
    ModEx:        [size-1 UI8 | 0xFF size-1 UI16] data [ModExType(4) next PacketType(4)]
    Multitrack:   [AvMultitrackType(4) PacketType(4)] [FourCC unless ManyTracksManyCodecs]
                  per track: [FourCC if ManyTracksManyCodecs] trackId UI8
                             [size UI24 unless OneTrack] payload

`parsed` applies the garbage rule to one body: packets that could have come out of it, or
TagError; any other exception fails the test.
"""

from __future__ import annotations

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from rtmp_ingest.flv import codecs
from rtmp_ingest.flv.tags import Packet, PacketType, TagError, parse_video

ROUND_TRIP = settings(max_examples=150, deadline=None)
FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: docs/ertmp.md wire values
V_START, V_FRAMES, V_END, V_FRAMES_X, V_METADATA, V_MULTITRACK, V_MODEX = 0, 1, 2, 3, 4, 6, 7
A_START, A_FRAMES, A_END, A_MULTICHANNEL, A_MULTITRACK, A_MODEX = 0, 1, 2, 4, 5, 7
ONE_TRACK, MANY_TRACKS, MANY_TRACKS_MANY_CODECS = 0, 1, 2
KEY, INTER, DISPOSABLE, GENERATED_KEY, COMMAND = 1, 2, 3, 4, 5

VIDEO_FOURCCS = ("avc1", "hvc1", "vvc1", "av01", "vp09", "vp08")
AUDIO_FOURCCS = ("mp4a", "Opus", "fLaC", ".mp3", "ac-3", "ec-3")
CTS_FOURCCS = ("avc1", "hvc1", "vvc1")
VIDEO_CODEC_NAMES = set(codecs.VIDEO_FOURCC.values()) | set(codecs.LEGACY_VIDEO.values())
AUDIO_CODEC_NAMES = set(codecs.AUDIO_FOURCC.values()) | set(codecs.LEGACY_AUDIO.values())
SI24_MIN, SI24_MAX = -(1 << 23), (1 << 23) - 1


# -- builders (docs/ertmp.md, FLV 10.1 §E.4) ------------------------------------------------------


def si24(value: int) -> bytes:
    return (value & 0xFFFFFF).to_bytes(3, "big")


def ui24(value: int) -> bytes:
    return value.to_bytes(3, "big")


def legacy_avc(frame_type: int, avc_type: int, cts: int = 0, payload: bytes = b"") -> bytes:
    return bytes((frame_type << 4 | 7, avc_type)) + si24(cts) + payload


def ex_video(frame_type: int, packet_type: int, fourcc: str, payload: bytes = b"") -> bytes:
    return bytes((0x80 | frame_type << 4 | packet_type,)) + fourcc.encode("latin-1") + payload


def ex_audio(packet_type: int, fourcc: str, payload: bytes = b"") -> bytes:
    return bytes((0x90 | packet_type,)) + fourcc.encode("latin-1") + payload


def with_modex(
    body: bytes, prefixes: list[tuple[int, bytes]], *, long_sizes: bool = False
) -> bytes:
    """`body` (an ExHeader body) behind ModEx prefixes [(ModEx type, data)]; video and audio
    both use PacketType 7 for ModEx. `long_sizes` writes every size in the UI16 form."""
    packet_type = body[0] & 0x0F
    out = bytearray((body[0] & 0xF0 | 7,))
    for index, (kind, data) in enumerate(prefixes):
        assert 1 <= len(data) <= 65536
        if len(data) < 256 and not long_sizes:
            out.append(len(data) - 1)
        else:
            out += b"\xff" + (len(data) - 1).to_bytes(2, "big")
        out += data
        out.append(kind << 4 | (7 if index + 1 < len(prefixes) else packet_type))
    return bytes(out) + body[1:]


def nano_modex(nano: int) -> tuple[int, bytes]:
    """A TimestampOffsetNano ModEx prefix (ModEx type 0, UI24 nanoseconds)."""
    return 0, ui24(nano)


def multitrack_body(
    first_byte: int, multitrack_type: int, packet_type: int, tracks: list[tuple[str, int, bytes]]
) -> bytes:
    """A multitrack body; `tracks` = [(FourCC, track id, payload)] (one shared FourCC, the
    first track's, unless ManyTracksManyCodecs)."""
    out = bytearray((first_byte, multitrack_type << 4 | packet_type))
    if multitrack_type != MANY_TRACKS_MANY_CODECS:
        out += tracks[0][0].encode("latin-1")
    for fourcc, track_id, payload in tracks:
        if multitrack_type == MANY_TRACKS_MANY_CODECS:
            out += fourcc.encode("latin-1")
        out.append(track_id)
        if multitrack_type != ONE_TRACK:
            out += ui24(len(payload))
        out += payload
    return bytes(out)


def video_multitrack(
    frame_type: int, multitrack_type: int, packet_type: int, tracks: list[tuple[str, int, bytes]]
) -> bytes:
    return multitrack_body(
        0x80 | frame_type << 4 | V_MULTITRACK, multitrack_type, packet_type, tracks
    )


def audio_multitrack(
    multitrack_type: int, packet_type: int, tracks: list[tuple[str, int, bytes]]
) -> bytes:
    return multitrack_body(0x90 | A_MULTITRACK, multitrack_type, packet_type, tracks)


def video_packet(
    codec: str,
    kind: PacketType,
    *,
    keyframe: bool = False,
    cts: int = 0,
    data: bytes = b"",
    track_id: int = 0,
    nano: int = 0,
    multitrack: bool = False,
) -> Packet:
    return Packet("video", track_id, codec, kind, keyframe, cts, data, nano, None, multitrack)


def audio_packet(
    codec: str,
    kind: PacketType,
    *,
    data: bytes = b"",
    track_id: int = 0,
    nano: int = 0,
    legacy_header: int | None = None,
    multitrack: bool = False,
) -> Packet:
    return Packet(
        "audio",
        track_id,
        codec,
        kind,
        kind is PacketType.CODED_FRAMES,
        0,
        data,
        nano,
        legacy_header,
        multitrack,
    )


def parsed(parse, body: bytes) -> list[Packet] | None:
    """`parse(body)`, or None when it raises TagError. Any other exception fails the test;
    so does a packet that could not have come out of `body`."""
    try:
        packets = parse(body)
    except TagError:
        return None
    media = "video" if parse is parse_video else "audio"
    names = VIDEO_CODEC_NAMES | {""} if media == "video" else AUDIO_CODEC_NAMES
    assert isinstance(packets, list)
    for packet in packets:
        assert isinstance(packet, Packet)
        assert packet.media == media
        assert isinstance(packet.packet_type, PacketType)
        assert packet.codec in names
        assert 0 <= packet.track_id <= 255
        assert SI24_MIN <= packet.cts_ms <= SI24_MAX
        assert 0 <= packet.nano_offset <= 999_999
        assert isinstance(packet.data, bytes) and packet.data in body
    assert sum(len(packet.data) for packet in packets) <= len(body)
    return packets


# -- strategies ----------------------------------------------------------------------------

payloads = st.binary(max_size=48)
composition_times = st.integers(SI24_MIN, SI24_MAX)
track_ids = st.integers(0, 255)
nanos = st.integers(0, 999_999)

_AUDIO_KINDS = (
    PacketType.SEQUENCE_START,
    PacketType.CODED_FRAMES,
    PacketType.SEQUENCE_END,
    PacketType.MULTICHANNEL_CONFIG,
)


@st.composite
def video_packets(draw, codec_names) -> Packet:
    """A single-track video packet as `video_body` accepts it (no commands)."""
    codec = draw(st.sampled_from(sorted(codec_names)))
    kind = draw(
        st.sampled_from(
            [
                PacketType.SEQUENCE_START,
                PacketType.CODED_FRAMES,
                PacketType.SEQUENCE_END,
                PacketType.METADATA,
            ]
        )
    )
    if kind is PacketType.CODED_FRAMES:
        cts = draw(composition_times) if codec in codecs.CTS_CODECS else 0
        return video_packet(codec, kind, keyframe=draw(st.booleans()), cts=cts, data=draw(payloads))
    data = b"" if kind is PacketType.SEQUENCE_END else draw(payloads)
    return video_packet(codec, kind, data=data)


@st.composite
def ertmp_audio_packets(draw, codec_names, kinds=_AUDIO_KINDS) -> Packet:
    """A single-track E-RTMP audio packet (no legacy header)."""
    codec = draw(st.sampled_from(sorted(codec_names)))
    kind = draw(st.sampled_from(kinds))
    data = b"" if kind is PacketType.SEQUENCE_END else draw(payloads)
    return audio_packet(codec, kind, data=data)


def _video_track(
    draw, fourcc: str, wire_type: int, frame_type: int, track_id: int, multitrack: bool
) -> tuple[bytes, Packet]:
    """(payload on the wire, expected packet) of one video track."""
    codec = codecs.VIDEO_FOURCC[fourcc]
    data = b"" if wire_type == V_END else draw(payloads)
    common = dict(track_id=track_id, multitrack=multitrack)
    if wire_type == V_START:
        return data, video_packet(codec, PacketType.SEQUENCE_START, data=data, **common)
    if wire_type == V_END:
        return b"", video_packet(codec, PacketType.SEQUENCE_END, **common)
    if wire_type == V_METADATA:
        return data, video_packet(codec, PacketType.METADATA, data=data, **common)
    keyframe = frame_type in (KEY, GENERATED_KEY)
    if wire_type == V_FRAMES and fourcc in CTS_FOURCCS:
        cts = draw(composition_times)
        packet = video_packet(
            codec, PacketType.CODED_FRAMES, keyframe=keyframe, cts=cts, data=data, **common
        )
        return si24(cts) + data, packet
    packet = video_packet(codec, PacketType.CODED_FRAMES, keyframe=keyframe, data=data, **common)
    return data, packet


def _tracks(draw, fourccs, make_track) -> tuple[int, list[tuple[str, int, bytes]], list[Packet]]:
    """A multitrack type and its tracks: [(FourCC, track id, payload)] and expected packets."""
    kind = draw(st.sampled_from([ONE_TRACK, MANY_TRACKS, MANY_TRACKS_MANY_CODECS]))
    count = 1 if kind == ONE_TRACK else draw(st.integers(1, 4))
    shared = draw(st.sampled_from(fourccs))
    tracks, packets = [], []
    for _ in range(count):
        fourcc = draw(st.sampled_from(fourccs)) if kind == MANY_TRACKS_MANY_CODECS else shared
        track_id = draw(track_ids)
        payload, packet = make_track(fourcc, track_id)
        tracks.append((fourcc, track_id, payload))
        packets.append(packet)
    return kind, tracks, packets


def _maybe_nano(draw, body: bytes, packets: list[Packet], nano: bool):
    offset = draw(st.none() | nanos) if nano else None
    if offset is None:
        return body, packets
    return (
        with_modex(body, [nano_modex(offset)]),
        [attrs.evolve(packet, nano_offset=offset) for packet in packets],
    )


@st.composite
def ertmp_video_messages(
    draw, *, multitrack: bool | None = None, nano: bool = True
) -> tuple[bytes, list[Packet]]:
    """(body, expected packets): an E-RTMP video message, single track or multitrack, with
    SequenceStart / CodedFrames / CodedFramesX / SequenceEnd / Metadata, optionally behind a
    TimestampOffsetNano ModEx prefix."""
    if multitrack is None:
        multitrack = draw(st.booleans())
    frame_type = draw(st.sampled_from([KEY, INTER, DISPOSABLE, GENERATED_KEY]))
    wire_type = draw(st.sampled_from([V_START, V_FRAMES, V_END, V_FRAMES_X, V_METADATA]))

    def track(fourcc: str, track_id: int) -> tuple[bytes, Packet]:
        return _video_track(draw, fourcc, wire_type, frame_type, track_id, multitrack)

    if multitrack:
        kind, tracks, packets = _tracks(draw, VIDEO_FOURCCS, track)
        body = video_multitrack(frame_type, kind, wire_type, tracks)
    else:
        fourcc = draw(st.sampled_from(VIDEO_FOURCCS))
        payload, packet = track(fourcc, 0)
        body, packets = ex_video(frame_type, wire_type, fourcc, payload), [packet]
    return _maybe_nano(draw, body, packets, nano)


@st.composite
def ertmp_audio_messages(
    draw, *, multitrack: bool | None = None, nano: bool = True
) -> tuple[bytes, list[Packet]]:
    """(body, expected packets) of an E-RTMP audio message, as `ertmp_video_messages`, with
    SequenceStart / CodedFrames / SequenceEnd / MultichannelConfig."""
    if multitrack is None:
        multitrack = draw(st.booleans())
    wire_type = draw(st.sampled_from([A_START, A_FRAMES, A_END, A_MULTICHANNEL]))
    kind_of = {
        A_START: PacketType.SEQUENCE_START,
        A_FRAMES: PacketType.CODED_FRAMES,
        A_END: PacketType.SEQUENCE_END,
        A_MULTICHANNEL: PacketType.MULTICHANNEL_CONFIG,
    }

    def track(fourcc: str, track_id: int) -> tuple[bytes, Packet]:
        data = b"" if wire_type == A_END else draw(payloads)
        return data, audio_packet(
            codecs.AUDIO_FOURCC[fourcc],
            kind_of[wire_type],
            data=data,
            track_id=track_id,
            multitrack=multitrack,
        )

    if multitrack:
        kind, tracks, packets = _tracks(draw, AUDIO_FOURCCS, track)
        body = audio_multitrack(kind, wire_type, tracks)
    else:
        fourcc = draw(st.sampled_from(AUDIO_FOURCCS))
        payload, packet = track(fourcc, 0)
        body, packets = ex_audio(wire_type, fourcc, payload), [packet]
    return _maybe_nano(draw, body, packets, nano)


@st.composite
def mutated(draw, corpus: list[bytes]) -> bytes:
    """A valid body with a few bit flips, overwrites, insertions and deletions."""
    body = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        at = draw(st.integers(0, len(body)))
        if op == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif at < len(body):
            if op == "flip":
                body[at] ^= 1 << draw(st.integers(0, 7))
            elif op == "set":
                body[at] = draw(st.integers(0, 255))
            else:
                del body[at : at + draw(st.integers(1, 4))]
    return bytes(body)


def steered(prefixes: list[bytes]):
    """Random bytes behind first bytes that lead into the interesting branches."""
    return st.builds(
        lambda head, tail: head + tail, st.sampled_from(prefixes), st.binary(max_size=64)
    )


# -- valid bodies of every shape, for mutation and truncation --------------------------------

_AVCC = b"\x01\x64\x00\x1f\xff\xe1\x00\x04\x67\x64\x00\x1f\x01\x00\x02\x68\xee"
_COLOR_INFO = b"\x02\x00\x09colorInfo\x03\x00\x00\x09"
_OPUS_HEAD = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"


def _valid_video_bodies() -> list[bytes]:
    hevc_frame = ex_video(KEY, V_FRAMES, "hvc1", si24(-80) + b"\x00\x00\x00\x02\x26\x01")
    av1_frame = ex_video(KEY, V_FRAMES, "av01", b"\x12\x00\x0a\x0b")
    layers = [
        ("avc1", 0, si24(40) + b"\x00\x00\x00\x01\x65"),
        ("avc1", 1, si24(40) + b"\x00\x00\x00\x01\x41"),
    ]
    mixed = [layers[0], ("hvc1", 1, si24(40) + b"\x00\x00\x00\x01\x26")]
    many_codecs = video_multitrack(KEY, MANY_TRACKS_MANY_CODECS, V_FRAMES, mixed)
    return [
        legacy_avc(KEY, 0, 0, _AVCC),
        legacy_avc(KEY, 1, 80, b"\x00\x00\x00\x02\x65\x88"),
        legacy_avc(INTER, 1, -40, b"\x00\x00\x00\x01\x41"),
        legacy_avc(KEY, 2),
        bytes((COMMAND << 4 | 7, 1)),
        b"\x22h263 frame",
        b"\x14vp6",
        ex_video(KEY, V_START, "hvc1", b"\x01\x01\x60" + bytes(20)),
        hevc_frame,
        ex_video(INTER, V_FRAMES_X, "hvc1", b"\x00\x00\x00\x02\x02\x01"),
        ex_video(KEY, V_START, "av01", b"\x81\x00\x0c\x00"),
        av1_frame,
        ex_video(KEY, V_START, "vp09", b"\x01\x00\x00\x00\x00\x0a\x82\x02\x02\x02\x00\x00"),
        ex_video(INTER, V_FRAMES, "vp09", b"\x86\x00\x40"),
        ex_video(KEY, V_END, "avc1"),
        ex_video(COMMAND, V_METADATA, "av01", _COLOR_INFO),
        bytes((0x80 | COMMAND << 4 | V_FRAMES, 0)),
        with_modex(hevc_frame, [nano_modex(250_000)]),
        with_modex(av1_frame, [(3, b"\x01\x02"), (0, ui24(7) + bytes(300))]),
        video_multitrack(KEY, ONE_TRACK, V_FRAMES, layers[:1]),
        video_multitrack(KEY, MANY_TRACKS, V_FRAMES, layers),
        many_codecs,
        with_modex(many_codecs, [nano_modex(1)]),
    ]


def _valid_audio_bodies() -> list[bytes]:
    opus_frame = ex_audio(A_FRAMES, "Opus", b"\xfc\xff\xfe")
    mixed_start = audio_multitrack(
        MANY_TRACKS_MANY_CODECS, A_START, [("mp4a", 0, b"\x12\x10"), ("Opus", 1, _OPUS_HEAD)]
    )
    return [
        b"\xaf\x00\x12\x10",
        b"\xaf\x01\x21\x10\x04\x60",
        b"\x2f\xff\xfb\x90\x64",
        b"\x32\x00\x01\x00\xff",
        ex_audio(A_START, "Opus", _OPUS_HEAD),
        ex_audio(A_MULTICHANNEL, "Opus", b"\x01\x02\x00\x00\x00\x03"),
        opus_frame,
        ex_audio(A_START, "fLaC", b"\x12\x00\x12\x00" + bytes(30)),
        ex_audio(A_END, "mp4a"),
        ex_audio(A_MULTICHANNEL, "ec-3", b"\x02\x03\x00\x01\x02"),
        ex_audio(A_FRAMES, ".mp3", b"\xff\xfb"),
        with_modex(opus_frame, [nano_modex(20_833)]),
        audio_multitrack(ONE_TRACK, A_FRAMES, [("Opus", 1, b"\xfc\x01")]),
        audio_multitrack(MANY_TRACKS, A_FRAMES, [("mp4a", 0, b"\x21"), ("mp4a", 1, b"\x21\x00")]),
        mixed_start,
        with_modex(mixed_start, [nano_modex(999_999)]),
    ]


VALID_VIDEO = _valid_video_bodies()
VALID_AUDIO = _valid_audio_bodies()
#: first bytes that steer random bytes into the interesting branches
VIDEO_PREFIXES = [
    b"\x17\x01",
    b"\x57",
    b"\x91avc1",
    b"\x93hvc1",
    b"\x96",
    b"\x96\x10avc1",
    b"\x96\x21",
    b"\x96\x01av01",
    b"\x97",
    b"\x97\x02",
    b"\x97\xff",
    b"\xd1",
    b"\xd4vp09",
]
AUDIO_PREFIXES = [
    b"\xaf\x00",
    b"\xaf\x01",
    b"\x2f",
    b"\x91Opus",
    b"\x95",
    b"\x95\x11mp4a",
    b"\x95\x20",
    b"\x95\x00Opus",
    b"\x97",
    b"\x97\x02",
    b"\x97\xff",
    b"\x94fLaC",
]

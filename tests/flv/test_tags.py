"""FLV / Enhanced RTMP v2 message bodies: `parse_video`/`parse_audio` and `video_body`/`audio_body`.

Sections: round trips through the builders; E-RTMP messages built by hand from docs/ertmp.md
(tests/flv/ertmp.py): CodedFramesX, composition times, ModEx, the three multitrack kinds,
command frames; bugs found here (fixed, kept as regression tests); the garbage rule and truncation at every length.
Real payloads from PyAV's FLV muxer are in test_real_tags.py.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmp_ingest.flv import codecs
from rtmp_ingest.flv.tags import (
    Packet,
    PacketType,
    TagError,
    audio_body,
    parse_audio,
    parse_video,
    video_body,
)

from .ertmp import (
    A_END,
    A_FRAMES,
    A_MULTICHANNEL,
    A_MULTITRACK,
    A_START,
    AUDIO_PREFIXES,
    COMMAND,
    DISPOSABLE,
    FUZZ,
    GENERATED_KEY,
    INTER,
    KEY,
    MANY_TRACKS,
    MANY_TRACKS_MANY_CODECS,
    ONE_TRACK,
    ROUND_TRIP,
    SI24_MAX,
    SI24_MIN,
    V_END,
    V_FRAMES,
    V_FRAMES_X,
    V_METADATA,
    V_MODEX,
    V_MULTITRACK,
    V_START,
    VALID_AUDIO,
    VALID_VIDEO,
    VIDEO_PREFIXES,
    audio_multitrack,
    audio_packet,
    ertmp_audio_messages,
    ertmp_audio_packets,
    ertmp_video_messages,
    ex_audio,
    ex_video,
    legacy_avc,
    mutated,
    nano_modex,
    nanos,
    parsed,
    payloads,
    si24,
    steered,
    ui24,
    video_multitrack,
    video_packet,
    video_packets,
    with_modex,
)

NOT_METADATA = lambda packet: packet.packet_type is not PacketType.METADATA  # noqa: E731


# -- round trips through video_body / audio_body -------------------------------------------


@ROUND_TRIP
@given(video_packets({"h264"}).filter(NOT_METADATA))
def test_h264_rebuilt_with_legacy_avc_framing_parses_back_unchanged(packet: Packet) -> None:
    body = video_body(packet, legacy=True)
    assert body[0] & 0x8F == 7, "legacy AVC framing: no ExHeader bit, CodecID 7"
    assert parse_video(body) == [packet]


@ROUND_TRIP
@given(video_packets(codecs.VIDEO_FOURCC.values()))
def test_video_rebuilt_with_ertmp_framing_parses_back_unchanged(packet: Packet) -> None:
    body = video_body(packet, legacy=False)
    assert body[0] & 0x80 and body[1:5].decode() == codecs.VIDEO_FOURCC_OF[packet.codec]
    assert parse_video(body) == [packet]


@ROUND_TRIP
@given(video_packets(set(codecs.VIDEO_FOURCC.values()) - {"h264"}))
def test_video_codecs_without_legacy_id_keep_ertmp_framing_for_legacy_players(packet) -> None:
    body = video_body(packet, legacy=True)
    assert body[0] & 0x80
    assert parse_video(body) == [packet]


@ROUND_TRIP
@given(st.sampled_from(sorted(codecs.LEGACY_VIDEO_IDS)), st.booleans(), payloads)
def test_legacy_only_video_codecs_round_trip(codec: str, keyframe: bool, data: bytes) -> None:
    packet = video_packet(codec, PacketType.CODED_FRAMES, keyframe=keyframe, data=data)
    body = video_body(packet, legacy=True)
    assert body[0] & 0x0F == codecs.LEGACY_VIDEO_IDS[codec]
    assert parse_video(body) == [packet]


@ROUND_TRIP
@given(
    st.integers(0xA0, 0xAF),
    st.sampled_from([PacketType.SEQUENCE_START, PacketType.CODED_FRAMES]),
    payloads,
)
def test_legacy_aac_round_trips_with_its_header_flags(
    header: int, kind: PacketType, data: bytes
) -> None:
    packet = audio_packet("aac", kind, data=data, legacy_header=header)
    body = audio_body(packet, legacy=True)
    assert body[:2] == bytes((header, 0 if kind is PacketType.SEQUENCE_START else 1))
    assert parse_audio(body) == [packet]


@ROUND_TRIP
@given(st.sampled_from(sorted(set(codecs.LEGACY_AUDIO) - {10})), st.integers(0, 15), payloads)
def test_legacy_audio_formats_round_trip_with_their_header_byte(
    sound_format: int, flags: int, data: bytes
) -> None:
    """MP3, PCM, Nellymoser, G.711, Speex…: one header byte, then the frame."""
    header = sound_format << 4 | flags
    packet = audio_packet(
        codecs.LEGACY_AUDIO[sound_format], PacketType.CODED_FRAMES, data=data, legacy_header=header
    )
    assert parse_audio(audio_body(packet, legacy=True)) == [packet]


@ROUND_TRIP
@given(ertmp_audio_packets(codecs.AUDIO_FOURCC.values()))
def test_audio_rebuilt_with_ertmp_framing_parses_back_unchanged(packet: Packet) -> None:
    body = audio_body(packet, legacy=False)
    assert body[0] >> 4 == 9 and body[1:5].decode() == codecs.AUDIO_FOURCC_OF[packet.codec]
    assert parse_audio(body) == [packet]


@ROUND_TRIP
@given(ertmp_audio_packets({"opus", "flac", "ac3", "eac3"}))
def test_audio_codecs_without_legacy_id_keep_ertmp_framing_for_legacy_players(packet) -> None:
    body = audio_body(packet, legacy=True)
    assert body[0] >> 4 == 9
    assert parse_audio(body) == [packet]


@ROUND_TRIP
@given(ertmp_audio_packets({"aac"}, kinds=(PacketType.SEQUENCE_START, PacketType.CODED_FRAMES)))
def test_ertmp_aac_is_rebuilt_as_legacy_aac_for_legacy_players(packet: Packet) -> None:
    body = audio_body(packet, legacy=True)
    assert body[0] == 0xAF, "SoundFormat 10, 44 kHz, 16-bit, stereo: what every encoder sends"
    assert parse_audio(body) == [attrs.evolve(packet, legacy_header=0xAF)]


def test_command_frames_are_not_rebuilt() -> None:
    [command] = parse_video(ex_video(COMMAND, V_FRAMES, "avc1")[:1] + b"\x00")
    with pytest.raises(TagError):
        video_body(command)


def test_codecs_without_fourcc_cannot_be_rebuilt_as_ertmp() -> None:
    with pytest.raises(TagError):
        video_body(video_packet("h263", PacketType.CODED_FRAMES, data=b"x"), legacy=False)
    speex = audio_packet("speex", PacketType.CODED_FRAMES, data=b"x", legacy_header=0xB2)
    with pytest.raises(TagError):
        audio_body(speex, legacy=False)


# -- E-RTMP messages built by hand -----------------------------------------------------------


@ROUND_TRIP
@given(ertmp_video_messages(multitrack=False))
def test_ertmp_video_messages_parse_to_the_fields_they_were_built_from(message) -> None:
    body, expected = message
    assert parse_video(body) == expected


@ROUND_TRIP
@given(ertmp_audio_messages(multitrack=False))
def test_ertmp_audio_messages_parse_to_the_fields_they_were_built_from(message) -> None:
    body, expected = message
    assert parse_audio(body) == expected


@ROUND_TRIP
@given(ertmp_video_messages(multitrack=True))
def test_multitrack_video_messages_give_one_packet_per_track_in_order(message) -> None:
    body, expected = message
    assert parse_video(body) == expected


@ROUND_TRIP
@given(ertmp_audio_messages(multitrack=True))
def test_multitrack_audio_messages_give_one_packet_per_track_in_order(message) -> None:
    body, expected = message
    assert parse_audio(body) == expected


@ROUND_TRIP
@given(ertmp_video_messages())
def test_a_video_layer_rebuilt_alone_is_the_same_packet_on_the_default_track(message) -> None:
    """What the server does with one layer of a multitrack feed for a single-track player."""
    body, _ = message
    for packet in parse_video(body):
        rebuilt = parse_video(video_body(packet, legacy=False))
        assert rebuilt == [attrs.evolve(packet, track_id=0, multitrack=False, nano_offset=0)]


@ROUND_TRIP
@given(ertmp_audio_messages())
def test_an_audio_layer_rebuilt_alone_is_the_same_packet_on_the_default_track(message) -> None:
    body, _ = message
    for packet in parse_audio(body):
        rebuilt = parse_audio(audio_body(packet, legacy=False))
        assert rebuilt == [attrs.evolve(packet, track_id=0, multitrack=False, nano_offset=0)]


def test_coded_frames_x_means_composition_time_zero_without_the_si24() -> None:
    nalus = b"\x00\x00\x00\x02\x26\x01"
    with_cts = parse_video(ex_video(KEY, V_FRAMES, "hvc1", si24(0) + nalus))
    without = parse_video(ex_video(KEY, V_FRAMES_X, "hvc1", nalus))
    expected = video_packet("hevc", PacketType.CODED_FRAMES, keyframe=True, data=nalus)
    assert with_cts == without == [expected]


@pytest.mark.parametrize("cts", [-1, -40, SI24_MIN, 80, SI24_MAX])
def test_composition_time_is_a_signed_24_bit_value(cts: int) -> None:
    [legacy] = parse_video(legacy_avc(INTER, 1, cts, b"nal"))
    [enhanced] = parse_video(ex_video(INTER, V_FRAMES, "avc1", si24(cts) + b"nal"))
    assert legacy.cts_ms == enhanced.cts_ms == cts


@pytest.mark.parametrize("fourcc", ["av01", "vp09", "vp08"])
def test_av1_and_vp9_coded_frames_carry_no_composition_time(fourcc: str) -> None:
    [packet] = parse_video(ex_video(KEY, V_FRAMES, fourcc, b"\x12\x00\x0a"))
    assert packet.cts_ms == 0 and packet.data == b"\x12\x00\x0a"


@pytest.mark.parametrize(
    "frame_type, keyframe",
    [(KEY, True), (INTER, False), (DISPOSABLE, False), (GENERATED_KEY, True)],
)
def test_keyframe_follows_the_frame_type_in_both_framings(frame_type: int, keyframe: bool) -> None:
    assert parse_video(legacy_avc(frame_type, 1, 0, b"n"))[0].keyframe is keyframe
    assert parse_video(ex_video(frame_type, V_FRAMES_X, "av01", b"o"))[0].keyframe is keyframe


def test_sequence_headers_are_never_keyframes() -> None:
    assert not parse_video(legacy_avc(KEY, 0, 0, b"\x01\x64"))[0].keyframe
    assert not parse_video(ex_video(KEY, V_START, "hvc1", b"\x01"))[0].keyframe
    assert not parse_audio(b"\xaf\x00\x12\x10")[0].keyframe


def test_legacy_sequence_end_has_no_payload() -> None:
    assert parse_video(legacy_avc(KEY, 2)) == [video_packet("h264", PacketType.SEQUENCE_END)]


def test_empty_audio_message_is_legacy_silence() -> None:
    assert parse_audio(b"") == []


def test_empty_video_message_is_an_error() -> None:
    with pytest.raises(TagError):
        parse_video(b"")


@pytest.mark.parametrize(
    "body",
    [
        legacy_avc(KEY, 3),
        b"\x1c\x00",
        ex_video(KEY, V_FRAMES, "xxxx"),
        ex_video(KEY, 8, "avc1"),
        ex_video(KEY, V_MODEX, "avc1"),
        video_multitrack(KEY, 3, V_FRAMES, [("avc1", 1, b"x")]),
        video_multitrack(KEY, MANY_TRACKS, V_MULTITRACK, [("avc1", 1, b"x")]),
        video_multitrack(KEY, MANY_TRACKS, V_FRAMES_X, [("avc1", 1, b"x")])[:-2],
    ],
    ids=[
        "avc-packet-type-3",
        "legacy-codec-12",
        "unknown-fourcc",
        "reserved-packet-type-8",
        "modex-without-data",
        "multitrack-type-3",
        "multitrack-in-multitrack",
        "track-past-end",
    ],
)
def test_malformed_video_messages_raise_tag_error(body: bytes) -> None:
    with pytest.raises(TagError):
        parse_video(body)


@pytest.mark.parametrize(
    "body",
    [
        b"\xaf",
        b"\xaf\x02",
        b"\xc0",
        b"\xd0",
        ex_audio(A_FRAMES, "Opu"),
        ex_audio(A_FRAMES, "opus"),
        ex_audio(3, "Opus"),
        ex_audio(6, "Opus"),
        audio_multitrack(MANY_TRACKS, A_MULTITRACK, [("Opus", 1, b"x")]),
    ],
    ids=[
        "aac-without-type",
        "aac-type-2",
        "format-12",
        "format-13",
        "short-fourcc",
        "fourcc-is-case-sensitive",
        "reserved-3",
        "reserved-6",
        "multitrack-in-multitrack",
    ],
)
def test_malformed_audio_messages_raise_tag_error(body: bytes) -> None:
    with pytest.raises(TagError):
        parse_audio(body)


# ModEx


@ROUND_TRIP
@given(
    case=st.one_of(
        ertmp_video_messages(nano=False).map(lambda m: (parse_video, m)),
        ertmp_audio_messages(nano=False).map(lambda m: (parse_audio, m)),
    ),
    nano=nanos,
    extra=st.binary(max_size=4),
    long_sizes=st.booleans(),
    data=st.data(),
    others=st.lists(st.tuples(st.integers(1, 15), st.binary(min_size=1, max_size=300)), max_size=3),
)
def test_timestamp_offset_nano_is_read_among_other_modex_prefixes(
    case, nano, others, extra, long_sizes, data
) -> None:
    """ModEx types other than TimestampOffsetNano are skipped; its data may be longer than the
    UI24; sizes of 256 and more take the UI16 form (and smaller ones may)."""
    parse, (body, expected) = case
    prefixes = list(others)
    prefixes.insert(data.draw(st.integers(0, len(prefixes))), (0, ui24(nano) + extra))
    result = parse(with_modex(body, prefixes, long_sizes=long_sizes))
    assert result == [attrs.evolve(packet, nano_offset=nano) for packet in expected]


@pytest.mark.parametrize("size", [255, 256, 257, 4000])
def test_modex_data_of_256_bytes_and_more_uses_the_16_bit_size(size: int) -> None:
    body = with_modex(
        ex_video(KEY, V_FRAMES, "av01", b"obu"), [(0, ui24(123_456) + bytes(size - 3))]
    )
    assert body[1] == (size - 1 if size < 256 else 0xFF)
    [packet] = parse_video(body)
    assert (packet.nano_offset, packet.data, packet.keyframe) == (123_456, b"obu", True)


def test_modex_wraps_a_multitrack_message() -> None:
    inner = video_multitrack(KEY, MANY_TRACKS, V_FRAMES_X, [("av01", 1, b"a"), ("av01", 2, b"bb")])
    packets = parse_video(with_modex(inner, [nano_modex(500_000)]))
    assert [(p.track_id, p.data, p.nano_offset, p.multitrack) for p in packets] == [
        (1, b"a", 500_000, True),
        (2, b"bb", 500_000, True),
    ]


def test_audio_modex_timestamp_offset_nano() -> None:
    body = with_modex(ex_audio(A_FRAMES, "Opus", b"\xfc"), [nano_modex(999_999)])
    [packet] = parse_audio(body)
    assert (packet.codec, packet.nano_offset, packet.data) == ("opus", 999_999, b"\xfc")


@pytest.mark.parametrize("cut", range(1, 8))
def test_a_truncated_modex_prefix_is_an_error(cut: int) -> None:
    body = with_modex(ex_video(KEY, V_FRAMES_X, "av01", b"obu"), [nano_modex(1000)])
    with pytest.raises(TagError):
        parse_video(body[:cut])


# Multitrack, as OBS multitrack video (Twitch enhanced broadcasting) sends it


def test_obs_style_simulcast_layers_come_out_as_one_packet_per_track() -> None:
    idr, non_idr = b"\x00\x00\x00\x01\x65", b"\x00\x00\x00\x01\x45"
    body = video_multitrack(
        KEY, MANY_TRACKS, V_FRAMES, [("avc1", 0, si24(40) + idr), ("avc1", 1, si24(40) + non_idr)]
    )
    coded = PacketType.CODED_FRAMES
    assert parse_video(body) == [
        video_packet("h264", coded, keyframe=True, cts=40, data=idr, track_id=0, multitrack=True),
        video_packet(
            "h264", coded, keyframe=True, cts=40, data=non_idr, track_id=1, multitrack=True
        ),
    ]


def test_many_tracks_many_codecs_names_each_tracks_codec() -> None:
    tracks = [("avc1", 0, si24(-40) + b"avc"), ("av01", 1, b"obu"), ("hvc1", 2, si24(0) + b"hevc")]
    packets = parse_video(video_multitrack(INTER, MANY_TRACKS_MANY_CODECS, V_FRAMES, tracks))
    assert [(p.codec, p.track_id, p.cts_ms, p.data, p.keyframe) for p in packets] == [
        ("h264", 0, -40, b"avc", False),
        ("av1", 1, 0, b"obu", False),
        ("hevc", 2, 0, b"hevc", False),
    ]


def test_one_track_payload_runs_to_the_end_of_the_message() -> None:
    body = audio_multitrack(ONE_TRACK, A_FRAMES, [("Opus", 2, b"\xfc" * 300)])
    assert parse_audio(body) == [
        audio_packet(
            "opus", PacketType.CODED_FRAMES, data=b"\xfc" * 300, track_id=2, multitrack=True
        )
    ]


def test_a_second_aac_audio_track_for_vod() -> None:
    body = audio_multitrack(
        MANY_TRACKS, A_START, [("mp4a", 0, b"\x12\x10"), ("mp4a", 1, b"\x11\x90")]
    )
    packets = parse_audio(body)
    assert [(p.codec, p.track_id, p.packet_type, p.data) for p in packets] == [
        ("aac", 0, PacketType.SEQUENCE_START, b"\x12\x10"),
        ("aac", 1, PacketType.SEQUENCE_START, b"\x11\x90"),
    ]
    assert codecs.describe_config("aac", packets[1].data)["sample_rate"] == 48000


def test_multitrack_track_ids_are_kept_as_sent_including_the_default_track() -> None:
    tracks = [("hvc1", 255, b"\x01"), ("hvc1", 0, b"\x01")]
    body = video_multitrack(KEY, MANY_TRACKS, V_START, tracks)
    assert [p.track_id for p in parse_video(body)] == [255, 0]


@pytest.mark.parametrize("cut", range(1, 12))
def test_a_many_tracks_message_cut_inside_a_track_is_an_error(cut: int) -> None:
    body = video_multitrack(
        KEY, MANY_TRACKS, V_FRAMES_X, [("av01", 1, b"0123456789"), ("av01", 2, b"abcdefghij")]
    )
    with pytest.raises(TagError):
        parse_video(body[:-cut])


# Command frames, metadata, channel layouts


@pytest.mark.parametrize("command", [0, 1], ids=["start-seek", "end-seek"])
def test_seek_command_frames_in_both_framings(command: int) -> None:
    legacy = bytes((COMMAND << 4 | 7, command))
    enhanced = bytes((0x80 | COMMAND << 4 | V_FRAMES, command))
    for body in (legacy, enhanced):
        [packet] = parse_video(body)
        assert (packet.packet_type, packet.keyframe, packet.data) == (
            PacketType.COMMAND,
            False,
            bytes((command,)),
        )


def test_command_frame_type_with_metadata_packet_type_is_metadata_as_ffmpeg_sends_it() -> None:
    color_info = b"\x02\x00\x09colorInfo\x03\x00\x00\x09"
    [packet] = parse_video(ex_video(COMMAND, V_METADATA, "av01", color_info))
    assert (packet.packet_type, packet.codec, packet.data) == (
        PacketType.METADATA,
        "av1",
        color_info,
    )


def test_multichannel_config_is_passed_through() -> None:
    layout = b"\x01\x06\x00\x00\x00\x3f"  # native order, 6 channels, 5.1 mask
    [packet] = parse_audio(ex_audio(A_MULTICHANNEL, "ac-3", layout))
    assert (packet.packet_type, packet.codec, packet.data, packet.keyframe) == (
        PacketType.MULTICHANNEL_CONFIG,
        "ac3",
        layout,
        False,
    )


# -- bugs ------------------------------------------------------------------------------------


def test_h264_metadata_cannot_crash_the_legacy_rebuild() -> None:
    [packet] = parse_video(ex_video(KEY, V_METADATA, "avc1", b"\x02\x00\x09colorInfo"))
    try:
        body = video_body(packet, legacy=True)
    except TagError:
        return
    assert parse_video(body) == [packet]


@pytest.mark.parametrize(
    "wire_type, kind, data",
    [
        (A_MULTICHANNEL, PacketType.MULTICHANNEL_CONFIG, b"\x01\x02\x00\x00\x00\x03"),
        (A_END, PacketType.SEQUENCE_END, b""),
    ],
    ids=["multichannel-config", "sequence-end"],
)
def test_aac_side_packets_are_not_sent_to_legacy_players_as_audio_frames(
    wire_type, kind, data
) -> None:
    [packet] = parse_audio(ex_audio(wire_type, "mp4a", data))
    assert packet.packet_type is kind
    try:
        body = audio_body(packet, legacy=True)
    except TagError:
        return
    assert [p.packet_type for p in parse_audio(body)] == [kind]


def test_ertmp_mp3_is_rebuilt_with_legacy_framing_for_legacy_players() -> None:
    frame = b"\xff\xfb\x90\x64" + bytes(20)
    [packet] = parse_audio(ex_audio(A_FRAMES, ".mp3", frame))
    body = audio_body(packet, legacy=True)
    assert body[0] >> 4 == 2, "legacy SoundFormat 2 (MP3)"
    [rebuilt] = parse_audio(body)
    assert (rebuilt.codec, rebuilt.data) == ("mp3", frame)


# -- the garbage rule and truncation ---------------------------------------------------------


@FUZZ
@given(st.binary(max_size=400) | steered(VIDEO_PREFIXES))
def test_any_bytes_give_video_packets_or_tag_error(body: bytes) -> None:
    parsed(parse_video, body)


@FUZZ
@given(st.binary(max_size=400) | steered(AUDIO_PREFIXES))
def test_any_bytes_give_audio_packets_or_tag_error(body: bytes) -> None:
    parsed(parse_audio, body)


@FUZZ
@given(mutated(VALID_VIDEO))
def test_mutated_video_bodies_give_packets_or_tag_error(body: bytes) -> None:
    parsed(parse_video, body)


@FUZZ
@given(mutated(VALID_AUDIO))
def test_mutated_audio_bodies_give_packets_or_tag_error(body: bytes) -> None:
    parsed(parse_audio, body)


@pytest.mark.parametrize(
    "parse, corpus",
    [(parse_video, VALID_VIDEO), (parse_audio, VALID_AUDIO)],
    ids=["video", "audio"],
)
def test_every_prefix_of_a_valid_body_gives_packets_or_tag_error(parse, corpus) -> None:
    """Legacy, E-RTMP, ModEx and all three multitrack kinds, cut at every length."""
    for body in corpus:
        assert parsed(parse, body), f"valid body rejected: {body.hex()}"
        for length in range(len(body)):
            parsed(parse, body[:length])


@ROUND_TRIP
@given(ertmp_video_messages())
def test_every_prefix_of_an_ertmp_video_message_gives_packets_or_tag_error(message) -> None:
    body, _ = message
    for length in range(len(body)):
        parsed(parse_video, body[:length])


@ROUND_TRIP
@given(ertmp_audio_messages())
def test_every_prefix_of_an_ertmp_audio_message_gives_packets_or_tag_error(message) -> None:
    body, _ = message
    for length in range(len(body)):
        parsed(parse_audio, body[:length])


def test_the_corpora_cover_every_message_shape() -> None:
    """The mutation and truncation corpora hold each framing the parser knows."""
    firsts = {body[0] & 0x0F for body in VALID_VIDEO if body[0] & 0x80}
    assert {V_START, V_FRAMES, V_END, V_FRAMES_X, V_METADATA, V_MULTITRACK, V_MODEX} <= firsts
    assert {body[1] >> 4 for body in VALID_VIDEO if body[0] & 0x8F == 0x80 | V_MULTITRACK} == {
        ONE_TRACK,
        MANY_TRACKS,
        MANY_TRACKS_MANY_CODECS,
    }
    audio_ex = {body[0] & 0x0F for body in VALID_AUDIO if body[0] >> 4 == 9}
    assert {A_START, A_FRAMES, A_END, A_MULTICHANNEL, A_MULTITRACK, 7} <= audio_ex
    assert {body[1] >> 4 for body in VALID_AUDIO if body[0] == 0x90 | A_MULTITRACK} == {
        ONE_TRACK,
        MANY_TRACKS,
        MANY_TRACKS_MANY_CODECS,
    }


def test_an_mpeg2ts_sequence_start_is_not_taken_for_the_av1_configuration() -> None:
    descriptor = bytes((0x80, 0x04, 0x81, 0x08, 0x0C, 0x00))
    [packet] = parse_video(ex_video(KEY, 5, "av01", descriptor))
    assert packet.packet_type is PacketType.MPEG2TS_SEQUENCE_START
    assert parse_video(video_body(packet, legacy=False)) == [packet]

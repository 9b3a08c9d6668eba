"""Real FLV / E-RTMP payloads: every tag PyAV's FLV muxer writes, parsed.

libavformat writes H.264, AAC and MP3 as legacy FLV and HEVC, AV1, VP9, Opus and FLAC as
Enhanced RTMP (SequenceStart, CodedFrames with or without composition time, colorInfo
Metadata with the command frame type, MultichannelConfig, SequenceEnd) — what an ffmpeg
publisher sends. The encodes come from tests/tools/flv_media.py: one second of 64×64
testsrc2 / a sine, cached, so the whole module runs in about a second.
"""

from __future__ import annotations

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmp_ingest.flv import codecs
from rtmp_ingest.flv.tags import Packet, PacketType, parse_audio, parse_video

from .ertmp import CTS_FOURCCS, FUZZ, GENERATED_KEY, KEY, V_FRAMES, mutated, parsed

#: (video, audio, bframes)
REAL = [
    pytest.param("h264", "aac", 2, id="h264-bframes+aac"),
    pytest.param("hevc", "opus", 2, id="hevc-bframes+opus"),
    pytest.param("av1", None, 0, id="av1"),
    pytest.param("vp9", None, 0, id="vp9"),
    pytest.param(None, "flac", 0, id="flac"),
    pytest.param(None, "mp3", 0, id="mp3"),
]
WITH_VIDEO = [case for case in REAL if case.values[0]]
WITH_BFRAMES = [case for case in REAL if case.values[2]]
FPS = 25
GOP_S = 0.48  #: 12 frames: three GOPs in the second
FRAME_MS = 1000 // FPS


def real_tags(video: str | None, audio: str | None, bframes: int):
    """The FLV tags of the encode, or a skip when this PyAV build lacks the encoder."""
    from tests.tools import flv_media

    for codec, table in ((video, flv_media.VIDEO_ENCODERS), (audio, flv_media.AUDIO_ENCODERS)):
        if codec is not None:
            try:
                av.codec.Codec(table[codec], "w")
            except av.codec.codec.UnknownCodecError:
                pytest.skip(f"this PyAV build has no {table[codec]} encoder for {codec}")
    return flv_media.encode_tags(
        1.0, video=video, audio=audio, size=(64, 64), fps=FPS, gop_s=GOP_S, bframes=bframes
    )


def real_packets(video: str | None, audio: str | None, bframes: int) -> list[tuple[object, Packet]]:
    """(tag, packet) for every audio and video tag: one packet each (single track)."""
    out = []
    for tag in real_tags(video, audio, bframes):
        if tag.kind in (8, 9):
            packets = (parse_video if tag.kind == 9 else parse_audio)(tag.body)
            assert len(packets) == 1, f"a single-track tag gave {packets}"
            out.append((tag, packets[0]))
    return out


def coded_video(video: str, audio: str | None, bframes: int) -> list[tuple[object, Packet]]:
    return [
        (tag, packet)
        for tag, packet in real_packets(video, audio, bframes)
        if packet.media == "video" and packet.packet_type is PacketType.CODED_FRAMES
    ]


def header_size(tag) -> int:
    """Bytes of FLV / E-RTMP framing before the codec payload of a single-track tag."""
    b0 = tag.body[0]
    if tag.kind == 8:
        return 5 if b0 >> 4 == 9 else 2 if b0 >> 4 == 10 else 1
    if not b0 & 0x80:
        return 5  # legacy AVC: CodecID byte, AVCPacketType, SI24
    fourcc = tag.body[1:5].decode("latin-1")
    return 8 if b0 & 0x0F == V_FRAMES and fourcc in CTS_FOURCCS else 5


@pytest.mark.parametrize("video, audio, bframes", REAL)
def test_every_tag_of_a_real_encode_parses_with_its_whole_payload(video, audio, bframes) -> None:
    pairs = real_packets(video, audio, bframes)
    assert {packet.codec for _, packet in pairs} == {c for c in (video, audio) if c}
    for tag, packet in pairs:
        assert (packet.track_id, packet.nano_offset, packet.multitrack) == (0, 0, False)
        if packet.packet_type is not PacketType.SEQUENCE_END:
            assert packet.data == tag.body[header_size(tag) :]


@pytest.mark.parametrize("video, audio, bframes", WITH_VIDEO)
def test_real_keyframes_match_the_flv_frame_type_and_the_first_frame_is_one(
    video, audio, bframes
) -> None:
    coded = coded_video(video, audio, bframes)
    assert len(coded) == FPS
    for tag, packet in coded:
        assert packet.keyframe is ((tag.body[0] >> 4 & 0x07) in (KEY, GENERATED_KEY))
    assert coded[0][1].keyframe, "the first coded video frame must be a keyframe"
    if video in ("h264", "hevc"):  # fixed GOP, scene cuts off: a keyframe every 12 frames
        first_pts = min(tag.ts_ms + packet.cts_ms for tag, packet in coded)
        for tag, packet in coded:
            index = (tag.ts_ms + packet.cts_ms - first_pts) // FRAME_MS
            assert packet.keyframe is (index % round(GOP_S * FPS) == 0), index


@pytest.mark.parametrize("video, audio, bframes", WITH_BFRAMES)
def test_real_b_frame_composition_times_give_evenly_spaced_presentation_times(
    video, audio, bframes
) -> None:
    coded = coded_video(video, audio, bframes)
    pts = sorted(tag.ts_ms + packet.cts_ms for tag, packet in coded)
    assert {b - a for a, b in zip(pts, pts[1:])} == {FRAME_MS}
    assert any(packet.cts_ms > 0 for _, packet in coded), "B-frames reorder"
    dts = [tag.ts_ms for tag, _ in coded]
    assert dts == sorted(dts)


def _avc_expectation(record: bytes) -> dict:
    """Profile and level from the first SPS inside the avcC: NAL header, profile_idc, flags,
    level_idc."""
    sps = record[8 : 8 + int.from_bytes(record[6:8], "big")]
    return {"profile": codecs.AVC_PROFILES[sps[1]], "level": round(sps[3] / 10, 1)}


EXPECTED_CONFIG = {
    "aac": {"profile": "LC", "sample_rate": 44100, "channels": 2},
    "opus": {"sample_rate": 48000, "channels": 2},
    "flac": {"sample_rate": 44100, "channels": 2},
    "hevc": {"profile": "Main"},
    "av1": {"profile": "Main"},
    "vp9": {"profile": "0"},
}


@pytest.mark.parametrize("video, audio, bframes", REAL)
def test_real_sequence_starts_describe_what_was_encoded(video, audio, bframes) -> None:
    pairs = real_packets(video, audio, bframes)
    for codec in (c for c in (video, audio) if c):
        mine = [packet for _, packet in pairs if packet.codec == codec]
        if codec == "mp3":  # legacy MP3 has no sequence header: the tag's first byte says it
            assert {packet.legacy_header for packet in mine} == {0x2F}
            assert codecs.legacy_audio_info(0x2F) == {"sample_rate": 44100, "channels": 2}
            assert all(p.data[0] == 0xFF and p.data[1] & 0xE0 == 0xE0 for p in mine), "MP3 sync"
            continue
        assert mine[0].packet_type is PacketType.SEQUENCE_START, "config before the first frame"
        info = codecs.describe_config(codec, mine[0].data)
        expected = _avc_expectation(mine[0].data) if codec == "h264" else EXPECTED_CONFIG[codec]
        assert info.items() >= expected.items(), info
        if codec == "h264":
            assert info["profile"] in ("Baseline", "Main", "High")
        for layout in (p for p in mine if p.packet_type is PacketType.MULTICHANNEL_CONFIG):
            assert layout.data[0] in (0, 1, 2) and layout.data[1] == 2, "stereo channel layout"


@pytest.mark.parametrize("video", ["hevc", "av1", "vp9"])
def test_ffmpeg_color_info_metadata_is_a_metadata_packet(video: str) -> None:
    metadata = [
        packet
        for _, packet in real_packets(video, None, 0)
        if packet.packet_type is PacketType.METADATA
    ]
    assert metadata
    assert all(packet.data.startswith(b"\x02\x00\x09colorInfo") for packet in metadata)


@pytest.mark.parametrize("video, audio, bframes", REAL)
def test_every_prefix_of_real_tags_gives_packets_or_tag_error(video, audio, bframes) -> None:
    """Sequence headers, the first frames and the last tags, cut at every length."""
    pairs = real_packets(video, audio, bframes)
    for tag, _ in pairs[:6] + pairs[-2:]:
        parse = parse_video if tag.kind == 9 else parse_audio
        for length in range(min(len(tag.body), 2000)):
            parsed(parse, tag.body[:length])


@FUZZ
@given(st.sampled_from([case.values for case in REAL]), st.data())
def test_mutated_real_tags_give_packets_or_tag_error(case, data) -> None:
    tag, _ = data.draw(st.sampled_from(real_packets(*case)[:8]))
    body = data.draw(mutated([tag.body[:300]]))
    parsed(parse_video if tag.kind == 9 else parse_audio, body)

"""TS feeds made by libavformat's muxer → bundle frames that FFmpeg decodes back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.bundle import Media
from rtmp_ingest.flv.tags import PacketType, parse_audio, parse_video
from rtmp_ingest.ts import TsError, TsMedia, es
from tests.ts import tsmux
from tests.ts.media import decode_flv, encode_ts, to_flv

CASES = [("h264", "aac"), ("hevc", "opus"), (None, "mp3"), ("h264", None)]
AUDIO_FRAMES = {"aac": 1024, "opus": 960, "mp3": 1152}


def frames_of(data: bytes, step: int) -> tuple[list, TsMedia]:
    media = TsMedia()
    frames = []
    for i in range(0, len(data), step):
        frames += media.receive(data[i : i + step])
    return frames + media.receive(b""), media


@pytest.mark.parametrize(
    ("video", "audio", "step"),
    [(v, a, step) for v, a in CASES for step in (1316, 188)] + [("h264", "aac", 1)],
)
def test_every_frame_decodes(video: str | None, audio: str | None, step: int) -> None:
    data = encode_ts(video, audio)
    frames, media = frames_of(data, step)
    assert media.dropped == 0, media.first_error
    decoded = decode_flv(to_flv(frames))
    if video:
        assert decoded["video"] == 50 and decoded["keyframes"] == 2
        video_frames = [f for f in frames if f.media is Media.VIDEO]
        assert video_frames[0].config and video_frames[0].codec == video
        assert [f.keyframe for f in video_frames if not f.config].count(True) == 2
        dts = [f.dts_ms for f in video_frames if not f.config]
        assert dts == sorted(dts) and dts[1] - dts[0] == 40
    if audio:
        audio_frames = [f for f in frames if f.media is Media.AUDIO and not f.config]
        rate = 44100 if audio == "mp3" else 48000
        assert abs(decoded["audio"] - 2.0 * rate / AUDIO_FRAMES[audio]) <= 4
        assert len(audio_frames) == decoded["audio"]
        assert audio_frames[0].codec == audio
    for frame in frames:  # every payload is a well-formed FLV / E-RTMP tag body
        packets = (parse_video if frame.media is Media.VIDEO else parse_audio)(frame.payload)
        assert packets[0].codec == frame.codec
        assert (packets[0].packet_type is PacketType.SEQUENCE_START) == frame.config


def test_track_parameters_for_the_api() -> None:
    frames, _ = frames_of(encode_ts("hevc", "opus"), 1316)
    configs = {f.track_id: f.track_info for f in frames if f.config}
    assert configs["video0"].width == 320 and configs["video0"].height == 240
    assert configs["video0"].profile == "Main"
    assert configs["audio0"].sample_rate == 48000 and configs["audio0"].channels == 2
    frames, _ = frames_of(encode_ts("h264", "aac"), 1316)
    configs = {f.track_id: f.track_info for f in frames if f.config}
    assert configs["audio0"].profile == "LC" and configs["audio0"].sample_rate == 48000


def test_lost_packet_freezes_to_the_next_keyframe_and_the_feed_goes_on() -> None:
    data = encode_ts("h264", "aac", seconds=3.0)
    packets = [data[i : i + 188] for i in range(0, len(data), 188)]
    whole, _ = frames_of(data, 1316)
    # lose one packet of a video PES in the first GOP (PID 0x100 is libavformat's video PID)
    video_packets = [i for i, p in enumerate(packets) if ((p[1] & 0x1F) << 8 | p[2]) == 0x100]
    del packets[video_packets[len(video_packets) // 6]]
    frames, media = frames_of(b"".join(packets), 1316)
    assert media.lost == 1 and media.dropped > 1
    decoded = decode_flv(to_flv(frames))
    assert decoded["keyframes"] == 3  # every GOP after the loss is there
    coded = [f for f in frames if f.media is Media.VIDEO and not f.config]
    assert coded[-1].dts_ms == [f for f in whole if f.media is Media.VIDEO][-1].dts_ms
    assert len(coded) < 75 and decoded["video"] == len(coded)


def adts(payload: bytes) -> bytes:
    length = 7 + len(payload)
    # AAC LC (profile 1), 48 kHz (index 3), stereo, no CRC
    return (
        bytes(
            (
                0xFF,
                0xF1,
                0x4C,
                0x80 | (length >> 11),
                (length >> 3) & 0xFF,
                ((length & 7) << 5) | 0x1F,
                0xFC,
            )
        )
        + payload
    )


def test_33_bit_timestamps_unwrap_across_the_wrap() -> None:
    start = (1 << 33) - 90 * 50  # 50 ms before the wrap
    out = [tsmux.pat(), tsmux.pmt([(0x0F, 0x101, b"")])]
    counter = 0
    for i in range(6):
        pts = (start + i * 1920) % (1 << 33)  # 21.3 ms AAC frames
        packets, counter = tsmux.packetize(
            0x101, tsmux.pes(0xC0, adts(bytes(20)), pts, pts), counter
        )
        out += packets
    frames, media = frames_of(b"".join(out), 188)
    coded = [f.dts_ms for f in frames if not f.config]
    assert len(coded) == 6 and media.dropped == 0
    steps = [b - a for a, b in zip(coded, coded[1:])]
    assert all(21 <= step <= 22 for step in steps) and sum(steps) in (106, 107)


def test_pes_that_is_not_what_the_pmt_says_is_dropped() -> None:
    out = [tsmux.pat(), tsmux.pmt([(0x0F, 0x101, b"")])]
    packets, counter = tsmux.packetize(0x101, tsmux.pes(0xC0, b"not adts", 0, 0), 0)
    good, _ = tsmux.packetize(0x101, tsmux.pes(0xC0, adts(bytes(9)), 1920, 1920), counter)
    frames, media = frames_of(b"".join(out + packets + good), 188)
    assert media.dropped == 1 and "ADTS" in (media.first_error or "")
    assert len([f for f in frames if not f.config]) == 1


def test_unsupported_streams_are_ignored() -> None:
    out = [tsmux.pat(), tsmux.pmt([(0x81, 0x102, b""), (0x0F, 0x101, b"")])]
    packets, _ = tsmux.packetize(0x102, tsmux.pes(0xBD, b"ac3 frame", 0, 0), 0)
    frames, media = frames_of(b"".join(out + packets), 188)
    assert media.ignored_streams == [(0x102, 0x81)] and frames == []


def test_annex_b_split() -> None:
    data = b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x67abc\x00\x00\x00\x00\x01\x68x\x00\x00\x01\x65yz"
    assert es.split_annex_b(data) == [b"\x09\xf0", b"\x67abc", b"\x68x", b"\x65yz"]
    assert es.rbsp(b"\x00\x00\x03\x01\x00\x00\x03") == b"\x00\x00\x01\x00\x00"


@settings(max_examples=150)
@given(st.binary(max_size=4000), st.sampled_from([1, 188, 1316]))
def test_garbage_rule(data: bytes, step: int) -> None:
    try:
        frames_of(data, step)
    except TsError:
        pass


@given(st.binary(min_size=1, max_size=300), st.integers(0, 200))
def test_garbage_payloads_in_valid_packets(payload: bytes, stream: int) -> None:
    stream_type = [0x1B, 0x24, 0x0F, 0x03, 0x06][stream % 5]
    descriptors = b"\x05\x04Opus\x7f\x02\x80\x02" if stream_type == 0x06 else b""
    out = [tsmux.pat(), tsmux.pmt([(stream_type, 0x100, descriptors)])]
    packets, _ = tsmux.packetize(0x100, tsmux.pes(0xE0, payload, stream, stream), 0)
    frames_of(b"".join(out + packets), 188)  # never raises: bad payloads are counted

"""Fragmented MP4 as we write it: PyAV (libavformat) reads it back exactly."""

from __future__ import annotations

import io
import struct

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.bundle import Media
from rtmp_ingest.outputs import fmp4
from rtmp_ingest.outputs.samples import (
    audio_frame_samples,
    codec_string,
    coded_payload,
    h264_picture_size,
    picture_size,
    track_spec,
)
from tests.outputs.helpers import encoded
from tests.tools.flv_media import AUDIO_ENCODERS, VIDEO_ENCODERS


def _have(encoder: str) -> bool:
    try:
        av.codec.Codec(encoder, "w")
    except Exception:  # noqa: BLE001
        return False
    return True


def write_mp4(outs, per_fragment: int = 5) -> tuple[bytes, dict[str, list[tuple[int, int, bool]]]]:
    """An fMP4 file of every track in `outs`; also (dts, pts, keyframe) per track in ms as sent."""
    configs: dict[str, bytes] = {}
    specs: dict[str, fmp4.TrackSpec] = {}
    samples: dict[str, list[tuple[int, int, bytes, bool]]] = {}
    sent: dict[str, list[tuple[int, int, bool]]] = {}
    for out in outs:
        frame = out.frame
        payload = coded_payload(frame)
        if payload is None:
            continue
        if frame.config:
            configs.setdefault(frame.track_id, payload)
            continue
        if not payload:
            continue
        if frame.track_id not in specs:
            spec = track_spec(
                len(specs) + 1,
                frame.media,
                frame.codec,
                configs.get(frame.track_id, b""),
                frame.track_info,
            )
            assert spec is not None, frame.codec
            specs[frame.track_id] = spec
        samples.setdefault(frame.track_id, []).append(
            (out.dts_ms, frame.cts_ms, payload, frame.keyframe)
        )
        sent.setdefault(frame.track_id, []).append(
            (out.dts_ms, out.dts_ms + frame.cts_ms, frame.keyframe)
        )
    data = fmp4.init_segment(list(specs.values()))
    sequence = 1
    for track_id, spec in specs.items():
        scale = spec.timescale
        rows = samples[track_id]
        ticks = [dts * scale // 1000 for dts, _, _, _ in rows]
        for start in range(0, len(rows), per_fragment):
            run = []
            for i in range(start, min(start + per_fragment, len(rows))):
                duration = (
                    ticks[i + 1] - ticks[i]
                    if i + 1 < len(rows)
                    else (ticks[i] - ticks[i - 1] if i else 1)
                )
                _, cts, payload, key = rows[i]
                run.append(fmp4.Sample(payload, duration, key, cts * scale // 1000))
            data += fmp4.fragment(sequence, [(spec.track_id, ticks[start], run)])
            sequence += 1
    return data, sent


def read_back(data: bytes):
    container = av.open(io.BytesIO(data), format="mp4")
    got: dict[str, list[tuple[int, int, bool]]] = {}
    decoded: dict[str, int] = {}
    sizes = set()
    for stream in container.streams:
        got[stream.type] = []
        decoded[stream.type] = 0
    for packet in container.demux():
        if packet.dts is None:
            continue
        stream = packet.stream
        base = stream.time_base
        got[stream.type].append(
            (
                round(float(packet.dts * base) * 1000),
                round(float(packet.pts * base) * 1000),
                packet.is_keyframe,
            )
        )
        for frame in stream.codec_context.decode(packet):
            decoded[stream.type] += 1
            if stream.type == "video":
                sizes.add((frame.width, frame.height))
    streams = {s.type: s for s in container.streams}
    container.close()
    return got, decoded, sizes, streams


def test_h264_with_b_frames_and_aac_read_back_with_the_timestamps_sent():
    outs = encoded(2.0, bframes=2)
    data, sent = write_mp4(outs)
    got, decoded, sizes, streams = read_back(data)
    assert got["video"] == sent["video0"]
    assert any(pts != dts for dts, pts, _ in got["video"]), "B-frames give composition offsets"
    assert decoded["video"] >= len(sent["video0"]) - 3, "all but the frames still in the decoder"
    assert sizes == {(320, 180)}
    assert streams["video"].codec_context.width == 320
    assert [d for d, _, _ in got["audio"]] == [d for d, _, _ in sent["audio0"]]
    assert decoded["audio"] >= len(sent["audio0"]) - 2
    assert streams["audio"].codec_context.sample_rate == 44100


@pytest.mark.parametrize(
    "video,audio", [("hevc", "opus"), ("av1", None), ("vp9", None), (None, "flac"), (None, "mp3")]
)
def test_enhanced_rtmp_codecs_read_back_and_decode(video, audio):
    for codec, table in ((video, VIDEO_ENCODERS), (audio, AUDIO_ENCODERS)):
        if codec and not _have(table[codec]):
            pytest.skip(f"PyAV here has no {table[codec]} encoder")
    outs = encoded(1.0, video=video, audio=audio)
    data, sent = write_mp4(outs)
    got, decoded, sizes, _ = read_back(data)
    if video:
        assert [d for d, _, _ in got["video"]] == [d for d, _, _ in sent["video0"]]
        assert decoded["video"] >= len(sent["video0"]) - 4
        assert sizes == {(320, 180)}
    if audio:
        assert len(got["audio"]) == len(sent["audio0"])
        assert decoded["audio"] >= len(sent["audio0"]) - 2


def _boxes(data: bytes, at: int = 0, end: int | None = None):
    end = len(data) if end is None else end
    while at < end:
        size, kind = struct.unpack_from(">I4s", data, at)
        assert size >= 8 and at + size <= end, (kind, size)
        yield kind, at, size
        at += size


sample_st = st.builds(
    fmp4.Sample,
    st.binary(min_size=0, max_size=40),
    st.integers(0, 2**32 - 1),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 2**32 - 1),
    st.lists(
        st.tuples(
            st.integers(1, 16),
            st.integers(0, 2**64 - 1),
            st.lists(sample_st, min_size=1, max_size=8),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_a_fragment_points_every_sample_at_its_bytes(sequence, runs):
    data = fmp4.fragment(sequence, runs)
    boxes = list(_boxes(data))
    assert [kind for kind, _, _ in boxes] == [b"moof", b"mdat"]
    moof_at, moof_size = boxes[0][1], boxes[0][2]
    inner = list(_boxes(data, moof_at + 8, moof_at + moof_size))
    assert (
        inner[0][0] == b"mfhd" and struct.unpack_from(">I", data, inner[0][1] + 12)[0] == sequence
    )
    trafs = [b for b in inner if b[0] == b"traf"]
    assert len(trafs) == len(runs)
    for (_, traf_at, traf_size), (track_id, base, samples) in zip(trafs, runs):
        parts = {kind: at for kind, at, _ in _boxes(data, traf_at + 8, traf_at + traf_size)}
        assert struct.unpack_from(">I", data, parts[b"tfhd"] + 12)[0] == track_id
        assert struct.unpack_from(">Q", data, parts[b"tfdt"] + 12)[0] == base
        trun = parts[b"trun"]
        count, offset = struct.unpack_from(">Ii", data, trun + 12)
        assert count == len(samples)
        at = moof_at + offset
        for i, sample in enumerate(samples):
            duration, size, flags, cts = struct.unpack_from(">IIIi", data, trun + 20 + 16 * i)
            assert (duration, size, cts) == (sample.duration, len(sample.data), sample.cts)
            assert flags == (fmp4.SYNC_FLAGS if sample.keyframe else fmp4.NON_SYNC_FLAGS)
            assert data[at : at + size] == sample.data
            at += size


@pytest.mark.parametrize("size", [(320, 180), (1280, 720), (1920, 1080), (176, 144), (642, 362)])
def test_picture_size_comes_from_the_h264_sps(size):
    config = next(o.frame for o in encoded(0.2, size=size, audio=None) if o.frame.config)
    record = coded_payload(config)
    assert h264_picture_size(record) == size
    assert picture_size("h264", record) == size


def test_picture_size_of_hevc_comes_from_pyav():
    if not _have("libx265"):
        pytest.skip("no libx265")
    config = next(
        o.frame for o in encoded(0.2, video="hevc", audio=None, size=(480, 270)) if o.frame.config
    )
    assert picture_size("hevc", coded_payload(config)) == (480, 270)


def test_codec_strings_name_profile_and_level():
    configs = {o.frame.track_id: coded_payload(o.frame) for o in encoded(0.2) if o.frame.config}
    avcc = configs["video0"]
    assert codec_string("h264", avcc) == f"avc1.{avcc[1]:02x}{avcc[2]:02x}{avcc[3]:02x}"
    assert codec_string("aac", configs["audio0"]) == "mp4a.40.2"
    if _have("libx265"):
        hevc = {
            o.frame.track_id: coded_payload(o.frame)
            for o in encoded(0.2, video="hevc", audio=None)
            if o.frame.config
        }["video0"]
        assert codec_string("hevc", hevc).startswith("hvc1.1.6.L")
    assert codec_string("h264", b"") == "avc1.640028", (
        "a short record gets a generic name, not an error"
    )


def test_audio_frame_durations_come_from_the_bitstream():
    assert audio_frame_samples("aac", b"\x21", 44100) == 1024
    assert audio_frame_samples("mp3", b"\xff", 44100) == 1152
    assert audio_frame_samples("opus", bytes([0xFC]), 48000) == 960  # CELT 20 ms, one frame
    assert audio_frame_samples("opus", bytes([0xFD]), 48000) == 1920  # two frames
    assert audio_frame_samples("flac", bytes([0xFF, 0xF8, 0xC9]), 44100) == 4096
    assert audio_frame_samples("opus", b"", 48000) is None


def test_a_track_mp4_cannot_carry_is_refused_not_broken():
    frame = next(
        o.frame for o in encoded(0.2) if o.frame.media is Media.VIDEO and not o.frame.config
    )
    assert track_spec(1, frame.media, "vp6", b"", None) is None
    with pytest.raises(ValueError):
        fmp4.sample_entry(fmp4.TrackSpec(track_id=1, media="audio", codec="speex", timescale=16000))

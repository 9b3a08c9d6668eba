"""LL-HLS packaging under what real and hostile publishers send: frozen timestamps, codec
changes at a supersede, the preload hint, the media time players start from."""

from __future__ import annotations

import io
import struct

import attrs
import av

from rtmp_ingest.bundle import Media, OutputFrame
from rtmp_ingest.outputs.hls import HlsSettings
from rtmp_ingest.outputs.hls_source import MEDIA_TIME_LEAD_MS, SourceHls
from rtmp_ingest.outputs.samples import parameter_sets
from tests.outputs.helpers import frames_of, output_frames
from tests.tools.flv_media import encode_tags

ORIGIN = 1_800_000_000.0
MiB = 1024 * 1024


def source_of(settings: HlsSettings | None = None) -> SourceHls:
    return SourceHls("live/s", "cam1", settings or HlsSettings(), ORIGIN, lambda: None)


def test_a_publisher_whose_timestamps_never_advance_cannot_grow_hls_memory_past_the_bound():
    settings = HlsSettings(
        max_segment_bytes=2 * MiB, max_part_bytes=256 * 1024, max_window_bytes=6 * MiB
    )
    source = source_of(settings)
    outs = output_frames(frames_of(encode_tags(1.0, audio=None)))
    config = next(o for o in outs if o.frame.config)
    key = next(o for o in outs if o.frame.keyframe and not o.frame.config)
    big = b"\x17\x01\x00\x00\x00" + struct.pack(">I", 50_000) + b"\x65" + bytes(49_999)
    inter = attrs.evolve(key.frame, payload=b"\x27" + big[1:], keyframe=False)
    keyframe = attrs.evolve(key.frame, payload=big)
    source.push(config)
    peak = 0
    sent = 0
    for i in range(2000):  #: 100 MB, all at one timestamp, a keyframe every 50 frames
        frame = keyframe if i % 50 == 0 else inter
        source.push(OutputFrame("cam1", frame, 10_000, False))
        sent += len(frame.payload)
        peak = max(peak, source.held_bytes())
    bound = settings.max_window_bytes + settings.max_segment_bytes + settings.max_part_bytes
    assert sent > 10 * bound
    assert peak <= bound, (peak, bound)
    video = source.tracks["video0"]
    assert all(s.size <= settings.max_segment_bytes for s in video.segments)
    assert all(
        len(p.data) <= settings.max_part_bytes + 60_000 for s in video.segments for p in s.parts
    )
    assert video.segments and video.playlist().count("#EXTINF") == len(video.segments)
    source.end()
    assert source.held_bytes() <= settings.max_window_bytes + settings.max_segment_bytes, (
        "what no playlist lists is let go when the source ends"
    )


def test_media_time_starts_near_zero_at_the_playlist_origin_and_the_pdt_keeps_the_common_clock():
    late_ms = 3_600_000  #: the source joined its stream's timeline an hour after it began
    outs = output_frames(frames_of(encode_tags(5.0, gop_s=1.0), offset_ms=late_ms))
    source = source_of()
    for out in outs:
        source.push(out)
    video = source.tracks["video0"]
    data = video.inits[video.segments[0].init_id] + b"".join(s.data for s in video.segments)
    with av.open(io.BytesIO(data), format="mp4") as container:
        first = next(p for p in container.demux(video=0) if p.dts is not None)
        start_s = float(first.dts * first.stream.time_base)
    assert 0 <= start_s <= MEDIA_TIME_LEAD_MS / 1000 + 0.05, "tfdt near zero, not an hour"
    first_ms = next(o.dts_ms for o in outs if not o.frame.config)
    assert abs(video.segments[0].program_date_time - (ORIGIN + first_ms / 1000)) < 0.05


def _supersede(size_a=(640, 360), size_b=(1280, 720), seconds=4.0):
    """A source whose encoder is superseded by one with another picture size."""
    first = output_frames(frames_of(encode_tags(seconds, size=size_a, gop_s=1.0)))
    end = max(o.dts_ms for o in first) + 40
    second = output_frames(frames_of(encode_tags(seconds, size=size_b, gop_s=1.0), offset_ms=end))
    second = [attrs.evolve(o, discontinuity=o.frame.config or o.discontinuity) for o in second]
    return first + second


def test_the_first_keyframe_after_a_parameter_change_carries_the_parameter_sets_in_band():
    source = source_of()
    outs = _supersede()
    for out in outs:
        source.push(out)
    source.end()
    video = source.tracks["video0"]
    changed = [s for s in video.segments if s.discontinuity]
    assert len(changed) == 1
    init = video.inits[changed[0].init_id]
    assert b"avc3" in init and b"avc1" not in init, "samples carry parameter sets: avc3"
    assert b"avc1" in video.inits[video.segments[0].init_id]
    new_config = [o for o in outs if o.frame.config and o.frame.media is Media.VIDEO][-1]
    inband = parameter_sets("h264", new_config.frame.payload[5:])
    assert inband and changed[0].data is not None and inband in changed[0].data
    # a player that keeps the FIRST init (ffmpeg's HLS reader) still decodes the new size
    data = video.inits[video.segments[0].init_id] + b"".join(s.data for s in video.segments)
    sizes = set()
    errors = 0
    with av.open(io.BytesIO(data), format="mp4") as container:
        for packet in container.demux(video=0):
            try:
                for frame in packet.decode():
                    sizes.add((frame.width, frame.height))
            except av.error.FFmpegError:
                errors += 1
    assert (1280, 720) in sizes and errors == 0, (sizes, errors)


def test_every_preload_hint_names_a_part_that_comes():
    source = source_of(HlsSettings(window_segments=1000))
    hinted = set()
    for out in _supersede(seconds=6.0):
        source.push(out)
        video = source.tracks.get("video0")
        if video is not None and video.spec is not None:
            hinted.add(video.hinted_part())
    hinted.discard(source.tracks["video0"].hinted_part())  #: the source ends before it comes
    source.end()
    video = source.tracks["video0"]
    made = {(s.msn, p.index) for s in video.segments for p in s.parts}
    missing = sorted(hinted - made)
    assert len(hinted) > 50
    assert not missing, f"hinted parts that never came: {missing}"

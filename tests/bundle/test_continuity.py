"""docs/spec.md §3.5 at a switch: metadata, PTS and audio stay continuous; per-track counts."""

from __future__ import annotations

import attrs
import pytest

from rtmp_ingest.bundle import Media, Registry
from tests.bundle.helpers import audio, audio_config, coded, metadata, publish, video, video_config


@pytest.fixture
def registry() -> Registry:
    return Registry(wall_origin_s=1_700_000_000.0)


def camera(registry: Registry, *, frames: int, cts_ms: int = 0):
    """A feed on air with `frames` video frames at 30 fps (and audio 5 ms after each)."""
    feed = publish(registry, "cam1")
    registry.push_frame(feed, video_config(), now_s=0.0)
    registry.push_frame(feed, audio_config(), now_s=0.0)
    now = 0.0
    for n in range(frames):
        now = n / 30
        dts = round(n * 1000 / 30)
        registry.push_frame(feed, video(dts, key=n == 0, cts_ms=cts_ms), now_s=now)
        registry.push_frame(feed, audio(dts + 5), now_s=now)
    return feed, now


def test_metadata_of_a_spare_goes_out_at_the_switch_timestamp(registry):
    _old, now = camera(registry, frames=300)
    reader = registry.subscribe("live/show", "cam1")
    reader.drain_nowait()
    spare = publish(registry, "cam1", now_s=now)
    registry.push_frame(spare, metadata(b"spare-meta"), now_s=now)
    registry.push_frame(spare, video(9733, key=True, tag=b"spare-key"), now_s=now + 0.033)
    frames = reader.drain_nowait()
    meta = next(o for o in frames if o.frame.payload == b"spare-meta")
    key = next(o for o in frames if o.frame.payload == b"spare-key")
    assert meta.dts_ms == key.dts_ms
    registry.push_frame(spare, metadata(b"later-meta"), now_s=now + 0.05)
    registry.push_frame(spare, video(9766, tag=b"spare-2"), now_s=now + 0.066)
    later = reader.drain_nowait()
    assert later[0].frame.payload == b"later-meta" and later[0].dts_ms == key.dts_ms


def test_the_first_frame_of_a_spare_follows_the_last_picture_by_one_frame(registry):
    """B-frames: the last frame out is shown 67 ms after its DTS; the spare has none."""
    _old, now = camera(registry, frames=30, cts_ms=67)
    reader = registry.subscribe("live/show", "cam1")
    last = [o for o in coded(reader.drain_nowait()) if o.frame.media is Media.VIDEO][-1]
    last_pts = last.dts_ms + last.frame.cts_ms
    spare = publish(registry, "cam1", now_s=now)
    registry.push_frame(spare, video(0, key=True, tag=b"spare-key"), now_s=now + 0.033)
    registry.push_frame(spare, video(33, tag=b"spare-2"), now_s=now + 0.066)
    first, second = coded(reader.drain_nowait())
    assert first.dts_ms + first.frame.cts_ms == last_pts + 33
    assert second.dts_ms - first.dts_ms == 33
    assert first.dts_ms > last.dts_ms


def test_no_pts_collision_at_a_switch_on_a_30_fps_clock(registry):
    _old, now = camera(registry, frames=31)  # DTS steps of 33 and 34 ms
    reader = registry.subscribe("live/show", "cam1")
    last = [o for o in coded(reader.drain_nowait()) if o.frame.media is Media.VIDEO][-1]
    spare = publish(registry, "cam1", now_s=now)
    registry.push_frame(spare, video(500, key=True), now_s=now + 0.033)
    (first,) = [o for o in coded(reader.drain_nowait()) if o.frame.media is Media.VIDEO]
    assert first.dts_ms - last.dts_ms in (33, 34)


def test_no_audio_gap_at_a_switch(registry):
    """The spare's audio that came before its keyframe fills the time up to it."""
    _old, now = camera(registry, frames=30)  # last video 967, last audio 972
    reader = registry.subscribe("live/show", "cam1")
    reader.drain_nowait()
    spare = publish(registry, "cam1", now_s=now)
    registry.push_frame(spare, video_config(), now_s=now)
    registry.push_frame(spare, audio_config(), now_s=now)
    # The spare's own clock: audio every 21 ms, interleaved ahead of its keyframe at 1000.
    for dts in (916, 937, 958, 979):
        registry.push_frame(spare, audio(dts, tag=b"pre%d" % dts), now_s=now + 0.01)
    registry.push_frame(spare, video(1000, key=True, tag=b"key"), now_s=now + 0.033)
    registry.push_frame(spare, audio(1000, tag=b"a1000"), now_s=now + 0.034)
    registry.push_frame(spare, audio(1021, tag=b"a1021"), now_s=now + 0.055)
    out = coded(reader.drain_nowait())
    key = next(o for o in out if o.frame.payload == b"key")
    audio_dts = [972] + [o.dts_ms for o in out if o.frame.media is Media.AUDIO]
    steps = [b - a for a, b in zip(audio_dts, audio_dts[1:], strict=False)]
    assert all(0 < step <= 22 for step in steps), (audio_dts, key.dts_ms)
    # lip sync of the spare moves by less than half an audio frame
    a1000 = next(o for o in out if o.frame.payload == b"a1000")
    assert abs(a1000.dts_ms - key.dts_ms) <= 11


def test_feed_statistics_count_keyframes_of_video_only_and_split_frames_per_track(registry):
    feed = publish(registry, "cam1")
    registry.push_frame(feed, video_config(), now_s=0.0)
    registry.push_frame(feed, audio_config(), now_s=0.0)
    for n in range(60):
        registry.push_frame(feed, video(n * 33, key=n % 30 == 0), now_s=n / 30)
        flagged = attrs.evolve(audio(n * 33 + 5), keyframe=True)  # FLV marks audio as sync
        registry.push_frame(feed, flagged, now_s=n / 30)
    stats = registry.feed_statistics(feed, now_s=2.0)
    assert stats.keyframes_in == 2
    assert (stats.video_frames_in, stats.audio_frames_in) == (60, 60)
    assert stats.frames_in == 122  # every frame, configuration records included

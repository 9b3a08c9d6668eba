"""Readers: bounded queues, lag policy, GOP-cache start, waiting for a source."""

from __future__ import annotations

from rtmp_ingest.bundle import BundleConfig, EndReason, Media, Registry, StartMode
from tests.bundle.helpers import (
    audio,
    audio_config,
    coded,
    drain,
    metadata,
    payloads,
    publish,
    video,
    video_config,
)


def live_camera(registry: Registry, source_id: str = "cam1"):
    feed = publish(registry, source_id)
    registry.push_frame(feed, metadata(), now_s=0.0)
    registry.push_frame(feed, video_config(), now_s=0.0)
    registry.push_frame(feed, audio_config(), now_s=0.0)
    return feed


def test_new_reader_starts_from_the_cached_gop_with_sequence_headers():
    registry = Registry()
    feed = live_camera(registry)
    for n in range(70):  # keyframes at 0 and 60
        registry.push_frame(feed, video(n * 33, key=n % 60 == 0), now_s=n / 30)
    reader = registry.subscribe("live/show", "cam1")
    frames = reader.drain_nowait()
    assert payloads(frames[:3]) == [b"avcC-720p", b"asc-48k", b"onMetaData"]
    assert frames[3].frame.keyframe and frames[3].frame.dts_ms == 60 * 33
    assert len(coded(frames)) == 10


def test_live_start_gets_sequence_headers_now_and_video_from_the_next_keyframe():
    registry = Registry()
    feed = live_camera(registry)
    for n in range(10):
        registry.push_frame(feed, video(n * 33, key=n == 0), now_s=n / 30)
    reader = registry.subscribe("live/show", "cam1", start=StartMode.LIVE)
    registry.push_frame(feed, audio(340, tag=b"audio-now"), now_s=0.34)
    registry.push_frame(feed, video(363, tag=b"inter"), now_s=0.36)
    registry.push_frame(feed, video(396, key=True, tag=b"key"), now_s=0.39)
    assert payloads(reader.drain_nowait()) == [
        b"avcC-720p",
        b"asc-48k",
        b"onMetaData",
        b"audio-now",
        b"key",
    ]


def test_reader_waiting_for_a_stream_that_does_not_exist_yet_is_served_when_it_appears():
    registry = Registry()
    reader = registry.subscribe("live/later", "cam1")
    assert registry.statistics().waiting_readers == 1
    feed = publish(registry, "cam1", stream_path="live/later")
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    assert payloads(reader.drain_nowait()) == [b"v0"]
    assert registry.statistics().waiting_readers == 0


def test_waiting_reader_keeps_its_place_across_inactivity_and_gets_the_next_feed():
    registry = Registry()
    reader = registry.subscribe("live/show", "cam1")
    first = publish(registry, "cam1")
    registry.push_frame(first, video(0, key=True, tag=b"first"), now_s=0.0)
    registry.end_feed(first, EndReason.UNPUBLISH, now_s=1.0)
    registry.tick(now_s=60.0)
    assert registry.stream_paths() == ()
    second = publish(registry, "cam1", now_s=61.0)
    registry.push_frame(second, video(0, key=True, tag=b"second"), now_s=61.0)
    frames = reader.drain_nowait()
    assert payloads(frames) == [b"first", b"second"]
    assert frames[1].discontinuity  # a new timeline: the track restarts


def test_lagging_reader_skips_to_the_next_keyframe_and_the_skip_is_counted():
    registry = Registry()
    feed = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1", max_frames=4)
    for n in range(8):  # fills the queue, then drops
        registry.push_frame(feed, video(n * 33, key=n == 0), now_s=n / 30)
    assert len(reader.drain_nowait()) == 4
    registry.push_frame(feed, video(8 * 33, tag=b"inter-after-drain"), now_s=0.3)
    registry.push_frame(feed, video(9 * 33, key=True, tag=b"key"), now_s=0.33)
    registry.push_frame(feed, video(10 * 33, tag=b"next"), now_s=0.36)
    assert payloads(reader.drain_nowait()) == [b"key", b"next"]
    stats = reader.statistics()
    assert (stats.skips, stats.dropped, stats.delivered) == (1, 5, 6)


def test_lagging_reader_gets_the_sequence_header_it_missed_before_the_keyframe():
    registry = Registry()
    feed = publish(registry, "cam1")
    registry.push_frame(feed, video_config(b"old"), now_s=0.0)
    reader = registry.subscribe("live/show", "cam1", max_frames=3)
    for n in range(4):
        registry.push_frame(feed, video(n * 33, key=n == 0), now_s=n / 30)
    registry.push_frame(feed, video_config(b"new"), now_s=0.2)  # dropped: queue full
    reader.drain_nowait()
    registry.push_frame(feed, video(200, key=True, tag=b"key"), now_s=0.2)
    frames = reader.drain_nowait()
    assert payloads(frames) == [b"new", b"key"]
    assert frames[0].discontinuity


def test_lagging_reader_of_an_audio_only_source_drops_the_oldest_frames():
    registry = Registry()
    feed = publish(registry, "fr")
    reader = registry.subscribe("live/show", "fr", max_frames=3)
    for n in range(6):
        registry.push_frame(feed, audio(n * 21), now_s=n * 0.021)
    assert payloads(reader.drain_nowait()) == [b"a63", b"a84", b"a105"]
    assert reader.statistics().dropped == 3 and reader.statistics().skips == 0


def test_full_reader_never_blocks_or_slows_the_publisher_or_other_readers():
    registry = Registry()
    feed = publish(registry, "cam1")
    stuck = registry.subscribe("live/show", "cam1", max_frames=1)
    healthy = registry.subscribe("live/show", "cam1")
    for n in range(300):
        registry.push_frame(feed, video(n * 33, key=n % 60 == 0), now_s=n / 30)
    assert len(healthy.drain_nowait()) == 300
    assert stuck.statistics().queued == 1 and stuck.statistics().dropped == 299


def test_wakeup_fires_when_the_queue_turns_non_empty_and_a_failing_hook_is_dropped():
    registry = Registry()
    feed = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    calls = []
    reader.set_wakeup(lambda: calls.append("wake"))
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    registry.push_frame(feed, video(33), now_s=0.033)
    assert calls == ["wake"]
    reader.drain_nowait()

    def broken() -> None:
        raise RuntimeError("driver bug")

    reader.set_wakeup(broken)
    registry.push_frame(feed, video(66), now_s=0.066)  # does not raise into ingest
    registry.push_frame(feed, video(99), now_s=0.099)
    assert len(reader.drain_nowait()) == 2


def test_set_wakeup_on_a_reader_with_queued_frames_fires_at_once():
    registry = Registry()
    feed = publish(registry, "cam1")
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    reader = registry.subscribe("live/show", "cam1")
    calls = []
    reader.set_wakeup(lambda: calls.append(1))
    assert calls == [1]


def test_gop_cache_over_its_byte_limit_makes_new_readers_start_live():
    registry = Registry(BundleConfig(max_gop_cache_bytes=10_000))
    feed = publish(registry, "cam1")
    for n in range(20):
        registry.push_frame(feed, video(n * 33, key=n == 0, tag=bytes(1000)), now_s=n / 30)
    reader = registry.subscribe("live/show", "cam1")
    assert reader.drain_nowait() == []
    registry.push_frame(feed, video(20 * 33, tag=b"inter"), now_s=0.7)
    registry.push_frame(feed, video(21 * 33, key=True, tag=b"key"), now_s=0.73)
    assert payloads(reader.drain_nowait()) == [b"key"]


def test_gop_larger_than_the_reader_queue_starts_live():
    registry = Registry()
    feed = publish(registry, "cam1")
    registry.push_frame(feed, video_config(), now_s=0.0)
    for n in range(10):
        registry.push_frame(feed, video(n * 33, key=n == 0), now_s=n / 30)
    reader = registry.subscribe("live/show", "cam1", max_frames=5)
    assert payloads(reader.drain_nowait()) == [b"avcC-720p"]


def test_second_video_layer_starts_at_its_own_keyframe_for_a_new_reader():
    registry = Registry()
    feed = publish(registry, "cam1")
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    registry.push_frame(feed, video(0, key=True, track="video1", tag=b"L1-key0"), now_s=0.0)
    registry.push_frame(feed, video(33, key=True, tag=b"L0-key"), now_s=0.033)
    registry.push_frame(feed, video(33, track="video1", tag=b"L1-inter"), now_s=0.033)
    reader = registry.subscribe("live/show", "cam1")
    assert payloads(reader.drain_nowait()) == [b"L0-key"]
    registry.push_frame(feed, video(66, track="video1", tag=b"L1-inter2"), now_s=0.066)
    registry.push_frame(feed, video(99, key=True, track="video1", tag=b"L1-key"), now_s=0.099)
    assert payloads(reader.drain_nowait()) == [b"L1-key"]


def test_whole_stream_reader_starts_from_every_live_source():
    registry = Registry()
    cam = publish(registry, "cam1")
    mic = publish(registry, "mic")
    registry.push_frame(cam, video(0, key=True), now_s=0.0)
    registry.push_frame(mic, audio_config(), now_s=0.0)
    registry.push_frame(mic, audio(0), now_s=0.0)
    reader = registry.subscribe("live/show")
    assert [(o.source_id, o.frame.media) for o in reader.drain_nowait()] == [
        ("cam1", Media.VIDEO),
        ("mic", Media.AUDIO),  # the sequence header; audio-only sources start live
    ]


def test_closed_reader_is_forgotten_and_gets_nothing():
    registry = Registry()
    feed = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    reader.close()
    reader.close()
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    assert reader.get_nowait() is None
    assert reader.closed and registry.statistics().readers == 0
    assert registry.source_statistics("live/show", "cam1", now_s=0.0).readers == 0


def test_get_nowait_returns_frames_in_order_then_none():
    registry = Registry()
    feed = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    registry.push_frame(feed, video(33), now_s=0.033)
    assert [reader.get_nowait().dts_ms, reader.get_nowait().dts_ms] == [0, 33]
    assert reader.get_nowait() is None
    assert reader.statistics().delivered == 2


def test_reader_joining_while_the_source_reconnects_gets_the_sequence_headers():
    registry = Registry()
    old = live_camera(registry)
    registry.push_frame(old, video(0, key=True), now_s=0.0)
    registry.end_feed(old, EndReason.DISCONNECT, now_s=0.5)
    reader = registry.subscribe("live/show", "cam1")
    assert reader.drain_nowait() == []
    new = live_camera(registry)  # same encoder settings as before
    registry.push_frame(new, video(0, key=True, tag=b"key"), now_s=1.0)
    frames = reader.drain_nowait()
    assert payloads(frames) == [b"avcC-720p", b"asc-48k", b"onMetaData", b"key"]
    assert not any(o.discontinuity for o in frames)  # same settings: nothing to reinitialise


def test_a_stalled_reader_pins_at_most_its_byte_bound_of_big_frames():
    """4K-sized frames: the 512-frame bound alone would let one stalled player hold
    ~100 MB of the feed; `reader_queue_bytes` caps it, and it skips like a full queue."""
    registry = Registry(BundleConfig(reader_queue_bytes=1_000_000))
    feed = publish(registry, "cam")
    registry.push_frame(feed, video_config(), now_s=0.0)
    big = b"\x00" * 200_000
    registry.push_frame(feed, video(0, key=True, tag=big), now_s=0.0)
    reader = registry.subscribe("live/show", "cam", start=StartMode.LIVE)
    held_max = 0
    for n in range(1, 200):  # never drained: a player whose socket is full
        registry.push_frame(feed, video(n * 33, key=n % 60 == 0, tag=big), now_s=n * 0.033)
        held_max = max(held_max, sum(len(o.frame.payload) for o in reader._queue))
    assert held_max <= 1_000_000 + len(big)
    assert reader.statistics().skips >= 1
    frames = drain(reader)
    assert frames  # it goes on: the next keyframe after the skip
    registry.push_frame(feed, video(200 * 33, key=True, tag=big), now_s=7.0)
    assert any(o.frame.keyframe for o in drain(reader))

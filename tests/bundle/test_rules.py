"""docs/spec.md §3 as executable documentation: one example per rule of the bundle."""

from __future__ import annotations

import pytest

from rtmp_ingest.bundle import (
    Active,
    BundleConfig,
    EndReason,
    FeedState,
    Inactive,
    Permissions,
    PublishRequest,
    Reconnecting,
    RefusalCode,
    Refused,
    Registry,
    SourceState,
    Stopped,
    Superseded,
    Updated,
)
from tests.bundle.helpers import (
    MULTISOURCE,
    audio,
    audio_config,
    coded,
    metadata,
    payloads,
    publish,
    send_gop,
    video,
    video_config,
)


@pytest.fixture
def registry() -> Registry:
    return Registry(wall_origin_s=1_700_000_000.0)


# -- §3.1 default source ---------------------------------------------------------------


def test_publisher_without_source_id_is_the_default_source(registry):
    feed = publish(registry)
    assert feed.source_id == ""
    reader = registry.subscribe("live/show", "")
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    assert payloads(reader.drain_nowait()) == [b"v0"]
    assert registry.stream_statistics("live/show", now_s=0.0).sources[0].source_id == ""


def test_default_source_needs_no_multisource_permission(registry):
    result = registry.request_publish(
        PublishRequest(stream_path="live/show", permissions=Permissions()), now_s=0.0
    )
    assert not isinstance(result, Refused)


def test_default_source_is_superseded_like_any_other(registry):
    old = publish(registry)
    registry.push_frame(old, video(0, key=True), now_s=0.0)
    new = publish(registry, now_s=1.0)
    registry.push_frame(new, video(0, key=True), now_s=1.0)
    assert old.state is FeedState.STANDBY and old.end_reason is None
    assert new.state is FeedState.ON_AIR


# -- §3.2 coexistence ------------------------------------------------------------------


def test_sources_with_different_ids_coexist_and_do_not_affect_each_other(registry):
    cam = publish(registry, "cam1")
    slides = publish(registry, "slides")
    cam_reader = registry.subscribe("live/show", "cam1")
    slides_reader = registry.subscribe("live/show", "slides")
    registry.push_frame(cam, video(0, key=True), now_s=0.0)
    registry.push_frame(slides, video(5000, key=True, tag=b"slide"), now_s=0.0)
    registry.end_feed(cam, EndReason.DISCONNECT, now_s=0.1)
    registry.push_frame(slides, video(5033, tag=b"slide2"), now_s=0.133)
    assert payloads(cam_reader.drain_nowait()) == [b"v0"]
    assert payloads(slides_reader.drain_nowait()) == [b"slide", b"slide2"]
    assert slides.state is FeedState.ON_AIR
    states = {
        s.source_id: s.state for s in registry.stream_statistics("live/show", now_s=0.2).sources
    }
    assert states == {"cam1": SourceState.RECONNECTING, "slides": SourceState.LIVE}


def test_whole_stream_reader_gets_every_source_tagged_with_its_id(registry):
    reader = registry.subscribe("live/show")
    cam = publish(registry, "cam1")
    translator = publish(registry, "fr")
    registry.push_frame(cam, video(0, key=True), now_s=0.0)
    registry.push_frame(translator, audio(0), now_s=0.0)
    assert [(o.source_id, o.frame.payload) for o in reader.drain_nowait()] == [
        ("cam1", b"v0"),
        ("fr", b"a0"),
    ]


# -- §3.3 supersede, make-before-break -------------------------------------------------


def test_new_feed_goes_on_air_only_at_its_first_keyframe(registry):
    old = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    now = send_gop(registry, old, start_ms=0, frames=3, now_s=0.0)
    new = publish(registry, "cam1", now_s=now)
    assert new.state is FeedState.PENDING
    registry.push_frame(new, video(900, tag=b"new-inter"), now_s=now)
    registry.push_frame(old, video(99, tag=b"old-still-on-air"), now_s=now)
    assert old.state is FeedState.ON_AIR
    registry.push_frame(new, video(933, key=True, tag=b"new-key"), now_s=now + 0.033)
    assert new.state is FeedState.ON_AIR
    assert payloads(coded(reader.drain_nowait()))[-2:] == [b"old-still-on-air", b"new-key"]


def test_no_frame_of_the_old_feed_reaches_viewers_after_the_switch(registry):
    old = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    send_gop(registry, old, start_ms=0, frames=2, now_s=0.0)
    new = publish(registry, "cam1", now_s=0.1)
    registry.push_frame(new, video(0, key=True, tag=b"new-key"), now_s=0.1)
    registry.push_frame(old, video(66, tag=b"old-late"), now_s=0.11)
    registry.push_frame(old, video(99, key=True, tag=b"old-key"), now_s=0.12)
    assert b"old-late" not in payloads(reader.drain_nowait())
    assert old.state is FeedState.STANDBY


def test_superseded_feed_is_reported_so_the_driver_can_close_it():
    registry = Registry(BundleConfig(superseded="disconnect"))
    old = publish(registry, "cam1")
    registry.push_frame(old, video(0, key=True), now_s=0.0)
    new = publish(registry, "cam1", now_s=1.0)
    registry.push_frame(new, video(0, key=True), now_s=1.0)
    events = registry.drain_events()
    assert (
        Superseded(
            stream_path="live/show",
            source_id="cam1",
            feed_id=old.feed_id,
            by_feed_id=new.feed_id,
            disconnect=True,
        )
        in events
    )
    assert registry.find_feed(old.feed_id) is None
    registry.end_feed(old, EndReason.SUPERSEDED, now_s=1.1)  # the driver closes it: a no-op
    assert registry.drain_events() == []


def test_pending_feed_that_ends_before_its_keyframe_changes_nothing(registry):
    old = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    send_gop(registry, old, start_ms=0, frames=2, now_s=0.0)
    registry.drain_events()
    reader.drain_nowait()
    new = publish(registry, "cam1", now_s=0.1)
    registry.push_frame(new, video_config(b"other-config"), now_s=0.1)
    registry.push_frame(new, video(0, tag=b"new-inter"), now_s=0.1)
    registry.end_feed(new, EndReason.DISCONNECT, now_s=0.2)
    registry.push_frame(old, video(66), now_s=0.2)
    assert payloads(reader.drain_nowait()) == [b"v66"]
    assert registry.drain_events() == []
    assert old.state is FeedState.ON_AIR


def test_audio_only_feed_goes_on_air_at_its_first_audio_frame(registry):
    feed = publish(registry, "fr")
    reader = registry.subscribe("live/show", "fr")
    registry.push_frame(feed, audio_config(), now_s=0.0)
    assert feed.state is FeedState.PENDING
    registry.push_frame(feed, audio(0), now_s=0.0)
    assert feed.state is FeedState.ON_AIR
    assert payloads(reader.drain_nowait()) == [b"asc-48k", b"a0"]


def test_feed_that_announced_video_waits_for_its_keyframe_even_if_audio_comes_first(registry):
    old = publish(registry, "cam1")
    registry.push_frame(old, video(0, key=True), now_s=0.0)
    new = publish(registry, "cam1", now_s=0.1)
    registry.push_frame(new, video_config(), now_s=0.1)
    registry.push_frame(new, audio(0), now_s=0.1)
    assert new.state is FeedState.PENDING
    registry.push_frame(new, video(10, key=True), now_s=0.11)
    assert new.state is FeedState.ON_AIR


# -- §3.4 priority ---------------------------------------------------------------------


def test_lower_priority_newcomer_waits_as_standby_and_takes_over_when_on_air_ends(registry):
    main = publish(registry, "cam1", priority=10)
    reader = registry.subscribe("live/show", "cam1")
    registry.push_frame(main, video(0, key=True, tag=b"main"), now_s=0.0)
    backup = publish(registry, "cam1", priority=0, now_s=0.1)
    assert backup.state is FeedState.STANDBY
    registry.push_frame(backup, video(0, key=True, tag=b"backup-early"), now_s=0.1)
    assert main.state is FeedState.ON_AIR
    registry.end_feed(main, EndReason.DISCONNECT, now_s=0.2)
    registry.push_frame(backup, video(33, tag=b"backup-inter"), now_s=0.233)
    registry.push_frame(backup, video(66, key=True, tag=b"backup-key"), now_s=0.266)
    assert backup.state is FeedState.ON_AIR
    assert payloads(reader.drain_nowait()) == [b"main", b"backup-key"]


def test_higher_priority_feed_takes_over_and_the_backup_stays_as_standby(registry):
    backup = publish(registry, "cam1", priority=0)
    registry.push_frame(backup, video(0, key=True), now_s=0.0)
    main = publish(registry, "cam1", priority=10, now_s=1.0)
    assert main.state is FeedState.PENDING
    registry.push_frame(main, video(0, key=True), now_s=1.0)
    assert main.state is FeedState.ON_AIR
    assert backup.state is FeedState.STANDBY
    assert not [e for e in registry.drain_events() if isinstance(e, Superseded)]


@pytest.mark.parametrize(
    ("mode", "superseded_state"),
    [("standby", FeedState.STANDBY), ("disconnect", FeedState.ENDED)],
)
def test_among_equal_priorities_the_newest_wins(mode, superseded_state):
    registry = Registry(BundleConfig(superseded=mode))
    first = publish(registry, "cam1", priority=5)
    registry.push_frame(first, video(0, key=True), now_s=0.0)
    second = publish(registry, "cam1", priority=5, now_s=0.1)
    third = publish(registry, "cam1", priority=5, now_s=0.2)
    registry.push_frame(second, video(0, key=True), now_s=0.3)
    assert second.state is FeedState.ON_AIR and third.state is FeedState.PENDING
    registry.push_frame(third, video(0, key=True), now_s=0.4)
    assert third.state is FeedState.ON_AIR
    assert first.state is second.state is superseded_state
    stats = registry.source_statistics("live/show", "cam1", now_s=0.5)
    assert stats.supersede_count == 2


def test_standby_never_interrupts_a_higher_priority_feed_on_air(registry):
    main = publish(registry, "cam1", priority=1)
    registry.push_frame(main, video(0, key=True), now_s=0.0)
    backup = publish(registry, "cam1", priority=0, now_s=0.1)
    for n in range(5):
        registry.push_frame(backup, video(n * 33, key=True), now_s=0.1 + n / 30)
    assert main.state is FeedState.ON_AIR and backup.state is FeedState.STANDBY


# -- §3.5 continuity -------------------------------------------------------------------


def test_switch_continues_the_timeline_by_one_frame_duration(registry):
    old = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    now = send_gop(registry, old, start_ms=0, frames=30, now_s=0.0)  # last DTS 957
    new = publish(registry, "cam1", now_s=now)
    registry.push_frame(new, video(7_000_000, key=True, tag=b"new-key"), now_s=now)
    registry.push_frame(new, video(7_000_033, tag=b"new-2"), now_s=now + 0.033)
    frames = coded(reader.drain_nowait())
    assert [o.dts_ms for o in frames[-3:]] == [957, 957 + 33, 957 + 66]


def test_switch_after_silence_continues_by_the_wall_clock_gap(registry):
    old = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    send_gop(registry, old, start_ms=0, frames=10, now_s=0.0)  # last DTS 297 at 0.297 s
    registry.end_feed(old, EndReason.DISCONNECT, now_s=0.3)
    new = publish(registry, "cam1", now_s=2.0)
    registry.push_frame(new, video(0, key=True), now_s=2.297)
    assert coded(reader.drain_nowait())[-1].dts_ms == 297 + 2000


def test_composition_offsets_are_preserved_across_a_switch(registry):
    old = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    registry.push_frame(old, video(0, key=True, cts_ms=66), now_s=0.0)
    new = publish(registry, "cam1", now_s=0.02)
    registry.push_frame(new, video(500, key=True, cts_ms=33), now_s=0.033)
    registry.push_frame(new, video(533, cts_ms=100), now_s=0.066)
    frames = reader.drain_nowait()
    assert [o.frame.cts_ms for o in frames] == [66, 33, 100]
    # the spare's first picture follows the last one shown by one frame (no PTS collision)
    assert [o.dts_ms + o.frame.cts_ms for o in frames] == [66, 99, 199]


def test_codec_change_across_a_switch_is_flagged_as_discontinuity(registry):
    old = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    registry.push_frame(old, video_config(b"avc"), now_s=0.0)
    registry.push_frame(old, video(0, key=True), now_s=0.0)
    registry.push_frame(old, video(33), now_s=0.033)
    new = publish(registry, "cam1", now_s=0.04)
    registry.push_frame(new, video_config(b"hvcC", codec="hevc"), now_s=0.04)
    registry.push_frame(new, video(0, key=True, codec="hevc", tag=b"hevc-key"), now_s=0.066)
    registry.push_frame(new, video(33, codec="hevc", tag=b"hevc-2"), now_s=0.1)
    frames = reader.drain_nowait()
    flagged = [(o.frame.payload, o.discontinuity) for o in frames]
    assert flagged == [
        (b"avc", True),  # the track starts
        (b"v0", True),
        (b"v33", False),
        (b"hvcC", True),  # the new sequence header, flagged
        (b"hevc-key", True),  # and the first coded frame after it
        (b"hevc-2", False),
    ]


def test_identical_configuration_across_a_switch_is_not_resent(registry):
    old = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    registry.push_frame(old, video_config(b"avc"), now_s=0.0)
    registry.push_frame(old, video(0, key=True), now_s=0.0)
    new = publish(registry, "cam1", now_s=0.01)
    registry.push_frame(new, video_config(b"avc"), now_s=0.01)
    registry.push_frame(new, video(0, key=True, tag=b"new-key"), now_s=0.033)
    frames = reader.drain_nowait()
    assert [(o.frame.payload, o.discontinuity) for o in frames] == [
        (b"avc", True),
        (b"v0", True),
        (b"new-key", False),
    ]


def test_publisher_clock_jumping_backwards_is_reanchored(registry):
    feed = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    now = send_gop(registry, feed, start_ms=100_000, frames=5, now_s=0.0)
    registry.push_frame(feed, video(0, key=True, tag=b"reset"), now_s=now)
    registry.push_frame(feed, video(33, tag=b"after"), now_s=now + 0.033)
    dts = [o.dts_ms for o in coded(reader.drain_nowait())]
    assert dts == [0, 33, 66, 99, 132, 165, 198]


def test_publisher_clock_jumping_forward_is_reanchored(registry):
    feed = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    now = send_gop(registry, feed, start_ms=0, frames=5, now_s=0.0)
    registry.push_frame(feed, video(3_600_000, tag=b"jump"), now_s=now)
    dts = [o.dts_ms for o in coded(reader.drain_nowait())]
    assert dts == [0, 33, 66, 99, 132, 165]


def test_small_backward_jitter_is_clamped_to_keep_dts_non_decreasing(registry):
    feed = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    registry.push_frame(feed, video(100, key=True), now_s=0.0)
    registry.push_frame(feed, video(133), now_s=0.033)
    registry.push_frame(feed, video(120, tag=b"early"), now_s=0.066)
    registry.push_frame(feed, video(166), now_s=0.1)
    assert [o.dts_ms for o in reader.drain_nowait()] == [0, 33, 33, 66]


def test_audio_of_the_new_feed_follows_the_last_audio_out_at_a_switch(registry):
    old = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    registry.push_frame(old, video(0, key=True), now_s=0.0)
    registry.push_frame(old, audio(10), now_s=0.01)
    new = publish(registry, "cam1", now_s=0.02)
    registry.push_frame(new, video(1000, key=True, tag=b"key"), now_s=0.033)
    registry.push_frame(new, audio(990, tag=b"audio-before-key"), now_s=0.034)
    registry.push_frame(new, audio(1010, tag=b"audio-after-key"), now_s=0.035)
    registry.push_frame(new, audio(1031, tag=b"audio-later"), now_s=0.036)
    frames = reader.drain_nowait()
    assert payloads(frames)[2:] == [b"key", b"audio-before-key", b"audio-after-key", b"audio-later"]
    # video one frame after the last video; audio one AAC frame (21 ms) after the last
    # audio, its own spacing kept
    assert [o.dts_ms for o in frames] == [0, 10, 33, 31, 51, 72]
    registry.push_frame(old, audio(30, tag=b"old-late"), now_s=0.037)
    assert payloads(reader.drain_nowait()) == []


def test_each_source_reports_the_wall_clock_time_of_its_timeline_origin(registry):
    cam = publish(registry, "cam1")
    registry.push_frame(cam, video(123_456, key=True), now_s=10.0)
    slides = publish(registry, "slides", now_s=11.0)
    registry.push_frame(slides, video(0, key=True), now_s=12.5)
    origins = {
        e.source_id: e.timeline_origin_wall_s
        for e in registry.drain_events()
        if isinstance(e, Active)
    }
    assert origins == {"cam1": 1_700_000_010.0, "slides": 1_700_000_012.5}


# -- §3.6 end of feed and grace --------------------------------------------------------


def test_source_reconnects_for_the_grace_period_then_turns_inactive_and_is_removed(registry):
    feed = publish(registry, "cam1")
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    registry.end_feed(feed, EndReason.DISCONNECT, now_s=1.0)
    assert registry.source_statistics("live/show", "cam1", now_s=1.0).state is (
        SourceState.RECONNECTING
    )
    assert registry.next_deadline_s() == 6.0
    registry.tick(now_s=5.9)
    assert registry.stream_paths() == ("live/show",)
    registry.tick(now_s=6.0)
    assert registry.stream_paths() == ()
    assert registry.next_deadline_s() is None
    kinds = [type(e) for e in registry.drain_events()]
    assert kinds == [Active, Reconnecting, Inactive, Stopped]


def test_feed_arriving_within_grace_continues_the_same_timeline(registry):
    old = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    send_gop(registry, old, start_ms=0, frames=3, now_s=0.0)  # DTS 0, 33, 66
    registry.end_feed(old, EndReason.DISCONNECT, now_s=0.1)
    new = publish(registry, "cam1", now_s=3.0)
    registry.push_frame(new, video(0, key=True), now_s=3.066)
    assert coded(reader.drain_nowait())[-1].dts_ms == 66 + 3000
    kinds = [type(e) for e in registry.drain_events()]
    assert kinds == [Active, Reconnecting, Active]
    stats = registry.source_statistics("live/show", "cam1", now_s=3.1)
    assert stats.state is SourceState.LIVE and stats.timeline_origin_wall_s == 1_700_000_000.0


def test_feed_arriving_after_grace_starts_a_new_timeline(registry):
    old = publish(registry, "cam1")
    registry.push_frame(old, video(0, key=True), now_s=0.0)
    registry.end_feed(old, EndReason.DISCONNECT, now_s=0.1)
    new = publish(registry, "cam1", now_s=10.0)  # expires the grace period first
    reader = registry.subscribe("live/show", "cam1")
    registry.push_frame(new, video(777, key=True), now_s=10.0)
    assert reader.drain_nowait()[0].dts_ms == 0
    assert [type(e) for e in registry.drain_events()] == [
        Active,
        Reconnecting,
        Inactive,
        Stopped,
        Active,
    ]


def test_feed_that_never_went_on_air_leaves_no_trace(registry):
    feed = publish(registry, "cam1")
    registry.push_frame(feed, video(0), now_s=0.0)
    registry.end_feed(feed, EndReason.DISCONNECT, now_s=0.1)
    assert registry.stream_paths() == ()
    assert registry.drain_events() == []
    assert registry.next_deadline_s() is None


def test_zero_grace_turns_the_source_inactive_at_once():
    registry = Registry(BundleConfig(reconnect_grace_s=0.0))
    feed = publish(registry, "cam1")
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    registry.end_feed(feed, EndReason.UNPUBLISH, now_s=1.0)
    assert registry.stream_paths() == ()
    assert [type(e) for e in registry.drain_events()] == [Active, Reconnecting, Inactive, Stopped]


def test_stream_lives_until_its_last_source_is_gone(registry):
    cam = publish(registry, "cam1")
    slides = publish(registry, "slides")
    registry.push_frame(cam, video(0, key=True), now_s=0.0)
    registry.push_frame(slides, video(0, key=True), now_s=0.0)
    registry.end_feed(cam, EndReason.DISCONNECT, now_s=1.0)
    registry.tick(now_s=7.0)
    assert registry.stream_paths() == ("live/show",)
    registry.end_feed(slides, EndReason.UNPUBLISH, now_s=8.0)
    registry.tick(now_s=20.0)
    assert registry.stream_paths() == ()
    assert type(registry.drain_events()[-1]) is Stopped


# -- §3.7 multisource permission -------------------------------------------------------


@pytest.mark.parametrize(
    ("permissions", "fragment"),
    [
        (Permissions(app_multisource=False, token_multisource=True), "application"),
        (Permissions(app_multisource=True, token_multisource=False), "token"),
    ],
)
def test_named_source_needs_both_multisource_gates(registry, permissions, fragment):
    result = registry.request_publish(
        PublishRequest(stream_path="live/show", source_id="cam1", permissions=permissions),
        now_s=0.0,
    )
    assert isinstance(result, Refused)
    assert result.code is RefusalCode.MULTISOURCE_NOT_PERMITTED
    assert fragment in result.reason and "'cam1'" in result.reason


def test_source_id_outside_the_tokens_allow_list_is_refused(registry):
    permissions = Permissions(
        app_multisource=True, token_multisource=True, allowed_source_ids={"cam1", ""}
    )
    refused = registry.request_publish(
        PublishRequest(stream_path="live/show", source_id="cam2", permissions=permissions),
        now_s=0.0,
    )
    assert isinstance(refused, Refused) and refused.code is RefusalCode.SOURCE_ID_NOT_ALLOWED
    for allowed in ("cam1", ""):
        request = PublishRequest(
            stream_path="live/show", source_id=allowed, permissions=permissions
        )
        assert not isinstance(registry.request_publish(request, now_s=0.0), Refused)


def test_refused_publish_changes_nothing(registry):
    feed = publish(registry, "cam1")
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    registry.drain_events()
    before = registry.stream_statistics("live/show", now_s=1.0)
    result = registry.request_publish(
        PublishRequest(stream_path="live/show", source_id="cam1", permissions=Permissions()),
        now_s=1.0,
    )
    assert isinstance(result, Refused)
    assert registry.stream_statistics("live/show", now_s=1.0) == before
    assert registry.drain_events() == []


# -- §3.8 limits -----------------------------------------------------------------------


def test_too_many_sources_is_refused_and_the_others_keep_running():
    registry = Registry(BundleConfig(max_sources_per_stream=2))
    first = publish(registry, "a")
    publish(registry, "b")
    registry.push_frame(first, video(0, key=True), now_s=0.0)
    result = registry.request_publish(
        PublishRequest(stream_path="live/show", source_id="c", permissions=MULTISOURCE), now_s=0.0
    )
    assert isinstance(result, Refused) and result.code is RefusalCode.TOO_MANY_SOURCES
    assert "2 sources" in result.reason
    assert first.state is FeedState.ON_AIR
    publish(registry, "a")  # a new feed for an existing source is not a new source


def test_too_many_feeds_for_one_source_is_refused():
    registry = Registry(BundleConfig(max_feeds_per_source=2))
    publish(registry, "a")
    publish(registry, "a")
    result = registry.request_publish(
        PublishRequest(stream_path="live/show", source_id="a", permissions=MULTISOURCE), now_s=0.0
    )
    assert isinstance(result, Refused) and result.code is RefusalCode.TOO_MANY_FEEDS


@pytest.mark.parametrize(
    "source_id",
    ["cam\n1", "cam\x00", "\x7f", "x" * 129, "é" * 65],
    ids=["newline", "nul", "del", "129-bytes", "130-utf8-bytes"],
)
def test_invalid_source_ids_are_refused(registry, source_id):
    result = registry.request_publish(
        PublishRequest(stream_path="live/show", source_id=source_id, permissions=MULTISOURCE),
        now_s=0.0,
    )
    assert isinstance(result, Refused) and result.code is RefusalCode.INVALID_SOURCE_ID
    assert "\n" not in result.reason and "\x00" not in result.reason


@pytest.mark.parametrize("source_id", ["x" * 128, "../x", "камера 1", "🎥"])
def test_source_ids_are_data_any_text_up_to_128_bytes(registry, source_id):
    feed = publish(registry, source_id)
    assert feed.source_id == source_id


# -- §3.9 DTX and audio gaps -----------------------------------------------------------


def test_video_keeps_flowing_while_audio_is_silent_and_audio_resumes_where_it_resumes(registry):
    feed = publish(registry, "cam1")
    reader = registry.subscribe("live/show", "cam1")
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    registry.push_frame(feed, audio(0), now_s=0.0)
    now = 0.0
    for n in range(1, 90):  # three seconds of video, no audio (DTX)
        now = n / 30
        registry.push_frame(feed, video(n * 33), now_s=now)
    registry.push_frame(feed, audio(2960, tag=b"speech"), now_s=now)
    frames = reader.drain_nowait()
    assert len(frames) == 92
    assert frames[-1].frame.payload == b"speech" and frames[-1].dts_ms == 2960


def test_video_only_and_audio_only_sources_are_first_class(registry):
    cam = publish(registry, "cam1")
    mic = publish(registry, "mic")
    registry.push_frame(cam, video(0, key=True), now_s=0.0)
    registry.push_frame(mic, audio(0), now_s=0.0)
    sources = registry.stream_statistics("live/show", now_s=0.1).sources
    assert all(s.state is SourceState.LIVE for s in sources)


# -- §3.10 events ----------------------------------------------------------------------


def test_active_event_lists_tracks_and_codecs(registry):
    feed = publish(registry, "cam1")
    registry.push_frame(feed, metadata(), now_s=0.0)
    registry.push_frame(feed, video_config(), now_s=0.0)
    registry.push_frame(feed, audio_config(codec="opus"), now_s=0.0)
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    (active,) = registry.drain_events()
    assert isinstance(active, Active)
    assert [(t.track_id, t.media.value, t.codec) for t in active.tracks] == [
        ("data0", "data", "amf0"),
        ("video0", "video", "h264"),
        ("audio0", "audio", "opus"),
    ]
    assert active.tracks[1].info.width == 1280


def test_updated_event_when_a_source_gains_a_track_or_changes_parameters(registry):
    feed = publish(registry, "cam1")
    registry.push_frame(feed, video_config(), now_s=0.0)
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    registry.push_frame(feed, video(0, key=True, track="video1"), now_s=0.0)
    registry.push_frame(feed, video_config(b"avcC-1080p", width=1920), now_s=0.1)
    events = registry.drain_events()
    assert [type(e) for e in events] == [Active, Updated, Updated]
    assert [t.track_id for t in events[1].tracks] == ["video0", "video1"]
    assert events[2].tracks[0].info.width == 1920


def test_event_wakeup_fires_when_the_log_turns_non_empty(registry):
    calls = []
    registry.set_event_wakeup(lambda: calls.append(1))
    feed = publish(registry, "cam1")
    registry.push_frame(feed, video(0, key=True), now_s=0.0)
    registry.push_frame(feed, video(0, key=True, track="video1"), now_s=0.0)
    assert len(calls) == 1 and len(registry.drain_events()) == 2


# -- statistics ------------------------------------------------------------------------


def test_feed_statistics_count_bytes_frames_keyframes_and_bitrate(registry):
    feed = publish(registry, "cam1", now_s=0.0)
    for n in range(300):  # 10 s at 30 fps, 1000 bytes a frame: 240 kbit/s
        frame = video(n * 33, key=n % 60 == 0, tag=bytes(1000))
        registry.push_frame(feed, frame, now_s=n / 30)
    stats = registry.feed_statistics(feed, now_s=10.0)
    assert (stats.bytes_in, stats.frames_in, stats.keyframes_in) == (300_000, 300, 5)
    assert stats.bitrate_kbps == pytest.approx(240, rel=0.05)
    assert stats.uptime_s == 10.0 and stats.state is FeedState.ON_AIR
    assert stats.tracks[0].codec == "h264"

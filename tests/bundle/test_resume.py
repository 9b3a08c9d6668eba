"""docs/spec.md §9: a stream's new owner carries on the old owner's output timeline.

The seam is `Registry.resume_timeline`: a source's next timeline starts after the
last DTS another process delivered, by the wall time since, with the same origin.
"""

from __future__ import annotations

from rtmp_ingest.bundle import Registry, TimelineResume
from tests.bundle.helpers import coded, drain, publish, send_gop

WALL = 1_700_000_000.0


def test_a_new_source_continues_after_the_old_owners_last_dts():
    registry = Registry(wall_origin_s=WALL)
    #: the old owner delivered DTS 90 000 two seconds (wall) before this feed arrives
    resume = TimelineResume(last_dts_ms=90_000, origin_wall_s=WALL - 95.0, at_wall_s=WALL + 8.0)
    assert registry.resume_timeline("live/show", "cam1", resume)
    reader = registry.subscribe("live/show", "cam1")
    feed = publish(registry, "cam1", now_s=10.0)
    send_gop(registry, feed, start_ms=0, frames=3, now_s=10.0)
    out = coded(drain(reader))
    assert out[0].dts_ms == 92_000  #: 90 000 + the 2 s the stream was away
    assert [o.dts_ms for o in out] == [92_000, 92_033, 92_066]
    stats = registry.source_statistics("live/show", "cam1", now_s=10.1)
    assert stats is not None and stats.timeline_origin_wall_s == WALL - 95.0


def test_a_gap_shorter_than_a_frame_still_moves_forward():
    registry = Registry(wall_origin_s=WALL)
    registry.resume_timeline(
        "live/show", "", TimelineResume(last_dts_ms=5_000, origin_wall_s=WALL, at_wall_s=WALL + 3.0)
    )
    reader = registry.subscribe("live/show", "")
    feed = publish(registry, now_s=3.0)
    send_gop(registry, feed, start_ms=777, frames=1, now_s=3.0)
    (first,) = coded(drain(reader))
    assert first.dts_ms > 5_000


def test_a_running_timeline_is_not_moved():
    registry = Registry(wall_origin_s=WALL)
    reader = registry.subscribe("live/show", "")
    feed = publish(registry)
    send_gop(registry, feed, start_ms=0, frames=2, now_s=0.0)
    later = TimelineResume(last_dts_ms=10**6, origin_wall_s=WALL, at_wall_s=WALL)
    assert not registry.resume_timeline("live/show", "", later)
    send_gop(registry, feed, start_ms=66, frames=1, now_s=0.066)
    assert max(o.dts_ms for o in coded(drain(reader))) < 1_000


def test_hints_for_sources_never_published_are_bounded():
    registry = Registry(wall_origin_s=WALL)
    hint = TimelineResume(last_dts_ms=1, origin_wall_s=WALL, at_wall_s=WALL)
    for n in range(5000):
        registry.resume_timeline("live/show", f"s{n}", hint)
    reader = registry.subscribe("live/show", "s0")
    feed = publish(registry, "s0")  #: its hint was dropped (the oldest): a fresh timeline
    send_gop(registry, feed, start_ms=400, frames=1, now_s=0.0)
    assert coded(drain(reader))[0].dts_ms == 0

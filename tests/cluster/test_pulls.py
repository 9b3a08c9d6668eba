"""The pulls' life cycle (cluster/pulls.py, docs/spec.md §9) with a fake registry, a fake
`pull_source` and trio's MockClock: who is pulled, when, and when it stops.

The fake pull runs until the test ends it (the owner died) or the Pulls cancel it; the
registry fake holds leases and timelines as other nodes would have written them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from rtmp_ingest.bundle import Registry
from rtmp_ingest.cluster import pulls as pulls_mod
from rtmp_ingest.cluster.pulls import Pulls
from rtmp_ingest.cluster.registry import NodeInfo, SourceTimeline
from rtmp_ingest.config import BundleSettings, ClusterConfig, ConfigError, from_dict
from rtmp_ingest.rtmp.limits import Limits
from rtmp_ingest.server.counters import Metrics
from rtmp_ingest.server.feeds import Feeds

STREAM = "live/show"
IDLE_S = 10.0
RENEW_S = 1.5
RETRY_S = 0.5


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def _live(*source_ids: str) -> dict[str, SourceTimeline]:
    return {
        sid: SourceTimeline(last_dts_ms=1000, origin_wall_s=1.0, at_wall_s=1.0, live=True)
        for sid in source_ids
    }


class FakeRegistry:
    """What other nodes wrote: leases, timelines, directory entries."""

    def __init__(self) -> None:
        self.lease: dict[str, str] = {STREAM: "A"}
        self.timeline: dict[str, dict[str, SourceTimeline]] = {STREAM: _live("cam1", "cam2")}
        self.calls = 0

    async def leases(self) -> dict[str, str]:
        self.calls += 1
        return dict(self.lease)

    async def timelines(self, path: str) -> dict[str, SourceTimeline]:
        return dict(self.timeline.get(path, {}))

    async def node(self, node_id: str) -> NodeInfo:
        return NodeInfo(
            node_id=node_id, rtmp="127.0.0.1:1", http="", started_at_s=0.0, heartbeat_at_s=0.0
        )

    @contextlib.asynccontextmanager
    async def events(self) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        async def none() -> AsyncIterator[dict[str, Any]]:
            await trio.sleep_forever()
            yield {}

        yield none()


@attrs.define
class FakePull:
    stream_path: str
    source_id: str
    ended: trio.Event = attrs.Factory(trio.Event)
    cancelled: bool = False
    done: bool = False


@attrs.define(eq=False)
class Host:
    settings: ClusterConfig
    feeds: Feeds
    registry: Registry
    node_id: str = "C"
    owned: dict[str, float] = attrs.Factory(dict)
    limits: Limits = attrs.Factory(Limits)
    counters: dict[str, int] = attrs.Factory(lambda: {"pulls": 0})
    local: bool = True

    def local_owner(self, path: str) -> bool:
        return self.local


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[FakePull]:
    """Every pull the Pulls started, in order (each runs until ended or cancelled)."""
    log: list[FakePull] = []

    async def fake_pull_source(feeds: Any, owner: Any, **kw: Any) -> str:
        pull = FakePull(kw["stream_path"], kw["source_id"])
        log.append(pull)
        try:
            await pull.ended.wait()
            return "the owner closed the connection"
        except trio.Cancelled:
            pull.cancelled = True
            raise
        finally:
            pull.done = True

    monkeypatch.setattr(pulls_mod, "pull_source", fake_pull_source)
    return log


def make(mode: str, **settings: Any) -> tuple[Host, Pulls]:
    registry = Registry(BundleSettings().bundle_config())
    feeds = Feeds(registry, Metrics())
    config = ClusterConfig(
        redis="redis://x",
        secret="0123456789abcdef",
        pull=mode,  # type: ignore[arg-type]
        pull_idle_s=IDLE_S,
        renew_s=RENEW_S,
        pull_retry_s=RETRY_S,
        **settings,
    )
    host = Host(config, feeds, registry)
    return host, Pulls(host)


def running(log: list[FakePull]) -> list[tuple[str, str]]:
    return sorted((p.stream_path, p.source_id) for p in log if not p.done)


async def test_on_demand_pulls_nothing_until_a_viewer_arrives_then_each_source_once(
    nursery: trio.Nursery, started: list[FakePull], mock_clock: trio.testing.MockClock
) -> None:
    host, pulls = make("on_demand")
    reg = FakeRegistry()
    nursery.start_soon(pulls.reconcile_loop, reg)
    await trio.sleep(10 * RENEW_S)
    assert started == []
    assert reg.calls >= 5  #: the registry was looked at all along
    assert STREAM in pulls.remote and pulls.remote[STREAM].owner == "A"

    t0 = trio.current_time()
    assert host.feeds.viewers.arrive(STREAM) is True  #: a source is on its way
    await trio.testing.wait_all_tasks_blocked()
    assert running(started) == [(STREAM, "cam1"), (STREAM, "cam2")]
    assert trio.current_time() == t0  #: at once, not at the next round

    host.feeds.viewers.arrive(STREAM)  #: a second viewer: no second pull
    await trio.sleep(5 * RENEW_S)
    assert len(started) == 2


async def test_the_pulls_stop_pull_idle_s_after_the_last_viewer_left_not_before(
    nursery: trio.Nursery, started: list[FakePull], mock_clock: trio.testing.MockClock
) -> None:
    host, pulls = make("on_demand")
    viewers = host.feeds.viewers
    nursery.start_soon(pulls.reconcile_loop, FakeRegistry())
    viewers.arrive(STREAM)
    viewers.arrive(STREAM)
    await trio.sleep(1.0)
    viewers.leave(STREAM)
    await trio.sleep(3 * IDLE_S)
    assert len(running(started)) == 2  #: one viewer is still there
    viewers.leave(STREAM)
    left = trio.current_time()
    await trio.sleep_until(left + IDLE_S - 0.01)
    assert len(running(started)) == 2
    await trio.sleep_until(left + IDLE_S + 0.001)
    assert running(started) == []
    assert all(p.cancelled for p in started)
    assert pulls.idle_stops == 2 and pulls.active == {}
    await trio.sleep(5 * RENEW_S)
    assert len(started) == 2  #: not started again without a viewer

    viewers.arrive(STREAM)  #: a viewer comes back: pulled again
    await trio.testing.wait_all_tasks_blocked()
    assert len(running(started)) == 2 and len(started) == 4


async def test_a_viewer_coming_back_within_pull_idle_s_keeps_the_pulls(
    nursery: trio.Nursery, started: list[FakePull], mock_clock: trio.testing.MockClock
) -> None:
    host, pulls = make("on_demand")
    viewers = host.feeds.viewers
    nursery.start_soon(pulls.reconcile_loop, FakeRegistry())
    with viewers.watching(STREAM):
        await trio.sleep(1.0)
    await trio.sleep(IDLE_S / 2)
    with viewers.watching(STREAM):
        await trio.sleep(IDLE_S)
    await trio.sleep(IDLE_S - 0.01)
    assert len(started) == 2 and len(running(started)) == 2
    await trio.sleep(0.02)
    assert running(started) == []


async def test_hls_requests_keep_the_pulls_while_they_come(
    nursery: trio.Nursery, started: list[FakePull], mock_clock: trio.testing.MockClock
) -> None:
    host, pulls = make("on_demand")
    viewers = host.feeds.viewers
    nursery.start_soon(pulls.reconcile_loop, FakeRegistry())
    await trio.sleep(RENEW_S)  #: the registry was read once: the stream is known
    assert viewers.seen(STREAM) is True
    await trio.testing.wait_all_tasks_blocked()
    assert len(running(started)) == 2
    for _ in range(20):  #: a playlist reload every second, for 20 s
        await trio.sleep(1.0)
        viewers.seen(STREAM)
    last = trio.current_time()
    assert len(running(started)) == 2
    await trio.sleep_until(last + IDLE_S - 0.01)
    assert len(running(started)) == 2
    await trio.sleep_until(last + IDLE_S + 0.001)
    assert running(started) == []

    #: a sighting counts for its window (the client's next reload is due by then)
    viewers.seen(STREAM, window_s=6.0)
    seen = trio.current_time()
    await trio.testing.wait_all_tasks_blocked()
    assert len(running(started)) == 2
    await trio.sleep_until(seen + 6.0 + IDLE_S - 0.01)
    assert len(running(started)) == 2
    await trio.sleep_until(seen + 6.0 + IDLE_S + 0.001)
    assert running(started) == []


async def test_a_pull_whose_owner_died_is_tried_again_while_viewers_remain(
    nursery: trio.Nursery, started: list[FakePull], mock_clock: trio.testing.MockClock
) -> None:
    host, pulls = make("on_demand")
    viewers = host.feeds.viewers
    nursery.start_soon(pulls.reconcile_loop, FakeRegistry())
    viewers.arrive(STREAM)
    await trio.testing.wait_all_tasks_blocked()
    cam1 = next(p for p in started if p.source_id == "cam1")
    ended_at = trio.current_time()
    cam1.ended.set()  #: the owner went away
    await trio.sleep(RETRY_S + RENEW_S)
    again = [p for p in started if p.source_id == "cam1"]
    assert len(again) == 2 and not again[1].done
    assert [p.source_id for p in started].count("cam2") == 1
    assert trio.current_time() - ended_at < RETRY_S + RENEW_S + 0.01

    viewers.leave(STREAM)
    await trio.sleep(IDLE_S + 0.01)
    assert running(started) == []
    again[1].ended.set()
    await trio.sleep(5 * RENEW_S)
    assert len(started) == 3  #: nobody watches: not tried again


async def test_a_new_source_of_a_watched_stream_is_pulled_too(
    nursery: trio.Nursery, started: list[FakePull], mock_clock: trio.testing.MockClock
) -> None:
    host, pulls = make("on_demand")
    reg = FakeRegistry()
    reg.timeline[STREAM] = _live("cam1")
    nursery.start_soon(pulls.reconcile_loop, reg)
    host.feeds.viewers.arrive(STREAM)
    await trio.sleep(RENEW_S / 2)
    assert running(started) == [(STREAM, "cam1")]
    reg.timeline[STREAM] = _live("cam1", "cam2")
    await trio.sleep(RENEW_S)
    assert running(started) == [(STREAM, "cam1"), (STREAM, "cam2")]


async def test_always_pulls_every_live_source_without_viewers_and_never_stops_them(
    nursery: trio.Nursery, started: list[FakePull], mock_clock: trio.testing.MockClock
) -> None:
    host, pulls = make("always")
    reg = FakeRegistry()
    reg.lease["live/other"] = "B"
    reg.timeline["live/other"] = _live("")
    nursery.start_soon(pulls.reconcile_loop, reg)
    await trio.sleep(RENEW_S)
    assert running(started) == [("live/other", ""), (STREAM, "cam1"), (STREAM, "cam2")]
    with host.feeds.viewers.watching(STREAM):
        await trio.sleep(1.0)
    await trio.sleep(10 * IDLE_S)
    assert len(running(started)) == 3 and len(started) == 3
    assert host.feeds.viewers.seen(STREAM) is True  #: an HLS request may wait for it


async def test_never_pulls_nothing_even_with_viewers(
    nursery: trio.Nursery, started: list[FakePull], mock_clock: trio.testing.MockClock
) -> None:
    host, pulls = make("never")
    reg = FakeRegistry()
    nursery.start_soon(pulls.reconcile_loop, reg)
    nursery.start_soon(pulls.listen, reg)
    assert host.feeds.viewers.arrive(STREAM) is False  #: nothing is coming: 404 at once
    await trio.sleep(10 * RENEW_S)
    assert started == [] and reg.calls == 0


async def test_a_stream_another_worker_serves_or_this_node_owns_is_not_pulled(
    nursery: trio.Nursery, started: list[FakePull], mock_clock: trio.testing.MockClock
) -> None:
    host, pulls = make("always")
    host.local = False  #: ClusterNode.local_owner: another worker of this machine has it
    reg = FakeRegistry()
    nursery.start_soon(pulls.reconcile_loop, reg)
    host.feeds.viewers.arrive(STREAM)
    await trio.sleep(3 * RENEW_S)
    assert started == []
    assert STREAM in pulls.remote  #: still listed for viewers
    host.local = True
    host.owned[STREAM] = 0.0  #: this node took the stream over
    await trio.sleep(3 * RENEW_S)
    assert started == [] and STREAM not in pulls.remote


async def test_unknown_paths_do_not_make_the_registry_work_per_request(
    nursery: trio.Nursery, started: list[FakePull], mock_clock: trio.testing.MockClock
) -> None:
    host, pulls = make("on_demand")
    reg = FakeRegistry()
    nursery.start_soon(pulls.reconcile_loop, reg)
    await trio.sleep(RENEW_S / 2)
    before = reg.calls
    for n in range(1000):
        assert host.feeds.viewers.seen(f"live/nothing{n}") is False
    await trio.testing.wait_all_tasks_blocked()
    assert reg.calls == before
    assert started == []


def test_viewers_count_per_stream_and_remember_the_last_one() -> None:
    async def main() -> None:
        host, _ = make("on_demand")
        viewers = host.feeds.viewers
        assert viewers.idle_since(STREAM) == float("-inf")
        viewers.arrive(STREAM)
        viewers.arrive(STREAM)
        assert viewers.present(STREAM) == 2 and viewers.idle_since(STREAM) is None
        viewers.leave(STREAM)
        assert viewers.idle_since(STREAM) is None
        await trio.sleep(3.0)
        viewers.leave(STREAM)
        assert viewers.present(STREAM) == 0
        assert viewers.idle_since(STREAM) == trio.current_time()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize(
    ("value", "mode"),
    [(True, "always"), (False, "never"), ("on_demand", "on_demand"), ("always", "always")],
)
def test_pull_modes_and_the_old_booleans(value: Any, mode: str) -> None:
    assert from_dict({"cluster": {"pull": value}}).cluster.pull == mode


def test_on_demand_is_the_default_and_bad_values_name_the_key() -> None:
    assert from_dict({}).cluster.pull == "on_demand"
    for value in ("sometimes", 1, None):
        with pytest.raises(ConfigError, match=r"cluster\.pull"):
            from_dict({"cluster": {"pull": value}})
    base = {"redis": "redis://x", "secret": "0123456789abcdef"}
    for key in ("pull_idle_s", "pull_wait_s"):
        with pytest.raises(ConfigError, match=rf"cluster\.{key}"):
            from_dict({"cluster": {**base, key: 0}})


async def test_the_stream_list_shows_the_clusters_streams_with_their_owner(
    nursery: trio.Nursery, started: list[FakePull], mock_clock: trio.testing.MockClock
) -> None:
    _host, pulls = make("on_demand")
    reg = FakeRegistry()
    reg.lease["live/other"] = "B"
    reg.timeline["live/other"] = _live("")
    nursery.start_soon(pulls.reconcile_loop, reg)
    await trio.sleep(RENEW_S / 2)
    mine = {"path": "live/mine", "sources": []}  #: owned here
    pulled = {"path": "live/other", "sources": [{"sourceId": "", "state": "live"}]}
    listed = pulls.listing([mine, pulled])
    assert [(s["path"], s["owner"], s["local"]) for s in listed] == [
        ("live/mine", "C", True),
        ("live/other", "B", True),
        (STREAM, "A", False),
    ]
    assert listed[2]["sources"] == [
        {"sourceId": "cam1", "state": "live"},
        {"sourceId": "cam2", "state": "live"},
    ]
    assert started == []  #: listing is not watching

"""The shared registry against a real redis-server (docs/spec.md §9): leases, the node
directory, timelines and events, as two nodes see them."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import anyio
import pytest
import trio

from rtmp_ingest.cluster.node import ClusterNode
from rtmp_ingest.cluster.registry import (
    ClusterRegistry,
    NodeInfo,
    RegistryUnavailable,
    SourceTimeline,
    open_registry,
)
from tests.cluster.redis_server import free_port

_prefixes = itertools.count()


@pytest.fixture
def prefix() -> str:
    return f"t{next(_prefixes)}-{time.monotonic_ns()}"


@asynccontextmanager
async def nodes_ab(
    url: str, prefix: str, *, lease_a: float = 5.0, lease_b: float = 5.0
) -> AsyncIterator[tuple[ClusterRegistry, ClusterRegistry]]:
    """Nodes "a" and "b" of one cluster (one Redis, one key prefix)."""
    common = {"prefix": prefix, "timeline_keep_s": 60.0, "timeout_s": 2.0}
    async with (
        open_registry(url, node_id="a", lease_s=lease_a, **common) as a,  # type: ignore[arg-type]
        open_registry(url, node_id="b", lease_s=lease_b, **common) as b,  # type: ignore[arg-type]
    ):
        yield a, b


def info(node_id: str, *, streams: int = 0) -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        rtmp="10.0.0.1:1935",
        http="10.0.0.1:8080",
        started_at_s=1.0,
        heartbeat_at_s=2.0,
        metrics={"streams": streams},
    )


async def test_one_node_takes_a_free_stream_and_the_other_learns_it(redis_url, prefix):
    async with nodes_ab(redis_url, prefix) as (a, b):
        assert await a.acquire("live/show") == "a"
        assert await b.acquire("live/show") == "a"
        assert await b.owner("live/show") == "a"
        assert await a.acquire("live/show") == "a"  #: asking again is harmless
        assert await b.leases() == {"live/show": "a"}


async def test_only_the_owner_renews_or_releases(redis_url, prefix):
    async with nodes_ab(redis_url, prefix) as (a, b):
        await a.acquire("live/one")
        await b.acquire("live/two")
        assert await a.renew(["live/one", "live/two"]) == {"live/two"}
        assert not await b.release("live/one")
        assert await b.owner("live/one") == "a"
        assert await a.release("live/one")
        assert await b.acquire("live/one") == "b"


async def test_a_lease_redis_lost_is_taken_back_by_its_holder(redis_url, prefix):
    async with nodes_ab(redis_url, prefix) as (a, b):
        await a.acquire("live/show")
        await a.client.delete([f"{prefix}:lease:live/show"])  #: Redis restarted empty
        assert await a.renew(["live/show"]) == set()
        assert await b.acquire("live/show") == "a"


async def test_a_lease_nobody_renews_lapses_within_lease_s(redis_url, prefix):
    lease_s = 0.5
    async with nodes_ab(redis_url, prefix, lease_a=lease_s, lease_b=lease_s) as (a, b):
        started = time.monotonic()
        await a.acquire("live/show")
        assert await b.acquire("live/show") == "a"
        #: a dies (stops renewing): b gets the stream once the lease ran out, not before
        with trio.fail_after(10):
            while (holder := await b.acquire("live/show")) != "b":
                assert holder == "a"
                await trio.sleep(0.05)
        assert time.monotonic() - started >= lease_s * 0.9


async def test_renewing_keeps_a_lease_past_lease_s(redis_url, prefix):
    lease_s = 0.5
    async with nodes_ab(redis_url, prefix, lease_a=lease_s, lease_b=lease_s) as (a, b):
        await a.acquire("live/show")
        started = time.monotonic()
        while time.monotonic() - started < 3 * lease_s:
            assert await a.renew(["live/show"]) == set()
            assert await b.acquire("live/show") == "a"
            await trio.sleep(lease_s / 5)


async def test_the_node_directory_lists_live_nodes_and_drops_dead_ones(redis_url, prefix):
    async with nodes_ab(redis_url, prefix, lease_a=0.5, lease_b=30.0) as (a, b):
        await a.announce(info("a", streams=3))
        await b.announce(info("b"))
        listed = await b.nodes()
        assert [n.node_id for n in listed] == ["a", "b"]
        assert listed[0].metrics == {"streams": 3} and listed[0].rtmp == "10.0.0.1:1935"
        assert await b.node("a") == info("a", streams=3)
        with trio.fail_after(10):  #: a stops its heartbeat: its entry lapses
            while await b.node("a") is not None:
                await trio.sleep(0.05)
        assert [n.node_id for n in await b.nodes()] == ["b"]
        await b.leave()
        assert await b.nodes() == []


async def test_timelines_round_trip_and_are_forgotten(redis_url, prefix):
    cam1 = SourceTimeline(
        last_dts_ms=123_456, origin_wall_s=1.5e9, at_wall_s=1.5e9 + 123, live=True
    )
    slides = SourceTimeline(last_dts_ms=9, origin_wall_s=1.5e9, at_wall_s=1.5e9 + 1, live=False)
    async with nodes_ab(redis_url, prefix) as (a, b):
        await a.write_timelines("live/show", {"cam1": cam1, "": slides})
        assert await b.timelines("live/show") == {"cam1": cam1, "": slides}
        await a.forget_sources("live/show", [""])
        assert await b.timelines("live/show") == {"cam1": cam1}
        await a.forget_stream("live/show")
        assert await b.timelines("live/show") == {}


async def test_events_reach_every_node(redis_url, prefix):
    async with nodes_ab(redis_url, prefix) as (a, b), b.events() as events:
        with trio.fail_after(10):
            #: a subscription is live once Redis confirmed it: publish until b hears one
            got = None
            while got is None:
                await a.publish_event({"kind": "active", "stream": "live/show", "sourceId": "x"})
                with trio.move_on_after(0.5):
                    got = await events.__anext__()
    assert got == {"node": "a", "kind": "active", "stream": "live/show", "sourceId": "x"}


async def test_an_unreachable_redis_is_one_error_naming_the_call(prefix):
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(RegistryUnavailable, match="acquire"):
        async with open_registry(
            url, node_id="a", prefix=prefix, lease_s=1.0, timeline_keep_s=60.0, timeout_s=2.0
        ) as dead:
            await dead.acquire("live/show")


class CleanupFails:
    """A coredis client whose pubsub fails its own cleanup when left by cancellation, as
    coredis 6.9's does now and then (UNSUBSCRIBE on a connection it closed)."""

    @asynccontextmanager
    async def pubsub(self, channels: list[str]) -> AsyncIterator[list[object]]:
        try:
            yield []
        except trio.Cancelled as exc:
            raise BaseExceptionGroup("pubsub", [exc, anyio.ClosedResourceError()]) from None


async def test_a_pubsub_that_fails_its_cleanup_does_not_outlive_the_cancellation():
    """The node stops: its events listener is cancelled and leaves with only the
    cancellation (SIGTERM used to end the daemon with exit code 1 and a traceback)."""
    registry = ClusterRegistry(
        CleanupFails(),  # type: ignore[arg-type]
        node_id="a",
        prefix="p",
        lease_s=5.0,
        timeline_keep_s=60.0,
        timeout_s=2.0,
    )
    with trio.CancelScope() as scope:
        async with registry.events():
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_a_cluster_task_failing_as_it_is_cancelled_is_logged_and_stops(caplog):
    async def task(_reg: object) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled as exc:
            raise BaseExceptionGroup("a library", [exc, anyio.ClosedResourceError()]) from None

    node = SimpleNamespace(node_id="a", settings=SimpleNamespace(renew_s=0.01))
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ClusterNode._supervised, node, task, None)
            await trio.sleep(0.05)
            scope.cancel()
    assert scope.cancelled_caught
    assert any("failed node=a while stopping" in r.getMessage() for r in caplog.records)

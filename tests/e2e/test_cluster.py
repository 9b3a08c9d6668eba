"""End to end, docs/spec.md §9 "Nodes": three `serve` processes sharing a real redis-server
(and, last, two in-process nodes for what the owner decides about a relayed publish).

cam1 publishes (PyAV) to node A, cam2 to node B, of one stream: A takes the stream's
lease, B relays cam2 there, and a player on node C gets both sources from C's own
pulls. cam1 republished via C supersedes make-before-break on the owner. Then the
owner is killed (-9): the encoders reconnect to the nodes left, one of them takes the
lease once it lapsed, and the player that stayed on C sees its timeline go on forward.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from rtmp_ingest.auth import tokens
from rtmp_ingest.cluster.registry import open_registry
from rtmp_ingest.rtmp import events as ev
from tests.cluster.redis_server import free_port, redis_server
from tests.tools import clients, flv_media, pyav_player
from tests.tools.rtmp_client import TrioRtmpClient

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STREAM = "live/show"
#: Short leases, so that a dead owner's stream moves within the test's patience.
LEASE_S = 1.0
RENEW_S = 0.25
SECRET = "cluster-test-secret-0123456789"
PREFIX = "e2e"


class Node:
    """One `rtmp-ingest serve` process of the cluster."""

    def __init__(
        self,
        name: str,
        redis_url: str,
        tmp: Path,
        *,
        srt: bool = False,
        pull: bool = True,
        workers: int = 1,
    ) -> None:
        self.name = name
        self.rtmp_port = free_port()
        self.http_port = free_port()
        self.srt_port = free_port()
        self.config = tmp / f"{name}.toml"
        self.log = tmp / f"{name}.log"
        srt_section = f'listen = "127.0.0.1:{self.srt_port}"' if srt else "enabled = false"
        self.config.write_text(
            f'data_dir = "{tmp / ("data-" + name)}"\nworkers = {workers}\n'
            f'[rtmp]\nlisten = "127.0.0.1:{self.rtmp_port}"\n'
            f'[http]\nlisten = "127.0.0.1:{self.http_port}"\n'
            f"[srt]\n{srt_section}\n"
            f'[cluster]\nredis = "{redis_url}"\nnode_id = "{name}"\nlease_s = {LEASE_S}\n'
            f'renew_s = {RENEW_S}\nsecret = "{SECRET}"\nkey_prefix = "{PREFIX}"\n'
            f"pull = {'true' if pull else 'false'}\n"
        )
        self.process: trio.Process | None = None

    async def start(self) -> None:
        self.process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "rtmp_ingest.cli", "serve", "--config", str(self.config)],
            cwd=str(REPO),
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    def url(self, source_id: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{STREAM}?sourceId={source_id}"

    def srt_url(self, stream_id: str) -> str:
        return f"srt://127.0.0.1:{self.srt_port}?streamid={stream_id}"

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.http_port}") as http:
            return await http.get(path, timeout=5)

    async def sources(self, stream: str = STREAM) -> dict[str, Any]:
        """sourceId → the API's source record, on this node."""
        try:
            response = await self.get(f"/api/v1/streams/{stream}")
        except httpx.HTTPError:
            return {}
        if response.status_code != 200:
            return {}
        return {s["sourceId"]: s for s in response.json()["sources"]}

    async def live(self, *source_ids: str) -> bool:
        sources = await self.sources()
        return all(
            s in sources and sources[s]["state"] == "live" and sources[s]["onAir"]
            for s in source_ids
        )

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)


async def until(predicate: Any, timeout_s: float = 30.0, what: str = "") -> Any:
    """Polls `predicate` (async) until it returns something truthy, within `timeout_s`."""
    with trio.move_on_after(timeout_s):
        while not (value := await predicate()):
            await trio.sleep(0.1)
        return value
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")


async def start_nodes(nodes: dict[str, Node], timeout_s: float) -> None:
    """Starts every node, then waits until each one serves (its /healthz answers 200)."""
    for node in nodes.values():
        await node.start()
    for node in nodes.values():

        async def healthy(node: Node = node) -> bool:
            try:
                return (await node.get("/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await until(healthy, timeout_s, f"node {node.name} to serve")


async def encoder(
    urls: list[str],
    seconds: float,
    *extra: str,
    argv: Callable[..., list[str]] = clients.pyav,
    task_status: Any = trio.TASK_STATUS_IGNORED,
):
    """A PyAV encoder (or `argv`'s) that reconnects, like a real one: when its connection
    ends or is refused before `seconds` are over it publishes again, to the next URL of
    `urls` (`extra`: more arguments for `argv`)."""
    deadline = trio.current_time() + seconds
    attempt = 0
    task_status.started()
    while (left := deadline - trio.current_time()) > 1.0:
        process = await trio.lowlevel.open_process(
            argv(urls[attempt % len(urls)], left, *extra),
            cwd=str(REPO),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
        attempt += 1
        await trio.sleep(0.2)


@pytest.fixture
def srt_nodes() -> bool:
    return False


@pytest.fixture
def node_names() -> str:
    return "ABC"


@pytest.fixture
async def cluster(
    tmp_path: Path, srt_nodes: bool, node_names: str
) -> AsyncIterator[tuple[str, dict[str, Node]]]:
    with redis_server() as redis_url:
        nodes = {name: Node(name, redis_url, tmp_path, srt=srt_nodes) for name in node_names}
        try:
            await start_nodes(nodes, 60)
            yield redis_url, nodes
        finally:
            for node in nodes.values():
                node.kill()
            for node in nodes.values():
                if node.process is not None:
                    with trio.move_on_after(10):
                        await node.process.wait()


async def owner(redis_url: str, stream: str = STREAM) -> str | None:
    async with open_registry(
        redis_url, node_id="test", prefix=PREFIX, lease_s=1, timeline_keep_s=60, timeout_s=2
    ) as registry:
        return await registry.owner(stream)


async def test_three_nodes_one_stream_relay_pull_supersede_and_owner_death(cluster, nursery):
    redis_url, nodes = cluster
    a, b, c = nodes["A"], nodes["B"], nodes["C"]
    await nursery.start(encoder, [a.url("cam1")], 60.0)
    await until(lambda: a.live("cam1"), 30, "cam1 on air at A")
    assert await owner(redis_url) == "A"
    await nursery.start(encoder, [b.url("cam2")], 60.0)
    await until(lambda: a.live("cam1", "cam2"), 30, "cam2 relayed by B to the owner A")
    #: B does not keep cam2 itself: it pulls it back from the owner like any other node
    await until(lambda: b.live("cam1", "cam2"), 30, "B pulling both sources")
    assert {f["onAir"]["protocol"] for f in (await b.sources()).values()} == {"cluster"}
    await until(lambda: c.live("cam1", "cam2"), 30, "C pulling both sources")
    on_c = {s: f["onAir"] for s, f in (await c.sources()).items()}
    assert {f["protocol"] for f in on_c.values()} == {"cluster"}

    #: players on C, read in threads: cam1 for the whole story, cam2 for a few seconds
    results: dict[str, pyav_player.PlayResult] = {}

    async def play(source_id: str, seconds: float) -> None:
        results[source_id] = await trio.to_thread.run_sync(
            lambda: pyav_player.play(c.url(source_id), seconds, read_timeout_s=20.0)
        )

    nursery.start_soon(play, "cam1", 35.0)
    nursery.start_soon(play, "cam2", 5.0)

    async def finished(source_id: str) -> bool:
        return source_id in results

    await until(lambda: finished("cam2"), 40, "the cam2 player on C to finish")
    print("CAM2", results["cam2"].summary())
    assert results["cam2"].frames_decoded > 0, results["cam2"].summary()

    #: cam1 again, through C: relayed to A, where it supersedes the first cam1 feed
    first = (await a.sources())["cam1"]["onAir"]["id"]
    superseded_at = time.monotonic()
    await nursery.start(encoder, [c.url("cam1")], 60.0)

    async def superseded() -> bool:
        source = (await a.sources()).get("cam1", {})
        return bool(source.get("onAir")) and source["onAir"]["id"] != first

    await until(superseded, 30, "cam1 via C superseding on the owner")
    assert (await a.sources())["cam1"]["supersedeCount"] >= 1

    async def new_feed_ran() -> bool:  #: two seconds of the new feed on air before the kill
        return (await a.sources())["cam1"]["onAir"]["videoFrames"] >= 50

    await until(new_feed_ran, 30, "the new cam1 feed to run a while")

    #: the owner dies: the relays from B and C break, their encoders reconnect (to B, C)
    a.kill()
    killed_at = time.monotonic()

    async def new_owner() -> str | None:
        holder = await owner(redis_url)
        return holder if holder in ("B", "C") else None

    taken_by = await until(new_owner, 30, "a new owner")
    survivor = nodes[taken_by]
    await until(lambda: survivor.live("cam1", "cam2"), 30, f"both sources on {taken_by}")
    await until(lambda: c.live("cam1", "cam2"), 30, "both sources on C again")

    #: the operator's view: `cluster status` names the new owner; the dead node drops out
    async def status() -> dict[str, Any] | None:
        done = await trio.run_process(
            [sys.executable, "-m", "rtmp_ingest.cli", "cluster", "status", "--json"]
            + ["--config", str(c.config)],
            capture_stdout=True,
            cwd=str(REPO),
        )
        data = json.loads(done.stdout)
        return data if "A" not in {n["node_id"] for n in data["nodes"]} else None

    data = await until(status, 30, "cluster status without A")
    assert data["leases"] == {STREAM: taken_by}
    assert {n["node_id"] for n in data["nodes"]} == {"B", "C"}
    owner_entry = next(n for n in data["nodes"] if n["node_id"] == taken_by)
    assert owner_entry["metrics"]["streams"] == 1
    assert set(data["streams_per_node"][taken_by][0]["sources"]) == {"cam1", "cam2"}

    await until(lambda: finished("cam1"), 60, "the cam1 player on C to finish")
    result = results["cam1"]
    video = result.video()
    assert video is not None, result.summary()
    assert video.backwards() == [], result.summary()
    before = [d for d, t in zip(video.dts_ms, video.arrival) if t < killed_at]
    after = [d for d, t in zip(video.dts_ms, video.arrival) if t > killed_at + LEASE_S]
    assert before and after, result.summary()
    assert min(after) > max(before), "the player's timeline went back after the take-over"
    assert result.frames_after(superseded_at) > 0, result.summary()
    assert result.frames_after(killed_at + LEASE_S) > 0, result.summary()


def ffmpeg_srt(url: str, seconds: float) -> list[str]:
    argv = clients.ffmpeg("rtmp://unused", seconds)
    return argv[:-3] + ["-f", "mpegts", url]


@pytest.mark.skipif(not clients.have("ffmpeg"), reason="ffmpeg CLI not installed")
@pytest.mark.parametrize("srt_nodes", [True])
async def test_a_new_stream_over_srt_gets_a_lease(cluster, srt_nodes):
    """An SRT publish of a stream no node owns takes its lease at the node it reached (an
    SRT publish of a stream another node owns is relayed: tests/e2e/test_srt_relay.py)."""
    redis_url, nodes = cluster
    b = nodes["B"]
    spawned = await trio.lowlevel.open_process(
        ffmpeg_srt(b.srt_url("live/srtonly?sourceId=s"), 20.0),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def srt_live_at_b() -> bool:
            source = (await b.sources("live/srtonly")).get("s")
            return bool(source and source["onAir"])

        await until(srt_live_at_b, 30, "SRT on air at B")
        await until(lambda: owner(redis_url, "live/srtonly"), 30, "B's lease on live/srtonly")
        assert await owner(redis_url, "live/srtonly") == "B"
    finally:
        spawned.kill()
        await spawned.wait()


async def test_a_new_owner_without_a_copy_continues_the_timeline_from_the_registry(tmp_path):
    """D is an ingest edge (no pulls, so no copy of its own): when the owner A dies and the
    encoder comes back through D, D carries on A's timeline from what A wrote to Redis —
    the same origin (the API's timelineOrigin, HLS's program date time) and DTS that go on
    from A's, not from 0 (RTMP players start their own clock at 0 whatever the source's)."""

    async def state(redis_url: str) -> Any:
        async with open_registry(
            redis_url, node_id="t", prefix=PREFIX, lease_s=1, timeline_keep_s=60, timeout_s=2
        ) as registry:
            return (await registry.timelines(STREAM)).get("cam1")

    with redis_server() as redis_url:
        a = Node("A", redis_url, tmp_path)
        d = Node("D", redis_url, tmp_path, pull=False)
        try:
            for node in (a, d):
                await node.start()

                async def healthy(node: Node = node) -> bool:
                    try:
                        return (await node.get("/healthz")).status_code == 200
                    except httpx.HTTPError:
                        return False

                await until(healthy, 60, f"node {node.name} to serve")
            async with trio.open_nursery() as nursery:
                await nursery.start(encoder, [a.url("cam1"), d.url("cam1")], 60.0)
                await until(lambda: a.live("cam1"), 30, "cam1 on air at A")
                origin = (await a.sources())["cam1"]["timelineOrigin"]

                async def written() -> Any:  #: a few seconds of A's timeline in Redis
                    got = await state(redis_url)
                    return got if got is not None and got.last_dts_ms > 3000 else None

                last_written = (await until(written, 30, "A's timeline in Redis")).last_dts_ms
                a.kill()

                async def taken() -> bool:
                    return await owner(redis_url) == "D" and await d.live("cam1")

                await until(taken, 30, "D owning the stream with cam1 on air")
                assert (await d.sources())["cam1"]["timelineOrigin"] == origin
                #: what A wrote last (A is dead), or already D's first write: D's next is later
                before = await state(redis_url)
                assert before.last_dts_ms >= last_written

                async def d_wrote() -> Any:
                    got = await state(redis_url)
                    return got if got is not None and got.at_wall_s > before.at_wall_s else None

                after = await until(d_wrote, 30, "D's own timeline state")
                nursery.cancel_scope.cancel()
            assert after.last_dts_ms > before.last_dts_ms
            assert after.origin_wall_s == pytest.approx(_unix(origin), abs=0.01)
            assert "continuing 1 source timeline(s) from the registry" in d.log.read_text()
        finally:
            for node in (a, d):
                node.kill()
                if node.process is not None:
                    with trio.move_on_after(10):
                        await node.process.wait()


def _unix(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- in-process nodes: the relay carries the publish as it was -----------------------------

TOKEN_SECRET = "cluster-token-secret-0123456789"


async def in_process_nodes(start_daemon: Any, redis_url: str) -> tuple[Any, Any]:
    common = {
        "auth": {"mode": "token", "secret": TOKEN_SECRET},
        "srt": {"enabled": False},
    }
    a = await start_daemon(
        cluster={"redis": redis_url, "node_id": "A", "secret": SECRET, "key_prefix": "inproc"},
        **common,
    )
    b = await start_daemon(
        cluster={"redis": redis_url, "node_id": "B", "secret": SECRET, "key_prefix": "inproc"},
        **common,
    )
    return a, b


def token(**claims: Any) -> str:
    return tokens.mint(
        tokens.TokenClaims(token_id="t1", streams=["live/*"], multisource=True, **claims),
        TOKEN_SECRET.encode(),
    )


async def publish(port: int, name: str) -> tuple[Any, Any]:
    """An RTMP publisher (our client core) up to the server's answer to `publish`."""
    client = await TrioRtmpClient.open(port)
    await client.connect("live")
    stream_id = await client.create_stream()
    return client, await client.publish(stream_id, name)


async def test_the_owner_decides_a_relayed_publish_as_if_it_came_directly(start_daemon):
    with redis_server() as redis_url:
        a, b = await in_process_nodes(start_daemon, redis_url)
        first, status = await publish(a.rtmp_port, f"show?sourceId=cam1&token={token()}")
        assert status.code == "NetStream.Publish.Start"

        #: a bad token through B gets the owner's refusal, word for word
        direct, refused_at_a = await publish(a.rtmp_port, "show?sourceId=cam2&token=nope")
        relayed, refused_via_b = await publish(b.rtmp_port, "show?sourceId=cam2&token=nope")
        assert refused_at_a.level == refused_via_b.level == "error"
        assert refused_via_b.description == refused_at_a.description

        #: a good one is admitted by the owner, with the encoder's own address
        good, accepted = await publish(b.rtmp_port, f"show?sourceId=cam2&token={token()}")
        assert accepted.code == "NetStream.Publish.Start"
        encoder = "%s:%d" % good.stream.socket.getsockname()[:2]

        async def on_a() -> Any:
            return (await a.sources("live/show")).get("cam2")

        cam2 = await a.wait_for(on_a)
        feed = cam2["pending"][0] if cam2["pending"] else cam2["onAir"]
        assert feed["remoteAddr"] == encoder
        assert b.daemon.cluster.counters["relays"] == 1
        metrics = (await b.get("/metrics")).text
        assert 'rtmp_ingest_cluster_relays{node="B"} 1.0' in metrics
        assert 'rtmp_ingest_cluster_streams_owned{node="A"} 1.0' in (await a.get("/metrics")).text
        for client in (first, direct, relayed, good):
            await client.aclose()


async def test_an_owner_that_ends_a_relayed_feed_tells_the_encoder_through_the_relay(
    start_daemon,
):
    """Disconnect-mode supersede on the owner: the encoder behind the relay hears why."""
    with redis_server() as redis_url:
        nodes = []
        for name in "AB":
            nodes.append(
                await start_daemon(
                    bundle={"superseded": "disconnect"},
                    srt={"enabled": False},
                    cluster={
                        "redis": redis_url,
                        "node_id": name,
                        "secret": SECRET,
                        "key_prefix": "inproc2",
                    },
                )
            )
        a, b = nodes
        tags = flv_media.encode_tags(2.0)
        #: A owns the stream (a first publisher there), cam1 comes through B
        owner_feed = await flv_media.publish_tags(
            a.rtmp_port, "live/show?sourceId=cam0", tags, realtime=False, keep_open=True
        )
        relayed = await flv_media.publish_tags(
            b.rtmp_port, "live/show?sourceId=cam1", tags, realtime=False, keep_open=True
        )

        async def cam1_on_a() -> Any:
            source = (await a.sources("live/show")).get("cam1")
            return source if source and source["onAir"] else None

        await a.wait_for(cam1_on_a)
        spare = await flv_media.publish_tags(
            a.rtmp_port, "live/show?sourceId=cam1", tags, realtime=False, keep_open=True
        )
        told = await relayed.wait_for(
            lambda e: isinstance(e, ev.Status) and e.level == "error", timeout_s=20
        )
        assert told is not None and "supersede" in told.description.lower(), told
        for client in (owner_feed, relayed, spare):
            await client.aclose()


async def test_a_stream_that_stops_gives_its_lease_back_and_leaves_no_timeline(start_daemon):
    """A normal end (every source gone past its grace) is not a take-over: the lease is
    released and the next publish, anywhere, starts a fresh timeline, as on one machine."""
    with redis_server() as redis_url:
        a = await start_daemon(
            bundle={"reconnect_grace_s": 0.2},
            srt={"enabled": False},
            cluster={"redis": redis_url, "node_id": "A", "secret": SECRET, "key_prefix": PREFIX},
        )
        client = await flv_media.publish_tags(
            a.rtmp_port,
            "live/show?sourceId=cam1",
            flv_media.encode_tags(2.0),
            realtime=False,
            keep_open=True,
        )

        async def timeline_written() -> bool:
            async with open_registry(
                redis_url, node_id="t", prefix=PREFIX, lease_s=1, timeline_keep_s=60, timeout_s=2
            ) as registry:
                return "cam1" in await registry.timelines(STREAM)

        await a.wait_for(timeline_written)
        assert await owner(redis_url) == "A"
        await client.aclose()

        async def released() -> bool:
            async with open_registry(
                redis_url, node_id="t", prefix=PREFIX, lease_s=1, timeline_keep_s=60, timeout_s=2
            ) as registry:
                return await registry.owner(STREAM) is None and not await registry.timelines(STREAM)

        await a.wait_for(released)
        assert a.daemon.cluster.statistics()["owned"] == []


# -- two nodes of two workers each: workers and nodes combine (docs/spec.md §9) -------------

#: small pictures, every frame a keyframe: 6 encoders and 4 workers share this machine
SMALL = ("--video", "h264", "--audio", "none", "--size", "160x96", "--fps", "10", "--gop", "1")
WORKER_STREAMS = [f"live/combo{i}" for i in range(3)]


def stream_url(node: Node, stream: str, source_id: str) -> str:
    return f"rtmp://127.0.0.1:{node.rtmp_port}/{stream}?sourceId={source_id}"


async def servers_of(nodes: dict[str, Node], stream: str) -> list[tuple[str, int, int]]:
    """(node, worker id, pid) of every worker where a source of `stream` is published
    (on air from an encoder or a relay, not a pull of another node's copy)."""
    found = []
    for name, node in nodes.items():
        try:
            listing = (await node.get("/api/v1/streams")).json()
        except (httpx.HTTPError, ValueError):
            continue
        for entry in listing.get("streams", []):
            if entry["path"] != stream or entry.get("local") is False:
                continue  #: (another node's stream, listed with its owner)
            published = [
                s
                for s in entry["sources"]
                if s.get("onAir") and s["onAir"]["protocol"] != "cluster"
            ]
            if published:
                found.append((name, entry["worker"]["id"], entry["worker"]["pid"]))
    return found


async def copies_of(node: Node, stream: str) -> list[int]:
    """The workers of `node` that hold `stream` at all (published or pulled)."""
    listing = (await node.get("/api/v1/streams")).json()
    return [
        e["worker"]["id"]
        for e in listing.get("streams", [])
        if e["path"] == stream and e.get("local") is not False
    ]


async def test_two_nodes_of_two_workers_serve_each_stream_in_one_worker(tmp_path, nursery):
    """Nodes A and B, each `serve --workers 2`: every stream gets sources through both
    nodes' shared ports; each stream's sources are on exactly one worker of one node (the
    API of both), the other node holds one pulled copy in one worker, and a player there
    decodes both sources. `kill -9` of the owning worker: its encoders reconnect, the
    stream goes on in one worker, and the player that stayed on the other node sees its
    timeline go forward. Then B's supervisor dies: B's workers leave the cluster."""
    with redis_server() as redis_url:
        nodes = {name: Node(name, redis_url, tmp_path, workers=2) for name in "AB"}
        try:
            await start_nodes(nodes, 90)
            a, b = nodes["A"], nodes["B"]
            for index, stream in enumerate(WORKER_STREAMS):
                #: the first source reaches A for some streams and B for others: both own
                first, second = (a, b) if index % 2 == 0 else (b, a)
                for node in (first, second):
                    url = stream_url(node, stream, f"cam{node.name}")
                    await nursery.start(functools.partial(encoder, [url], 240.0, *SMALL))
                    if node is first:

                        async def started(stream: str = stream) -> bool:
                            return len(await servers_of(nodes, stream)) == 1

                        await until(started, 60, f"the first source of {stream}")

            async def placed(stream: str) -> tuple[str, int, int] | None:
                servers = await servers_of(nodes, stream)
                if len(servers) != 1:
                    return None
                name, worker, _pid = servers[0]
                listing = (await nodes[name].get(f"/api/v1/streams/{stream}")).json()
                live = {
                    s["sourceId"]
                    for s in listing["sources"]
                    if s["state"] == "live" and s["onAir"] and s["onAir"]["protocol"] != "cluster"
                }
                return (
                    servers[0]
                    if live == {"camA", "camB"} and listing["worker"]["id"] == worker
                    else None
                )

            owners = {}
            for stream in WORKER_STREAMS:
                owners[stream] = await until(
                    functools.partial(placed, stream), 120, f"{stream} on one worker of one node"
                )
            print("OWNERS", owners)
            assert {name for name, _w, _p in owners.values()} == {"A", "B"}
            #: the registry agrees: each stream's lease is its serving worker's (MACHINE.wN)
            for stream, (name, worker, _pid) in owners.items():
                assert await owner(redis_url, stream) == f"{name}.w{worker}"

            #: the other node pulls each source once, into one worker, and plays both
            stream = WORKER_STREAMS[0]
            home = owners[stream][0]
            other = b if home == "A" else a

            async def pulled_once() -> bool:
                sources = await other.sources(stream)
                on = {sid for sid, src in sources.items() if src["onAir"]}
                return on == {"camA", "camB"} and len(await copies_of(other, stream)) == 1

            await until(pulled_once, 60, f"{other.name} pulling {stream} into one worker")
            results: dict[str, pyav_player.PlayResult] = {}

            async def play(source_id: str, seconds: float) -> None:
                url = stream_url(other, stream, source_id)
                results[source_id] = await trio.to_thread.run_sync(
                    lambda: pyav_player.play(url, seconds, read_timeout_s=30.0)
                )

            nursery.start_soon(play, "camA", 6.0)
            nursery.start_soon(play, "camB", 45.0)

            async def finished(source_id: str) -> bool:
                return source_id in results

            await until(lambda: finished("camA"), 60, "the camA player to finish")
            assert results["camA"].frames_decoded > 0, results["camA"].summary()

            #: kill -9 the worker that serves the stream
            _name, worker, pid = owners[stream]
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()

            async def moved_on() -> tuple[str, int, int] | None:
                found = await placed(stream)
                return found if found is not None and found[2] != pid else None

            after_kill = await until(moved_on, 90, f"{stream} served again after the kill")
            print("AFTER KILL", after_kill)
            assert await owner(redis_url, stream) == f"{after_kill[0]}.w{after_kill[1]}"
            #: the other streams were not touched unless they lived in the killed worker
            for other_stream, served in owners.items():
                if served[2] != pid:
                    assert await servers_of(nodes, other_stream) == [served]

            await until(lambda: finished("camB"), 90, "the camB player to finish")
            result = results["camB"]
            video = result.video()
            assert video is not None, result.summary()
            assert video.backwards() == [], result.summary()
            before = [d for d, t in zip(video.dts_ms, video.arrival) if t < killed_at]
            later = [d for d, t in zip(video.dts_ms, video.arrival) if t > killed_at + LEASE_S]
            assert before and later, result.summary()
            assert min(later) > max(before), "the player's timeline went back after the kill"

            #: the operator's view groups workers under their machine
            async def status() -> dict[str, Any]:
                done = await trio.run_process(
                    [sys.executable, "-m", "rtmp_ingest.cli", "cluster", "status", "--json"]
                    + ["--config", str(a.config)],
                    capture_stdout=True,
                    cwd=str(REPO),
                )
                return json.loads(done.stdout)

            async def both_machines() -> dict[str, Any] | None:
                data = await status()
                ok = data["machines"] == {"A": ["A.w0", "A.w1"], "B": ["B.w0", "B.w1"]}
                return data if ok else None

            await until(both_machines, 30, "cluster status with two machines of two workers")

            #: B's supervisor dies: its workers end with it and leave the cluster
            b.kill()

            async def only_a() -> bool:
                return (await status())["machines"] == {"A": ["A.w0", "A.w1"]}

            await until(only_a, 30, "B's workers gone from the registry")
        finally:
            for node in nodes.values():
                node.kill()
            for node in nodes.values():
                if node.process is not None:
                    with trio.move_on_after(10):
                        await node.process.wait()


# -- pulls on demand (docs/spec.md §9, cluster/pulls.py) --------------------------------

#: How long an on-demand pull stays after its last viewer, in these tests.
PULL_IDLE_S = 2.0


def on_demand(node: Node) -> Node:
    """`node` with `cluster.pull = "on_demand"` and a short `pull_idle_s`."""
    text = node.config.read_text().replace(
        "pull = true\n", f'pull = "on_demand"\npull_idle_s = {PULL_IDLE_S}\n'
    )
    node.config.write_text(text)
    return node


async def players_on(node: Node) -> int:
    """The node's connected RTMP/FLV players (the pulls of other nodes among them)."""
    text = (await node.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("rtmp_ingest_players "))
    return int(float(line.split()[1]))


async def test_on_demand_pulls_start_with_a_viewer_and_end_after_it(tmp_path, nursery):
    """Nodes B and C pull nothing of A's stream until a player (RTMP, then HLS) comes to
    C; C then pulls its source, the player decodes, and pull_idle_s after it left C's
    pull ends (A's players count says so). The stream list on C names A as the owner."""
    with redis_server() as redis_url:
        nodes = {name: on_demand(Node(name, redis_url, tmp_path)) for name in "ABC"}
        a, b, c = nodes["A"], nodes["B"], nodes["C"]
        try:
            await start_nodes(nodes, 60)
            await nursery.start(encoder, [a.url("cam1")], 90.0)
            await until(lambda: a.live("cam1"), 30, "cam1 on air at A")

            async def listed_on_c() -> Any:
                streams = (await c.get("/api/v1/streams")).json()["streams"]
                entry = next((s for s in streams if s["path"] == STREAM), None)
                return entry if entry and entry["sources"] else None  #: timeline written

            #: C knows the stream (its reconciliation read the registry) but pulls nothing
            entry = await until(listed_on_c, 30, "C listing A's stream")
            assert entry["owner"] == "A" and entry["local"] is False, entry
            assert [s["sourceId"] for s in entry["sources"]] == ["cam1"]
            assert await c.sources() == {} and await b.sources() == {}
            assert await players_on(a) == 0

            #: an RTMP player on C: the pull starts, the player decodes
            result = await trio.to_thread.run_sync(
                lambda: pyav_player.play(c.url("cam1"), 4.0, read_timeout_s=20.0)
            )
            assert result.frames_decoded > 0, result.summary()
            assert await b.sources() == {}  #: B had no viewer: still nothing
            stopped = await until(
                lambda: _zero(players_on, a), 30, "C's pull to end after its player"
            )
            assert stopped
            assert "pull idle stream=live/show" in c.log.read_text()

            #: an HLS client on C: the first playlist waits for the pull, then plays
            hls = await trio.to_thread.run_sync(
                lambda: pyav_player.play(
                    f"http://127.0.0.1:{c.http_port}/hls/{STREAM}/index.m3u8",
                    4.0,
                    open_timeout_s=20.0,
                    read_timeout_s=20.0,
                )
            )
            assert hls.frames_decoded > 0, hls.summary()
            await until(lambda: _zero(players_on, a), 30, "C's pull to end after HLS left")
            assert await b.sources() == {}
        finally:
            for node in nodes.values():
                node.kill()
            for node in nodes.values():
                if node.process is not None:
                    with trio.move_on_after(10):
                        await node.process.wait()


async def _zero(count: Any, node: Node) -> bool:
    return await count(node) == 0

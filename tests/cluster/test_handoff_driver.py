"""The RTMP driver's hand-off (server/rtmp.py, docs/spec.md §9), two daemons in one test.

A fake hook plays the supervisor's table and the descriptor passing: "handing over"
gives the very same in-memory connection, with the `Handoff`, to a second daemon's
listener (`handle(..., handed_in=...)`), as `adopt` does with a received descriptor. The
client is one ordinary RTMP client that never learns it changed process. The hook
checks the run's internal credentials as `WorkerAgent.inbound` does: a publish another
worker relayed (SRT, cluster/hops.py `WorkerRelays`) shows the encoder's address and
protocol.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from rtmp_ingest import config as config_mod
from rtmp_ingest.api.views import feed_json
from rtmp_ingest.app import App
from rtmp_ingest.cluster.handoff import Handoff, HandoffError, request_path
from rtmp_ingest.cluster.ownership import LOCAL, Local, Worker
from rtmp_ingest.cluster.relay import check_hop, hop_query
from rtmp_ingest.server.placement import RemoteOwner, Vouched
from tests.tools.rtmp_client import TrioRtmpClient

AVC_CONFIG = bytes.fromhex("1700000000014d401effe1000967") + b"\x00" * 8
AVC_KEY = bytes.fromhex("1701000000") + b"\x00\x00\x00\x05\x65\x88\x84\x00\x00"
#: the run's secret (`Layout.hop_secret`)
HOP_SECRET = b"run-hop-secret-0123456789"
CLUSTER_SECRET = b"cluster-secret-0123456789"


class Detachable(trio.abc.HalfCloseableStream):
    """The connection as the first worker holds it: once handed over, its close is the
    closing of one descriptor of two, which does nothing to the connection."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner
        self.detached = False

    async def send_all(self, data: Any) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self.inner.receive_some(max_bytes))

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        if not self.detached:
            await self.inner.aclose()


class FakeHook:
    def __init__(self, worker_id: int, owners: dict[str, int]) -> None:
        self.worker_id = worker_id
        self.owners = owners
        self.owner_app: App | None = None
        self.handed: list[Handoff] = []
        self.fail = False

    def owner_of(self, stream_path: str) -> Local | Worker:
        owner = self.owners.get(stream_path, self.worker_id)
        return LOCAL if owner == self.worker_id else Worker(owner)

    def inbound(
        self, stream_path: str, query: dict[str, str], remote: str
    ) -> tuple[dict[str, str], Vouched | None]:
        return check_hop(HOP_SECRET, query, stream_path=stream_path, now_s=time.time())

    async def hand_over(self, stream: Any, owner: Worker, handoff: Handoff) -> None:
        if self.fail:
            raise HandoffError("no such socket")
        self.handed.append(handoff)
        stream.detached = True
        assert self.owner_app is not None and self.owner_app.rtmp._connections is not None
        self.owner_app.rtmp._connections.start_soon(
            self.owner_app.rtmp.handle, stream.inner, False, handoff
        )


async def _daemon(tmp_path: Any, nursery: trio.Nursery, name: str, hook: FakeHook) -> App:
    config = config_mod.load(
        None,
        overrides={"data_dir": str(tmp_path / name), "rtmp": {"listen": "127.0.0.1:0"}},
    )
    daemon = App(config)
    daemon.rtmp.handoff = hook
    daemon.open_auth()
    await nursery.start(daemon.feeds.run)
    await nursery.start(daemon.rtmp.run)
    return daemon


@pytest.fixture
async def pair(tmp_path: Any, nursery: trio.Nursery) -> AsyncIterator[tuple[App, App, FakeHook]]:
    owners = {"live/here": 0, "live/there": 1}
    first_hook, owner_hook = FakeHook(0, owners), FakeHook(1, owners)
    first = await _daemon(tmp_path, nursery, "w0", first_hook)
    owner = await _daemon(tmp_path, nursery, "w1", owner_hook)
    first_hook.owner_app = owner
    yield first, owner, first_hook


def connect(daemon: App) -> TrioRtmpClient:
    up_send, up_receive = trio.testing.memory_stream_one_way_pair()
    down_send, down_receive = trio.testing.memory_stream_one_way_pair()
    server_end = Detachable(trio.StapledStream(down_send, up_receive))
    assert daemon.rtmp._connections is not None
    daemon.rtmp._connections.start_soon(daemon.rtmp.handle, server_end, False)
    return TrioRtmpClient(trio.StapledStream(up_send, down_receive))  # type: ignore[arg-type]


async def wait_until(predicate: Any) -> None:
    with trio.fail_after(10):
        while not predicate():
            await trio.sleep(0.01)


async def test_a_publisher_of_a_stream_owned_elsewhere_carries_on_at_the_owner(pair):
    first, owner, hook = pair
    client = connect(first)
    await client.connect("live")
    stream_id = await client.create_stream()
    status = await client.publish(stream_id, "there?sourceId=cam1")
    assert status.code == "NetStream.Publish.Start"  #: the owner's answer, on the same connection
    client.conn.send_video(stream_id, 0, AVC_CONFIG)
    client.conn.send_video(stream_id, 0, AVC_KEY)
    await client.flush()
    await wait_until(lambda: owner.registry.stream_statistics("live/there", now_s=0.0))
    assert first.registry.stream_statistics("live/there", now_s=0.0) is None
    (handoff,) = hook.handed
    assert handoff.stream_path == "live/there" and handoff.from_worker == 0
    assert request_path(handoff.reads) == "live/there"
    await wait_until(lambda: not first.sessions)  #: the first worker let go
    (session,) = owner.sessions
    assert session.protocol == "rtmp" and session.source_id == "cam1"


async def test_a_player_of_a_stream_owned_elsewhere_is_served_by_the_owner(pair):
    first, owner, hook = pair
    client = connect(first)
    await client.connect("live")
    stream_id = await client.create_stream()
    await client.play(stream_id, "there")
    await wait_until(lambda: any(s.player is not None for s in owner.sessions))
    assert [h.stream_path for h in hook.handed] == ["live/there"]


async def test_a_stream_owned_here_is_served_here(pair):
    first, owner, hook = pair
    client = connect(first)
    await client.connect("live")
    stream_id = await client.create_stream()
    status = await client.publish(stream_id, "here?sourceId=cam1")
    assert status.code == "NetStream.Publish.Start"
    assert hook.handed == [] and not owner.sessions


async def test_an_owner_that_cannot_be_reached_is_what_the_encoder_is_told(pair):
    first, _, hook = pair
    hook.fail = True
    client = connect(first)
    await client.connect("live")
    stream_id = await client.create_stream()
    status = await client.publish(stream_id, "there?sourceId=cam1")
    assert status.code == "NetStream.Publish.Rejected"
    assert "not reachable" in status.description


async def test_a_second_publish_of_a_stream_owned_elsewhere_is_refused(pair):
    """Only a connection's first request can move; a later one is never served in the
    wrong worker (the stream would be split)."""
    first, owner, hook = pair
    client = connect(first)
    await client.connect("live")
    stream_id = await client.create_stream()
    assert (await client.publish(stream_id, "here?sourceId=cam1")).code.endswith("Start")
    client.conn.unpublish(stream_id, "here?sourceId=cam1")
    await client.flush()
    second = await client.create_stream()
    status = await client.publish(second, "there?sourceId=cam1")
    assert status.code == "NetStream.Publish.Rejected"
    assert "new connection" in status.description
    assert hook.handed == [] and owner.registry.stream_statistics("live/there", now_s=0.0) is None


@pytest.mark.parametrize(("protocol", "shown"), [("srt", "srt"), (None, "rtmp")])
async def test_a_publish_another_worker_relayed_shows_the_encoders_address_and_protocol(
    pair, caplog, protocol, shown
):
    """Worker 0's relay of an SRT publish comes over RTMP with the run's credentials: this
    worker's feed has the encoder's address, and its API entry and publish line say SRT
    (credentials that do not name the protocol, an older relay's, keep the connection's)."""
    caplog.set_level(logging.INFO, "rtmp_ingest.rtmp")
    first, _owner, _hook = pair
    credentials = hop_query(
        HOP_SECRET,
        node_id="worker1",
        stream_path="live/here",
        remote="203.0.113.7:4000",
        now_s=time.time(),
        protocol=protocol,
    )
    client = connect(first)
    await client.connect("live")
    stream_id = await client.create_stream()
    name = "here?" + urllib.parse.urlencode({"sourceId": "srt1", **credentials})
    assert (await client.publish(stream_id, name)).code == "NetStream.Publish.Start"
    (session,) = first.sessions
    assert session.protocol == shown
    stats = first.registry.stream_statistics("live/here", now_s=0.0)
    (source,) = stats.sources
    assert source.source_id == "srt1"  #: the credentials are not part of the publish
    (feed,) = source.feeds
    view = feed_json(feed, wall_origin_s=0.0, session=session)
    assert (view["protocol"], view["remoteAddr"]) == (shown, "203.0.113.7:4000")
    assert "srt" not in view  #: the SRT link's statistics are worker 0's
    assert any(
        r.getMessage().startswith(f"publish stream=live/here sourceId='srt1' protocol={shown} ")
        for r in caplog.records
    )


class OtherNode:
    """A cluster placement in which node B owns every stream; its relay is refused there."""

    def __init__(self) -> None:
        self.opened: list[dict[str, Any]] = []

    async def owner_of(self, stream_path: str, *, relayed: bool = False) -> RemoteOwner:
        return RemoteOwner("B", "10.0.0.2", 1935, "")

    def inbound(
        self, stream_path: str, query: dict[str, str], remote: str
    ) -> tuple[dict[str, str], Vouched | None]:
        #: the cluster's secret: worker 0's credentials vouch for nothing here (stripped)
        return check_hop(CLUSTER_SECRET, query, stream_path=stream_path, now_s=time.time())

    def open_relay(self, owner: RemoteOwner, **where: Any) -> OtherNode:
        self.opened.append(where)
        return self

    async def open(self) -> str:
        return "Refused at B."


async def test_a_relayed_srt_publish_is_relayed_on_to_the_owning_node_as_srt(pair):
    """Workers in a cluster: worker 0's relay of an SRT publish reaches the stream's worker,
    which relays it to the node that owns the stream, vouching for the same encoder's
    address and protocol (docs/spec.md §9)."""
    first, _owner, _hook = pair
    placement = OtherNode()
    first.rtmp.placement = placement
    credentials = hop_query(
        HOP_SECRET,
        node_id="worker1",
        stream_path="live/here",
        remote="203.0.113.7:4000",
        now_s=time.time(),
        protocol="srt",
    )
    client = connect(first)
    await client.connect("live")
    stream_id = await client.create_stream()
    name = "here?" + urllib.parse.urlencode({"sourceId": "srt1", **credentials})
    status = await client.publish(stream_id, name)
    assert (status.code, status.description) == ("NetStream.Publish.Rejected", "Refused at B.")
    (opened,) = placement.opened
    assert opened["query"] == {"sourceId": "srt1"}
    assert (opened["remote"], opened["protocol"]) == ("203.0.113.7:4000", "srt")


class Vouching:
    """A cluster placement that owns every stream here and checks the cluster's secret."""

    async def owner_of(self, stream_path: str, *, relayed: bool = False) -> None:
        return None

    def inbound(
        self, stream_path: str, query: dict[str, str], remote: str
    ) -> tuple[dict[str, str], Vouched | None]:
        return check_hop(CLUSTER_SECRET, query, stream_path=stream_path, now_s=time.time())


async def test_relays_and_pulls_from_one_address_do_not_use_up_its_connections(pair):
    """Every relay and pull between two nodes (or from worker 0's SRT) comes from one
    address: once its credentials show it is internal it leaves that address's count
    (`rtmp.max_connections_per_address`), which keeps bounding the address's clients."""
    first, _owner, _hook = pair
    first.rtmp.placement = Vouching()
    limit = first.config.rtmp.max_connections_per_address
    held = []
    for n in range(limit + 5):  #: more relays and pulls than the address may hold
        stream = f"live/s{n}"
        credentials = hop_query(
            CLUSTER_SECRET, node_id="B", stream_path=stream, remote="B", now_s=time.time()
        )
        query = urllib.parse.urlencode({"sourceId": "cam", **credentials})
        client = connect(first)
        await client.connect("live")
        stream_id = await client.create_stream()
        if n % 2:
            await client.play(stream_id, f"s{n}?{query}")
            await wait_until(lambda: any(s.player is not None for s in first.sessions))
        else:
            status = await client.publish(stream_id, f"s{n}?{query}")
            assert status.code == "NetStream.Publish.Start", status
        held.append(client)
        await wait_until(lambda: not first.rtmp.per_address)
    assert len(first.sessions) == limit + 5
    #: an ordinary client of that address is counted (and refused over the limit) as before
    plain = connect(first)
    await plain.connect("live")
    await wait_until(lambda: sum(first.rtmp.per_address.values()) == 1)

"""SRT on a cluster node with workers (cluster/hops.py `MachineRelays`, docs/spec.md §9):
the stream's worker on this machine comes first, as for RTMP; only that worker places the
stream among the nodes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rtmp_ingest.cluster.hops import MachineRelays, WorkerRelays
from rtmp_ingest.cluster.relay import HOP_KEYS, check_hop
from rtmp_ingest.rtmp.limits import Limits
from rtmp_ingest.server.placement import RemoteOwner, Vouched

SECRET = "machine-hop-secret-0123456789"
OTHER_NODE = RemoteOwner("B.w0", "10.0.0.2", 1935, "10.0.0.2:8080")


class Agent:
    """Worker 0 of two; `owners` says which worker serves each stream on the machine."""

    worker_id = 0
    hop_secret = SECRET

    def __init__(self, owners: dict[str, int]) -> None:
        self.owners = owners

    def owner_id(self, stream_path: str) -> int:
        return self.owners[stream_path]

    def held_elsewhere(self, stream_path: str) -> int | None:
        owner = self.owners[stream_path]
        return None if owner == self.worker_id else owner

    def inbound(
        self, stream_path: str, query: Mapping[str, str], remote: str
    ) -> tuple[dict[str, str], Vouched | None]:
        return check_hop(SECRET.encode(), query, stream_path=stream_path, now_s=0.0)


class Node:
    """The node-level placement: B owns live/remote, this worker's node the rest."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.opened: list[RemoteOwner] = []
        self.protocols: list[str | None] = []

    def remote_holder(self, stream_path: str) -> str | None:
        return "B.w0" if stream_path == "live/remote" else None

    async def owner_of(self, stream_path: str, *, relayed: bool = False) -> RemoteOwner | None:
        self.asked.append(stream_path)
        return OTHER_NODE if stream_path == "live/remote" else None

    def open_relay(self, owner: RemoteOwner, **where: Any) -> str:
        self.opened.append(owner)
        self.protocols.append(where.get("protocol"))
        return "node relay"

    def inbound(
        self, stream_path: str, query: Mapping[str, str], remote: str
    ) -> tuple[dict[str, str], Vouched | None]:
        return dict(query), None


def machine(owners: dict[str, int]) -> tuple[MachineRelays, Node]:
    agent = Agent(owners)
    workers = WorkerRelays(
        agent, rtmp=("0.0.0.0", 1935), limits=Limits(), timeout_s=5.0, max_buffer_bytes=1 << 20
    )
    node = Node()
    return MachineRelays(agent, workers, node), node


async def test_a_stream_another_worker_serves_goes_to_it_without_asking_the_node() -> None:
    relays, node = machine({"live/sibling": 1})
    owner = await relays.owner_of("live/sibling")
    assert owner is not None and owner.node_id == "worker1"
    assert (owner.rtmp_host, owner.rtmp_port) == ("127.0.0.1", 1935)  #: the machine's port
    assert relays.remote_holder("live/sibling") == "worker1"
    assert node.asked == []  #: the sibling places it among the nodes, not worker 0
    relay = relays.open_relay(
        owner,
        stream_path="live/sibling",
        query={"sourceId": "s"},
        app="live",
        remote="1.2.3.4:5",
        protocol="srt",
    )
    assert node.opened == []
    credentials = {k: v for k, v in relay.query.items() if k in HOP_KEYS}
    assert credentials  #: signed with the run's secret: the sibling sees the encoder's
    _, vouched = check_hop(  #: address, and that it published with SRT
        SECRET.encode(), relay.query, stream_path="live/sibling", now_s=time.time()
    )
    assert vouched == Vouched("1.2.3.4:5", protocol="srt")


async def test_a_stream_this_worker_serves_is_placed_by_the_node() -> None:
    relays, node = machine({"live/here": 0, "live/remote": 0})
    assert await relays.owner_of("live/here") is None
    assert relays.remote_holder("live/here") is None
    owner = await relays.owner_of("live/remote")
    assert owner == OTHER_NODE
    assert relays.remote_holder("live/remote") == "B.w0"
    assert relays.open_relay(
        owner, stream_path="live/remote", query={}, app="live", remote="x", protocol="srt"
    ) == ("node relay")
    assert node.opened == [OTHER_NODE]
    assert node.protocols == ["srt"]  #: the node's relay vouches for it to the other node

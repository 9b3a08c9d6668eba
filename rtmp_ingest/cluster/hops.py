"""The relay placements (docs/spec.md §9): who a publish that cannot be served here is
relayed to, and with which internal credentials.

- `HopRelays`: a publish relayed with credentials signed by one secret, vouching for the
  encoder's address (the node's relays to other nodes use it with the cluster secret);
- `WorkerRelays`: SRT on worker 0 (a UDP flow has no socket to hand over) relayed to the
  machine's own RTMP port for a stream another worker holds, signed with the run's secret;
- `MachineRelays`: SRT on a cluster node with workers — the stream's worker first, then
  the node.

The relay itself is cluster/relay.py `RtmpRelay`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from rtmp_ingest.cluster.relay import RtmpRelay, hop_query
from rtmp_ingest.rtmp.limits import Limits
from rtmp_ingest.server.placement import RemoteOwner, Vouched


@attrs.define
class HopRelays:
    """Relays of publishes to their owners (`RtmpRelay`), each vouched for with internal
    credentials signed with `secret` as coming from `hop_from` (`hop_query`; the owner
    checks them with `check_hop`), so the owner's policy sees the encoder's address and
    the owner shows the protocol the encoder used (SRT, relayed over RTMP)."""

    secret: bytes
    hop_from: str
    limits: Limits
    timeout_s: float
    max_buffer_bytes: int
    counters: dict[str, int]

    def open_relay(
        self,
        owner: RemoteOwner,
        *,
        stream_path: str,
        query: Mapping[str, str],
        app: str,
        remote: str,
        protocol: str = "rtmp",
    ) -> RtmpRelay:
        credentials = hop_query(
            self.secret,
            node_id=self.hop_from,
            stream_path=stream_path,
            remote=remote,
            now_s=time.time(),
            protocol=protocol,
        )
        return RtmpRelay(
            owner,
            stream_path=stream_path,
            query={**query, **credentials},
            limits=self.limits,
            timeout_s=self.timeout_s,
            max_buffer_bytes=self.max_buffer_bytes,
            counters=self.counters,
        )


class WorkerView(Protocol):
    """What `WorkerRelays` uses of the worker's agent (cluster/worker.py)."""

    @property
    def worker_id(self) -> int: ...

    @property
    def hop_secret(self) -> str: ...

    def held_elsewhere(self, stream_path: str) -> int | None: ...

    def inbound(
        self, stream_path: str, query: Mapping[str, str], remote: str
    ) -> tuple[dict[str, str], Vouched | None]: ...


#: Where a worker reaches the machine's RTMP port when it listens on every address.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class WorkerRelays(HopRelays):
    """A worker's placement for the publishes it cannot hand over (SRT, served by worker
    0 only: a UDP flow has no socket to pass). A publish of a stream another worker
    holds is relayed to the machine's own RTMP port — whichever worker accepts it hands
    the connection to the holder (cluster/handoff.py) — with internal credentials signed
    with the run's `Layout.hop_secret`, which the holder's RTMP driver checks and strips
    (`WorkerAgent.inbound`), so the policy sees the encoder's address (docs/spec.md §9)."""

    def __init__(
        self,
        agent: WorkerView,
        *,
        rtmp: tuple[str, int],
        limits: Limits,
        timeout_s: float,
        max_buffer_bytes: int,
    ) -> None:
        super().__init__(
            secret=agent.hop_secret.encode("utf-8"),
            hop_from=f"worker{agent.worker_id}",
            limits=limits,
            timeout_s=timeout_s,
            max_buffer_bytes=max_buffer_bytes,
            counters={"relays": 0, "relay_bytes": 0},
        )
        self.agent = agent
        host, port = rtmp
        self.rtmp_host = _LOOPBACK.get(host, host)
        self.rtmp_port = port
        self.inbound = agent.inbound

    def remote_holder(self, stream_path: str) -> str | None:
        holder = self.agent.held_elsewhere(stream_path)
        return None if holder is None else f"worker{holder}"

    async def owner_of(self, stream_path: str, *, relayed: bool = False) -> RemoteOwner | None:
        holder = self.agent.held_elsewhere(stream_path)
        if holder is None:
            return None
        return RemoteOwner(
            node_id=f"worker{holder}", rtmp_host=self.rtmp_host, rtmp_port=self.rtmp_port, http=""
        )


class MachineView(WorkerView, Protocol):
    """What `MachineRelays` adds to `WorkerView`: the machine's worker for a stream."""

    def owner_id(self, stream_path: str) -> int: ...


class NodeSrt(Protocol):
    """The node-level SRT placement (server/srt_relay.py `ClusterSrt`)."""

    def remote_holder(self, stream_path: str) -> str | None: ...

    async def owner_of(self, stream_path: str, *, relayed: bool = False) -> RemoteOwner | None: ...

    def open_relay(
        self,
        owner: RemoteOwner,
        *,
        stream_path: str,
        query: Mapping[str, str],
        app: str,
        remote: str,
        protocol: str = "rtmp",
    ) -> Any: ...

    def inbound(
        self, stream_path: str, query: Mapping[str, str], remote: str
    ) -> tuple[dict[str, str], Vouched | None]: ...


class MachineRelays:
    """SRT on a cluster node with workers (docs/spec.md §9): as for RTMP, the stream's
    worker on this machine comes first and only that worker places the stream among the
    nodes. A publish of a stream another worker serves (it holds it, or is its rendezvous
    owner) goes there over the machine's RTMP port (`WorkerRelays`; the hand-off brings
    it to that worker, which places it); one this worker serves is placed by the node."""

    def __init__(self, agent: MachineView, workers: WorkerRelays, node: NodeSrt) -> None:
        self.agent = agent
        self.workers = workers
        self.node = node
        self.inbound = node.inbound

    def _worker(self, stream_path: str) -> RemoteOwner | None:
        owner = self.agent.owner_id(stream_path)
        if owner == self.agent.worker_id:
            return None
        return RemoteOwner(
            node_id=f"worker{owner}",
            rtmp_host=self.workers.rtmp_host,
            rtmp_port=self.workers.rtmp_port,
            http="",
        )

    def remote_holder(self, stream_path: str) -> str | None:
        sibling = self._worker(stream_path)
        return sibling.node_id if sibling is not None else self.node.remote_holder(stream_path)

    async def owner_of(self, stream_path: str, *, relayed: bool = False) -> RemoteOwner | None:
        sibling = self._worker(stream_path)
        if sibling is not None:
            return sibling
        return await self.node.owner_of(stream_path, relayed=relayed)

    def open_relay(
        self,
        owner: RemoteOwner,
        *,
        stream_path: str,
        query: Mapping[str, str],
        app: str,
        remote: str,
        protocol: str = "rtmp",
    ) -> Any:
        opener = self.workers if owner == self._worker(stream_path) else self.node
        return opener.open_relay(
            owner, stream_path=stream_path, query=query, app=app, remote=remote, protocol=protocol
        )

"""This process as one node of a cluster (docs/spec.md §9): the trio service the
composition root starts when `[cluster] redis` is set.

It is the RTMP driver's `Placement` (server/placement.py):

- `owner_of(path)`: a stream this node holds a lease on is served here. Otherwise it
  tries to take the lease (`SET NX PX`); when it gets it, it continues each source's
  timeline from the state the old owner wrote (`Registry.resume_timeline`) and stops
  pulling that stream. When another node holds it, that node's directory entry gives
  its address; a lease whose node entry is gone (the owner died) is waited out, at
  most `lease_s`, and then taken.
- `open_relay`: a publish for a stream owned elsewhere is relayed there (cluster/relay.py);
- `inbound`: internal credentials of a relay from another node are checked and removed;
- `remote_holder(path)`: without waiting, the other node known to own a stream (SRT
  decides inside libsrt's callback: it refuses such a publish, naming the owner). A
  stream that still gets a publisher here without this node owning it has its lease
  claimed at once; if another node has it, its local publishers are ended.

**With workers** (`serve --workers N` and `[cluster]`, docs/spec.md §9) every worker
is a node of its own, `MACHINE.wN` (`worker_node_id`: the configured node id and the
worker's index, so a restarted worker keeps its id and the leases it held), and all of
a machine's workers advertise the machine's shared addresses. A connection first
reaches the stream's worker on its machine (hand-off or HTTP forward, cluster/
worker.py), so only that worker asks `owner_of`, takes the lease, relays, pulls. A
lease held by another worker of the same machine (its *sibling*) is never relayed to:
the worker that owns the stream on the machine now (the sibling died, was restarted
without the stream, or let it go) moves the lease to itself at once
(`ClusterRegistry.take_from`), continuing the timelines its sibling wrote. `local_owner`
(what the pulls ask) is true only for the machine's worker-level owner of a stream
whose lease no sibling holds, so a machine pulls each source once, into the worker its
players are handed to. Without workers `local_owner` is always true.

And it keeps this node's part of the registry up to date, in tasks of its own:

- every `renew_s`: the node's entry (heartbeat, counters) and its leases. A lease it
  lost (Redis went away for longer than lease_s, another node took it) ends the local
  publishers of that stream: they reconnect and are relayed to the new owner. A lease
  of a stream that never came to be (the publish was refused) is given back;
- the bundle events of owned streams (a sink of `Feeds`) are published; a source that
  turned inactive, or a stream that stopped, is forgotten and its lease released;
- every `timeline_write_s` (at most): each owned source's last DTS and timeline origin;
- pulls (unless `cluster.pull` is "never": an ingest edge): each source live on another
  node is pulled at most once — always, or while this node has viewers of it ("on_demand",
  cluster/pulls.py) — started when its owner's events or a viewer say so and checked
  against the registry every `renew_s`.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs
import trio

from rtmp_ingest.bundle import (
    Active,
    EndReason,
    Event,
    Inactive,
    SourceState,
    Stopped,
    TimelineResume,
)
from rtmp_ingest.cluster.hops import HopRelays
from rtmp_ingest.cluster.ownership import LOCAL, Local, Worker
from rtmp_ingest.cluster.pulls import Pulls, remote_owner
from rtmp_ingest.cluster.registry import (
    ClusterRegistry,
    NodeInfo,
    RegistryUnavailable,
    SourceTimeline,
    open_registry,
)
from rtmp_ingest.cluster.relay import PulledFeed, check_hop
from rtmp_ingest.config import Config
from rtmp_ingest.server.feeds import Feeds
from rtmp_ingest.server.logtext import shown
from rtmp_ingest.server.placement import PlacementError, RemoteOwner, Vouched

log = logging.getLogger("rtmp_ingest.cluster")

Address = tuple[str, int]

#: Bundle events waiting to be published; past this the oldest are dropped (counted):
#: the timeline writer and the pull reconciliation repair what a lost event leaves.
EVENT_QUEUE = 1024


#: How a worker's node id ends: MACHINE + ".w" + its index (docs/spec.md §9).
WORKER_SUFFIX = ".w"


def worker_node_id(machine_id: str, worker_id: int) -> str:
    """The node id of worker `worker_id` of the machine whose node id is `machine_id`."""
    return f"{machine_id}{WORKER_SUFFIX}{worker_id}"


def sibling_worker(holder: str, *, machine_id: str) -> int | None:
    """The worker index when `holder` is a worker of machine `machine_id`, else None."""
    prefix = machine_id + WORKER_SUFFIX
    index = holder[len(prefix) :] if holder.startswith(prefix) else ""
    return int(index) if index.isdigit() and str(int(index)) == index else None


class Machine(Protocol):
    """The worker ownership of this machine (cluster/worker.py `WorkerAgent`)."""

    worker_id: int

    def owner_of(self, stream_path: str) -> Local | Worker: ...


def _advertised(configured: str, bound: Address | None) -> str:
    if configured:
        return configured
    if bound is None:
        return ""
    host, port = bound
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"{host}:{port}"


class ClusterNode:
    """One node: its leases, its directory entry, its pulls (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        feeds: Feeds,
        *,
        machine: Machine | None = None,
        opener: Callable[..., Any] = open_registry,
    ) -> None:
        self.settings = config.cluster
        self.limits = config.rtmp.limits()
        self.feeds = feeds
        self.registry = feeds.registry
        self.secret = self.settings.secret.encode("utf-8")
        #: this machine's workers (None: one process); see the module docstring
        self.machine = machine
        self.machine_id = self.settings.node_id
        self.node_id = self.settings.node_id
        if machine is not None and self.machine_id:
            self.node_id = worker_node_id(self.machine_id, machine.worker_id)
        #: opens the registry (cluster/registry.py `open_registry`; tests give another)
        self._open_registry = opener
        #: whether this process is the one of its machine to serve (and pull) a stream
        self.local_owner: Callable[[str], bool] = self._serves_here
        #: streams this node owns → when it took the lease (trio clock)
        self.owned: dict[str, float] = {}
        self.counters: dict[str, int] = {
            "relays": 0,
            "relay_bytes": 0,
            "pulls": 0,
            "takeovers": 0,
            "leases_lost": 0,
            "events_dropped": 0,
        }
        self.hops = HopRelays(
            secret=self.secret,
            hop_from=self.node_id,
            limits=self.limits,
            timeout_s=self.settings.relay_connect_timeout_s,
            max_buffer_bytes=self.settings.relay_max_buffer_bytes,
            counters=self.counters,
        )
        #: a relay of a publish this node does not own (`Placement.open_relay`)
        self.open_relay = self.hops.open_relay
        self.info: NodeInfo | None = None
        self._reg: ClusterRegistry | None = None
        self._ready = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._events_in, self._events_out = trio.open_memory_channel[Event](EVENT_QUEUE)
        self._written: dict[str, dict[str, tuple[int, bool]]] = {}
        #: every source live on another node, pulled once (cluster/pulls.py)
        self.pulling = Pulls(self)
        #: streams other nodes hold leases on (refreshed every renew_s): what a driver
        #: that cannot wait for Redis (SRT's listen callback) checks
        self.remote_leases: dict[str, str] = {}
        #: streams that got a local publisher without this node owning them (a driver
        #: that is not placement-aware): their lease is claimed, or the publishers go
        self._claims_in, self._claims_out = trio.open_memory_channel[str](EVENT_QUEUE)
        self._claiming: set[str] = set()
        self._left = trio.Event()
        self._started_at = time.time()

    # -- Placement (server/placement.py) -------------------------------------------------

    async def owner_of(self, stream_path: str, *, relayed: bool = False) -> RemoteOwner | None:
        if stream_path in self.owned:
            return None
        reg = await self._registry()
        settings = self.settings
        #: an owner that died keeps its lease at most lease_s: wait that out, no longer
        deadline = trio.current_time() + settings.lease_s + settings.redis_timeout_s
        while True:
            try:
                holder = await self._acquire(reg, stream_path)
                if holder == self.node_id:
                    await self._took(reg, stream_path)
                    return None
                if self.sibling(holder) is not None:
                    #: never relayed to: its connections reach it by hand-off (cluster/worker.py)
                    raise PlacementError(
                        f"{shown(stream_path)} is served by another worker of this node "
                        f"({holder}); reconnect."
                    )
                if relayed:
                    raise PlacementError(
                        f"This node does not own {shown(stream_path)} ({holder} does); reconnect."
                    )
                info = await reg.node(holder)
            except RegistryUnavailable as exc:
                log.warning("cluster registry unavailable stream=%s: %s", shown(stream_path), exc)
                raise PlacementError(
                    "The cluster registry cannot be reached; try again later."
                ) from None
            if info is not None:
                owner = remote_owner(info)
                if owner is None:
                    raise PlacementError(f"The stream's owner ({holder}) has no usable address.")
                return owner
            if trio.current_time() > deadline:
                raise PlacementError(
                    f"The stream's owner ({holder}) is gone and its lease has not lapsed; retry."
                )
            await trio.sleep(settings.pull_retry_s)

    def sibling(self, holder: str | None) -> int | None:
        """The worker index when `holder` is another worker of this machine, else None."""
        if self.machine is None or holder is None or holder == self.node_id:
            return None
        return sibling_worker(holder, machine_id=self.machine_id)

    def _worker_owns(self, stream_path: str) -> bool:
        """This worker is the one of its machine that serves `stream_path` (cluster/worker.py)."""
        return self.machine is None or self.machine.owner_of(stream_path) is LOCAL

    def _serves_here(self, stream_path: str) -> bool:
        """`local_owner`: the machine's worker for `stream_path`, and no sibling's lease."""
        return self._worker_owns(stream_path) and (
            self.sibling(self.remote_leases.get(stream_path)) is None
        )

    async def _acquire(self, reg: ClusterRegistry, stream_path: str) -> str:
        """The stream's lease holder after trying to take it; a sibling's lease is moved
        here when this worker owns the stream on the machine (module docstring)."""
        holder = await reg.acquire(stream_path)
        worker = self.sibling(holder)
        if worker is not None and self._worker_owns(stream_path):
            holder = await reg.take_from(stream_path, holder)
            if holder == self.node_id:
                log.info(
                    "owner stream=%s node=%s: lease moved from worker=%d of this machine",
                    shown(stream_path),
                    self.node_id,
                    worker,
                )
        return holder

    def inbound(
        self, stream_path: str, query: Mapping[str, str], remote: str
    ) -> tuple[dict[str, str], Vouched | None]:
        return check_hop(self.secret, query, stream_path=stream_path, now_s=time.time())

    async def _registry(self) -> ClusterRegistry:
        """The registry once the node is up (a publish may arrive while it starts)."""
        with trio.move_on_after(self.settings.redis_timeout_s):
            await self._ready.wait()
        if self._reg is None:
            raise PlacementError("This node is not part of its cluster yet; try again.")
        return self._reg

    async def _took(self, reg: ClusterRegistry, stream_path: str) -> None:
        """This node now owns `stream_path`: continue its timelines, stop pulling it."""
        self.owned[stream_path] = trio.current_time()
        self.pulling.cancel_stream(stream_path)
        states = await reg.timelines(stream_path)
        for source_id, state in states.items():
            self.registry.resume_timeline(
                stream_path,
                source_id,
                TimelineResume(
                    last_dts_ms=state.last_dts_ms,
                    origin_wall_s=state.origin_wall_s,
                    at_wall_s=state.at_wall_s,
                ),
            )
        if states:
            self.counters["takeovers"] += 1
            #: nothing is on air here yet: other nodes must not pull what the old owner had
            #: (the timeline writer marks each source live again once it is)
            await reg.write_timelines(
                stream_path, {sid: attrs.evolve(state, live=False) for sid, state in states.items()}
            )
        log.info(
            "owner stream=%s node=%s: lease taken%s",
            shown(stream_path),
            self.node_id,
            f", continuing {len(states)} source timeline(s) from the registry" if states else "",
        )

    # -- the bundle's events (a sink of Feeds) ---------------------------------------------

    def remote_holder(self, stream_path: str) -> str | None:
        """The node that owns `stream_path` when it is known to be another one (no wait)."""
        if stream_path in self.owned:
            return None
        holder = self.remote_leases.get(stream_path)
        #: a sibling's: the worker ownership decides (cluster/worker.py `held_elsewhere`)
        return None if self.sibling(holder) is not None else holder

    def on_event(self, event: Event) -> None:
        """Events of owned streams go to the registry (never blocks the pump)."""
        path = str(getattr(event, "stream_path", ""))
        if path not in self.owned:
            if isinstance(event, Active) and path not in self._claiming and self._local(path):
                self._claiming.add(path)
                try:
                    self._claims_in.send_nowait(path)
                except trio.WouldBlock:
                    self._claiming.discard(path)
            return
        try:
            self._events_in.send_nowait(event)
        except trio.WouldBlock:
            self.counters["events_dropped"] += 1

    async def _publish_events(self, reg: ClusterRegistry) -> None:
        async for event in self._events_out:
            path = event.stream_path
            source_id = getattr(event, "source_id", None)
            try:
                await reg.publish_event(
                    {"kind": type(event).__name__.lower(), "stream": path, "sourceId": source_id}
                )
                if isinstance(event, Inactive):
                    await reg.forget_sources(path, [event.source_id])
                    self._written.get(path, {}).pop(event.source_id, None)
                elif isinstance(event, Stopped) and path not in self.registry.stream_paths():
                    await self._release(reg, path)
            except RegistryUnavailable as exc:
                log.warning("cluster event not published stream=%s: %s", shown(path), exc)

    def _local(self, stream_path: str) -> list[Any]:
        """This node's own publishers of `stream_path` (pulled copies excluded)."""
        return [
            s
            for s in self.feeds.publishers.values()
            if s.feed is not None
            and s.feed.stream_path == stream_path
            and not isinstance(s, PulledFeed)
        ]

    async def _claims(self, reg: ClusterRegistry) -> None:
        """A stream published here past the placement check (SRT): take its lease, or
        send its publishers away when another node has it (one owner per stream)."""
        async for path in self._claims_out:
            try:
                holder = await self._acquire(reg, path)
                if holder == self.node_id:
                    await self._took(reg, path)
                else:
                    for session in self._local(path):
                        session.kick(
                            EndReason.KICKED,
                            f"This stream is served by node {holder}; publish there.",
                        )
                    log.warning(
                        "owner stream=%s node=%s: published here but owned by %s: publishers ended",
                        shown(path),
                        self.node_id,
                        holder,
                    )
            except RegistryUnavailable as exc:
                log.warning("cluster claim stream=%s: %s", shown(path), exc)
            finally:
                self._claiming.discard(path)

    async def _release(self, reg: ClusterRegistry, stream_path: str) -> None:
        self.owned.pop(stream_path, None)
        self._written.pop(stream_path, None)
        await reg.forget_stream(stream_path)
        await reg.release(stream_path)
        log.info(
            "owner stream=%s node=%s: stream stopped, lease released",
            shown(stream_path),
            self.node_id,
        )

    # -- leases, heartbeat, timelines ------------------------------------------------------

    def _node_info(self) -> NodeInfo:
        assert self.info is not None
        pulls = sum(1 for s in self.feeds.publishers.values() if isinstance(s, PulledFeed))
        return NodeInfo(
            node_id=self.node_id,
            rtmp=self.info.rtmp,
            http=self.info.http,
            started_at_s=self._started_at,
            heartbeat_at_s=time.time(),
            metrics={
                "streams": len(self.owned),
                "publishers": len(self.feeds.publishers) - pulls,
                "players": len(self.feeds.players),
                **self.counters,
            },
            machine=self.machine_id,
            worker=None if self.machine is None else self.machine.worker_id,
        )

    async def _lease_loop(self, reg: ClusterRegistry) -> None:
        while True:
            await trio.sleep(self.settings.renew_s)
            try:
                await reg.announce(self._node_info())
                lost = await reg.renew(list(self.owned))
                for path in lost:
                    self._lost(path)
                self.remote_leases = {
                    path: holder
                    for path, holder in (await reg.leases()).items()
                    if holder != self.node_id
                }
                now = trio.current_time()
                live = set(self.registry.stream_paths())
                for path, since in list(self.owned.items()):
                    if path not in live and now - since > self.settings.lease_s:
                        await self._release(reg, path)  #: taken for a publish that never came
            except RegistryUnavailable as exc:
                log.warning("cluster heartbeat failed node=%s: %s", self.node_id, exc)

    def _lost(self, stream_path: str) -> None:
        """Another node holds the lease now: local publishers go (and reconnect there)."""
        self.owned.pop(stream_path, None)
        self._written.pop(stream_path, None)
        self.counters["leases_lost"] += 1
        sessions = self._local(stream_path)
        log.warning(
            "owner stream=%s node=%s: lease lost, ending %d local publisher(s)",
            shown(stream_path),
            self.node_id,
            len(sessions),
        )
        for session in sessions:
            session.kick(EndReason.KICKED, "This node no longer owns the stream; reconnect.")

    async def _timeline_loop(self, reg: ClusterRegistry) -> None:
        """Each owned source's timeline state, at most once per timeline_write_s."""
        while True:
            await trio.sleep(self.settings.timeline_write_s)
            await self._write_timelines(reg)

    async def _write_timelines(self, reg: ClusterRegistry) -> None:
        """Writes what changed since the last write: (last DTS, on air) per source."""
        now = trio.current_time()
        wall = time.time()
        for path in list(self.owned):
            stats = self.registry.stream_statistics(path, now_s=now)
            if stats is None:
                continue
            written = self._written.setdefault(path, {})
            changed: dict[str, SourceTimeline] = {}
            for source in stats.sources:
                if source.last_dts_ms is None or source.timeline_origin_wall_s is None:
                    continue
                live = source.state is SourceState.LIVE
                if written.get(source.source_id) == (source.last_dts_ms, live):
                    continue
                changed[source.source_id] = SourceTimeline(
                    last_dts_ms=source.last_dts_ms,
                    origin_wall_s=source.timeline_origin_wall_s,
                    at_wall_s=wall,
                    live=live,
                )
            if not changed:
                continue
            try:
                await reg.write_timelines(path, changed)
            except RegistryUnavailable as exc:
                log.warning("cluster timeline not written stream=%s: %s", shown(path), exc)
                continue
            for source_id, state in changed.items():
                written[source_id] = (state.last_dts_ms, state.live)

    # -- running ------------------------------------------------------------------------------

    async def run(
        self,
        *,
        rtmp: Address,
        http: Address | None,
        task_status: trio.TaskStatus[NodeInfo] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Joins the cluster, serves until cancelled, then leaves it (leases released)."""
        settings = self.settings
        if not self.node_id:
            #: every worker of a machine binds the same port: the same machine id
            self.machine_id = self.node_id = f"{socket.gethostname()}-{rtmp[1]}"
            if self.machine is not None:
                self.node_id = worker_node_id(self.machine_id, self.machine.worker_id)
        self.info = NodeInfo(
            node_id=self.node_id,
            rtmp=_advertised(settings.advertise_rtmp, rtmp),
            http=_advertised(settings.advertise_http, http),
            started_at_s=self._started_at,
            heartbeat_at_s=time.time(),
            machine=self.machine_id,
            worker=None if self.machine is None else self.machine.worker_id,
        )
        async with self._open_registry(
            settings.redis,
            node_id=self.node_id,
            prefix=settings.key_prefix,
            lease_s=settings.lease_s,
            timeline_keep_s=settings.timeline_keep_s,
            timeout_s=settings.redis_timeout_s,
        ) as reg:
            await reg.announce(self._node_info())
            self._reg = reg
            self._ready.set()
            log.info(
                "cluster node=%s rtmp=%s http=%s lease_s=%g registry=%s",
                self.node_id,
                self.info.rtmp,
                self.info.http or "-",
                settings.lease_s,
                settings.redis.rpartition("@")[2],
            )
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                tasks = [self._lease_loop, self._publish_events, self._timeline_loop, self._claims]
                if settings.pull != "never":
                    tasks += [self.pulling.listen, self.pulling.reconcile_loop]
                for task in tasks:
                    nursery.start_soon(self._supervised, task, reg)
                task_status.started(self.info)
                await self._left.wait()
                nursery.cancel_scope.cancel()

    async def _supervised(self, task: Any, reg: ClusterRegistry) -> None:
        """Runs one of the node's loops for ever: a failure is logged and the loop starts
        again after renew_s; nothing of the cluster takes the daemon down."""
        while True:
            try:
                await task(reg)
            except Exception:  #: logged with its traceback (BLE001 allows it when logged)
                log.exception(
                    "cluster task %s failed node=%s: restarted", task.__name__, self.node_id
                )
            except BaseExceptionGroup as group:
                #: a failure that came grouped with a cancellation (a library's task group
                #: as the node stops): logged, and the cancellation goes on
                failed, rest = group.split(Exception)
                if failed is not None:
                    log.error(
                        "cluster task %s failed node=%s while stopping",
                        task.__name__,
                        self.node_id,
                        exc_info=failed,
                    )
                if rest is not None:  #: the cancellation (or KeyboardInterrupt): it goes on
                    raise rest from None
            await trio.sleep(self.settings.renew_s)

    async def leave(self) -> None:
        """A clean shutdown (after the listeners drained): leases given back, so other
        nodes take the streams at once, and the node's entry removed; `run` then returns.
        Bounded by `redis_timeout_s` per call."""
        reg = self._reg
        if reg is not None:
            try:
                await self._write_timelines(reg)  #: the last state, for whoever takes over
                for path in list(self.owned):
                    await reg.release(path)
                await reg.leave()
            except RegistryUnavailable as exc:
                log.warning("cluster leave node=%s: %s", self.node_id, exc)
        self.owned.clear()
        self._left.set()

    def statistics(self) -> dict[str, Any]:
        """This node's view: id, owned streams, pulls, counters (for the API and metrics)."""
        return {
            "node": self.node_id,
            "machine": self.machine_id,
            "streams": len(self.owned),
            "owned": sorted(self.owned),
            "pulls_active": len(self.pulling.active),
            **self.counters,
        }

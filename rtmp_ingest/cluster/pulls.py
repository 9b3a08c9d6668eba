"""Pulls (docs/spec.md §9): every source live on another node, pulled once into this
node's bundle, so its RTMP/FLV players, HLS and WHEP get every stream of the cluster.

Which sources: the registry's leases held by other nodes and, per stream, the sources
its owner last wrote as on air. That is checked every `renew_s`, and at once whenever
another node publishes a bundle event. Each (stream, source) has at most one pull
(cluster/relay.py `pull_source`), in a task of its own; a pull that ends (the owner
died, the source went away) is looked at again after `pull_retry_s`. A stream this
node takes over stops being pulled (`cancel_stream`).

A pull that comes back after this node's copy of the source was gone (past its grace)
continues the copy's timeline from where it was (`Registry.resume_timeline`), so a
player of this node never sees its timeline go back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import trio

from rtmp_ingest.bundle import Registry, TimelineResume
from rtmp_ingest.cluster.registry import ClusterRegistry, NodeInfo, RegistryUnavailable
from rtmp_ingest.cluster.relay import pull_source
from rtmp_ingest.config import ClusterConfig, ConfigError, parse_host_port
from rtmp_ingest.rtmp.limits import Limits
from rtmp_ingest.server.feeds import Feeds
from rtmp_ingest.server.logtext import quoted, shown
from rtmp_ingest.server.placement import RemoteOwner

log = logging.getLogger("rtmp_ingest.cluster")

#: Pulled timelines remembered to continue (a pull back after the local grace ran out).
MAX_PULLED_STATES = 4096


class PullHost(Protocol):
    """What the pulls need of their node."""

    node_id: str
    owned: dict[str, float]
    feeds: Feeds
    registry: Registry
    limits: Limits
    settings: ClusterConfig
    counters: dict[str, int]
    #: whether this process is the one of its machine that serves the stream (workers)
    local_owner: Callable[[str], bool]


def remote_owner(info: NodeInfo) -> RemoteOwner | None:
    """How to reach a node from its directory entry (None: its address does not parse)."""
    try:
        host, port = parse_host_port(info.rtmp, key="rtmp")
    except ConfigError:
        log.warning(
            "cluster node=%s announces an unusable rtmp address %r", info.node_id, info.rtmp
        )
        return None
    return RemoteOwner(info.node_id, host, port, info.http)


class Pulls:
    """The node's pulls (see the module docstring)."""

    def __init__(self, host: PullHost) -> None:
        self.host = host
        #: (stream, source) pulled from its owner → the pull's cancel scope
        self.active: dict[tuple[str, str], trio.CancelScope] = {}
        self._pulled_state: dict[tuple[str, str], TimelineResume] = {}
        self._reconcile_now = trio.Event()
        self._nursery: trio.Nursery | None = None

    def cancel_stream(self, stream_path: str) -> None:
        for key, scope in list(self.active.items()):
            if key[0] == stream_path:
                scope.cancel()

    async def listen(self, reg: ClusterRegistry) -> None:
        """Another owner's events: a source may have gone live there: look again now."""
        host = self.host
        while True:
            try:
                async with reg.events() as events:
                    async for event in events:
                        if event.get("node") != host.node_id:
                            self._reconcile_now.set()
            except RegistryUnavailable as exc:
                log.warning("cluster events unavailable node=%s: %s", host.node_id, exc)
            await trio.sleep(host.settings.renew_s)

    async def reconcile_loop(self, reg: ClusterRegistry) -> None:
        """Every source live on another node is pulled once (the pulls run in here)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                with trio.move_on_after(self.host.settings.renew_s):
                    await self._reconcile_now.wait()
                self._reconcile_now = trio.Event()
                try:
                    await self._reconcile(reg)
                except RegistryUnavailable as exc:
                    log.warning("cluster pulls not checked node=%s: %s", self.host.node_id, exc)

    async def _reconcile(self, reg: ClusterRegistry) -> None:
        host = self.host
        owners: dict[str, RemoteOwner | None] = {}
        for path, holder in (await reg.leases()).items():
            if holder == host.node_id or path in host.owned or not host.local_owner(path):
                continue
            for source_id, state in (await reg.timelines(path)).items():
                if not state.live or (path, source_id) in self.active:
                    continue
                if holder not in owners:
                    info = await reg.node(holder)
                    owners[holder] = None if info is None else remote_owner(info)
                owner = owners[holder]
                if owner is not None and self._nursery is not None:
                    scope = self.active[(path, source_id)] = trio.CancelScope()
                    self._nursery.start_soon(self._pull, path, source_id, owner, scope)

    async def _pull(
        self, stream_path: str, source_id: str, owner: RemoteOwner, scope: trio.CancelScope
    ) -> None:
        key = (stream_path, source_id)
        try:
            with scope:
                if stream_path in self.host.owned:  #: taken over while the pull was being set up
                    return
                resume = None
                if self.host.registry.source_statistics(stream_path, source_id, now_s=0.0) is None:
                    resume = self._pulled_state.pop(key, None)
                try:
                    reason = await pull_source(
                        self.host.feeds,
                        owner,
                        stream_path=stream_path,
                        source_id=source_id,
                        node_id=self.host.node_id,
                        limits=self.host.limits,
                        timeout_s=self.host.settings.relay_connect_timeout_s,
                        resume=resume,
                        counters=self.host.counters,
                    )
                except Exception:  #: logged with its traceback; the pull is tried again
                    log.exception("pull failed stream=%s", shown(stream_path))
                    reason = "internal error"
                log.info(
                    "pull end stream=%s sourceId=%s owner=%s: %s",
                    shown(stream_path),
                    quoted(source_id),
                    owner.node_id,
                    shown(reason),
                )
                self._remember(stream_path, source_id)
                await trio.sleep(self.host.settings.pull_retry_s)
        finally:
            if self.active.get(key) is scope:
                del self.active[key]
            self._reconcile_now.set()

    def _remember(self, stream_path: str, source_id: str) -> None:
        """Where this node's copy of a pulled source was, to continue it after a long gap."""
        stats = self.host.registry.source_statistics(
            stream_path, source_id, now_s=trio.current_time()
        )
        if stats is None or stats.last_dts_ms is None or stats.timeline_origin_wall_s is None:
            return
        self._pulled_state.pop((stream_path, source_id), None)
        self._pulled_state[(stream_path, source_id)] = TimelineResume(
            last_dts_ms=stats.last_dts_ms,
            origin_wall_s=stats.timeline_origin_wall_s,
            at_wall_s=time.time(),
        )
        while len(self._pulled_state) > MAX_PULLED_STATES:
            del self._pulled_state[next(iter(self._pulled_state))]

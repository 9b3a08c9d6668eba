"""Pulls (docs/spec.md §9): sources live on another node, pulled once each into this
node's bundle, so its RTMP/FLV players, HLS and WHEP get the cluster's streams.

`cluster.pull` says which:

- "on_demand" (the default): the live sources of a stream this node has viewers of.
  Viewers are counted in one place, `Feeds.viewers` (server/feeds.py): RTMP and
  HTTP-FLV players from their wait for a source on, WHEP viewers from their POST, HLS
  clients at each request. A viewer's arrival wakes the reconciliation at once (its
  player waits for the source meanwhile); a stream whose last viewer left, or whose
  last HLS request came, `pull_idle_s` ago has its pulls stopped (at that instant: the
  loop sleeps until the next such deadline), and its copy here goes into the
  reconnect grace like any feed that went away, so a viewer coming back soon continues
  the same timeline.
- "always": every source live on another node (today's full mesh).
- "never": none (an ingest edge); the loops here just wait.

Which sources: the registry's leases held by other nodes and, per stream, the sources
its owner last wrote as on air. That is checked every `renew_s`, and at once whenever
another node publishes a bundle event, a pull ends or (on demand) a viewer arrives for
a stream not pulled yet. Each (stream, source) has at most one pull
(cluster/relay.py `pull_source`), in a task of its own; a pull that ends (the owner
died, the source went away) is looked at again after `pull_retry_s`, and started again
while the stream is still wanted. A stream this node takes over stops being pulled
(`cancel_stream`); one another worker of this machine is to serve is never pulled here
(`host.local_owner(path)` false).

The last reconciliation's view of the streams other nodes own (`remote`: owner and
live sources) is what the API lists for viewers beside the local streams.

A pull that comes back after this node's copy of the source was gone (past its grace)
continues the copy's timeline from where it was (`Registry.resume_timeline`), so a
player of this node never sees its timeline go back.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs
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
    #: False for a stream another worker of this machine serves: not pulled here
    local_owner: Callable[[str], bool]


@attrs.frozen
class RemoteStream:
    """A stream another node owns, as the last reconciliation saw it."""

    owner: str
    #: the sources its owner last wrote as on air
    sources: tuple[str, ...]


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
        #: streams other nodes own → owner and live sources (the last reconciliation's)
        self.remote: dict[str, RemoteStream] = {}
        #: pulls stopped because nobody watched (a counter for the API and metrics)
        self.idle_stops = 0
        self._pulled_state: dict[tuple[str, str], TimelineResume] = {}
        #: a reconciliation with the registry is due (set with `_wake`)
        self._due = True
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        viewers = host.feeds.viewers
        viewers.wanted = self.wanted
        viewers.left = lambda _path: self._wake.set()

    def listing(self, local: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`GET /api/v1/streams` on a node: `local` (the API's objects of the streams in
        this node's bundle, owned or pulled) marked with their owner, then the streams
        other nodes own that are not here (on demand, no viewer asked yet) with their
        owner and live sources, as the last reconciliation saw them: a viewer page finds
        every stream of the cluster, and playing one here starts its pull."""
        out = []
        for stream in local:
            elsewhere = self.remote.get(stream["path"])
            owner = elsewhere.owner if elsewhere is not None else self.host.node_id
            out.append({**stream, "owner": owner, "local": True})
        here = {stream["path"] for stream in local}
        for path, remote in sorted(self.remote.items()):
            if path not in here:
                out.append(
                    {
                        "path": path,
                        "owner": remote.owner,
                        "local": False,
                        "sources": [{"sourceId": sid, "state": "live"} for sid in remote.sources],
                    }
                )
        return out

    @property
    def mode(self) -> str:
        return self.host.settings.pull

    def _reconcile_soon(self) -> None:
        self._due = True
        self._wake.set()

    def wanted(self, stream_path: str) -> bool:
        """A viewer of `stream_path` arrived or was seen (Feeds.viewers, called at every
        one): True if a source of it is pulled or about to be. A stream not pulled yet
        wakes the reconciliation at once when the registry showed it owned elsewhere
        (unknown paths wait for the next round: a client cannot make Redis work per
        request)."""
        if self.mode == "never" or stream_path in self.host.owned:
            return False
        if any(key[0] == stream_path for key in self.active):
            return True
        if stream_path not in self.remote:
            return False
        if self.mode == "on_demand":
            self._reconcile_soon()
        return True

    def _viewed(self, stream_path: str, now: float) -> bool:
        """Whether `stream_path` has a viewer here, or had one less than pull_idle_s ago."""
        since = self.host.feeds.viewers.idle_since(stream_path)
        return since is None or now - since < self.host.settings.pull_idle_s

    def _next_idle_deadline(self) -> float:
        """When the next pulled stream runs out of viewers (inf: none will by itself)."""
        if self.mode != "on_demand":
            return math.inf
        viewers = self.host.feeds.viewers
        deadline = math.inf
        for path in {key[0] for key in self.active}:
            since = viewers.idle_since(path)
            if since is not None:
                deadline = min(deadline, since + self.host.settings.pull_idle_s)
        return deadline

    def _stop_idle(self, now: float) -> None:
        """On demand: the pulls of streams nobody watched for pull_idle_s stop."""
        if self.mode != "on_demand":
            return
        for (path, source_id), scope in list(self.active.items()):
            if not scope.cancel_called and not self._viewed(path, now):
                self.idle_stops += 1
                log.info(
                    "pull idle stream=%s sourceId=%s: no viewer for %gs, stopping",
                    shown(path),
                    quoted(source_id),
                    self.host.settings.pull_idle_s,
                )
                scope.cancel()

    def cancel_stream(self, stream_path: str) -> None:
        for key, scope in list(self.active.items()):
            if key[0] == stream_path:
                scope.cancel()

    async def listen(self, reg: ClusterRegistry) -> None:
        """Another owner's events: a source may have gone live there: look again now."""
        host = self.host
        if self.mode == "never":
            await trio.sleep_forever()
        while True:
            try:
                async with reg.events() as events:
                    async for event in events:
                        if event.get("node") != host.node_id:
                            self._reconcile_soon()
            except RegistryUnavailable as exc:
                log.warning("cluster events unavailable node=%s: %s", host.node_id, exc)
            await trio.sleep(host.settings.renew_s)

    async def reconcile_loop(self, reg: ClusterRegistry) -> None:
        """The wanted sources are pulled once each (the pulls run in here); on demand,
        the pulls of a stream nobody watches stop pull_idle_s after its last viewer."""
        if self.mode == "never":
            await trio.sleep_forever()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            next_round = trio.current_time()
            while True:
                with trio.move_on_at(min(next_round, self._next_idle_deadline())):
                    await self._wake.wait()
                self._wake = trio.Event()
                now = trio.current_time()
                self._stop_idle(now)
                if not self._due and now < next_round:
                    continue
                self._due = False
                next_round = now + self.host.settings.renew_s
                try:
                    await self._reconcile(reg)
                except RegistryUnavailable as exc:
                    log.warning("cluster pulls not checked node=%s: %s", self.host.node_id, exc)

    async def _reconcile(self, reg: ClusterRegistry) -> None:
        host = self.host
        owners: dict[str, RemoteOwner | None] = {}
        remote: dict[str, RemoteStream] = {}
        for path, holder in (await reg.leases()).items():
            if holder == host.node_id or path in host.owned:
                continue
            states = await reg.timelines(path)
            live = tuple(sorted(sid for sid, state in states.items() if state.live))
            remote[path] = RemoteStream(holder, live)
            if not host.local_owner(path):
                continue  #: another worker of this machine serves it (and pulls it)
            if self.mode == "on_demand" and not self._viewed(path, trio.current_time()):
                continue
            for source_id in live:
                if (path, source_id) in self.active:
                    continue
                if holder not in owners:
                    info = await reg.node(holder)
                    owners[holder] = None if info is None else remote_owner(info)
                owner = owners[holder]
                if owner is not None and self._nursery is not None:
                    scope = self.active[(path, source_id)] = trio.CancelScope()
                    self._nursery.start_soon(self._pull, path, source_id, owner, scope)
        self.remote = remote

    async def _pull(
        self, stream_path: str, source_id: str, owner: RemoteOwner, scope: trio.CancelScope
    ) -> None:
        key = (stream_path, source_id)
        try:
            with scope:
                if stream_path in self.host.owned or not self.host.local_owner(stream_path):
                    return  #: taken over while the pull was being set up
                resume = None
                if self.host.registry.source_statistics(stream_path, source_id, now_s=0.0) is None:
                    resume = self._pulled_state.pop(key, None)
                reason = "stopped"
                try:
                    reason = await pull_source(
                        self.host.feeds,
                        owner,
                        stream_path=stream_path,
                        source_id=source_id,
                        node_id=self.host.node_id,
                        secret=self.host.settings.secret.encode("utf-8"),
                        limits=self.host.limits,
                        timeout_s=self.host.settings.relay_connect_timeout_s,
                        resume=resume,
                        counters=self.host.counters,
                    )
                except Exception:  #: logged with its traceback; the pull is tried again
                    log.exception("pull failed stream=%s", shown(stream_path))
                    reason = "internal error"
                finally:  #: also when stopped (idle, taken over): where the copy was
                    self._remember(stream_path, source_id)
                    log.info(
                        "pull end stream=%s sourceId=%s owner=%s: %s",
                        shown(stream_path),
                        quoted(source_id),
                        owner.node_id,
                        shown(reason),
                    )
                await trio.sleep(self.host.settings.pull_retry_s)
        finally:
            if self.active.get(key) is scope:
                del self.active[key]
            self._reconcile_soon()

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

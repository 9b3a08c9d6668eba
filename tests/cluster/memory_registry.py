"""An in-memory stand-in for the Redis registry (cluster/registry.py `ClusterRegistry`),
shared by the nodes of one test: the same calls and answers, no expiry (a test says
what has lapsed by leaving it out). For the composed-placement tests, which run many
hypothesis examples; the registry itself is tested against a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from rtmp_ingest.cluster.registry import NodeInfo, SourceTimeline


class MemoryStore:
    """What Redis would hold: leases, node entries, timelines."""

    def __init__(self) -> None:
        self.leases: dict[str, str] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.timelines: dict[str, dict[str, SourceTimeline]] = {}
        self.events: list[dict[str, Any]] = []

    @asynccontextmanager
    async def open(self, _url: str, *, node_id: str, **_settings: Any) -> AsyncIterator[Any]:
        """`open_registry`'s shape (ClusterNode's `opener`)."""
        yield MemoryRegistry(self, node_id)


class MemoryRegistry:
    """One node's calls on the store (ClusterRegistry's methods)."""

    def __init__(self, store: MemoryStore, node_id: str) -> None:
        self.store = store
        self.node_id = node_id

    async def announce(self, info: NodeInfo) -> None:
        self.store.nodes[info.node_id] = info

    async def leave(self) -> None:
        self.store.nodes.pop(self.node_id, None)

    async def node(self, node_id: str) -> NodeInfo | None:
        return self.store.nodes.get(node_id)

    async def nodes(self) -> list[NodeInfo]:
        return [self.store.nodes[n] for n in sorted(self.store.nodes)]

    async def acquire(self, stream_path: str) -> str:
        return self.store.leases.setdefault(stream_path, self.node_id)

    async def take_from(self, stream_path: str, previous: str) -> str:
        if self.store.leases.get(stream_path) in (None, previous):
            self.store.leases[stream_path] = self.node_id
        return self.store.leases[stream_path]

    async def owner(self, stream_path: str) -> str | None:
        return self.store.leases.get(stream_path)

    async def renew(self, stream_paths: Iterable[str]) -> set[str]:
        lost = set()
        for path in stream_paths:
            if self.store.leases.setdefault(path, self.node_id) != self.node_id:
                lost.add(path)
        return lost

    async def release(self, stream_path: str) -> bool:
        if self.store.leases.get(stream_path) == self.node_id:
            del self.store.leases[stream_path]
            return True
        return False

    async def leases(self) -> dict[str, str]:
        return dict(self.store.leases)

    async def write_timelines(self, stream_path: str, sources: dict[str, SourceTimeline]) -> None:
        self.store.timelines.setdefault(stream_path, {}).update(sources)

    async def timelines(self, stream_path: str) -> dict[str, SourceTimeline]:
        return dict(self.store.timelines.get(stream_path, {}))

    async def forget_sources(self, stream_path: str, source_ids: Iterable[str]) -> None:
        for sid in source_ids:
            self.store.timelines.get(stream_path, {}).pop(sid, None)

    async def forget_stream(self, stream_path: str) -> None:
        self.store.timelines.pop(stream_path, None)

    async def publish_event(self, event: dict[str, Any]) -> None:
        self.store.events.append({"node": self.node_id, **event})

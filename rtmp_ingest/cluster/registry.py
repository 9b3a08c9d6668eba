"""The shared registry of a cluster of nodes, in Redis (docs/spec.md §9).

What every node keeps there, under the configured key prefix `P`:

    P:lease:STREAM     the owning node's id; SET NX PX lease_s, renewed by its owner every
                       renew_s (compare-and-PEXPIRE; a key Redis lost is set again), deleted
                       by it (compare-and-DEL) when the stream stops. An owner that dies stops
                       renewing: within lease_s the key is gone and the next publish anywhere
                       takes the stream; sooner, the worker of its machine that now owns the
                       stream there moves it to itself (compare-and-SET, `take_from`).
    P:node:ID          the node's entry (JSON: addresses, start, heartbeat, its counters, its
                       machine and worker: with `workers > 1` each worker is a node MACHINE.wN),
                       SET PX lease_s by its heartbeat; P:nodes is the set of ids ever seen
                       (an id whose entry lapsed is dropped from it when listed).
    P:timeline:STREAM  hash source id → JSON {last_dts_ms, origin_wall_s, at_wall_s, live},
                       written by the owner at most once per timeline_write_s and kept
                       timeline_keep_s: where a new owner continues each source's timeline,
                       and which sources other nodes pull.
    P:events           pub/sub channel of the owners' bundle events (JSON, one per event).

Every call is bounded by `timeout_s`; any Redis failure surfaces as `RegistryUnavailable`.
The client is coredis (anyio-based), which runs on trio as it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
import coredis
import coredis.exceptions
import trio

log = logging.getLogger("rtmp_ingest.cluster")

#: Renews every key of `KEYS` still holding ARGV[1] for ARGV[2] ms, and takes back one that
#: is gone (Redis restarted empty, or was flushed: the owner is still the owner); 1 per
#: kept key, 0 per key another node holds.
_RENEW = """
local out = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('get', key)
  if holder == ARGV[1] then
    redis.call('pexpire', key, ARGV[2])
    out[i] = 1
  elseif not holder then
    redis.call('set', key, ARGV[1], 'PX', ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
#: Deletes KEYS[1] only while it holds ARGV[1] (a lease is released by its owner alone).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
#: Moves KEYS[1] from ARGV[1] (a dead or idle worker of this machine) to ARGV[2] for ARGV[3]
#: ms, or takes it when nobody holds it; returns the holder afterwards.
_TAKE_FROM = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return ARGV[2]
end
return holder
"""
#: Keys one SCAN round asks for (`cluster status`, the pull reconciliation).
SCAN_COUNT = 500


class RegistryUnavailable(Exception):
    """Redis did not answer in time or refused the command (the message says which)."""


@attrs.frozen(kw_only=True)
class NodeInfo:
    """One node's directory entry."""

    node_id: str
    #: HOST:PORT of its RTMP listener, as other nodes and encoders reach it
    rtmp: str
    #: HOST:PORT of its HTTP listener ("" without HTTP)
    http: str
    started_at_s: float
    heartbeat_at_s: float
    #: what the node reports of itself (streams owned, publishers, players, relays, pulls)
    metrics: dict[str, int] = attrs.field(factory=dict)
    #: the machine it runs on (its configured node id; "": its own) and its worker there: with
    #: `workers > 1` every worker is a node "MACHINE.wN"; one process: machine = node_id
    machine: str = ""
    worker: int | None = None

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> NodeInfo:
        data = json.loads(text)
        return cls(
            node_id=str(data["node_id"]),
            rtmp=str(data["rtmp"]),
            http=str(data.get("http", "")),
            started_at_s=float(data["started_at_s"]),
            heartbeat_at_s=float(data["heartbeat_at_s"]),
            metrics={str(k): int(v) for k, v in dict(data.get("metrics", {})).items()},
            machine=str(data.get("machine", "")),
            worker=None if data.get("worker") is None else int(data["worker"]),
        )


@attrs.frozen(kw_only=True)
class SourceTimeline:
    """What the owner last wrote about one source."""

    last_dts_ms: int
    origin_wall_s: float
    at_wall_s: float
    live: bool

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SourceTimeline:
        data = json.loads(text)
        return cls(
            last_dts_ms=int(data["last_dts_ms"]),
            origin_wall_s=float(data["origin_wall_s"]),
            at_wall_s=float(data["at_wall_s"]),
            live=bool(data["live"]),
        )


@asynccontextmanager
async def open_registry(
    url: str,
    *,
    node_id: str,
    prefix: str,
    lease_s: float,
    timeline_keep_s: float,
    timeout_s: float,
) -> AsyncIterator[ClusterRegistry]:
    """A registry on a client of `url`, held open inside this block (coredis keeps its
    connection pool's tasks in a task group: entered and left by the same trio task)."""
    client: coredis.Redis[str] = coredis.Redis.from_url(
        url, decode_responses=True, stream_timeout=timeout_s, connect_timeout=timeout_s
    )
    try:
        async with client:
            yield ClusterRegistry(
                client,
                node_id=node_id,
                prefix=prefix,
                lease_s=lease_s,
                timeline_keep_s=timeline_keep_s,
                timeout_s=timeout_s,
            )
    except* RegistryUnavailable as group:  #: coredis's task group wraps what the block raised
        raise _first_leaf(group) from None
    except* (coredis.exceptions.RedisError, OSError) as group:
        raise RegistryUnavailable(f"{url}: {_first_leaf(group)}") from None


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


class ClusterRegistry:
    """A node's calls on the shared registry (see the module docstring for the keys)."""

    def __init__(
        self,
        client: coredis.Redis[str],
        *,
        node_id: str,
        prefix: str,
        lease_s: float,
        timeline_keep_s: float,
        timeout_s: float,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.prefix = prefix
        self.lease_ms = max(1, round(lease_s * 1000))
        self.timeline_keep_ms = max(1, round(timeline_keep_s * 1000))
        self.timeout_s = timeout_s
        self.events_channel = f"{prefix}:events"

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    async def _call(self, what: str, coro: Any) -> Any:
        """Runs one command within `timeout_s`; every failure becomes RegistryUnavailable."""
        try:
            with trio.fail_after(self.timeout_s):
                return await coro
        except trio.TooSlowError:
            raise RegistryUnavailable(
                f"{what}: Redis did not answer within {self.timeout_s:g}s"
            ) from None
        except (coredis.exceptions.RedisError, OSError) as exc:
            raise RegistryUnavailable(f"{what}: {exc}") from None

    # -- the node directory ------------------------------------------------------------

    async def announce(self, info: NodeInfo) -> None:
        """Writes (and so renews) this node's entry for lease_s."""
        await self._call(
            "announce",
            self.client.set(self._key("node", info.node_id), info.to_json(), px=self.lease_ms),
        )
        await self._call("announce", self.client.sadd(f"{self.prefix}:nodes", [info.node_id]))

    async def leave(self) -> None:
        """Removes this node's entry (a clean shutdown; a dead node's entry lapses)."""
        await self._call("leave", self.client.delete([self._key("node", self.node_id)]))
        await self._call("leave", self.client.srem(f"{self.prefix}:nodes", [self.node_id]))

    async def node(self, node_id: str) -> NodeInfo | None:
        text = await self._call("node", self.client.get(self._key("node", node_id)))
        return None if text is None else NodeInfo.from_json(text)

    async def nodes(self) -> list[NodeInfo]:
        """Every live node, by id; ids whose entry lapsed leave the set."""
        ids = sorted(await self._call("nodes", self.client.smembers(f"{self.prefix}:nodes")))
        if not ids:
            return []
        texts = await self._call("nodes", self.client.mget([self._key("node", i) for i in ids]))
        gone = [node_id for node_id, text in zip(ids, texts) if text is None]
        if gone:
            await self._call("nodes", self.client.srem(f"{self.prefix}:nodes", gone))
        return [NodeInfo.from_json(text) for text in texts if text is not None]

    # -- leases ------------------------------------------------------------------------

    async def acquire(self, stream_path: str) -> str:
        """Takes the stream's lease if nobody holds it; returns the holder's id (maybe ours)."""
        key = self._key("lease", stream_path)
        taken = await self._call(
            "acquire",
            self.client.set(key, self.node_id, condition=coredis.PureToken.NX, px=self.lease_ms),
        )
        if taken:
            return self.node_id
        holder = await self._call("acquire", self.client.get(key))
        if holder is None:  #: it lapsed between the two commands: try once more
            return await self.acquire(stream_path)
        return str(holder)

    async def take_from(self, stream_path: str, previous: str) -> str:
        """Takes the stream's lease from `previous` (another worker of this machine that
        no longer serves it, docs/spec.md §9) or from nobody; returns the holder after."""
        holder = await self._call(
            "take",
            self.client.eval(
                _TAKE_FROM,
                keys=[self._key("lease", stream_path)],
                args=[previous, self.node_id, self.lease_ms],
            ),
        )
        return str(holder)

    async def owner(self, stream_path: str) -> str | None:
        holder = await self._call("owner", self.client.get(self._key("lease", stream_path)))
        return None if holder is None else str(holder)

    async def renew(self, stream_paths: Iterable[str]) -> set[str]:
        """Renews this node's leases; returns the streams whose lease it no longer holds."""
        paths = list(stream_paths)
        if not paths:
            return set()
        kept = await self._call(
            "renew",
            self.client.eval(
                _RENEW,
                keys=[self._key("lease", p) for p in paths],
                args=[self.node_id, self.lease_ms],
            ),
        )
        return {path for path, ok in zip(paths, kept) if not ok}

    async def release(self, stream_path: str) -> bool:
        """Gives the lease up (only if this node holds it)."""
        done = await self._call(
            "release",
            self.client.eval(_RELEASE, keys=[self._key("lease", stream_path)], args=[self.node_id]),
        )
        return bool(done)

    async def leases(self) -> dict[str, str]:
        """Every stream's owner: stream path → node id."""
        start = len(self._key("lease", ""))
        keys: list[str] = []
        cursor: int | None = None
        while cursor != 0:
            cursor, batch = await self._call(
                "leases",
                self.client.scan(cursor or 0, match=self._key("lease", "*"), count=SCAN_COUNT),
            )
            keys.extend(batch)
        if not keys:
            return {}
        holders = await self._call("leases", self.client.mget(keys))
        return {k[start:]: str(h) for k, h in zip(keys, holders) if h is not None}

    # -- timelines ---------------------------------------------------------------------

    async def write_timelines(self, stream_path: str, sources: dict[str, SourceTimeline]) -> None:
        """The owner's state of a stream's sources (kept timeline_keep_s from now)."""
        key = self._key("timeline", stream_path)
        if sources:
            await self._call(
                "timeline",
                self.client.hset(key, {sid: state.to_json() for sid, state in sources.items()}),
            )
        await self._call("timeline", self.client.pexpire(key, self.timeline_keep_ms))

    async def timelines(self, stream_path: str) -> dict[str, SourceTimeline]:
        raw = await self._call("timeline", self.client.hgetall(self._key("timeline", stream_path)))
        out: dict[str, SourceTimeline] = {}
        for sid, text in raw.items():
            try:
                out[str(sid)] = SourceTimeline.from_json(text)
            except (ValueError, KeyError, TypeError):
                log.warning("timeline of %r/%r in Redis is unreadable: ignored", stream_path, sid)
        return out

    async def forget_sources(self, stream_path: str, source_ids: Iterable[str]) -> None:
        """A source ended for good (its timeline is not to be continued)."""
        ids = list(source_ids)
        if ids:
            await self._call("timeline", self.client.hdel(self._key("timeline", stream_path), ids))

    async def forget_stream(self, stream_path: str) -> None:
        await self._call("timeline", self.client.delete([self._key("timeline", stream_path)]))

    # -- events ------------------------------------------------------------------------

    async def publish_event(self, event: dict[str, Any]) -> None:
        payload = json.dumps({"node": self.node_id, **event}, separators=(",", ":"))
        await self._call("publish", self.client.publish(self.events_channel, payload))

    @asynccontextmanager
    async def events(self) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Every node's bundle events as they are published (none of before).

        Left by cancellation (the node stops), coredis's pubsub may fail its own cleanup
        (it unsubscribes on a connection it already closed: `anyio.ClosedResourceError`,
        grouped with the cancellation by its task group); that failure is dropped, the
        cancellation goes on. A failure of Redis is `RegistryUnavailable`."""
        try:
            async with self.client.pubsub(channels=[self.events_channel]) as pubsub:
                yield _messages(pubsub)
        except (coredis.exceptions.RedisError, OSError) as exc:
            raise RegistryUnavailable(f"events: {exc}") from None
        except BaseExceptionGroup as group:
            _closed, rest = group.split((anyio.ClosedResourceError, anyio.BrokenResourceError))
            if rest is None:  #: only the cleanup failed: these events are over
                log.info("cluster events node=%s: the subscription closed", self.node_id)
                return
            failed, others = rest.split((coredis.exceptions.RedisError, OSError))
            if others is None and failed is not None:
                raise RegistryUnavailable(f"events: {_first_leaf(failed)}") from None
            raise rest from None


async def _messages(pubsub: Any) -> AsyncIterator[dict[str, Any]]:
    async for message in pubsub:
        if not message or message.get("type") != "message":
            continue
        try:
            data = json.loads(message["data"])
        except (ValueError, TypeError):
            continue
        if isinstance(data, dict):
            yield data

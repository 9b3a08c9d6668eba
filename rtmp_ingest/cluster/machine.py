"""The whole machine's event stream and metrics, answered by whichever worker a client reached.

docs/spec.md §9. With `--workers N` a client's connection lands on any worker, but a
dashboard following `/api/v1/events` or a Prometheus scrape of `/metrics` wants the
machine, not one worker's share of it. Both are built here, from the workers' own
endpoints asked over their unix sockets (`Layout.http_socket`) with the run's hop
secret (cluster/forward.py), so each worker keeps serving only what it holds.

**Events** (`MachineEvents`). The serving worker follows every live worker's
`/api/v1/events` (the client's query and credentials passed on, so the same filter and
the same admin-key check apply) and writes one merged stream: each event keeps its
name and payload and gains `"worker": {"id", "pid"}`. A worker's own order is kept; the
workers interleave as their events come. When a worker's stream ends (it died, or was
stopped), the merged stream says what its subscribers lost: `inactive` for each of its
sources on air and `stopped` for each of its streams, with `"reason": "worker lost"`;
once the supervisor's table lists the worker again (restarted, a new pid), it is
followed again and its catch-up (the sources on air now) comes through as `active`.
The response's `X-Rtmp-Ingest-Worker` header names the worker that merges (the one
whose loss ends the stream itself). The merged stream obeys the hub's rule for a slow subscriber (api/events.py): events
are never waited for; a client `SUBSCRIBER_QUEUE_EVENTS` behind is cut off, reconnects
and gets the current state again. The catch-ups and a lost worker's ends do not count
against that bound (they are as many as the sources: a machine of thousands must not cut
every client off at once). A worker's stream that ends while the supervisor still lists
the worker (with the same pid, `LOST_CONFIRM_S` later) was cut by that worker, not lost:
the merged stream then ends too, and its client resyncs. A worker silent for
`EVENTS_READ_TIMEOUT_S` (no keepalive) is hung, and counts as lost.

**Metrics** (`MachineMetrics`). Every live worker's `/metrics` is scraped at once (each
bounded by `METRICS_SCRAPE_TIMEOUT_S`, so a stuck or dead worker costs the scrape that
long at most, not the scrape itself), every sample gains the label `worker="ID"`, and
families of one name are written once. Two families say how the workers are:
`rtmp_ingest_worker_up{worker}` (1: answered this scrape) and
`rtmp_ingest_worker_restarts_total{worker}` (the supervisor's restarts of it). Sums over
the machine are the scraper's (`sum without (worker) (…)`), as for any labelled target.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, Protocol

import httpx
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from rtmp_ingest.api.events import SUBSCRIBER_QUEUE_EVENTS
from rtmp_ingest.api.sse import CATCH_UP_END, SSE_KEEPALIVE_S, sse_block

log = logging.getLogger("rtmp_ingest.cluster")

#: How long the worker a scrape reached waits for each worker's metrics.
METRICS_SCRAPE_TIMEOUT_S: Final = 2.0
#: How soon a worker whose event stream could not be opened (it is restarting, or
#: not listening yet) is asked again, unless a new table from the supervisor comes first.
EVENTS_RETRY_S: Final = 0.5
#: How long opening a worker's event stream may take (it answers at once: catch-up).
EVENTS_CONNECT_TIMEOUT_S: Final = 5.0
#: A worker's event stream silent this long (it sends a keepalive every SSE_KEEPALIVE_S)
#: is a hung worker's: dropped like a lost one.
EVENTS_READ_TIMEOUT_S: Final = 3 * SSE_KEEPALIVE_S
#: How long a worker whose event stream ended may still be in the supervisor's table
#: (with the same pid) before it is taken for alive: then the merged stream ends instead
#: (its client reconnects and gets the current state, as from one worker).
LOST_CONFIRM_S: Final = 2.0
#: The longest SSE block a worker may send (one event: a source's tracks); longer is a
#: broken stream, dropped like a lost worker.
MAX_EVENT_BLOCK_BYTES: Final = 1024 * 1024
#: What the merged stream's ends of a lost worker's sources say.
WORKER_LOST: Final = "worker lost"

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class Machine(Protocol):
    """What the merges need of the worker (cluster/worker.py `WorkerAgent`)."""

    worker_id: int
    pids: dict[int, int]
    #: worker id → how often the supervisor restarted it
    restarts: dict[int, int]

    def live_workers(self) -> list[int]: ...

    @property
    def worker_count(self) -> int: ...

    async def wait_table_changed(self) -> None: ...


#: On the merge's request to another worker: this event stream is a leg of a subscriber
#: served elsewhere (its `rtmp_ingest_event_internal_subscribers`, not `…_subscribers`).
#: The merging worker's own leg goes without it: there the client is counted, once.
LEG_HEADER: Final = b"x-rtmp-ingest-leg"

#: A worker id → an HTTP client of that worker's internal socket (cluster/forward.py).
Clients = Callable[[int], httpx.AsyncClient]


#: The name `SseBlocks` gives the catch-up's end (api/sse.py `CATCH_UP_END`).
CAUGHT_UP: Final = ":live"
_CAUGHT_UP_BLOCK = CATCH_UP_END.rstrip(b"\n")


class SseBlocks:
    """Splits a text/event-stream into its events: `(name, payload)` per block.

    Comments (`: keepalive`), `retry:` and blocks without JSON data are skipped, except
    the catch-up's end, given as `(CAUGHT_UP, {})`.
    """

    def __init__(self, *, max_block_bytes: int = MAX_EVENT_BLOCK_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_block_bytes

    def feed(self, data: bytes) -> list[tuple[str, dict[str, Any]]]:
        """The events `data` completes; raises ValueError on a block over the limit."""
        self._buffer += data
        if b"\r" in self._buffer:  #: CRLF lines, also split across two reads
            self._buffer = bytearray(self._buffer.replace(b"\r\n", b"\n"))
        out: list[tuple[str, dict[str, Any]]] = []
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                if len(self._buffer) > self._max:
                    raise ValueError(f"an event stream block over {self._max} bytes")
                return out
            block = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            event = _parse_block(block)
            if event is not None:
                out.append(event)


def _parse_block(block: bytes) -> tuple[str, dict[str, Any]] | None:
    if block == _CAUGHT_UP_BLOCK:
        return CAUGHT_UP, {}
    name = "message"
    data: list[str] = []
    for raw in block.decode("utf-8", errors="replace").split("\n"):
        if not raw or raw.startswith(":"):
            continue
        field, _, value = raw.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if not data:
        return None
    try:
        payload = json.loads("\n".join(data))
    except ValueError:
        return None
    return (name, payload) if isinstance(payload, dict) else None


class _Overflow(Exception):
    """The merged stream's client fell too far behind."""


class _Resync(Exception):
    """A worker that is still there ended its stream: the merged stream ends too."""


class WorkerEvents:
    """One worker's part of the merged stream: what it said, and what its loss ends."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self.tag: dict[str, int] = {"id": worker_id, "pid": 0}
        #: sources on air (as the merged stream last said) and streams not yet stopped
        self._sources: dict[tuple[str, str], None] = {}
        self._streams: dict[str, None] = {}

    def joined(self, pid: int) -> None:
        self.tag = {"id": self.worker_id, "pid": pid}

    def event(self, name: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A worker's event as the merged stream sends it; remembers what it leaves on air."""
        stream = payload.get("stream")
        source = payload.get("sourceId")
        if isinstance(stream, str):
            if name == "stopped":
                self._streams.pop(stream, None)
                for key in [k for k in self._sources if k[0] == stream]:
                    del self._sources[key]
            else:
                self._streams[stream] = None
                if isinstance(source, str):
                    if name == "inactive":
                        self._sources.pop((stream, source), None)
                    elif name in ("active", "updated", "superseded", "reconnecting"):
                        self._sources[(stream, source)] = None
        return name, {**payload, "worker": self.tag}

    def lost(self) -> list[tuple[str, dict[str, Any]]]:
        """The ends of everything the lost worker left on air; forgets them."""
        out: list[tuple[str, dict[str, Any]]] = [
            (
                "inactive",
                {"stream": stream, "sourceId": source, "worker": self.tag, "reason": WORKER_LOST},
            )
            for stream, source in self._sources
        ]
        out += [
            ("stopped", {"stream": stream, "worker": self.tag, "reason": WORKER_LOST})
            for stream in self._streams
        ]
        self._sources.clear()
        self._streams.clear()
        return out


class MachineEvents:
    """`GET /api/v1/events` over every worker of the machine (see the module docstring)."""

    def __init__(self, machine: Machine, clients: Clients) -> None:
        self.machine = machine
        self.clients = clients

    async def __call__(
        self, scope: dict[str, Any], receive: Any, send: Any, headers: list[tuple[bytes, bytes]]
    ) -> None:
        url = "/api/v1/events"
        query = scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        me = self.machine.worker_id
        #: this worker answers first: its refusal (no admin key) is the client's answer
        own: httpx.Response | None
        try:
            own = await self._open(me, url, headers)
        except httpx.HTTPError as exc:
            await _send_error(send, 503, f"the event stream is not available: {exc}")
            return
        if own.status_code != 200:
            body = await own.aread()
            await own.aclose()
            await send(
                {
                    "type": "http.response.start",
                    "status": own.status_code,
                    "headers": [
                        (k, v) for k, v in own.headers.raw if k.lower() != b"transfer-encoding"
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        out, merged = trio.open_memory_channel[tuple[str, dict[str, Any]]](math.inf)
        try:
            async with trio.open_nursery() as nursery:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch_disconnect)
                for worker_id in range(self.machine.worker_count):
                    first = own if worker_id == me else None
                    nursery.start_soon(self._follow, worker_id, url, headers, out, first)
                own = None
                served_by = (b"x-rtmp-ingest-worker", str(me).encode())
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [*_HEADERS, served_by],
                    }
                )
                preamble = b": rtmp_ingest events (every worker of this machine)\nretry: 2000\n\n"
                await send({"type": "http.response.body", "body": preamble, "more_body": True})
                await _write(merged, send)
        except* _Overflow:
            log.info("merged event stream: a subscriber fell behind; cut off")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except* _Resync as group:
            log.info("merged event stream: %s; its subscriber resyncs", group.exceptions[0])
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if own is not None:
                with trio.CancelScope(shield=True):
                    await own.aclose()

    async def _open(
        self, worker_id: int, url: str, headers: list[tuple[bytes, bytes]]
    ) -> httpx.Response:
        client = self.clients(worker_id)
        if worker_id != self.machine.worker_id:
            headers = [*headers, (LEG_HEADER, b"1")]
        request = client.build_request(
            "GET",
            url,
            headers=headers,
            timeout=httpx.Timeout(EVENTS_CONNECT_TIMEOUT_S, read=EVENTS_READ_TIMEOUT_S),
        )
        return await client.send(request, stream=True)

    async def _follow(
        self,
        worker_id: int,
        url: str,
        headers: list[tuple[bytes, bytes]],
        out: trio.MemorySendChannel[tuple[str, dict[str, Any]]],
        first: httpx.Response | None,
    ) -> None:
        """Follows one worker for as long as the merged stream lasts, across its restarts."""
        part = WorkerEvents(worker_id)
        response = first
        while True:
            if response is None:
                response = await self._reopen(worker_id, url, headers)
            pid = self.machine.pids.get(worker_id, 0)
            part.joined(pid)
            hung = False
            try:
                if response.status_code == 200:
                    blocks = SseBlocks()
                    live = False  #: past its catch-up: its events count against the bound
                    async for chunk in response.aiter_raw():
                        for name, payload in blocks.feed(chunk):
                            if name == CAUGHT_UP:
                                live = True
                            else:
                                _offer(out, part.event(name, payload), bounded=live)
            except httpx.ReadTimeout:
                hung = True
                log.warning("merged event stream: worker=%d is silent: taken for lost", worker_id)
            except (httpx.HTTPError, ValueError) as exc:
                log.info("merged event stream: worker=%d's events ended: %s", worker_id, exc)
            finally:
                with trio.CancelScope(shield=True):  #: its socket is freed however we leave
                    await response.aclose()
                response = None
            if not hung and await self._still_there(worker_id, pid):
                raise _Resync(f"worker={worker_id} ended its event stream")
            for event in part.lost():
                _offer(out, event, bounded=False)
            with trio.move_on_after(EVENTS_RETRY_S):
                await self.machine.wait_table_changed()

    async def _still_there(self, worker_id: int, pid: int) -> bool:
        """Whether the worker is still listed, as `pid`, `LOST_CONFIRM_S` after its stream
        ended (a dead one leaves the supervisor's table within milliseconds)."""
        with trio.move_on_after(LOST_CONFIRM_S):
            while worker_id in self.machine.live_workers() and (
                self.machine.pids.get(worker_id, 0) == pid
            ):
                await self.machine.wait_table_changed()
            return False
        return True

    async def _reopen(
        self, worker_id: int, url: str, headers: list[tuple[bytes, bytes]]
    ) -> httpx.Response:
        """The worker's event stream once it is live and answers again."""
        while True:
            if worker_id in self.machine.live_workers():
                try:
                    return await self._open(worker_id, url, headers)
                except httpx.HTTPError:
                    pass
            with trio.move_on_after(EVENTS_RETRY_S):
                await self.machine.wait_table_changed()


def _offer(
    out: trio.MemorySendChannel[tuple[str, dict[str, Any]]],
    event: tuple[str, dict[str, Any]],
    *,
    bounded: bool,
) -> None:
    """Queues one event for the client; a live event past the bound cuts the client off."""
    if bounded and out.statistics().current_buffer_used >= SUBSCRIBER_QUEUE_EVENTS:
        raise _Overflow
    out.send_nowait(event)


async def _write(events: trio.MemoryReceiveChannel[tuple[str, dict[str, Any]]], send: Any) -> None:
    while True:
        with trio.move_on_after(SSE_KEEPALIVE_S) as scope:
            name, payload = await events.receive()
        body = b": keepalive\n\n" if scope.cancelled_caught else sse_block(name, payload)
        await send({"type": "http.response.body", "body": body, "more_body": True})


async def _send_error(send: Any, status: int, message: str) -> None:
    data = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


# -- metrics -----------------------------------------------------------------------------


class MachineMetrics:
    """`GET /metrics` over every worker of the machine (see the module docstring)."""

    def __init__(self, machine: Machine, clients: Clients) -> None:
        self.machine = machine
        self.clients = clients

    async def __call__(
        self, scope: dict[str, Any], send: Any, headers: list[tuple[bytes, bytes]]
    ) -> None:
        me = self.machine.worker_id
        answers: dict[int, httpx.Response] = {}
        live = self.machine.live_workers()
        if me not in live:
            live = [*live, me]

        async def scrape(worker_id: int) -> None:
            with trio.move_on_after(METRICS_SCRAPE_TIMEOUT_S):
                try:
                    answers[worker_id] = await self.clients(worker_id).get(
                        "/metrics", headers=headers, timeout=METRICS_SCRAPE_TIMEOUT_S
                    )
                except httpx.HTTPError as exc:
                    log.info("metrics: worker=%d did not answer: %s", worker_id, exc)

        async with trio.open_nursery() as nursery:
            for worker_id in live:
                nursery.start_soon(scrape, worker_id)
        own = answers.get(me)
        if own is None:
            #: no answer of its own: it cannot say whether the scrape may see the others
            await _send_error(send, 503, "this worker's metrics did not answer in time")
            return
        if own.status_code != 200:
            #: this worker's refusal (metrics protected, no admin key) is the answer
            await send(
                {
                    "type": "http.response.start",
                    "status": own.status_code,
                    "headers": [
                        (k, v) for k, v in own.headers.raw if k.lower() != b"transfer-encoding"
                    ],
                }
            )
            await send({"type": "http.response.body", "body": own.content})
            return
        texts = {w: r.text for w, r in answers.items() if r.status_code == 200}
        up = {w: w in texts for w in range(self.machine.worker_count)}
        body = await trio.to_thread.run_sync(merge_metrics, texts, up, dict(self.machine.restarts))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def merge_metrics(
    texts: Mapping[int, str], up: Mapping[int, bool], restarts: Mapping[int, int]
) -> bytes:
    """The workers' exposition texts as one, each sample labelled `worker="ID"`."""
    #: by name and type: the parser names a counter `x_total` family "x", which may also
    #: be a gauge's name (rtmp_ingest_connections is both)
    families: dict[tuple[str, str], Metric] = {}
    for worker_id in sorted(texts):
        label = str(worker_id)
        for family in text_string_to_metric_families(texts[worker_id]):
            key = (family.name, family.type)
            merged = families.get(key)
            if merged is None:
                merged = families[key] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                labels = dict(sample.labels)
                if "worker" in labels:  #: a label of its own keeps its value, renamed
                    labels["exported_worker"] = labels.pop("worker")
                labels["worker"] = label
                merged.add_sample(
                    sample.name, labels, sample.value, sample.timestamp, sample.exemplar
                )
    workers_up = Metric("rtmp_ingest_worker_up", "1 if the worker answered this scrape", "gauge")
    restarted = Metric(
        "rtmp_ingest_worker_restarts", "Times the supervisor restarted the worker", "counter"
    )
    for worker_id in sorted(up):
        labels = {"worker": str(worker_id)}
        workers_up.add_sample("rtmp_ingest_worker_up", labels, 1.0 if up[worker_id] else 0.0)
        restarted.add_sample(
            "rtmp_ingest_worker_restarts_total", labels, float(restarts.get(worker_id, 0))
        )
    families[(workers_up.name, workers_up.type)] = workers_up
    families[(restarted.name, restarted.type)] = restarted
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families.values()))
    return generate_latest(registry)


class _Families:
    """A prometheus_client collector of ready families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)

"""The whole machine's events and metrics (cluster/machine.py, docs/spec.md §9).

The SSE splitter by the parser rules (round trip, every split, garbage); what a lost
worker's end says (against a model); the metrics merge; and `MachineEvents` over two
fake workers served by httpx's mock transport — a subscriber of the merged stream sees
both workers' events, the lost worker's sources end, and the restarted worker's come back.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rtmp_ingest.api.sse import CATCH_UP_END, sse_block
from rtmp_ingest.cluster import machine
from rtmp_ingest.cluster.machine import (
    CAUGHT_UP,
    WORKER_LOST,
    MachineEvents,
    MachineMetrics,
    SseBlocks,
    WorkerEvents,
    merge_metrics,
)

NAMES = st.sampled_from(["active", "updated", "superseded", "reconnecting", "inactive", "stopped"])
PAYLOADS = st.fixed_dictionaries(
    {"stream": st.sampled_from(["live/a", "live/b"])},
    optional={
        "sourceId": st.sampled_from(["cam1", "cam2", "ünï"]),
        "feedId": st.integers(0, 10**6),
        "note": st.text(alphabet='ab "\\\nü', max_size=20),
    },
)
EVENTS = st.lists(st.tuples(NAMES, PAYLOADS), max_size=12)


def wire(events: list[tuple[str, dict[str, Any]]], comments: bool = True) -> bytes:
    out = b": rtmp_ingest events\nretry: 2000\n\n" if comments else b""
    for name, payload in events:
        out += sse_block(name, payload)
        if comments:
            out += b": keepalive\n\n"
    return out


# -- the splitter ----------------------------------------------------------------------


@given(EVENTS)
def test_every_event_comes_out_as_it_went_in(events):
    assert SseBlocks().feed(wire(events)) == events


@given(EVENTS.filter(bool))
def test_fed_a_byte_at_a_time_the_same_events_come_out(events):
    blocks = SseBlocks()
    data = wire(events)
    out = []
    for i in range(len(data)):
        out += blocks.feed(data[i : i + 1])
    assert out == events


@given(EVENTS, st.data())
def test_split_anywhere_the_same_events_come_out(events, data):
    raw = wire(events)
    cut = data.draw(st.integers(0, len(raw)))
    blocks = SseBlocks()
    assert blocks.feed(raw[:cut]) + blocks.feed(raw[cut:]) == events


def test_crlf_lines_and_multiline_data_are_read_however_split():
    raw = b'event: active\r\ndata: {"stream":\r\ndata: "live/a"}\r\n\r\n'
    for cut in range(len(raw) + 1):
        blocks = SseBlocks()
        assert blocks.feed(raw[:cut]) + blocks.feed(raw[cut:]) == [
            ("active", {"stream": "live/a"})
        ], cut


def test_the_end_of_the_catch_up_is_told():
    raw = sse_block("active", {"stream": "live/a"}) + CATCH_UP_END + b": keepalive\n\n"
    assert SseBlocks().feed(raw) == [("active", {"stream": "live/a"}), (CAUGHT_UP, {})]


@given(st.binary(max_size=300))
def test_garbage_gives_events_or_nothing_never_another_error(data):
    try:
        for name, payload in SseBlocks(max_block_bytes=64).feed(data):
            assert isinstance(name, str) and isinstance(payload, dict)
    except ValueError as exc:
        assert "over 64 bytes" in str(exc)


def test_a_block_that_never_ends_is_refused_at_the_limit():
    blocks = SseBlocks(max_block_bytes=100)
    assert blocks.feed(b"data: " + b"x" * 90) == []
    with pytest.raises(ValueError, match="over 100 bytes"):
        blocks.feed(b"x" * 20)


# -- what a lost worker's end says -------------------------------------------------------


@given(EVENTS)
def test_a_lost_worker_ends_exactly_what_it_left_on_air(events):
    part = WorkerEvents(1)
    part.joined(4242)
    sources: set[tuple[str, str]] = set()
    streams: set[str] = set()
    for name, payload in events:
        out_name, out = part.event(name, payload)
        assert (out_name, out) == (name, {**payload, "worker": {"id": 1, "pid": 4242}})
        stream, source = payload["stream"], payload.get("sourceId")
        if name == "stopped":
            streams.discard(stream)
            sources = {s for s in sources if s[0] != stream}
            continue
        streams.add(stream)
        if source is not None:
            (sources.discard if name == "inactive" else sources.add)((stream, source))
    lost = part.lost()
    tag = {"id": 1, "pid": 4242}
    assert {(p["stream"], p["sourceId"]) for n, p in lost if n == "inactive"} == sources
    assert {p["stream"] for n, p in lost if n == "stopped"} == streams
    assert all(p["worker"] == tag and p["reason"] == WORKER_LOST for _n, p in lost)
    #: the inactive ends come before their stream's stop
    names = [n for n, _p in lost]
    assert names == sorted(names, key=lambda n: n != "inactive")
    assert part.lost() == []


# -- the metrics merge -------------------------------------------------------------------


def worker_text(publishes: int, *, extra: bool = False) -> str:
    registry = CollectorRegistry()
    Counter("rtmp_ingest_publishes", "Publishes", ["protocol"], registry=registry).labels(
        "rtmp"
    ).inc(publishes)
    Gauge("rtmp_ingest_streams", "Streams", registry=registry).set(publishes * 2)
    Histogram("rtmp_ingest_wait_seconds", "Waits", buckets=[1.0], registry=registry).observe(0.5)
    if extra:
        Gauge("rtmp_ingest_only_here", "Only on one worker", registry=registry).set(7)
    return generate_latest(registry).decode()


def test_merged_metrics_label_every_sample_and_name_every_family_once():
    text = merge_metrics(
        {0: worker_text(3), 1: worker_text(5, extra=True)},
        {0: True, 1: True, 2: False},
        {1: 2},
    ).decode()
    assert text.count("# TYPE rtmp_ingest_publishes_total counter") == 1
    assert text.count("# TYPE rtmp_ingest_wait_seconds histogram") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    values = {
        (s.name, s.labels.get("worker"), s.labels.get("le")): s.value
        for f in families.values()
        for s in f.samples
    }
    assert values[("rtmp_ingest_publishes_total", "0", None)] == 3
    assert values[("rtmp_ingest_publishes_total", "1", None)] == 5
    assert values[("rtmp_ingest_streams", "1", None)] == 10
    assert values[("rtmp_ingest_wait_seconds_bucket", "0", "1.0")] == 1
    assert values[("rtmp_ingest_only_here", "1", None)] == 7
    assert ("rtmp_ingest_only_here", "0", None) not in values
    assert [values[("rtmp_ingest_worker_up", w, None)] for w in "012"] == [1, 1, 0]
    assert [values[("rtmp_ingest_worker_restarts_total", w, None)] for w in "012"] == [0, 2, 0]
    assert {s.labels["protocol"] for s in families["rtmp_ingest_publishes"].samples} == {"rtmp"}


# -- the merged event stream over two fake workers ---------------------------------------


class FakeMachine:
    """Two workers as the supervisor's table says; worker 0 is the one reached."""

    def __init__(self) -> None:
        self.worker_id = 0
        self.pids = {0: 100, 1: 200}
        self.restarts: dict[int, int] = {}
        self.live = [0, 1]
        self._changed = trio.Event()

    def live_workers(self) -> list[int]:
        return list(self.live)

    @property
    def worker_count(self) -> int:
        return 2

    async def wait_table_changed(self) -> None:
        await self._changed.wait()

    def table(self, *, live: list[int], pids: dict[int, int]) -> None:
        self.live, self.pids = live, pids
        self._changed.set()
        self._changed = trio.Event()


class FakeWorker:
    """A worker's /api/v1/events and /metrics: what the test pushes is what it says."""

    def __init__(self) -> None:
        self.status = 200
        self.snapshot: list[tuple[str, dict[str, Any]]] = []
        self.streams: list[trio.MemorySendChannel[bytes | None]] = []
        self.requests: list[httpx.Request] = []
        self.metrics = ""

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/metrics":
            return httpx.Response(self.status, text=self.metrics)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "admin key required"})
        send, receive = trio.open_memory_channel[bytes | None](100)
        self.streams.append(send)
        first = b": rtmp_ingest events\nretry: 2000\n\n" + wire(self.snapshot, comments=False)
        first += CATCH_UP_END

        async def body():
            yield first
            async for chunk in receive:
                if chunk is None:
                    return  #: the worker is gone: its stream ends
                yield chunk

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    def say(self, name: str, payload: dict[str, Any]) -> None:
        self.streams[-1].send_nowait(sse_block(name, payload))

    def die(self) -> None:
        self.streams[-1].send_nowait(None)


class Subscriber:
    """The merged stream's ASGI client: what it was sent, as events."""

    def __init__(self) -> None:
        self.start: dict[str, Any] = {}
        self.body = b""
        self.changed = trio.Event()
        self.gone = trio.Event()
        self._blocks = SseBlocks()
        self._events: list[tuple[str, dict[str, Any]]] = []

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        else:
            body = message.get("body", b"")
            self.body += body
            if self.start.get("status") == 200:
                self._events += self._blocks.feed(body)
        self.changed.set()
        self.changed = trio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self._events)

    async def wait_for(self, predicate: Any) -> None:
        with trio.fail_after(10):
            while not predicate(self.events()):
                await self.changed.wait()


def clients_of(workers: dict[int, FakeWorker]) -> Any:
    made: dict[int, httpx.AsyncClient] = {}

    def client(worker_id: int) -> httpx.AsyncClient:
        if worker_id not in made:
            transport = httpx.MockTransport(workers[worker_id].handle)
            made[worker_id] = httpx.AsyncClient(transport=transport, base_url="http://worker")
        return made[worker_id]

    return client


HEADERS = [(b"x-rtmp-ingest-hop", b"s3cret"), (b"authorization", b"Bearer admin")]
SCOPE = {"type": "http", "method": "GET", "path": "/api/v1/events", "query_string": b""}


async def test_the_merged_stream_follows_both_workers_through_a_loss_and_a_restart(nursery):
    fake = FakeMachine()
    workers = {0: FakeWorker(), 1: FakeWorker()}
    workers[1].snapshot = [("active", {"stream": "live/b", "sourceId": "cam1"})]
    client = Subscriber()
    merged = MachineEvents(fake, clients_of(workers))
    finished = trio.Event()

    async def subscribe() -> None:
        scope = dict(SCOPE, query_string=b"stream=live/b")
        await merged(scope, client.receive, client.send, HEADERS)
        finished.set()

    nursery.start_soon(subscribe)
    #: worker 1's catch-up comes through, tagged
    await client.wait_for(lambda events: len(events) == 1)
    assert client.start["status"] == 200
    assert dict(client.start["headers"])[b"x-rtmp-ingest-worker"] == b"0"
    assert client.events() == [
        ("active", {"stream": "live/b", "sourceId": "cam1", "worker": {"id": 1, "pid": 200}})
    ]
    #: the client's query and credentials reach every worker
    for worker in workers.values():
        assert worker.requests[0].url.query == b"stream=live/b"
        assert worker.requests[0].headers["authorization"] == "Bearer admin"
    workers[0].say("active", {"stream": "live/a", "sourceId": "cam9"})
    workers[1].say("active", {"stream": "live/b", "sourceId": "cam2"})
    await client.wait_for(lambda events: len(events) == 3)

    # -- worker 1 is killed: its two sources and its stream end, worker 0's stay -------
    fake.table(live=[0], pids={0: 100})
    workers[1].die()
    await client.wait_for(lambda events: len(events) == 6)
    lost = client.events()[3:]
    tag = {"id": 1, "pid": 200}
    assert sorted((n, p.get("sourceId")) for n, p in lost) == [
        ("inactive", "cam1"),
        ("inactive", "cam2"),
        ("stopped", None),
    ]
    assert all(p["stream"] == "live/b" and p["worker"] == tag for _n, p in lost)
    assert all(p["reason"] == WORKER_LOST for _n, p in lost)

    # -- restarted (a new pid): followed again, its catch-up says what is on air -------
    workers[1].snapshot = [("active", {"stream": "live/b", "sourceId": "cam1"})]
    fake.table(live=[0, 1], pids={0: 100, 1: 201})
    await client.wait_for(lambda events: len(events) == 7)
    assert client.events()[6] == (
        "active",
        {"stream": "live/b", "sourceId": "cam1", "worker": {"id": 1, "pid": 201}},
    )
    workers[0].say("inactive", {"stream": "live/a", "sourceId": "cam9"})
    await client.wait_for(lambda events: len(events) == 8)
    assert client.events()[7][1]["worker"] == {"id": 0, "pid": 100}

    # -- the client leaves: the merge ends (and with it its follow of every worker) ----
    client.gone.set()
    with trio.fail_after(10):
        await finished.wait()


async def test_a_refusal_of_the_worker_reached_is_the_answer():
    fake = FakeMachine()
    workers = {0: FakeWorker(), 1: FakeWorker()}
    workers[0].status = 401
    client = Subscriber()
    with trio.fail_after(10):
        await MachineEvents(fake, clients_of(workers))(SCOPE, client.receive, client.send, [])
    assert client.start["status"] == 401
    assert json.loads(client.body) == {"error": "admin key required"}
    assert workers[1].requests == [], "nobody else was asked"


async def test_a_subscriber_that_falls_behind_is_cut_off(monkeypatch):
    monkeypatch.setattr(machine, "SUBSCRIBER_QUEUE_EVENTS", 8)
    fake = FakeMachine()
    workers = {0: FakeWorker(), 1: FakeWorker()}
    stuck = trio.Event()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("more_body") and len(sent) > 2:
            await stuck.wait()  #: a client that stopped reading

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def run() -> None:
            await MachineEvents(fake, clients_of(workers))(SCOPE, receive, send, [])
            done.set()

        nursery.start_soon(run)
        with trio.fail_after(10):
            while not workers[1].streams:
                await trio.sleep(0.01)
            for n in range(20):
                workers[1].say("active", {"stream": "live/b", "sourceId": f"cam{n}"})
            await done.wait()
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_the_machine_scrape_answers_without_a_worker_that_is_down():
    fake = FakeMachine()
    fake.restarts = {1: 3}
    workers = {0: FakeWorker(), 1: FakeWorker()}
    workers[0].metrics = worker_text(4)

    async def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    workers[1].handle = down  # type: ignore[method-assign]
    client = Subscriber()
    with trio.fail_after(10):
        await MachineMetrics(fake, clients_of(workers))(SCOPE, client.send, HEADERS)
    assert client.start["status"] == 200
    text = client.body.decode()
    assert 'rtmp_ingest_worker_up{worker="0"} 1.0' in text
    assert 'rtmp_ingest_worker_up{worker="1"} 0.0' in text
    assert 'rtmp_ingest_worker_restarts_total{worker="1"} 3.0' in text
    assert 'rtmp_ingest_publishes_total{protocol="rtmp",worker="0"} 4.0' in text


async def test_metrics_protected_on_the_worker_reached_stay_protected():
    fake = FakeMachine()
    workers = {0: FakeWorker(), 1: FakeWorker()}
    workers[0].status = 401
    workers[0].metrics = '{"error": "admin key required"}'
    client = Subscriber()
    with trio.fail_after(10):
        await MachineMetrics(fake, clients_of(workers))(SCOPE, client.send, [])
    assert client.start["status"] == 401
    assert b"admin key required" in client.body


async def test_a_worker_that_ends_its_stream_but_lives_makes_the_client_resync(monkeypatch):
    """Not a loss (its hub cut the merge off, say): no "worker lost" ends, the merged
    stream ends, and the client reconnects to the current state."""
    monkeypatch.setattr(machine, "LOST_CONFIRM_S", 0.2)
    fake = FakeMachine()
    workers = {0: FakeWorker(), 1: FakeWorker()}
    workers[1].snapshot = [("active", {"stream": "live/b", "sourceId": "cam1"})]
    client = Subscriber()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(MachineEvents(fake, clients_of(workers)), SCOPE, client.receive,
                               client.send, [])  # fmt: skip
            await client.wait_for(lambda events: len(events) == 1)
            workers[1].die()  #: its stream ends; the table still lists it with its pid
    assert [n for n, _p in client.events()] == ["active"]
    assert client.body.endswith(b"\n\n")


async def test_a_catch_up_of_thousands_of_sources_is_not_a_slow_client():
    fake = FakeMachine()
    workers = {0: FakeWorker(), 1: FakeWorker()}
    for worker_id, worker in workers.items():
        worker.snapshot = [
            ("active", {"stream": f"live/{worker_id}-{n // 4}", "sourceId": f"cam{n % 4}"})
            for n in range(1500)
        ]
    client = Subscriber()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(MachineEvents(fake, clients_of(workers)), SCOPE, client.receive,
                           client.send, [])  # fmt: skip
        await client.wait_for(lambda events: len(events) == 3000)
        client.gone.set()


def test_a_counter_and_a_gauge_of_one_base_name_stay_two_families():
    #: as api/metrics.py writes them (a collector, so prometheus_client lets both be)
    text = (
        "# HELP rtmp_ingest_connections Open\n# TYPE rtmp_ingest_connections gauge\n"
        "rtmp_ingest_connections 3.0\n"
        "# HELP rtmp_ingest_connections_total Accepted\n"
        "# TYPE rtmp_ingest_connections_total counter\nrtmp_ingest_connections_total 9.0\n"
        '# HELP rtmp_ingest_pool A pool\n# TYPE rtmp_ingest_pool gauge\nrtmp_ingest_pool{worker="x"} 1.0\n'
    )
    merged = merge_metrics({0: text, 1: text}, {0: True, 1: True}, {}).decode()
    assert "# TYPE rtmp_ingest_connections gauge" in merged
    assert "# TYPE rtmp_ingest_connections_total counter" in merged
    assert 'rtmp_ingest_connections_total{worker="1"} 9.0' in merged
    assert 'rtmp_ingest_pool{exported_worker="x",worker="0"} 1.0' in merged


async def test_a_scrape_whose_own_worker_does_not_answer_is_503():
    fake = FakeMachine()
    workers = {0: FakeWorker(), 1: FakeWorker()}
    workers[1].metrics = worker_text(1)

    async def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    workers[0].handle = down  # type: ignore[method-assign]
    client = Subscriber()
    with trio.fail_after(10):
        await MachineMetrics(fake, clients_of(workers))(SCOPE, client.send, [])
    assert client.start["status"] == 503

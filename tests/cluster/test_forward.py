"""HTTP in a worker (cluster/forward.py): which requests go to a stream's owner, and how.

Two Forwarders (worker 0 and worker 1) around fake ASGI apps, wired to each other in
memory through httpx's ASGI transport instead of unix sockets: what a client of either
worker gets, and what the owner's app sees.
"""

from __future__ import annotations

import json
import socket as stdlib_socket
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig

from rtmp_ingest.api.serve import HttpLimits, HttpListener
from rtmp_ingest.cluster import forward
from rtmp_ingest.cluster.forward import (
    CLIENT_HEADER,
    HOP_HEADER,
    Forwarder,
    one_per_path,
    stream_of,
)

SECRET = "s3cret"


@pytest.mark.parametrize(
    ("path", "stream"),
    [
        ("/api/v1/streams/live/show", "live/show"),
        ("/api/v1/streams/live/show/", "live/show"),
        ("/api/v1/streams/live/show/sources/cam1", "live/show"),
        ("/api/v1/streams/live/show/feeds/12", "live/show"),
        ("/hls/live/show/index.m3u8", "live/show"),
        ("/hls/live/show/cam1/video0/part-3.1.m4s", "live/show"),
        ("/live/show.flv", "live/show"),
        ("/whip/live/show", "live/show"),
        ("/whep/live/show", "live/show"),
        ("/api/v1/streams", None),
        ("/api/v1/tokens", None),
        ("/metrics", None),
        ("/healthz", None),
        ("/view/live/show", None),
        ("/hls/live", None),
    ],
)
def test_the_stream_a_request_is_about(path, stream):
    assert stream_of(path) == stream


class FakeWorker:
    """One worker: its app records what it served; its Forwarder reaches the others."""

    def __init__(self, worker_id: int, owners: dict[str, int], pool: dict[int, Any]) -> None:
        self.worker_id = worker_id
        self.pids = {0: 100, 1: 101}
        self.owners = owners
        self.pool = pool
        self.seen: list[dict[str, Any]] = []
        self.forwarder = Forwarder(self.app, self)
        pool[worker_id] = self

    # -- the Cluster protocol --
    def owner_id(self, stream_path: str) -> int:
        return self.owners.get(stream_path, 0)

    def live_workers(self) -> list[int]:
        return sorted(self.pool)

    def http_socket(self, worker_id: int) -> str:
        return f"/unused/w{worker_id}"

    @property
    def hop_secret(self) -> str:
        return SECRET

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append({**scope, "body": body})
        path = scope["path"]
        status, headers, payload = 200, [(b"content-type", b"application/json")], {}
        if path == "/api/v1/streams":
            payload = {
                "streams": [{"path": p} for p, w in self.owners.items() if w == self.worker_id]
            }
        elif path.startswith("/api/v1/streams/"):
            payload = {"path": stream_of(path)}
        elif path.startswith("/whip/"):
            status = 201
            headers.append((b"location", b"/whip-session/abc"))
        else:
            payload = {"served_by": self.worker_id, "client": list(scope.get("client") or [])}
        data = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


@pytest.fixture
def machine(monkeypatch):
    pool: dict[int, FakeWorker] = {}
    owners = {"live/a": 0, "live/b": 1}
    workers = [FakeWorker(0, owners, pool), FakeWorker(1, owners, pool)]

    def client_for(self: Forwarder, worker_id: int) -> httpx.AsyncClient:
        #: the internal hop, in memory: the target worker's own Forwarder (hop header checked)
        transport = httpx.ASGITransport(app=pool[worker_id].forwarder, client=("local", 0))
        return httpx.AsyncClient(transport=transport, base_url="http://worker")

    monkeypatch.setattr(Forwarder, "_client", client_for)
    return workers


def outside(worker: FakeWorker) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=worker.forwarder, client=("198.51.100.7", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://example.test")


async def test_a_stream_request_is_served_by_its_owner_whatever_worker_it_reached(machine):
    first, second = machine
    async with outside(first) as client:
        response = await client.get("/live/b.flv?sourceId=cam1")
    assert response.json()["served_by"] == 1
    #: the owner saw the real client, not the internal hop; our headers are gone
    assert response.json()["client"] == ["198.51.100.7", 40000]
    (seen,) = second.seen
    assert seen["query_string"] == b"sourceId=cam1"
    assert not [h for h in seen["headers"] if h[0] in (HOP_HEADER, CLIENT_HEADER)]
    assert first.seen == []


async def test_a_request_for_a_local_stream_is_served_here(machine):
    first, second = machine
    async with outside(first) as client:
        response = await client.get("/hls/live/a/index.m3u8")
    assert response.json()["served_by"] == 0
    assert second.seen == []


async def test_the_stream_list_covers_every_worker_and_names_them(machine):
    first, _ = machine
    async with outside(first) as client:
        listing = (await client.get("/api/v1/streams")).json()
    assert sorted(
        (s["path"], s["worker"]["id"], s["worker"]["pid"]) for s in listing["streams"]
    ) == [
        ("live/a", 0, 100),
        ("live/b", 1, 101),
    ]
    assert [w["id"] for w in listing["workers"]] == [0, 1]


async def test_a_stream_resource_says_which_worker_serves_it(machine):
    _, second = machine
    async with outside(second) as client:
        stream = (await client.get("/api/v1/streams/live/a")).json()
    assert stream == {"path": "live/a", "worker": {"id": 0, "pid": 100}}


async def test_a_whip_session_location_leads_back_to_the_worker_that_serves_it(machine):
    first, second = machine
    async with outside(first) as client:
        response = await client.post("/whip/live/b", content=b"v=0 offer")
        assert response.status_code == 201
        assert response.headers["location"] == "/whip-session/abc?w=1"
        assert second.seen[-1]["body"] == b"v=0 offer"
        await client.delete(response.headers["location"])
    assert second.seen[-1]["method"] == "DELETE"
    assert second.seen[-1]["path"] == "/whip-session/abc"
    assert first.seen == []


async def test_an_outside_client_cannot_pose_as_a_worker(machine):
    first, _ = machine
    async with outside(first) as client:
        response = await client.get("/live/a.flv", headers={HOP_HEADER.decode(): "guess"})
        assert response.status_code == 403
        spoofed = await client.get("/live/a.flv", headers={CLIENT_HEADER.decode(): "10.0.0.1:1"})
    #: without the secret, a client header is dropped: the app sees the real address
    assert spoofed.json()["client"] == ["198.51.100.7", 40000]


async def test_a_revocation_reaches_every_worker(machine):
    first, second = machine
    async with outside(second) as client:
        response = await client.post("/api/v1/tokens/t123/revoke")
    assert response.status_code == 200
    assert [s["path"] for s in first.seen] == ["/api/v1/tokens/t123/revoke"]
    assert [s["path"] for s in second.seen] == ["/api/v1/tokens/t123/revoke"]


async def test_an_unreachable_owner_is_a_502_naming_it(machine, monkeypatch):
    first, _ = machine

    def broken(self: Forwarder, worker_id: int) -> httpx.AsyncClient:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("no such socket", request=request)

        return httpx.AsyncClient(transport=httpx.MockTransport(refuse), base_url="http://worker")

    monkeypatch.setattr(Forwarder, "_client", broken)
    async with outside(first) as client:
        response = await client.get("/live/b.flv")
    assert response.status_code == 502
    assert "(1)" in response.json()["error"]
    assert forward.FORWARD_CONNECT_TIMEOUT_S > 0


def test_with_a_cluster_each_stream_is_listed_once_by_the_worker_that_holds_it():
    """Every worker lists the cluster's streams it does not hold (local: false)."""
    w0, w1 = {"id": 0, "pid": 100}, {"id": 1, "pid": 101}
    merged = one_per_path(
        [
            {"path": "live/mine", "local": True, "owner": "m.w0", "worker": w0},
            {"path": "live/sibling", "local": False, "owner": "m.w1", "worker": w0},
            {"path": "live/far", "local": False, "owner": "other.w0", "worker": w0},
            {"path": "live/mine", "local": False, "owner": "m.w0", "worker": w1},
            {"path": "live/sibling", "local": True, "owner": "m.w1", "worker": w1},
            {"path": "live/far", "local": False, "owner": "other.w0", "worker": w1},
            {"path": "live/plain", "worker": w1},  #: no [cluster]: no "local" at all
        ]
    )
    assert [(s["path"], s.get("worker")) for s in merged] == [
        ("live/mine", w0),
        ("live/far", None),
        ("live/sibling", w1),
        ("live/plain", w1),
    ]


async def test_many_long_responses_forwarded_to_one_worker_all_start(nursery, tmp_path):
    """150 HTTP-FLV viewers (say) reached worker 0 and are served by worker 1, over the
    real internal unix socket and worker 1's real HTTP listener with tight limits: every
    one starts (neither the per-address limit, which all internal connections would share,
    nor a cap of the forwarder's connection pool makes any of them wait or fail)."""

    async def endless(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            await send({"type": "http.response.body", "body": b"flv", "more_body": True})
            await trio.sleep(1)

    path = str(tmp_path / "w1.http")
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(256)
    config = HypercornConfig()
    config.accesslog = None
    limits = HttpLimits(max_connections=100, max_connections_per_address=64)
    owner = HttpListener(Forwarder(endless, Internal(1, path)), config, limits)
    await nursery.start(owner.serve, [trio.SocketListener(sock)])
    front = Forwarder(endless, Internal(0, path))
    started: list[int] = []

    async def viewer(n: int) -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/live/b.flv",
            "raw_path": b"/live/b.flv",
            "query_string": b"",
            "headers": [(b"host", b"t")],
            "client": ("198.51.100.7", 40000 + n),
        }

        async def receive() -> dict[str, Any]:
            await trio.sleep_forever()
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.append(message["status"])

        await front(scope, receive, send)

    async with trio.open_nursery() as viewers:
        for n in range(150):
            viewers.start_soon(viewer, n)
        with trio.fail_after(30):
            while len(started) < 150:
                await trio.sleep(0.05)
        #: counted as internal: none of them uses the owner's outside clients' allowance
        assert owner.stats.open == owner.stats.internal == 150
        viewers.cancel_scope.cancel()
    assert started == [200] * 150
    assert owner.stats.refused == 0 and owner.stats.total == 150


class Internal:
    """The Cluster protocol for one real internal socket: every stream is worker 1's."""

    def __init__(self, worker_id: int, path: str) -> None:
        self.worker_id = worker_id
        self.pids = {0: 100, 1: 101}
        self.restarts: dict[int, int] = {}
        self.path = path

    def owner_id(self, stream_path: str) -> int:
        return 1

    def live_workers(self) -> list[int]:
        return [0, 1]

    @property
    def worker_count(self) -> int:
        return 2

    async def wait_table_changed(self) -> None:
        await trio.sleep_forever()

    def http_socket(self, worker_id: int) -> str:
        return self.path

    @property
    def hop_secret(self) -> str:
        return SECRET

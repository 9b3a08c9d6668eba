"""The event stream: ISO times, catch-up, and no subscriber left behind however the client leaves."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from rtmp_ingest.api.defs import INTERNAL_LEG_SCOPE
from rtmp_ingest.api.events import EventHub, event_json
from rtmp_ingest.api.http import build_app
from rtmp_ingest.bundle import Active, Inactive, Reconnecting
from rtmp_ingest.bundle.records import EndReason
from tests.api.fake import AUDIO, VIDEO, WALL_ORIGIN_S, FakeServer, live_stream

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/api/v1/events",
    "raw_path": b"/api/v1/events",
    "query_string": b"stream=live/show",
    "root_path": "",
    "headers": [(b"host", b"api.test")],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 8080),
}


def test_event_times_are_iso_like_the_rest_api():
    active = Active(
        stream_path="live/show",
        source_id="cam1",
        feed_id=1,
        tracks=(VIDEO, AUDIO),
        timeline_origin_wall_s=WALL_ORIGIN_S + 0.25,
    )
    name, payload = event_json(active, wall_origin_s=WALL_ORIGIN_S)
    assert name == "active"
    assert payload["timelineOrigin"] == "2026-01-01T00:00:00.250Z"
    assert [t["trackId"] for t in payload["tracks"]] == ["video0", "audio0"]
    reconnecting = Reconnecting(
        stream_path="live/show",
        source_id="cam1",
        feed_id=1,
        reason=EndReason.DISCONNECT,
        deadline_s=5.0,
    )
    assert event_json(reconnecting, wall_origin_s=WALL_ORIGIN_S)[1]["deadline"] == (
        "2026-01-01T00:00:05.000Z"
    )


class Client:
    """The ASGI side of one SSE request: what the app sent, and a switch to leave."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.leave = trio.Event()
        self.got_body = trio.Event()
        self.requested = False

    async def receive(self) -> dict[str, Any]:
        if not self.requested:  #: the (empty) request body comes first, as from any server
            self.requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body":
            self.got_body.set()

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        text = b"".join(m.get("body", b"") for m in self.sent[1:]).decode()
        out = []
        for block in text.split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in lines:
                out.append((lines["event"], json.loads(lines["data"])))
        return out


async def test_a_subscriber_catches_up_follows_and_is_removed_when_it_leaves():
    server = FakeServer()
    live_stream(server)
    app = build_app(server)
    client = Client()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, dict(SCOPE), client.receive, client.send)
        await client.got_body.wait()
        assert server.hub.subscribers == 1
        server.hub.publish(
            Inactive(stream_path="live/other", source_id="x"), wall_origin_s=WALL_ORIGIN_S
        )
        server.hub.publish(
            Inactive(stream_path="live/show", source_id="cam1"), wall_origin_s=WALL_ORIGIN_S
        )
        await trio.testing.wait_all_tasks_blocked()
        client.leave.set()
    assert server.hub.subscribers == 0
    events = client.events()
    assert [(n, p["sourceId"]) for n, p in events] == [
        ("active", "cam1"),
        ("active", ""),
        ("inactive", "cam1"),
    ]
    assert events[0][1]["timelineOrigin"] == "2026-01-01T00:00:10.000Z"
    assert client.sent[0]["status"] == 200


async def test_another_workers_merge_is_counted_as_a_leg_not_a_subscriber():
    """With workers each client's merge follows every worker: the client counts once, on
    the worker that merges for it; the other workers count a leg."""
    server = FakeServer()
    app = build_app(server)
    client = Client()
    async with trio.open_nursery() as nursery:
        scope = {**SCOPE, INTERNAL_LEG_SCOPE: True}
        nursery.start_soon(app, scope, client.receive, client.send)
        await client.got_body.wait()
        assert (server.hub.subscribers, server.hub.internal_subscribers) == (0, 1)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            metrics = (await http.get("/metrics")).text
        assert "rtmp_ingest_event_subscribers 0.0" in metrics
        assert "rtmp_ingest_event_internal_subscribers 1.0" in metrics
        client.leave.set()
    assert (server.hub.subscribers, server.hub.internal_subscribers) == (0, 0)


async def test_a_client_that_leaves_before_the_body_starts_leaves_no_subscriber():
    server = FakeServer()
    app = build_app(server)
    client = Client()
    client.leave.set()  #: gone before the app runs

    async def failing_send(message: dict[str, Any]) -> None:
        raise OSError("connection reset")  # what a server may raise for a vanished client

    with pytest.RaisesGroup(OSError, allow_unwrapped=True, flatten_subgroups=True):
        await app(dict(SCOPE), client.receive, failing_send)
    assert server.hub.subscribers == 0
    await app(dict(SCOPE), client.receive, client.send)
    assert server.hub.subscribers == 0


async def test_a_subscriber_the_hub_cuts_off_gets_the_end_of_its_stream():
    server = FakeServer()
    app = build_app(server)
    client = Client()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, dict(SCOPE), client.receive, client.send)
        await client.got_body.wait()
        await server.hub.aclose()
    assert server.hub.subscribers == 0
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_subscriber_that_falls_too_far_behind_is_dropped_and_counted():
    hub = EventHub()
    subscription = hub.subscribe()
    for _ in range(2000):
        hub.publish(Inactive(stream_path="a/b", source_id=""), wall_origin_s=0.0)
    assert hub.subscribers == 0 and hub.dropped_subscribers == 1
    subscription.close()  #: idempotent

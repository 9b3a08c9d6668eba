"""End to end: bad clients get a clear error and disturb nobody; limits and timeouts hold."""

from __future__ import annotations

import os

import pytest
import trio

from rtmp_ingest.rtmp import events as ev
from tests.tools import clients
from tests.tools.rtmp_client import TrioRtmpClient

pytestmark = pytest.mark.e2e

AVC_CONFIG = bytes.fromhex("1700000000014d401effe1000967") + b"\x00" * 8
AVC_KEY = bytes.fromhex("1701000000") + b"\x00\x00\x00\x05\x65\x88\x84\x00\x00"


async def live_source(running, stream, source_id):
    source = (await running.sources(stream)).get(source_id)
    return source if source and source["state"] == "live" else None


async def test_garbage_and_half_open_connections_do_not_disturb_a_live_feed(running, spawn):
    publisher = await spawn(clients.pyav(running.url("live/calm", sourceId="cam1"), 6))
    source = await running.wait_for(lambda: live_source(running, "live/calm", "cam1"))
    feed_id = source["onAir"]["id"]
    junk = []
    for payload in (
        b"GET / HTTP/1.1\r\n\r\n",
        os.urandom(3000),
        b"\x03" + os.urandom(1536) * 3,
        b"\x03",
        b"",
    ):
        stream = await trio.open_tcp_stream("127.0.0.1", running.rtmp_port)
        if payload:
            await stream.send_all(payload)
        junk.append(stream)  # left half-open
    await trio.sleep(1.0)
    source = await live_source(running, "live/calm", "cam1")
    assert source and source["onAir"]["id"] == feed_id
    assert await publisher.wait() == 0
    for stream in junk:
        await stream.aclose()
    metrics = (await running.get("/metrics")).text
    assert "rtmp_ingest_protocol_errors_total" in metrics


async def test_handshake_timeout_closes_a_silent_connection(start_daemon):
    running = await start_daemon(rtmp={"handshake_timeout_s": 0.3})
    stream = await trio.open_tcp_stream("127.0.0.1", running.rtmp_port)
    with trio.fail_after(3):
        assert await stream.receive_some(100) == b""


async def test_publish_timeout_closes_a_client_that_never_publishes(start_daemon):
    running = await start_daemon(rtmp={"command_timeout_s": 0.3})
    client = await TrioRtmpClient.open(running.rtmp_port)
    await client.connect("live")
    with trio.fail_after(3):
        await client.wait_for(lambda e: False)
    assert client.closed


async def test_idle_publisher_is_dropped_and_its_source_reconnects(start_daemon):
    running = await start_daemon(rtmp={"idle_timeout_s": 0.5}, bundle={"reconnect_grace_s": 0.5})
    client = await TrioRtmpClient.open(running.rtmp_port)
    await client.connect("live")
    stream_id = await client.create_stream()
    status = await client.publish(stream_id, "idle?sourceId=cam1")
    assert status.code == "NetStream.Publish.Start"
    client.conn.send_video(stream_id, 0, AVC_CONFIG)
    client.conn.send_video(stream_id, 0, AVC_KEY)
    await client.flush()
    await running.wait_for(lambda: live_source(running, "live/idle", "cam1"))
    with trio.fail_after(5):
        await client.wait_for(lambda e: False)
    assert client.closed

    async def gone():
        return await running.sources("live/idle") == {}

    await running.wait_for(gone, timeout_s=5)


async def test_connection_limit_per_address(start_daemon):
    running = await start_daemon(rtmp={"max_connections_per_address": 2})
    kept = [await TrioRtmpClient.open(running.rtmp_port) for _ in range(2)]
    for client in kept:
        await client.connect("live")
    extra = await trio.open_tcp_stream("127.0.0.1", running.rtmp_port)
    with trio.fail_after(3):
        assert await extra.receive_some(100) == b""
    for client in kept:
        await client.aclose()


async def test_operator_kick_ends_the_feed_with_a_status_the_encoder_sees(running):
    client = await TrioRtmpClient.open(running.rtmp_port)
    await client.connect("live")
    stream_id = await client.create_stream()
    await client.publish(stream_id, "kick?sourceId=cam1")
    client.conn.send_video(stream_id, 0, AVC_CONFIG)
    client.conn.send_video(stream_id, 0, AVC_KEY)
    await client.flush()
    await running.wait_for(lambda: live_source(running, "live/kick", "cam1"))
    response = await running.request("DELETE", "/api/v1/streams/live/kick/sources/cam1")
    assert response.status_code == 200 and response.json()["kicked"] is True
    status = await client.wait_for(lambda e: isinstance(e, ev.Status) and e.level == "error")
    assert "operator" in status.description
    response = await running.request("DELETE", "/api/v1/streams/live/nothing/sources/_")
    assert response.status_code == 404 and "error" in response.json()


async def test_shutdown_asks_ertmp_publishers_to_reconnect(start_daemon):
    running = await start_daemon()
    client = await TrioRtmpClient.open(running.rtmp_port)
    await client.connect("live", properties={"capsEx": 1.0, "fourCcList": ["avc1"]})
    stream_id = await client.create_stream()
    await client.publish(stream_id, "bye?sourceId=cam1")
    running.daemon.shutdown()
    status = await client.wait_for(lambda e: isinstance(e, ev.Status) and "Reconnect" in e.code)
    assert status.code == "NetConnection.Connect.ReconnectRequest"
    final = await client.wait_for(lambda e: isinstance(e, ev.Status) and e.level == "error")
    assert final is None or "shutting down" in final.description


async def test_api_errors_are_json_with_a_4xx(start_daemon):
    running = await start_daemon(http={"admin_key": "k3y"})
    assert (await running.get("/api/v1/streams")).status_code == 401
    headers = {"Authorization": "Bearer k3y"}
    ok = await running.get("/api/v1/streams", headers=headers)
    assert ok.status_code == 200 and ok.json() == {"streams": []}
    missing = await running.get("/api/v1/streams/live/none", headers=headers)
    assert missing.status_code == 404 and "live/none" in missing.json()["error"]
    bad = await running.request("POST", "/api/v1/tokens", headers=headers, content=b"{nope")
    assert bad.status_code == 400 and bad.json()["error"]
    bad = await running.request("POST", "/api/v1/tokens", headers=headers, json={"streams": "x"})
    assert bad.status_code == 400 and "streams" in bad.json()["error"]
    assert (await running.get("/metrics")).status_code == 200

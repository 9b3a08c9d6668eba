"""Issue 16 defect 7: the HTTP side has limits like the RTMP side.

A huge body, bodies that used to raise (NaN, Infinity, deep nesting, oversized
lists), HTTP-FLV players that never read, more connections from one address than
allowed, and SSE subscribers that vanish: each gets a 4xx/503 or is dropped, the
daemon's RSS stays bounded (its own /proc), and its log shows no traceback.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio

from tests.hostile import tools
from tests.hostile.test_memory import ADMIN_KEY, BIG_CHUNK, MiB, Peak, live_feed_and_player
from tests.hostile.tools import VIDEO

pytestmark = pytest.mark.e2e


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample `name` in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def read_response_head(stream: trio.SocketStream, timeout_s: float) -> bytes:
    data = b""
    with trio.move_on_after(timeout_s):
        try:
            while b"\r\n" not in data:
                more = await stream.receive_some(65536)
                if not more:
                    break
                data += more
        except (trio.BrokenResourceError, OSError):
            pass
    return data


async def test_a_100_mb_request_body_gets_413_without_being_read(serve):
    served = await serve()
    baseline = served.rss()
    stream = await trio.open_tcp_stream("127.0.0.1", served.http_port)
    total = 100 * MiB
    await stream.send_all(
        b"POST /api/v1/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {total}\r\n\r\n".encode()
    )
    head = b""
    peak = Peak(served)
    done = trio.Event()

    async def upload() -> None:
        await tools.send_until_closed(stream, b'{"streams": ["' + b"x" * (total - 16))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peak.run, done)
        nursery.start_soon(upload)
        head = await read_response_head(stream, 20.0)
        done.set()
        nursery.cancel_scope.cancel()
    await trio.aclose_forcefully(stream)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert peak.peak - baseline < 32 * MiB, f"grew {(peak.peak - baseline) / MiB:.0f} MiB"
    assert served.alive()


def bad_token_bodies() -> list[bytes]:
    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        b'{"streams": ["live/*"], "expiresAt": NaN}',
        b'{"streams": ["live/*"], "expiresAt": Infinity}',
        b'{"streams": ["live/*"], "expiresAt": -Infinity}',
        b'{"streams": ["live/*"], "expiresAt": 1e999}',
        b'{"streams": ["live/*"], "ttl": 1e308}',
        b'{"streams": ["live/*"], "ttl": NaN}',
        deep,
        b'{"streams": ' + deep + b"}",
        b'{"streams": ["' + b"x" * 100_000 + b'"]}',
        b'{"streams": [' + b'"live/a",' * 5000 + b'"live/b"]}',
        b'{"streams": "live/x"}',
        b'{"streams": [1, 2]}',
        b'{"streams": ["live/*"], "multisource": "yes"}',
        b'{"streams": ["live/*"], "label": {"a": 1}}',
        b'{"streams": ["live/*"], "networks": ["not-a-cidr"]}',
        b"[]",
        b"not json",
        b"",
        b"\xff\xfe\x00",
    ]


async def test_bad_token_requests_get_4xx_and_minted_tokens_are_accepted(serve):
    served = await serve(auth={"mode": "token"}, http={"admin_key": ADMIN_KEY})
    for body in bad_token_bodies():
        response = await served.request(
            "POST", "/api/v1/tokens", content=body, headers={"Content-Type": "application/json"}
        )
        assert 400 <= response.status_code < 500, (body[:60], response.status_code)
    #: as long as the API allows: either refused, or a token the server then accepts
    big = {
        "streams": ["live/tok"] + [f"live/{'p' * 400}{i}" for i in range(40)],
        "sourceIds": [f"{'s' * 100}{i}" for i in range(30)] + ["cam"],
        "multisource": True,
        "label": "l" * 128,
    }
    response = await served.request("POST", "/api/v1/tokens", json=big)
    assert response.status_code < 500, response.text
    if response.status_code < 300:
        token = response.json()["token"]
        client, _sid = await tools.open_publisher(
            served.rtmp_port, "live", f"tok?sourceId=cam&token={token}"
        )
        await client.aclose()
    assert "Traceback" not in served.log()
    assert served.alive()


async def fast_feed(served: Any, nursery: trio.Nursery, name: str) -> trio.Event:
    """~6 MB/s of real keyframes (padded to 256 KiB) at 25 fps, timestamps advancing."""
    tags = tools.media_tags()
    config = next(t for t in tags if tools.is_video_config(t))
    key = tools.padded_keyframe(next(t for t in tags if tools.is_keyframe(t)), 256 * 1024)
    client, sid = await tools.open_publisher(served.rtmp_port, "live", name)
    await client.stream.send_all(
        tools.set_chunk_size(BIG_CHUNK) + tools.chunk(20, VIDEO, config.body, msid=sid)
    )
    stop = trio.Event()

    async def run() -> None:
        started = trio.current_time()
        i = 0
        while not stop.is_set():
            ts = i * 40
            await trio.sleep_until(started + ts / 1000)
            await client.stream.send_all(
                tools.chunk(20, VIDEO, key, msid=sid, ts=ts, chunk_size=BIG_CHUNK)
            )
            i += 1
        await client.aclose()

    nursery.start_soon(run)
    return stop


async def test_http_flv_players_that_never_read_are_dropped(serve, nursery):
    """30 HTTP-FLV players with tiny receive buffers that never read a byte of a 6 MB/s
    feed are dropped after http.write_timeout_s; meanwhile each holds at most ~1 s of it."""
    #: HLS off: its window of this feed (~96 MiB) would be counted as the players' cost
    served = await serve(http={"write_timeout_s": 1.0}, hls={"enabled": False})
    stop = await fast_feed(served, nursery, "fast")
    with trio.fail_after(10):
        while await served.live_feed_id("live/fast", "") is None:
            await trio.sleep(0.05)
    await trio.sleep(1.0)  # the GOP cache fills (one GOP of this feed: ~6 MiB)
    baseline = served.rss()
    socks = []
    for _ in range(30):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", served.http_port))
        await sock.send(b"GET /live/fast.flv HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        socks.append(sock)
    with trio.fail_after(10):  # they are all playing
        while metric((await served.get("/metrics")).text, "rtmp_ingest_players") < 30:
            await trio.sleep(0.1)
    peak = Peak(served)
    done = trio.Event()
    nursery.start_soon(peak.run, done)
    with trio.fail_after(1.0 + 8.0):  # write_timeout_s plus the time to notice, on a busy CPU
        while metric((await served.get("/metrics")).text, "rtmp_ingest_players") > 0:
            await trio.sleep(0.1)
    done.set()
    grown = peak.peak - baseline
    #: until it is dropped a stalled player may hold about a second of the feed (~6 MiB)
    assert grown < 30 * 8 * MiB, f"30 stalled players cost {grown / MiB:.0f} MiB"
    for sock in socks:
        sock.close()
    assert served.alive()
    stop.set()


async def test_connections_over_the_per_address_limit_get_503(serve):
    served = await serve(http={"max_connections_per_address": 8})
    idle = []
    for _ in range(8):  # kept alive after one answered request: surely counted
        stream = await trio.open_tcp_stream("127.0.0.1", served.http_port)
        await stream.send_all(b"GET /api/v1/streams HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await read_response_head(stream, 5.0)).startswith(b"HTTP/1.1 200")
        idle.append(stream)
    extra = [await trio.open_tcp_stream("127.0.0.1", served.http_port) for _ in range(12)]
    heads = []
    for stream in extra:
        await stream.send_all(b"GET /api/v1/streams HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        heads.append(await read_response_head(stream, 5.0))
    assert all(h.startswith(b"HTTP/1.1 503") for h in heads), [h[:40] for h in heads]
    for stream in idle + extra:
        await trio.aclose_forcefully(stream)
    with trio.fail_after(10):  # the address gets its connections back once they close
        while (await served.get("/api/v1/streams")).status_code != 200:
            await trio.sleep(0.1)


async def test_vanished_event_subscribers_release_their_sockets(serve, nursery):
    served = await serve()
    streams = []
    for _ in range(20):
        stream = await trio.open_tcp_stream("127.0.0.1", served.http_port)
        await stream.send_all(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await read_response_head(stream, 5.0)).startswith(b"HTTP/1.1 200")
        streams.append(stream)
    with trio.fail_after(5):
        while metric((await served.get("/metrics")).text, "rtmp_ingest_event_subscribers") < 20:
            await trio.sleep(0.05)
    for stream in streams:
        await trio.aclose_forcefully(stream)
    stop, _watch, _feed = await live_feed_and_player(served, nursery)  # events to write
    with trio.fail_after(15):
        while metric((await served.get("/metrics")).text, "rtmp_ingest_event_subscribers") > 0:
            await trio.sleep(0.1)
    stop.set()

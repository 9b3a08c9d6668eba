"""The HTTP listener over loopback: connection limits, write timeouts, body limits."""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig

from rtmp_ingest.api.http import build_app
from rtmp_ingest.api.serve import ConnectionStats, HttpLimits, HttpListener
from tests.api.fake import FakeServer

CHUNK = b"x" * 65536


async def endless(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app streaming forever (an HTTP-FLV player's response, say)."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while True:
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})


async def serve(nursery: trio.Nursery, app: Any, limits: HttpLimits) -> tuple[int, ConnectionStats]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    config = HypercornConfig()
    config.accesslog = None
    config.keep_alive_timeout = 75.0  #: as serve_http: a closed client must not wait for it
    listener = HttpListener(app, config, limits)
    await nursery.start(listener.serve, listeners)
    return listeners[0].socket.getsockname()[1], listener.stats


async def request(port: int, text: bytes) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(text)
    return stream


async def read_response(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some()
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            None,
        )
        while length is not None and len(body) < length:
            chunk = await stream.receive_some()
            if not chunk:
                break
            body += chunk
    return head + b"\r\n\r\n" + body


async def wait_until(predicate: Any) -> None:
    """A bounded poll (the listener's state changes on its own schedule)."""
    with trio.fail_after(15):
        while not predicate():
            await trio.sleep(0.02)


async def test_a_client_that_never_reads_is_dropped_after_the_write_timeout(nursery):
    port, stats = await serve(nursery, endless, HttpLimits(write_timeout_s=0.3))
    stalled = await request(port, b"GET /live/x.flv HTTP/1.1\r\nHost: t\r\n\r\n")
    await wait_until(lambda: stats.write_timeouts == 1 and stats.open == 0)
    # the socket really is gone: reading drains what the kernel had, then EOF or reset
    with trio.fail_after(10):
        try:
            while await stalled.receive_some():
                pass
        except trio.BrokenResourceError:
            pass
    await stalled.aclose()


async def test_a_reading_client_is_not_dropped(nursery):
    port, stats = await serve(nursery, endless, HttpLimits(write_timeout_s=0.3))
    reader = await request(port, b"GET /live/x.flv HTTP/1.1\r\nHost: t\r\n\r\n")
    received = 0
    with trio.fail_after(15):
        while received < 64 * len(CHUNK):
            received += len(await reader.receive_some())
    assert stats.write_timeouts == 0 and stats.open == 1
    await reader.aclose()


async def test_connections_over_the_per_address_limit_get_503(nursery):
    app = build_app(FakeServer())
    port, stats = await serve(nursery, app, HttpLimits(max_connections_per_address=2))
    held = []
    for _ in range(2):
        stream = await request(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await read_response(stream)).startswith(b"HTTP/1.1 200")
        held.append(stream)  #: kept open (keep-alive)
    third = await request(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    response = await read_response(third)
    assert response.startswith(b"HTTP/1.1 503")
    assert b"too many connections" in response and b"from this address" in response
    assert stats.refused == 1 and stats.open == 2
    await held.pop().aclose()
    await wait_until(lambda: stats.open == 1)
    fourth = await request(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await read_response(fourth)).startswith(b"HTTP/1.1 200")


async def test_connections_over_the_total_limit_get_503(nursery):
    app = build_app(FakeServer())
    port, _ = await serve(nursery, app, HttpLimits(max_connections=1))
    first = await request(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await read_response(first)).startswith(b"HTTP/1.1 200")
    second = await request(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    response = await read_response(second)
    assert response.startswith(b"HTTP/1.1 503") and b"limit 1" in response


async def test_a_body_over_the_limit_is_413_without_being_read(nursery):
    app = build_app(FakeServer(http={"max_body_bytes": 1000}))
    port, _ = await serve(nursery, app, HttpLimits())
    # announces 100 MB and sends none of it: refused from the header alone
    stream = await request(
        port,
        b"POST /api/v1/tokens HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n",
    )
    response = await read_response(stream)
    assert response.startswith(b"HTTP/1.1 413") and b"http.max_body_bytes" in response
    # chunked: read up to the limit, then refused
    stream = await request(
        port,
        b"POST /api/v1/tokens HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (1500, b"[" * 1500),
    )
    assert (await read_response(stream)).startswith(b"HTTP/1.1 413")
    # under the limit: the app gets the body whole
    body = b'{"streams": ["live/x"]}'
    stream = await request(
        port,
        b"POST /api/v1/tokens HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    assert (await read_response(stream)).startswith(b"HTTP/1.1 201")

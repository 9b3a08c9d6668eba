"""The HTTP listener: hypercorn's HTTP/1.1 protocol over our own accept loop, with limits.

Hypercorn's `serve()` owns its listeners and writes with the cancellation shielded
(`TCPServer.protocol_send`), so neither a connection limit nor a write timeout
can be set from the ASGI side: a player that never reads would block its
response forever. So this module accepts itself (`trio.serve_listeners`, like
the RTMP listener) and hands each admitted connection to hypercorn's
per-connection `TCPServer` wrapped in a `GuardedStream`:

- **connection limits**: `http.max_connections` in total and
  `http.max_connections_per_address` from one IP; a connection over either gets
  a short `503` (written within `REFUSAL_WRITE_TIMEOUT_S`) and is closed. A
  connection over a unix socket (another worker's forward of a client request,
  cluster/forward.py) is counted but not limited: the client behind it was admitted,
  and counted, by the worker it reached — and all of them would share one "address";
- **write timeout**: a `send_all` that has not completed after
  `http.write_timeout_s` (the client stopped reading: a paused HTTP-FLV player, a
  stalled SSE reader) aborts the connection; the timeout's cancel scope sits
  inside hypercorn's shield, so it fires. The connection's whole task (hypercorn
  and the app's request task) is then cancelled, so the response's `finally`
  paths (players, subscribers) run whether or not the app watches for
  `http.disconnect`;
- **closed connections leave at once**: at the client's EOF the connection gets
  `CLOSED_GRACE_S` to finish instead of hypercorn's keep-alive timer (75 s), so a
  client that reconnects often is not refused by its own closed connections.

The per-connection classes are hypercorn internals (`hypercorn.trio.tcp_server`,
`worker_context`): tests/api/test_serve.py pins the behaviour on the installed version.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

log = logging.getLogger("rtmp_ingest.http")

#: How long hypercorn and the app get to finish a connection the client closed.
CLOSED_GRACE_S = 1.0
#: How long a refused connection gets to read its 503 before it is closed.
REFUSAL_WRITE_TIMEOUT_S = 1.0

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


@attrs.frozen(kw_only=True)
class HttpLimits:
    """Per-listener limits (the `[http]` keys of the same names)."""

    max_connections: int = 1024
    max_connections_per_address: int = 64
    write_timeout_s: float = 10.0


@attrs.define
class ConnectionStats:
    """Counters the metrics read."""

    open: int = 0
    #: of `open`, the internal ones (other workers' forwards over a unix socket): not
    #: counted against `http.max_connections`
    internal: int = 0
    total: int = 0
    refused: int = 0
    write_timeouts: int = 0


class GuardedStream(trio.abc.HalfCloseableStream):
    """A socket stream whose writes give up after `write_timeout_s` (then it is aborted)."""

    def __init__(
        self,
        stream: trio.SocketStream,
        *,
        write_timeout_s: float,
        stats: ConnectionStats,
        scope: trio.CancelScope,
    ) -> None:
        self._stream = stream
        self._write_timeout_s = write_timeout_s
        self._stats = stats
        #: the connection's scope: cancelled on a write timeout, given a deadline at EOF
        self._scope = scope
        #: hypercorn reads the peer and local addresses from it
        self.socket = stream.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with trio.move_on_after(self._write_timeout_s) as scope:
            await self._stream.send_all(data)
        if scope.cancelled_caught:
            self._stats.write_timeouts += 1
            log.info(
                "http client %s did not read for %.1f s; connection dropped",
                _peer(self._stream),
                self._write_timeout_s,
            )
            await trio.aclose_forcefully(self._stream)
            self._scope.cancel()
            raise trio.BrokenResourceError("write timed out: the client stopped reading")

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self._stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._closed_by_peer()  #: a reset (RST) ends it as surely as a FIN
            raise
        if not data:
            self._closed_by_peer()
        return data

    def _closed_by_peer(self) -> None:
        # the client closed: hypercorn would hold the connection until its keep-alive
        # timer ends; it and the app get CLOSED_GRACE_S to finish, then it is cancelled
        self._scope.deadline = min(self._scope.deadline, trio.current_time() + CLOSED_GRACE_S)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "unknown"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HttpListener:
    """Serves one ASGI app on trio listeners with `HttpLimits`."""

    def __init__(
        self,
        app: Any,
        config: HypercornConfig,
        limits: HttpLimits,
        *,
        stats: ConnectionStats | None = None,
    ) -> None:
        self._app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self._config = config
        self._limits = limits
        self._context = WorkerContext(None)
        self._per_address: Counter[str] = Counter()
        self.stats = stats if stats is not None else ConnectionStats()

    async def _refuse(self, stream: trio.SocketStream, reason: str) -> None:
        self.stats.refused += 1
        log.warning("refused http connection remote=%s reason=%s", _peer(stream), reason)
        body = b'{"error": "too many connections (%s)"}' % reason.encode()
        with trio.move_on_after(REFUSAL_WRITE_TIMEOUT_S):
            try:
                await stream.send_all(_REFUSAL % (len(body), body))
                # closing with the request unread would reset the connection and the
                # client's stack could drop the 503 unread: shut our side, let it read
                await stream.send_eof()
                while await stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await trio.aclose_forcefully(stream)

    async def handle(self, stream: trio.SocketStream) -> None:
        """One accepted connection: admitted (served by hypercorn) or refused with 503."""
        try:
            peer = stream.socket.getpeername()
            #: a unix socket (another worker's internal request, cluster/) has no address
            ip = peer[0] if isinstance(peer, tuple) else "local"
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        limits = self._limits
        internal = ip == "local"  #: see the module docstring: not limited here
        outside = self.stats.open - self.stats.internal
        if not internal and outside >= limits.max_connections:
            await self._refuse(stream, f"{outside} open, limit {limits.max_connections}")
            return
        if not internal and self._per_address[ip] >= limits.max_connections_per_address:
            await self._refuse(
                stream,
                f"{self._per_address[ip]} from this address, "
                f"limit {limits.max_connections_per_address}",
            )
            return
        self.stats.open += 1
        self.stats.internal += internal
        self.stats.total += 1
        self._per_address[ip] += 1
        try:
            # a write timeout ends the whole connection, the app's task included: an app
            # need not notice the disconnect for its resources to be released
            with trio.CancelScope() as scope:
                guarded = GuardedStream(
                    stream,
                    write_timeout_s=limits.write_timeout_s,
                    stats=self.stats,
                    scope=scope,
                )
                await TCPServer(
                    self._app,
                    self._config,
                    self._context,
                    ConnectionState({}),
                    guarded,  # type: ignore[arg-type]
                )
        finally:
            self.stats.open -= 1
            self.stats.internal -= internal
            self._per_address[ip] -= 1
            if not self._per_address[ip]:
                del self._per_address[ip]

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accepts until cancelled; open connections end with it."""
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                await trio.serve_listeners(self.handle, listeners, handler_nursery=nursery)
        finally:
            with trio.CancelScope(shield=True):
                await self._context.terminated.set()


class BodyLimit:
    """ASGI middleware: a request body over `max_body_bytes` gets 413 before the app runs.

    A `Content-Length` over the limit is refused without reading the body; a chunked
    body is read up to the limit, then refused. Admitted bodies are replayed to the app
    whole (every endpoint with a body reads it whole anyway).
    """

    def __init__(self, app: Any, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def _too_large(self, send: Any, size: str) -> None:
        body = (
            b'{"error": "request body too large: %s, the limit is %d bytes (http.max_body_bytes)"}'
            % (size.encode(), self.max_body_bytes)
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_body_bytes:
                    await self._too_large(send, f"{value.decode('latin-1')[:20]} bytes")
                    return
        chunks: list[bytes] = []
        size = 0
        early: list[Any] = []  #: an http.disconnect met while reading, replayed after the body
        while True:
            message = await receive()
            if message["type"] != "http.request":
                early.append(message)
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await self._too_large(send, f"over {self.max_body_bytes} bytes")
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}, *early]

        async def receive_replayed() -> Any:
            if replay:
                return replay.pop(0)
            return await receive()

        await self.app(scope, receive_replayed, send)

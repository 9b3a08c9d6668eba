"""A tiny HTTP/1.1 hook server on loopback (trio + h11) that records what it is sent."""

from __future__ import annotations

import json
from collections.abc import Callable

import h11
import trio

#: (status, body), or None to never answer
Responder = Callable[[dict], "tuple[int, bytes] | None"]


class HookServer:
    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.send, self.received = trio.open_memory_channel[dict](100)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        request = None
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    try:
                        data = await stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        return
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            payload = json.loads(body)
            payload["_headers"] = {k.decode(): v.decode() for k, v in request.headers}
            await self.send.send(payload)
            answer = self.respond(payload)
            if answer is None:
                await trio.sleep_forever()
            status, content = answer
            headers = [("Content-Length", str(len(content))), ("Connection", "close")]
            if 300 <= status < 400:
                headers.append(("Location", "http://127.0.0.1:1/elsewhere"))
            try:
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=content)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  #: the client read what it wanted and hung up

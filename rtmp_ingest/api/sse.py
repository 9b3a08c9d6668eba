"""The event stream as an ASGI response: subscribe, catch up, follow, and always unsubscribe.

The subscription is made inside the response's own call, together with the
catch-up snapshot (no checkpoint between them, so no event falls in the gap),
and closed in a `finally` around everything that can wait: whether the client
leaves before the first byte (the app is never called, or its first send
fails), mid-stream (`http.disconnect`, or a write that fails or times out in
api/serve.py), or the hub ends the subscription (queue full, shutdown), the
hub forgets it. A keepalive comment goes out after `SSE_KEEPALIVE_S` of silence.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio
from starlette.responses import Response

from rtmp_ingest.api.defs import EventSource

#: SSE comment sent when nothing happened for this long, so proxies keep the stream open
#: and a subscriber that left is noticed: during a response hypercorn does not read the
#: socket, so the client's close shows only as a failed write (the second after it)
SSE_KEEPALIVE_S = 3.0
#: SSE comment after the catch-up (the sources on air when the client subscribed): what
#: follows happened since. Clients ignore comments; a merge of several workers' streams
#: (cluster/machine.py) reads it.
CATCH_UP_END = b": live\n\n"

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def sse_block(name: str, payload: dict[str, Any]) -> bytes:
    """One `event:`/`data:` block (the JSON has no newline, so one data line)."""
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class EventStreamResponse(Response):
    """`text/event-stream` of a hub's events, starting with `current()` (the state now)."""

    def __init__(
        self,
        hub: EventSource,
        stream_filter: str | None,
        current: Callable[[], list[tuple[str, dict[str, Any]]]],
        *,
        internal: bool = False,
    ) -> None:
        super().__init__()
        self._hub = hub
        self._internal = internal
        self._filter = stream_filter
        self._current = current

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        subscription = self._hub.subscribe(self._filter, internal=self._internal)
        try:
            snapshot = self._current()
            async with trio.open_nursery() as nursery:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch_disconnect)
                await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
                first = b": rtmp_ingest events\nretry: 2000\n\n"
                first += b"".join(sse_block(name, payload) for name, payload in snapshot)
                first += CATCH_UP_END
                await send({"type": "http.response.body", "body": first, "more_body": True})
                await self._follow(subscription.receive, send)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                nursery.cancel_scope.cancel()
        finally:
            subscription.close()

    @staticmethod
    async def _follow(
        events: trio.MemoryReceiveChannel[tuple[str, dict[str, Any]]], send: Any
    ) -> None:
        while True:
            with trio.move_on_after(SSE_KEEPALIVE_S) as scope:
                try:
                    name, payload = await events.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
            body = b": keepalive\n\n" if scope.cancelled_caught else sse_block(name, payload)
            await send({"type": "http.response.body", "body": body, "more_body": True})

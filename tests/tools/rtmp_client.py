"""A small trio RTMP client around the sans-IO ClientConnection, for tests and tools."""

from __future__ import annotations

from typing import Any

import trio

from rtmp_ingest.rtmp import NEED_DATA, ClientConnection
from rtmp_ingest.rtmp import events as ev


class TrioRtmpClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = ClientConnection()
        self.events: list[Any] = []
        self.closed = False

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> TrioRtmpClient:
        return cls(await trio.open_tcp_stream(host, port))

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def _read_once(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            self.closed = True
        self.conn.receive_data(data)
        await self.flush()
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA or isinstance(event, ev.ConnectionClosed):
                break
            self.events.append(event)
        await self.flush()  #: answers made while dispatching (a PingResponse) go out now

    async def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> Any:
        with trio.fail_after(timeout_s):
            while True:
                for event in self.events:
                    if predicate(event):
                        self.events.remove(event)
                        return event
                if self.closed:
                    return None
                await self._read_once()

    async def connect(self, app: str, *, properties: dict[str, Any] | None = None) -> Any:
        self.conn.connect(app, tc_url=f"rtmp://127.0.0.1/{app}", properties=properties)
        await self.flush()
        return await self.wait_for(
            lambda e: isinstance(e, ev.CommandResponse) and e.transaction_id == 1
        )

    async def create_stream(self) -> int:
        txid = self.conn.create_stream()
        await self.flush()
        response = await self.wait_for(
            lambda e: isinstance(e, ev.CommandResponse) and e.transaction_id == txid
        )
        stream_id = ClientConnection.stream_id_of(response)
        assert stream_id is not None
        return stream_id

    async def publish(self, stream_id: int, name: str) -> ev.Status:
        self.conn.publish(stream_id, name)
        await self.flush()
        return await self.wait_for(lambda e: isinstance(e, ev.Status) and e.stream_id == stream_id)

    async def play(self, stream_id: int, name: str) -> None:
        self.conn.play(stream_id, name)
        await self.flush()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

"""Test helpers for the sans-IO RTMP core: feeding, draining and a client↔server pair."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from rtmp_ingest.rtmp import amf0
from rtmp_ingest.rtmp import messages as msg
from rtmp_ingest.rtmp.chunk import ChunkDecoder, ChunkEncoder
from rtmp_ingest.rtmp.client import ClientConnection
from rtmp_ingest.rtmp.connection import Connection
from rtmp_ingest.rtmp.errors import RemoteProtocolError
from rtmp_ingest.rtmp.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    ConnectRequested,
    PlayRequested,
    PublishRequested,
)
from rtmp_ingest.rtmp.handshake import SIG_SIZE
from rtmp_ingest.rtmp.server import ServerConnection

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sessions"
FIXTURE_NAMES = sorted(p.name[: -len(".c2s.bin")] for p in FIXTURES.glob("*.c2s.bin"))
HANDSHAKE_BYTES = 1 + 2 * SIG_SIZE  #: C0+C1+C2 (or S0+S1+S2)


def load_fixture(name: str) -> tuple[bytes, bytes, dict[str, Any]]:
    """(c2s bytes, s2c bytes, sidecar json) of a recorded session."""
    return (
        (FIXTURES / f"{name}.c2s.bin").read_bytes(),
        (FIXTURES / f"{name}.s2c.bin").read_bytes(),
        json.loads((FIXTURES / f"{name}.json").read_text()),
    )


def pieces(data: bytes, bytewise: bool) -> list[bytes]:
    """`data` whole, or as one-byte pieces."""
    if not bytewise:
        return [data] if data else []
    return [data[i : i + 1] for i in range(len(data))]


def feed_decoder(decoder: ChunkDecoder, data: bytes, bytewise: bool = False) -> list[tuple]:
    out: list[tuple] = []
    for piece in pieces(data, bytewise):
        out += decoder.feed(piece)
    return out


def split_feed(decoder: ChunkDecoder, data: bytes, cuts: list[int]) -> list[tuple]:
    """Feeds `data` cut at the given offsets (sorted, deduplicated here)."""
    out: list[tuple] = []
    start = 0
    for cut in sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]:
        out += decoder.feed(data[start:cut])
        start = cut
    return out


def drain(conn: Connection) -> list[Any]:
    """Every event until NEED_DATA or PAUSED (PAUSED is kept as the last item)."""
    events: list[Any] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if event is PAUSED or isinstance(event, ConnectionClosed):
            return events


class AcceptingDriver:
    """Plays the server's driver: accepts every connect, publish and play."""

    def __init__(self, server: ServerConnection | None = None, *, accept: bool = True) -> None:
        self.server = server or ServerConnection()
        self.accept = accept
        self.events: list[Any] = []
        #: the RemoteProtocolError that stopped the server (next_event keeps raising it)
        self.error: RemoteProtocolError | None = None

    def decide(self, event: Any) -> None:
        if not self.accept:
            return
        if isinstance(event, ConnectRequested):
            self.server.accept_connect()
        elif isinstance(event, PublishRequested):
            self.server.accept_publish(event.stream_id)
        elif isinstance(event, PlayRequested):
            self.server.accept_play(event.stream_id)

    def pump_events(self) -> list[Any]:
        new: list[Any] = []
        while True:
            try:
                event = self.server.next_event()
            except RemoteProtocolError as exc:
                self.error = exc
                break
            if event is NEED_DATA or event is PAUSED:
                break
            new.append(event)
            self.decide(event)
            if isinstance(event, ConnectionClosed):
                break
        self.events += new
        return new

    def feed(self, data: bytes, bytewise: bool = False) -> list[Any]:
        new: list[Any] = []
        for piece in pieces(data, bytewise):
            self.server.receive_data(piece)
            new += self.pump_events()
        return new

    def close(self) -> list[Any]:
        self.server.receive_data(b"")
        return self.pump_events()


class ConnectionPair:
    """Our ClientConnection and ServerConnection wired together in memory.

    `pump()` moves bytes both ways until neither side has anything to send; with
    `bytewise=True` every transfer is delivered one byte at a time. Events are
    collected per side (`client_events`, `server_events`); the server side is driven
    by `decide` (default: accept everything, like AcceptingDriver).
    """

    def __init__(
        self,
        *,
        bytewise: bool = False,
        accept: bool = True,
        client: ClientConnection | None = None,
        server: ServerConnection | None = None,
    ) -> None:
        self.client = client or ClientConnection()
        self.driver = AcceptingDriver(server, accept=accept)
        self.server = self.driver.server
        self.bytewise = bytewise
        self.client_events: list[Any] = []
        self.c2s = bytearray()  #: every byte the client sent (for replays/mutations)
        self.s2c = bytearray()

    @property
    def server_events(self) -> list[Any]:
        return self.driver.events

    def pump(self) -> None:
        for _ in range(1000):
            up = self.client.data_to_send()
            if up:
                self.c2s += up
                self.driver.feed(up, self.bytewise)
            else:
                self.driver.pump_events()
            down = self.server.data_to_send()
            if down:
                self.s2c += down
                for piece in pieces(down, self.bytewise):
                    self.client.receive_data(piece)
            self.client_events += drain(self.client)
            if not up and not down:
                return
        raise AssertionError("pump did not settle")

    def take_client_events(self) -> list[Any]:
        events, self.client_events = self.client_events, []
        return events

    def take_server_events(self) -> list[Any]:
        events, self.driver.events = self.driver.events, []
        return events

    def connect(
        self, app: str = "live", tc_url: str = "rtmp://localhost/live", **props: Any
    ) -> None:
        self.client.connect(app, tc_url=tc_url, properties=props or None)
        self.pump()

    def create_stream(self) -> int:
        self.client.create_stream()
        self.pump()
        from rtmp_ingest.rtmp.events import CommandResponse

        responses = [e for e in self.client_events if isinstance(e, CommandResponse)]
        stream_id = ClientConnection.stream_id_of(responses[-1])
        assert stream_id is not None
        return stream_id

    def publishing(self, name: str = "mystream?sourceId=cam1&token=abc") -> int:
        """connect + createStream + publish; returns the stream id."""
        self.connect()
        stream_id = self.create_stream()
        self.client.publish(stream_id, name)
        self.pump()
        return stream_id


# -- hand-built chunks (spec-following, independent of the encoder under test) ----------

EXT = 0xFFFFFF


def basic_header(fmt: int, csid: int) -> bytes:
    if 2 <= csid <= 63:
        return bytes([(fmt << 6) | csid])
    if 64 <= csid <= 319:
        return bytes([fmt << 6, csid - 64])
    return bytes([(fmt << 6) | 1]) + struct.pack("<H", csid - 64)


def chunk(
    fmt: int,
    csid: int,
    payload: bytes = b"",
    *,
    ts: int = 0,
    length: int = 0,
    type_id: int = 0,
    msid: int = 0,
    ext: int | None = None,
) -> bytes:
    """One chunk. `ts` is the timestamp (type 0) or delta (types 1/2); values ≥ 0xFFFFFF
    go to the extended field automatically; `ext` forces extended bytes (type 3)."""
    out = basic_header(fmt, csid)
    field = EXT if ts >= EXT else ts
    if fmt == 0:
        out += field.to_bytes(3, "big") + length.to_bytes(3, "big") + bytes([type_id])
        out += struct.pack("<I", msid)
    elif fmt == 1:
        out += field.to_bytes(3, "big") + length.to_bytes(3, "big") + bytes([type_id])
    elif fmt == 2:
        out += field.to_bytes(3, "big")
    if ext is None and fmt != 3 and ts >= EXT:
        ext = ts
    if ext is not None:
        out += struct.pack(">I", ext)
    return out + payload


def encode_messages(
    messages: list[tuple[int, int, int, int, bytes]], chunk_size: int = 128
) -> bytes:
    """Our encoder over (csid, msid, type, timestamp, body) tuples."""
    encoder = ChunkEncoder()
    encoder.set_chunk_size(chunk_size)
    out = bytearray()
    for csid, msid, type_id, timestamp, body in messages:
        encoder.encode(csid, msid, type_id, timestamp, body, out)
    return bytes(out)


def command(name: str, txid: float, *values: Any) -> bytes:
    return msg.command_body(name, txid, *values)


def connect_object(app: str = "live", tc_url: str = "rtmp://localhost/live", **extra: Any) -> dict:
    return {"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0", "tcUrl": tc_url, **extra}


def amf(*values: Any) -> bytes:
    return amf0.encode(*values)

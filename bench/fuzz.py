"""Fuzz run of the protocol core: a million generated inputs, only the protocol error escapes.

    PYTHONPATH=. .venv/bin/python bench/fuzz.py [--inputs 1000000] [--seed 1]
    PYTHONPATH=. .venv/bin/python bench/fuzz.py --engine atheris --inputs 100000

Targets, each driven the way the daemon drives it:

- server: a `ServerConnection` fed a client's bytes (plain C0+C1+C2, then chunks) in
  random pieces, with a driver that accepts or rejects connect/publish/play and sends
  media to players; only `RemoteProtocolError` may escape, and after it the
  connection must be in ERROR (the error again from next_event and receive_data,
  LocalProtocolError from a send);
- client: a `ClientConnection` that pipelined connect/createStream/publish, fed a
  server's bytes;
- flv: `parse_video`/`parse_audio` on media bodies, and `video_body`/`audio_body` on
  what they return; only `TagError` may escape;
- amf: the AMF0 and AMF3 decoders and `parse_command`; only `RemoteProtocolError`.

Inputs (the default engine, a seeded generator, reproducible from --seed): windows of
the recorded client sessions in fixtures/ and of in-memory client↔server transcripts,
hand-built chunk sequences (random headers, generated AMF commands, control messages
with edge values), E-RTMP and legacy media bodies, generated AMF values — each with 1–4
stacked mutations (bit flips, edge bytes, 24/32-bit edge fields, inserts, deletes,
duplications, splices, truncations). A third of the connections run with small limits so
that every limit is hit too. `--engine atheris` runs the same targets under atheris
(coverage-guided libFuzzer; `pip install atheris`).

Prints the count, the time and any failure (with the input, hex), and writes the same
as JSON to bench/results/fuzz.json. Exit status 1 if anything but the protocol error
escaped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rtmp_ingest.flv import tags
from rtmp_ingest.flv.tags import TagError
from rtmp_ingest.rtmp import amf0, amf3
from rtmp_ingest.rtmp import events as ev
from rtmp_ingest.rtmp import messages as msg
from rtmp_ingest.rtmp.client import ClientConnection
from rtmp_ingest.rtmp.errors import LocalProtocolError, RemoteProtocolError
from rtmp_ingest.rtmp.events import NEED_DATA, PAUSED
from rtmp_ingest.rtmp.handshake import SIG_SIZE
from rtmp_ingest.rtmp.limits import Limits
from rtmp_ingest.rtmp.server import ConnState, ServerConnection, StreamState
from tests.rtmp.helpers import (
    FIXTURE_NAMES,
    ConnectionPair,
    basic_header,
    chunk,
    load_fixture,
)

RESULTS = Path(__file__).resolve().parent / "results"
HANDSHAKE = 1 + 2 * SIG_SIZE
#: C0 + a plain C1 (zero version: no digest) + C2: the server's handshake in one piece
PLAIN_HANDSHAKE = b"\x03" + bytes(8) + (bytes(range(256)) * 6)[: SIG_SIZE - 8] + bytes(SIG_SIZE)
#: small limits, so that generated input reaches every limit
SMALL = Limits(
    max_message_bytes=20_000,
    max_command_bytes=600,
    max_pending_bytes=30_000,
    max_pending_bytes_unadmitted=3_000,
    max_chunk_streams=6,
    max_amf_depth=6,
    max_amf_items=40,
    max_amf_nodes=80,
)
DEFAULT = Limits()
#: share of the inputs per target
MIX = {"server": 0.45, "client": 0.15, "flv": 0.28, "amf": 0.12}
EDGE_BYTES = (0x00, 0x01, 0x02, 0x03, 0x05, 0x09, 0x11, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFF)
EDGE_U24 = (0, 1, 0x7F, 0x80, 0xFFFF, 0x10000, 0xFFFFFE, 0xFFFFFF)
EDGE_U32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFF, 0x1000000)
COMMANDS = (
    "connect",
    "createStream",
    "releaseStream",
    "FCPublish",
    "publish",
    "play",
    "play2",
    "FCUnpublish",
    "deleteStream",
    "closeStream",
    "pause",
    "receiveAudio",
    "receiveVideo",
    "getStreamLength",
    "checkbw",
    "_result",
    "_error",
    "onStatus",
    "@setDataFrame",
    "onMetaData",
    "unknownThing",
)
VIDEO_FOURCCS = (b"avc1", b"hvc1", b"vvc1", b"av01", b"vp09", b"vp08", b"xxxx")
AUDIO_FOURCCS = (b"mp4a", b"Opus", b"fLaC", b".mp3", b"ac-3", b"ec-3", b"zzzz")


# -- the corpus ---------------------------------------------------------------------------------


def _pair_transcripts() -> list[tuple[bytes, bytes]]:
    """(c2s, s2c) of in-memory sessions: a publisher with every message kind, a player."""
    out = []
    pair = ConnectionPair()
    sid = pair.publishing()
    client = pair.client
    client.send_data(sid, 0, amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(w=1.0)))
    client.send_video(sid, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff")
    client.send_video(sid, 33, b"\x17\x01\x00\x00\x00" + bytes(700))
    client.send_audio(sid, 0x1000000, b"\xaf\x00\x12\x10")
    client.send_audio(sid, 0x1000020, b"\xaf\x01" + bytes(300))
    client.send_raw_message(
        8, sid, msg.AGGREGATE, 5, msg.aggregate_body([(9, 0, b"\x27\x01"), (8, 1, b"\xaf\x01")])
    )
    client.send_raw_message(5, sid, msg.DATA_AMF3, 9, b"\x00" + amf0.encode("onTextData", "x"))
    client.send_raw_message(3, 0, msg.COMMAND_AMF3, 0, b"\x00" + amf0.encode("checkbw", 4.0))
    client.ping(5)
    client.set_chunk_size(64)
    client.send_video(sid, 0x1000040, b"\x27\x01" + bytes(200))
    client.set_buffer_length(sid, 3000)
    sid2 = pair.create_stream()
    client.play(sid2, "other?sourceId=b&layer=1")
    pair.pump()
    pair.server.send_video(sid2, 10, bytes(5000))
    pair.server.send_audio(sid2, 11, b"\xaf\x01" + bytes(40))
    pair.server.send_reconnect_request(tc_url="rtmp://other/live")
    pair.server.ping(77)
    client.call("pause", None, True, 0.0, stream_id=sid2, transaction_id=0.0)
    client.unpublish(sid, "mystream")
    pair.pump()
    out.append((bytes(pair.c2s), bytes(pair.s2c)))
    player = ConnectionPair()
    player.connect(fourCcList=["*"], capsEx=15.0)
    sid = player.create_stream()
    player.client.play(sid, "live/x")
    player.pump()
    for i in range(5):
        player.server.send_video(sid, i * 40, b"\x17\x01\x00\x00\x00" + bytes(300 * i))
    player.server.end_play(sid, "gone")
    player.pump()
    out.append((bytes(player.c2s), bytes(player.s2c)))
    return out


class Corpus:
    def __init__(self) -> None:
        transcripts = _pair_transcripts()
        fixtures = [load_fixture(name)[:2] for name in FIXTURE_NAMES]
        sessions = transcripts + fixtures
        #: post-handshake client bytes (the server target prepends PLAIN_HANDSHAKE)
        self.c2s = [c2s[HANDSHAKE:] for c2s, _ in sessions if len(c2s) > HANDSHAKE]
        #: server bytes, handshake included (the client does not check S1/S2)
        self.s2c = [s2c for _, s2c in sessions if s2c]


# -- generators ----------------------------------------------------------------------------------


class Gen:
    """Structured inputs and mutations from one seeded random generator."""

    def __init__(self, rng: random.Random, corpus: Corpus) -> None:
        self.rng = rng
        self.corpus = corpus

    # values
    def amf_value(self, depth: int = 0) -> Any:
        r = self.rng
        kind = r.randrange(14 if depth < 4 else 8)
        if kind == 0:
            return r.choice((0.0, -1.0, 1.0, 1e300, float("nan"), float("inf"), 2.0**32))
        if kind == 1:
            return r.random() < 0.5
        if kind == 2:
            return r.choice(("", "live", "a" * r.randrange(300), "x?sourceId=é&token=t", "\x00"))
        if kind == 3:
            return None
        if kind == 4:
            return amf0.UNDEFINED
        if kind == 5:
            return amf0.Date(r.random() * 1e12, r.randrange(-10, 10))
        if kind == 6:
            return amf0.Reference(r.randrange(5))
        if kind == 7:
            return float(r.randrange(10))
        if kind in (8, 9):
            return {
                r.choice(("app", "tcUrl", "capsEx", "fourCcList", "k", "")): self.amf_value(
                    depth + 1
                )
                for _ in range(r.randrange(5))
            }
        if kind == 10:
            return amf0.EcmaArray(
                {f"k{i}": self.amf_value(depth + 1) for i in range(r.randrange(4))}
            )
        if kind == 11:
            return [self.amf_value(depth + 1) for _ in range(r.randrange(5))]
        if kind == 12:
            return amf0.TypedObject("cls", {"a": self.amf_value(depth + 1)})
        return amf0.XmlDocument("<x/>")

    def amf0_body(self) -> bytes:
        values = [self.amf_value() for _ in range(self.rng.randrange(1, 5))]
        body = amf0.encode(*values)
        if self.rng.random() < 0.3:
            body += b"\x11" + self.amf3_body()
        return body

    def amf3_body(self) -> bytes:
        r = self.rng
        value: Any
        kind = r.randrange(6)
        if kind == 0:
            value = bytes(r.randrange(40))
        elif kind == 1:
            value = amf3.Amf3Array({"a": 1}, [None, 2, "s"])
        elif kind == 2:
            value = {"k": [1, 2**40, "s", "s"], "n": None}
        elif kind == 3:
            value = r.randrange(-(1 << 28), 1 << 28)
        elif kind == 4:
            value = ["x" * r.randrange(70)] * 3
        else:
            value = self.amf_value()
        try:
            return amf3.encode(value)
        except TypeError:
            return b"\x01"

    def command_body(self) -> bytes:
        r = self.rng
        name = r.choice(COMMANDS)
        values = [self.amf_value() for _ in range(r.randrange(4))]
        if name == "connect":
            values.insert(0, {"app": r.choice(("live", "", "a/b")), "tcUrl": "rtmp://h/live"})
        elif name in ("publish", "play"):
            values = [None, r.choice(("s", "s?sourceId=a", "", "a/b/c")), "live"]
        return amf0.encode(name, float(r.randrange(4)), *values)

    def media_body(self, video: bool) -> bytes:
        r = self.rng
        payload = bytes(r.randrange(60))
        if video:
            kind = r.randrange(5)
            if kind == 0:  #: legacy AVC
                return (
                    bytes((r.choice((0x17, 0x27, 0x57, 0x12)), r.randrange(4)))
                    + b"\x00\x00\x10"
                    + payload
                )
            fourcc = r.choice(VIDEO_FOURCCS)
            if kind == 1:  #: E-RTMP
                return bytes((0x80 | r.randrange(1, 6) << 4 | r.randrange(8),)) + fourcc + payload
            if kind == 2:  #: ModEx (nano offset) then a packet
                return bytes((0x97, 2)) + b"\x00\x01\x02" + bytes((0x01,)) + fourcc + payload
            tracks = b"".join(
                bytes((i,)) + len(payload).to_bytes(3, "big") + payload
                for i in range(r.randrange(1, 4))
            )
            multitrack_type = r.randrange(3)
            if multitrack_type == 2:
                tracks = b"".join(fourcc + bytes((i,)) + b"\x00\x00\x02ab" for i in range(2))
                return bytes((0x96, 0x20 | r.randrange(4))) + tracks
            return bytes((0x96, multitrack_type << 4 | r.randrange(4))) + fourcc + tracks
        kind = r.randrange(4)
        if kind == 0:  #: legacy AAC / MP3 / other formats
            return bytes((r.choice((0xAF, 0x2F, 0xBF, 0x9F, 0x0F)), r.randrange(3))) + payload
        fourcc = r.choice(AUDIO_FOURCCS)
        if kind == 1:
            return bytes((0x90 | r.choice((0, 1, 2, 4, 5, 7)),)) + fourcc + payload
        if kind == 2:
            return bytes((0x97, 2)) + b"\x00\x01\x02" + bytes((0x01,)) + fourcc + payload
        tracks = b"".join(
            bytes((i,)) + len(payload).to_bytes(3, "big") + payload
            for i in range(r.randrange(1, 4))
        )
        return bytes((0x95, r.randrange(3) << 4 | r.randrange(2))) + fourcc + tracks

    def chunks(self) -> bytes:
        """A hand-built chunk sequence: connect, then random messages with random headers."""
        r = self.rng
        body = amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"})
        out = bytearray(chunk(0, 3, body, length=len(body), type_id=20))
        for _ in range(r.randrange(1, 7)):
            kind = r.randrange(8)
            type_id: int
            if kind == 0:
                type_id, payload = 20, self.command_body()
            elif kind == 1:
                type_id, payload = r.choice((1, 2, 3, 5)), r.choice(EDGE_U32).to_bytes(4, "big")
            elif kind == 2:
                type_id = 4
                payload = r.randrange(8).to_bytes(2, "big") + bytes(r.randrange(0, 10))
            elif kind == 3:
                type_id, payload = 18, amf0.encode("@setDataFrame", "onMetaData", self.amf_value())
            elif kind == 4:
                type_id = r.choice((15, 17))
                payload = b"\x00" + (self.command_body() if type_id == 17 else self.amf0_body())
            elif kind == 5:
                type_id = r.choice((8, 9))
                payload = self.media_body(type_id == 9)
            elif kind == 6:
                type_id = 22
                payload = msg.aggregate_body(
                    [(r.choice((8, 9, 18)), r.randrange(100), self.media_body(True))]
                )
            else:
                type_id, payload = r.randrange(256), bytes(r.randrange(30))
            length = len(payload) if r.random() < 0.85 else r.choice(EDGE_U24)
            fmt = 0 if r.random() < 0.7 else r.randrange(1, 4)
            csid = r.choice((2, 3, 4, 5, 6, 7, 63, 64, 319, 320, 65599))
            out += chunk(
                fmt,
                csid,
                payload[:128] if length > 128 else payload,
                ts=r.choice((0, 40, 0xFFFFFF, 0x1000000)),
                length=length,
                type_id=type_id,
                msid=r.choice((0, 1, 1, 2, 0xFFFFFFFF)),
            )
            rest = payload[128:]
            for i in range(0, len(rest), 128):
                out += basic_header(3, csid)
                out += rest[i : i + 128]
        return bytes(out)

    # mutations
    def mutate(self, data: bytes, times: int) -> bytes:
        r = self.rng
        buf = bytearray(data)
        for _ in range(times):
            op = r.randrange(10)
            n = len(buf)
            if op == 0 and n:
                i = r.randrange(n)
                buf[i] ^= 1 << r.randrange(8)
            elif op == 1 and n:
                buf[r.randrange(n)] = r.choice(EDGE_BYTES)
            elif op == 2 and n > 3:
                i = r.randrange(n - 2)
                buf[i : i + 3] = r.choice(EDGE_U24).to_bytes(3, "big")
            elif op == 3 and n > 4:
                i = r.randrange(n - 3)
                buf[i : i + 4] = r.choice(EDGE_U32).to_bytes(4, r.choice(("big", "little")))
            elif op == 4:
                i = r.randrange(n + 1)
                buf[i:i] = r.randbytes(r.randrange(1, 16))
            elif op == 5 and n:
                i = r.randrange(n)
                del buf[i : i + r.randrange(1, 64)]
            elif op == 6 and n:
                i = r.randrange(n)
                piece = buf[i : i + r.randrange(1, 300)]
                j = r.randrange(n + 1)
                buf[j:j] = piece
            elif op == 7:
                other = r.choice(self.corpus.c2s)
                i = r.randrange(len(other))
                piece = other[i : i + r.randrange(1, 400)]
                j = r.randrange(n + 1)
                buf[j:j] = piece
            elif op == 8 and n:
                del buf[r.randrange(n) :]
            elif n:
                i = r.randrange(n)
                buf[i] = r.randrange(256)
        return bytes(buf)

    def window(self, data: bytes) -> bytes:
        r = self.rng
        if r.random() < 0.1:
            return data
        return data[: r.choice((200, 600, 1500, 3000, 8000))]

    def pieces(self, data: bytes) -> list[bytes]:
        r = self.rng
        if len(data) < 2 or r.random() < 0.4:
            return [data]
        cuts = sorted(r.randrange(1, len(data)) for _ in range(r.randrange(1, 5)))
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)]) if b > a]

    # inputs per target
    def server_input(self) -> bytes:
        r = self.rng
        kind = r.random()
        if kind < 0.55:
            body = self.mutate(self.window(r.choice(self.corpus.c2s)), r.randrange(1, 5))
        elif kind < 0.9:
            body = self.chunks()
            if r.random() < 0.7:
                body = self.mutate(body, r.randrange(1, 4))
        else:
            body = r.randbytes(r.randrange(1, 400))
        if r.random() < 0.04:
            return self.mutate(PLAIN_HANDSHAKE, 1) + body
        return PLAIN_HANDSHAKE + body

    def client_input(self) -> bytes:
        r = self.rng
        data = r.choice(self.corpus.s2c)
        head, rest = data[:HANDSHAKE], data[HANDSHAKE:]
        rest = self.mutate(self.window(rest), r.randrange(1, 5))
        if r.random() < 0.04:
            head = self.mutate(head, 1)
        return head + rest

    def flv_input(self) -> tuple[bool, bytes]:
        r = self.rng
        video = r.random() < 0.6
        body = self.media_body(video)
        if r.random() < 0.85:
            body = self.mutate(body, r.randrange(1, 4))
        return video, body

    def amf_input(self) -> tuple[str, bytes]:
        r = self.rng
        kind = r.choice(("amf0", "amf3", "command", "data"))
        body = self.amf3_body() if kind == "amf3" else self.amf0_body()
        if kind == "command":
            body = self.command_body()
        return kind, self.mutate(body, r.randrange(0, 4))


# -- drivers -------------------------------------------------------------------------------------

#: server events by kind over the run: how deep the inputs reach (publish, media, play)
SEEN: Counter[str] = Counter()


def check_error_state(conn: ServerConnection | ClientConnection, error: Exception) -> None:
    """After the protocol error: ERROR, the same error again, sends refused, nothing queued."""
    conn.data_to_send()
    if isinstance(conn, ServerConnection) and conn.state is not ConnState.ERROR:
        raise AssertionError(f"state {conn.state} after {error!r}")
    if conn.error is not error:
        raise AssertionError("error property is not the raised error")
    try:
        conn.next_event()
    except RemoteProtocolError as again:
        if again is not error:
            raise AssertionError("next_event raised another error") from again
    else:
        raise AssertionError("next_event did not raise in ERROR")
    try:
        conn.send_video(1, 0, b"\x17\x01")
    except LocalProtocolError:
        pass
    else:
        raise AssertionError("a send was accepted in ERROR")
    if conn.data_to_send():
        raise AssertionError("bytes queued in ERROR")


def drive_server(gen: Gen, data: bytes, limits: Limits) -> str:
    """Returns the outcome: 'ok', 'closed' or 'protocol-error'."""
    r = gen.rng
    conn = ServerConnection(limits=limits)
    playing: list[int] = []
    published: list[int] = []
    try:
        for piece in [*gen.pieces(data), b""]:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                cls = type(event)
                SEEN[cls.__name__] += 1
                if cls is ev.ConnectRequested:
                    if r.random() < 0.93:
                        conn.accept_connect()
                    else:
                        conn.reject_connect("no")
                elif cls is ev.PublishRequested:
                    assert isinstance(event, ev.PublishRequested)
                    if r.random() < 0.85:
                        conn.accept_publish(event.stream_id)
                        published.append(event.stream_id)
                        if r.random() < 0.05:
                            conn.end_publish(event.stream_id, "kicked")
                    else:
                        conn.reject_publish(event.stream_id, "no")
                elif cls is ev.PlayRequested:
                    assert isinstance(event, ev.PlayRequested)
                    if r.random() < 0.8:
                        conn.accept_play(event.stream_id)
                        playing.append(event.stream_id)
                    else:
                        conn.reject_play(event.stream_id, "no")
                elif cls is ev.ConnectionClosed:
                    return "closed"
            #: once the events are taken, what is still held is within the allowance
            admitted = any(conn.stream_state(s) is StreamState.PUBLISHING for s in published)
            if (
                not admitted
                and conn.pending_bytes > limits.max_pending_bytes_unadmitted + HANDSHAKE
            ):
                raise AssertionError(f"holding {conn.pending_bytes} bytes before admission")
            for stream_id in playing:
                if conn.stream_state(stream_id) is StreamState.PLAYING:
                    conn.send_video(stream_id, 0, b"\x17\x01\x00\x00\x00\x00")
            conn.data_to_send()
            if conn.state is ConnState.CLOSED and r.random() < 0.5:
                return "closed"
    except RemoteProtocolError as exc:
        check_error_state(conn, exc)
        return "protocol-error"
    return "ok"


def drive_client(gen: Gen, data: bytes, limits: Limits) -> str:
    conn = ClientConnection(limits=limits, digest_handshake=gen.rng.random() < 0.2)
    conn.connect("live", tc_url="rtmp://h/live")
    conn.create_stream()
    conn.publish(1, "s")
    conn.data_to_send()
    try:
        for piece in [*gen.pieces(data), b""]:
            conn.receive_data(piece)
            for event in conn.events():
                if isinstance(event, ev.ConnectionClosed):
                    return "closed"
            if conn.handshake_complete:
                conn.send_audio(1, 0, b"\xaf\x01")
            conn.data_to_send()
    except RemoteProtocolError as exc:
        check_error_state(conn, exc)
        return "protocol-error"
    return "ok"


def drive_flv(video: bool, body: bytes) -> str:
    try:
        packets = tags.parse_video(body) if video else tags.parse_audio(body)
    except TagError:
        return "tag-error"
    for packet in packets:
        for legacy in (True, False):
            try:
                (tags.video_body if video else tags.audio_body)(packet, legacy=legacy)
            except TagError:
                pass
    return "ok"


def drive_amf(kind: str, body: bytes, limits: Limits) -> str:
    try:
        if kind == "amf0":
            values = amf0.Decoder(
                body, max_depth=limits.max_amf_depth, max_nodes=limits.max_amf_nodes
            ).decode_all()
            amf0.encode(*values)  #: what the server does with data messages
        elif kind == "amf3":
            amf3.Decoder(
                body, max_depth=limits.max_amf_depth, max_nodes=limits.max_amf_nodes
            ).decode()
        elif kind == "command":
            msg.parse_command(
                20,
                body,
                max_depth=limits.max_amf_depth,
                max_items=limits.max_amf_items,
                max_nodes=limits.max_amf_nodes,
            )
        else:
            values = msg.parse_data(
                15,
                b"\x00" + body,
                max_depth=limits.max_amf_depth,
                max_items=limits.max_amf_items,
                max_nodes=limits.max_amf_nodes,
            )
            amf0.encode(*values)
    except RemoteProtocolError:
        return "protocol-error"
    return "ok"


# -- the run -------------------------------------------------------------------------------------


class Run:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.gen = Gen(self.rng, Corpus())
        self.counts: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.failures: dict[str, dict[str, Any]] = {}

    def one(self, target: str) -> None:
        gen = self.gen
        limits = SMALL if self.rng.random() < 0.33 else DEFAULT
        data: bytes
        call: Callable[[], str]
        if target == "server":
            data = gen.server_input()
            call = lambda: drive_server(gen, data, limits)  # noqa: E731
        elif target == "client":
            data = gen.client_input()
            call = lambda: drive_client(gen, data, limits)  # noqa: E731
        elif target == "flv":
            video, data = gen.flv_input()
            call = lambda: drive_flv(video, data)  # noqa: E731
        else:
            kind, data = gen.amf_input()
            call = lambda: drive_amf(kind, data, limits)  # noqa: E731
        self.counts[target] += 1
        try:
            self.outcomes[f"{target}:{call()}"] += 1
        except Exception as exc:  # noqa: BLE001 - anything but the protocol error is a finding
            self.record(target, data, exc)

    def record(self, target: str, data: bytes, exc: BaseException) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "?"
        key = f"{target} {type(exc).__name__} {where}"
        found = self.failures.get(key)
        if found is None:
            self.failures[key] = {
                "target": target,
                "exception": f"{type(exc).__name__}: {exc}"[:500],
                "where": where,
                "count": 1,
                "input_hex": data[:4096].hex(),
                "traceback": "".join(traceback.format_exception(exc))[-3000:],
            }
            print(f"FAILURE {key}: {exc!r}"[:300], file=sys.stderr, flush=True)
        else:
            found["count"] += 1


def run_random(args: argparse.Namespace) -> dict[str, Any]:
    run = Run(args.seed)
    targets = list(MIX)
    weights = [MIX[t] for t in targets]
    started = time.perf_counter()
    batch = 10_000
    done = 0
    while done < args.inputs:
        for target in run.rng.choices(targets, weights, k=min(batch, args.inputs - done)):
            run.one(target)
        done += batch
        if done % 100_000 == 0:
            elapsed = time.perf_counter() - started
            print(f"{done:>9} inputs {elapsed:7.1f} s", flush=True)
    seconds = time.perf_counter() - started
    return summary(args, run, seconds)


def run_atheris(args: argparse.Namespace) -> dict[str, Any]:
    import atheris  #: optional engine: pip install atheris

    run = Run(args.seed)
    targets = list(MIX)
    started = time.perf_counter()

    def test_one(data: bytes) -> None:
        provider = atheris.FuzzedDataProvider(data)
        target = targets[provider.ConsumeIntInRange(0, len(targets) - 1)]
        limits = SMALL if provider.ConsumeBool() else DEFAULT
        body = provider.ConsumeBytes(provider.remaining_bytes())
        run.counts[target] += 1
        try:
            if target == "server":
                outcome = drive_server(run.gen, PLAIN_HANDSHAKE + body, limits)
            elif target == "client":
                outcome = drive_client(run.gen, run.gen.corpus.s2c[0][:HANDSHAKE] + body, limits)
            elif target == "flv":
                outcome = drive_flv(len(body) % 2 == 0, body)
            else:
                outcome = drive_amf(
                    ("amf0", "amf3", "command", "data")[len(body) % 4], body, limits
                )
            run.outcomes[f"{target}:{outcome}"] += 1
        except Exception as exc:  # noqa: BLE001
            run.record(target, body, exc)
        total = sum(run.counts.values())
        if total % 10_000 == 0 or total >= args.inputs:
            #: libFuzzer leaves with exit(): no atexit hook runs, so the result is kept current
            write(summary(args, run, time.perf_counter() - started), quiet=total < args.inputs)

    result: dict[str, Any] = {}
    seeds = Path(args.atheris_corpus)
    seeds.mkdir(parents=True, exist_ok=True)
    for index, c2s in enumerate(run.gen.corpus.c2s[:4]):
        (seeds / f"seed{index}").write_bytes(c2s[:2000])
    atheris.instrument_all()  #: coverage of every module loaded (the core included)
    atheris.Setup([sys.argv[0], f"-runs={args.inputs}", "-max_len=4096", str(seeds)], test_one)
    atheris.Fuzz()
    return result  # pragma: no cover - atheris exits the process


def summary(args: argparse.Namespace, run: Run, seconds: float) -> dict[str, Any]:
    total = sum(run.counts.values())
    return {
        "bench": "fuzz",
        "engine": args.engine,
        "seed": args.seed,
        "inputs": total,
        "seconds": round(seconds, 1),
        "inputs_per_s": round(total / seconds) if seconds else None,
        "by_target": dict(run.counts),
        "outcomes": dict(sorted(run.outcomes.items())),
        "server_events": dict(SEEN.most_common()),
        "failures": list(run.failures.values()),
        "ok": not run.failures,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write(result: dict[str, Any], *, quiet: bool = False) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "fuzz.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    if quiet:
        return path
    print(
        f"{result['inputs']} inputs in {result['seconds']} s "
        f"({result['inputs_per_s']}/s), {len(result['failures'])} failure kinds -> {path}",
        flush=True,
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engine", choices=("random", "atheris"), default="random")
    parser.add_argument("--atheris-corpus", default="/tmp/rtmp_ingest_fuzz_corpus")
    args = parser.parse_args()
    if args.engine == "atheris":
        run_atheris(args)
        return
    result = run_random(args)
    write(result)
    for failure in result["failures"]:
        print(f"\n{failure['target']}: {failure['exception']} ×{failure['count']}")
        print(failure["traceback"])
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()

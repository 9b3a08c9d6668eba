"""Differential-testing oracle built on pyrtmp 0.3.1's OWN chunk reader / writer.

The point of this module is to run *pyrtmp's code* (not a re-implementation) over a
client->server RTMP byte stream that starts at the first chunk (i.e. after the
handshake), so that ``rtmp_ingest``'s decoder can be compared against it and
benchmarked against it.

API
---
``decode_messages(data, *, initial_chunk_size=128, strict=True) -> list[OracleMessage]``
    Feeds ``data`` + EOF into an ``asyncio.StreamReader``, wraps it in
    ``pyrtmp.session_manager.SessionManager`` and iterates
    ``SessionManager.read_chunks_from_stream()`` (pyrtmp's reassembler, which calls
    ``SessionManager.read_raw_chunk()``, which reads through pyrtmp's bitstring based
    ``BitStreamReader``).

    SetChunkSize: pyrtmp's reader does NOT apply SetChunkSize by itself. In pyrtmp's
    server (``pyrtmp.rtmp.SimpleRTMPController``) each reassembled message is turned
    into an object by ``MessageFactory.from_chunk`` and ``on_set_chunk_size`` then does
    ``session.reader_chunk_size = message.chunk_size``. Because ``read_chunks_from_stream``
    is an async generator, that assignment happens before the next raw chunk is read,
    i.e. the new size applies from the very next chunk. The oracle does exactly that,
    using ``pyrtmp.messages.protocol_control.SetChunkSize.from_chunk`` to parse the value
    (so pyrtmp's assertion ``1 <= chunk_size <= 2**31-1`` applies: a size of 0 or a
    size with bit 31 set raises ``OracleError``).
    Nothing else (Abort, Ack, window size ...) has any effect on pyrtmp's reader.

    With ``strict=True`` (default) an ``OracleError`` is raised if the stream does not
    end exactly at a message boundary (trailing partial chunk, or a message whose
    chunks were not all received).  With ``strict=False`` the complete messages decoded
    so far are returned.  Any exception raised by pyrtmp itself (KeyError for a type
    1/2/3 chunk on an unknown chunk stream, AssertionError ...) is re-raised as
    ``OracleError`` with ``.messages`` holding what was decoded before the failure.

``OracleMessage``: NamedTuple ``(chunk_stream_id, message_type_id, message_stream_id,
    timestamp, payload)``.  ``payload`` is the raw reassembled message body exactly as
    pyrtmp exposes it (``Chunk.payload``) -- pyrtmp keeps raw bytes for *every* message
    type at this level, AMF / control parsing only happens later in ``MessageFactory``
    (use ``parse_with_pyrtmp`` to get that object if you want it).
    All five fields are directly comparable with a correct decoder EXCEPT in the
    cases listed under "Known pyrtmp bugs" below (chiefly: timestamps).

``decode_throughput(data, *, initial_chunk_size=128, repeat=1) -> float``
    MB/s (1 MB = 10**6 bytes of input) of pyrtmp decoding ``data``; times only the
    ``async for`` over ``read_chunks_from_stream`` + SetChunkSize handling (the reader
    is fed before the clock starts; no result objects are built).  Best of ``repeat``.

``encode_chunks_with_pyrtmp(messages, chunk_size=128, *, faithful=False) -> bytes``
    pyrtmp does have a writer: ``Chunk.to_raw_chunks(chunk_size, previous)`` (fragmentation
    + header type choice) and ``RawChunk.to_bytes()`` (serialisation), driven by
    ``SessionManager.write_chunk_to_stream``.  See the function docstring: the default
    (``faithful=False``) uses pyrtmp's fragmentation and serialisation per message with
    ``previous=None`` (=> one type-0 chunk + type-3 continuations) and fixes up the one
    thing that is then broken (the timestamp); ``faithful=True`` drives the real
    ``SessionManager.write_chunk_to_stream`` state machine, bugs included.

``parse_with_pyrtmp(msg)``: ``MessageFactory.from_chunk`` on an ``OracleMessage``.

Known pyrtmp 0.3.1 bugs / limitations (from reading its source; 1-8, 10, 12, 16 and the
SetChunkSize assertion are pinned by ``test_bug*`` tests in test_pyrtmp_oracle.py, 9, 11,
14, 15 were checked by one-off experiments)
---------------------------------------------------------------------------------------
Reader (``SessionManager.read_raw_chunk`` / ``read_chunks_from_stream``):

1. Extended timestamp on type-3 chunks is NOT read.  For fmt 3 pyrtmp sets
   ``timestamp = previous_chunk.timestamp`` (already the 32-bit extended value) and only
   reads the 4-byte extended field ``if timestamp == 0xFFFFFF``.  Encoders that repeat the
   extended timestamp on type-3 continuation chunks (FFmpeg/librtmp/OBS, as the spec
   requires) therefore desync the stream once a timestamp >= 0xFFFFFF (~4h39m) is
   reached: the 4 bytes are taken as payload and everything after is garbage.
   (Messages that fit in ONE chunk with a type-0 header are fine.)
2. Extended timestamp on type-1/2 headers is NOT read.  pyrtmp computes
   ``timestamp = previous.timestamp + delta`` first and then tests ``== 0xFFFFFF``, so a
   delta field of 0xFFFFFF is only recognised if the previous timestamp was 0 (and then
   the extended value is used as an ABSOLUTE timestamp, not as a delta).  Otherwise the
   4 extended bytes are consumed as payload -> desync.
3. Conversely, if ``previous.timestamp + delta`` (type 1/2) happens to equal exactly
   0xFFFFFF (16777215 ms), pyrtmp reads 4 payload bytes as an "extended timestamp" ->
   bogus timestamp and desync, although no extended field was sent.
4. A type-3 chunk that STARTS a new message (after the previous message on that chunk
   stream completed) does not re-apply the previous type-1/2 delta: pyrtmp reports the
   same timestamp as the previous message (spec: timestamp += last delta).  With a type-0
   predecessor the timestamp is repeated, which is correct.
5. Timestamps computed from deltas are not wrapped modulo 2**32 (they just keep growing
   as Python ints).
6. 3-byte basic header (chunk stream id >= 320): pyrtmp reads the 16-bit field
   BIG-endian (``uint:16``); the spec / FFmpeg use little-endian.  Chunk stream ids
   64..319 (2-byte form) and 2..63 are fine.
7. A SetChunkSize received while another chunk stream has a partially received message
   breaks that message: the remaining size is computed as
   ``msg_length - new_chunk_size * chunk_index`` instead of from the bytes already read.
8. Abort Message (type 2) is not acted upon: a partially received message is not dropped.
9. A type-1/2 header arriving while the previous message on that chunk stream is not
   complete is treated as a continuation (sequence = previous + 1); a type-0 header in
   that situation restarts the chunk count but its bytes are appended to the OLD
   partial message (whose length is still used) -> corrupt reassembly.
10. A type-1/2/3 chunk on a chunk stream never seen before raises ``KeyError``
    (not a protocol error).
11. ``SessionManager.total_read_bytes`` is actually a count of BITS.

Writer (``Chunk.to_raw_chunks`` / ``SessionManager.write_chunk_to_stream``):

12. Every raw chunk gets ``timestamp = timedelta`` where ``timedelta`` is 0 when
    ``previous`` is None: a type-0 header written with no previous chunk carries
    timestamp 0, not the message timestamp.  ``SessionManager.drain()`` resets
    ``previous`` to None, so pyrtmp's own server always sends timestamp 0.
13. With a ``previous`` chunk, the header type (1/2) is chosen without checking that
    ``previous`` is on the same CHUNK STREAM, the delta is computed against the previous
    raw chunk's header field (itself a delta), and ``NotImplementedError`` is raised when
    that field exceeds the delta.  So ``faithful=True`` output is generally wrong.
14. A zero-length message produces no chunk at all.
15. 3-byte basic header written big-endian (mirror of 6).
16. (AMF, outside this oracle) ``AMF0Serializer.write_string_object`` writes
    ``len(str)`` (characters) as the length and truncates the UTF-8 bytes to that many
    bytes, so non-ASCII strings are corrupted on write; the deserializer only supports
    number/bool/string/object/null/ECMA-array (no strict array, long string, date,
    undefined, reference) and decodes strings with strict UTF-8.

Ambiguity (not counted as a pyrtmp bug): a type-3 chunk starting a new message right
after a TYPE-0 message: pyrtmp repeats the timestamp (delta 0); FFmpeg's reader adds the
previous type-0 timestamp field again (doubling it).  Avoid this case in differential
tests or compare timestamps leniently there.

Packaging hazard: the pyrtmp 0.3.1 wheel installs a top-level ``tests`` package into
site-packages (tests/__init__.py imports psutil).  ``import tests.support...`` works under
pytest (rootdir first on sys.path) and with ``python -m`` from the repo root, but not from
a script run elsewhere without PYTHONPATH=<repo>.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from pyrtmp import StreamClosedException
from pyrtmp.messages import Chunk, RawChunk
from pyrtmp.messages.protocol_control import SetChunkSize
from pyrtmp.session_manager import SessionManager

__all__ = [
    "OracleError",
    "OracleMessage",
    "decode_messages",
    "decode_throughput",
    "encode_chunks_with_pyrtmp",
    "parse_with_pyrtmp",
]


class OracleMessage(NamedTuple):
    chunk_stream_id: int
    message_type_id: int
    message_stream_id: int
    timestamp: int
    payload: bytes


class OracleError(Exception):
    """pyrtmp failed (or the stream was truncated in strict mode)."""

    def __init__(self, msg: str, messages: list[OracleMessage]) -> None:
        super().__init__(msg)
        self.messages = messages


class _NullWriter:
    """Stand-in for asyncio.StreamWriter (the reader never writes)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("oracle", 0) if name == "peername" else default

    async def drain(self) -> None:
        return None


def _run(coro_factory):
    """asyncio.run, or in a worker thread if an asyncio loop is already running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_factory())
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(lambda: asyncio.run(coro_factory())).result()


def _make_session(data: bytes, initial_chunk_size: int) -> SessionManager:
    # Must be called with a running loop (StreamReader binds to it).
    reader = asyncio.StreamReader(limit=max(2**16, len(data) + 1))
    reader.feed_data(data)
    reader.feed_eof()
    return SessionManager(
        reader=reader,
        writer=_NullWriter(),
        reader_chunk_size=initial_chunk_size,
        writer_chunk_size=initial_chunk_size,
    )


def _apply_control(session: SessionManager, chunk: Chunk) -> None:
    # Exactly what pyrtmp.rtmp.SimpleRTMPController does (MessageFactory.from_chunk ->
    # SetChunkSize.from_chunk -> on_set_chunk_size).
    if chunk.msg_type_id == 0x01:
        session.reader_chunk_size = SetChunkSize.from_chunk(chunk).chunk_size


def _incomplete_state(session: SessionManager) -> str | None:
    buffered_bits = session.fifo_reader.buffer.length - session.fifo_reader.buffer.pos
    if buffered_bits:
        return f"{buffered_bits // 8} trailing bytes of a partial chunk"
    partial = sorted(
        int(k) for k, c in session.latest_chunks.items() if k != "latest" and not c.is_eof
    )
    if partial:
        return f"incomplete message(s) on chunk stream(s) {partial}"
    return None


async def _decode(data: bytes, initial_chunk_size: int, strict: bool) -> list[OracleMessage]:
    session = _make_session(data, initial_chunk_size)
    out: list[OracleMessage] = []
    try:
        async for chunk in session.read_chunks_from_stream():
            out.append(
                OracleMessage(
                    chunk.chunk_id,
                    chunk.msg_type_id,
                    chunk.msg_stream_id,
                    chunk.timestamp,
                    bytes(chunk.payload),
                )
            )
            _apply_control(session, chunk)
    except StreamClosedException:
        pass
    except Exception as exc:  # pyrtmp blew up (KeyError, AssertionError, bitstring errors)
        raise OracleError(f"pyrtmp failed: {type(exc).__name__}: {exc}", out) from exc
    if strict:
        problem = _incomplete_state(session)
        if problem:
            raise OracleError(f"stream ended mid-message: {problem}", out)
    return out


def decode_messages(
    data: bytes, *, initial_chunk_size: int = 128, strict: bool = True
) -> list[OracleMessage]:
    """Decode a post-handshake client->server RTMP byte stream with pyrtmp's reader."""
    data = bytes(data)
    return _run(lambda: _decode(data, initial_chunk_size, strict))


async def _bench_once(data: bytes, initial_chunk_size: int) -> tuple[float, int]:
    session = _make_session(data, initial_chunk_size)
    n = 0
    t0 = time.perf_counter()
    try:
        async for chunk in session.read_chunks_from_stream():
            n += 1
            if chunk.msg_type_id == 0x01:
                session.reader_chunk_size = SetChunkSize.from_chunk(chunk).chunk_size
    except StreamClosedException:
        pass
    return time.perf_counter() - t0, n


def decode_throughput(data: bytes, *, initial_chunk_size: int = 128, repeat: int = 1) -> float:
    """MB/s (10**6 bytes of input per second) of pyrtmp's reader on ``data``; best of ``repeat``."""
    data = bytes(data)
    best = float("inf")
    for _ in range(max(1, repeat)):
        elapsed, _n = _run(lambda: _bench_once(data, initial_chunk_size))
        best = min(best, elapsed)
    return len(data) / 1e6 / best


def _as_chunk(m: Any) -> Chunk:
    if isinstance(m, Chunk):
        return m
    if isinstance(m, OracleMessage):
        cs, mt, ms, ts, payload = m
    elif isinstance(m, dict):
        cs, mt, ms, ts, payload = (
            m["chunk_stream_id"],
            m["message_type_id"],
            m["message_stream_id"],
            m["timestamp"],
            m["payload"],
        )
    else:  # any object with the OracleMessage attribute names
        cs, mt, ms, ts, payload = (
            m.chunk_stream_id,
            m.message_type_id,
            m.message_stream_id,
            m.timestamp,
            m.payload,
        )
    payload = bytes(payload)
    return Chunk(
        chunk_type=0,
        chunk_id=cs,
        timestamp=ts,
        msg_length=len(payload),
        msg_type_id=mt,
        msg_stream_id=ms,
        payload=payload,
    )


def encode_chunks_with_pyrtmp(
    messages: Iterable[Any], chunk_size: int = 128, *, faithful: bool = False
) -> bytes:
    """Serialise messages into chunks with pyrtmp's writer code.

    ``messages``: OracleMessage / dicts / objects with the OracleMessage field names /
    pyrtmp ``Chunk`` objects.  ``chunk_size`` is the initial writer chunk size; after a
    SetChunkSize (type 1) message has been written, the writer switches to its value
    (what pyrtmp's server does after sending SetChunkSize in ``on_nc_connect``).

    faithful=False (default, useful for differential tests): each message goes through
      ``Chunk.to_raw_chunks(chunk_size, previous=None)`` (=> type 0 + type 3 chunks,
      pyrtmp's fragmentation) and ``RawChunk.to_bytes()`` (pyrtmp's serialisation,
      which writes the extended timestamp on type-0 AND type-3 chunks when
      timestamp >= 0xFFFFFF, like FFmpeg).  Two fix-ups to pyrtmp bugs: the raw chunks'
      timestamp is set to the message timestamp (pyrtmp would write 0, bug 12), and a
      zero-length message yields one empty type-0 chunk (pyrtmp yields nothing, bug 14).
      Caveat: chunk stream ids >= 320 are written big-endian (bug 15).
    faithful=True: the messages are written through a real
      ``SessionManager.write_chunk_to_stream`` (stateful header compression, no drain),
      bugs included -- expect wrong timestamps/types or NotImplementedError.
    """
    if faithful:
        writer = _NullWriter()
        session = SessionManager(reader=None, writer=writer, writer_chunk_size=chunk_size)
        for m in messages:
            ch = _as_chunk(m)
            session.write_chunk_to_stream(ch)
            if ch.msg_type_id == 0x01:
                session.writer_chunk_size = SetChunkSize.from_chunk(ch).chunk_size
        return b"".join(writer.chunks)

    out = bytearray()
    size = chunk_size
    for m in messages:
        ch = _as_chunk(m)
        raws = ch.to_raw_chunks(size, None)
        if not raws:
            raws = [
                RawChunk(
                    chunk_type=0,
                    chunk_id=ch.chunk_id,
                    timestamp=ch.timestamp,
                    msg_length=0,
                    msg_type_id=ch.msg_type_id,
                    msg_stream_id=ch.msg_stream_id,
                    payload=b"",
                )
            ]
        for raw in raws:
            raw.timestamp = ch.timestamp
            out += raw.to_bytes()
        if ch.msg_type_id == 0x01:
            size = SetChunkSize.from_chunk(ch).chunk_size
    return bytes(out)


def parse_with_pyrtmp(msg: OracleMessage) -> Any:
    """pyrtmp's MessageFactory object for a message (NotImplementedError for unknown types)."""
    from pyrtmp.messages.factory import MessageFactory

    return MessageFactory.from_chunk(_as_chunk(msg))

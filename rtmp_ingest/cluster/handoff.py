"""Handing an RTMP connection to the worker that owns its stream: what travels, and the replay.

docs/spec.md §9. A connection lands on whichever worker the kernel picked
(`SO_REUSEPORT`); its stream path is known only after `connect` and
`publish`/`play`. If another worker owns that path, the socket goes there
(`cluster/transfer.py`: `SCM_RIGHTS` over a unix socket) with a `Handoff`.

**Design: replay, not state transfer.** The `Handoff` carries every read the
first worker passed to its core, in order and with the same boundaries, and the
owner feeds them into a fresh `ServerConnection` exactly as the first worker's
driver did (the handshake reads, then the events of each read, `connect`
accepted as the first worker accepted it), discarding everything the replay
produces: the first worker already put those bytes on the wire. The core is
deterministic given its input reads and the driver's decisions, so the owner's
core ends in the state the first one had when it stopped at the request:

- the handshake's randomness (S1's random bytes and time, a digest S2) goes
  only into output, which is discarded; the server reads C2 and does not check
  it (handshake.py), so no state depends on what S1 was;
- acknowledgements are computed per `receive_data` call (the window is checked
  after each read), so the reads are replayed with their boundaries kept, not
  concatenated;
- the outgoing chunk encoder's header compression and chunk size depend only on
  what was sent, which the replay sends again (into the discard);
- the core reads no clock.

A copy of the core's state would have to serialise the chunk codec's per-stream
headers, the AMF decoder and the stream table and would break whenever one of
them changes; a replay reuses the only code path that is tested against real
clients. tests/cluster/test_handoff.py proves it: any session, any read sizes,
any cut after the request — the events and bytes after the hand-off are those
of an uninterrupted connection, byte for byte.

Bounded: the first worker keeps its reads only until the stream path is known,
at most `MAX_REPLAY_BYTES` (the handshake, a few commands, the rest of the read
that carried the request); a connection that sends more before publishing is
not handed over (and is closed, its encoder reconnects).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

import attrs

from rtmp_ingest.rtmp import NEED_DATA, PAUSED, ProtocolError, ServerConnection
from rtmp_ingest.rtmp import events as ev
from rtmp_ingest.server.placement import Vouched

from .ownership import Local, Worker

#: What a connection may send before publish/play and still be handed over. The
#: handshake is 3073 bytes and commands a few hundred; the read that carried the
#: request may carry media behind it (at most one receive of the driver, 64 KiB).
MAX_REPLAY_BYTES: Final = 1024 * 1024
#: The header (addresses, path, read sizes) of one hand-off, at most.
MAX_HEADER_BYTES: Final = 64 * 1024
#: Starts every hand-off message (a stray connection to the socket is refused).
MAGIC: Final = b"RIH1"
_PREFIX = struct.Struct(">4sII")  #: magic, header length, replay length


class HandoffError(Exception):
    """A hand-off message or replay that cannot be used (the connection is closed)."""


@attrs.frozen(kw_only=True)
class Handoff:
    """Everything the owner needs besides the socket itself."""

    #: "app/stream" the request named (the owner checks its replay reaches the same)
    stream_path: str
    #: the client's address as the first worker saw it ("1.2.3.4:5678")
    remote: str
    #: the client came over RTMPS: TLS ends in the first worker, which relays plaintext
    secure: bool
    #: the worker that accepted the connection (for logs)
    from_worker: int
    #: every read the first worker fed its core, boundaries kept
    reads: tuple[bytes, ...]

    def encode(self) -> bytes:
        """The message: prefix, JSON header, then the reads back to back."""
        header = json.dumps(
            {
                "stream_path": self.stream_path,
                "remote": self.remote,
                "secure": self.secure,
                "from_worker": self.from_worker,
                "sizes": [len(r) for r in self.reads],
            },
            separators=(",", ":"),
        ).encode()
        replay = b"".join(self.reads)
        return _PREFIX.pack(MAGIC, len(header), len(replay)) + header + replay

    @staticmethod
    def lengths(prefix: bytes) -> tuple[int, int]:
        """(header bytes, replay bytes) announced by a message's first PREFIX_BYTES."""
        magic, header_len, replay_len = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise HandoffError("not a hand-off message")
        if header_len > MAX_HEADER_BYTES or replay_len > MAX_REPLAY_BYTES:
            raise HandoffError(f"hand-off too large ({header_len} + {replay_len} bytes)")
        return header_len, replay_len

    @classmethod
    def decode(cls, message: bytes) -> Handoff:
        """The inverse of `encode`; HandoffError for anything else."""
        if len(message) < PREFIX_BYTES:
            raise HandoffError("hand-off message cut short")
        header_len, replay_len = cls.lengths(message[:PREFIX_BYTES])
        if len(message) != PREFIX_BYTES + header_len + replay_len:
            raise HandoffError("hand-off message has the wrong length")
        try:
            header = json.loads(message[PREFIX_BYTES : PREFIX_BYTES + header_len])
            sizes = [int(n) for n in header["sizes"]]
            fields = (
                str(header["stream_path"]),
                str(header["remote"]),
                bool(header["secure"]),
                int(header["from_worker"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise HandoffError(f"bad hand-off header: {exc}") from None
        if any(n < 0 for n in sizes) or sum(sizes) != replay_len:
            raise HandoffError("hand-off read sizes do not add up")
        replay = message[PREFIX_BYTES + header_len :]
        reads, offset = [], 0
        for size in sizes:
            reads.append(replay[offset : offset + size])
            offset += size
        stream_path, remote, secure, from_worker = fields
        return cls(
            stream_path=stream_path,
            remote=remote,
            secure=secure,
            from_worker=from_worker,
            reads=tuple(reads),
        )


PREFIX_BYTES: Final = _PREFIX.size


class HandoffHook(Protocol):
    """What the RTMP listener asks, in a worker (cluster/worker.py implements it)."""

    #: this worker's id (logs, and the `from_worker` of its hand-offs)
    worker_id: int

    def owner_of(self, stream_path: str) -> Local | Worker:
        """Where a connection that asks for `stream_path` is served."""
        ...

    def inbound(
        self, stream_path: str, query: Mapping[str, str], remote: str
    ) -> tuple[dict[str, str], Vouched | None]:
        """The query without internal credentials, and the encoder's address (and
        protocol) when another worker's relay vouched for it (None: an ordinary client)."""
        ...

    async def hand_over(self, stream: Any, owner: Worker, handoff: Handoff) -> None:
        """Gives the connection on `stream` to `owner` (for TLS: relays until it ends);
        raises HandoffError when the owner did not take it."""
        ...


class ReadLog:
    """The first worker's record of its reads, until the stream path is known."""

    __slots__ = ("_reads", "_size", "overflowed")

    def __init__(self) -> None:
        self._reads: list[bytes] = []
        self._size = 0
        #: more than MAX_REPLAY_BYTES came before the request: no hand-off possible
        self.overflowed = False

    def add(self, data: bytes) -> None:
        if self.overflowed or not data:
            return
        self._size += len(data)
        if self._size > MAX_REPLAY_BYTES:
            self.overflowed = True
            self._reads.clear()
            return
        self._reads.append(data)

    @property
    def reads(self) -> tuple[bytes, ...]:
        return tuple(self._reads)


@attrs.frozen
class Replayed:
    """What the replay saw: the events before the request, and the request."""

    events: tuple[ev.Event, ...]
    request: ev.PublishRequested | ev.PlayRequested


def replay(conn: ServerConnection, reads: Iterable[bytes]) -> Replayed:
    """Feeds `reads` into a fresh `conn` as the first worker's driver did; output discarded.

    The driver (server/rtmp.py `_serve`) passes each read to `receive_data`, flushes
    without looking at events while the handshake is incomplete, and otherwise takes
    events until NEED_DATA or PAUSED, accepting `connect` when it comes. It stopped at
    the first publish/play request, which is returned undecided: the owner decides it.
    Raises HandoffError when the reads do not lead to a request (or break the protocol).
    """
    events: list[ev.Event] = []
    request: ev.PublishRequested | ev.PlayRequested | None = None
    try:
        for data in reads:
            if request is not None:
                raise HandoffError("hand-off reads go on after the request")
            conn.receive_data(data)
            if not conn.handshake_complete:
                continue
            while request is None:
                event = conn.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                if isinstance(event, ev.PublishRequested | ev.PlayRequested):
                    request = event
                elif isinstance(event, ev.ConnectionClosed):
                    raise HandoffError("the replayed session closed before its request")
                else:
                    events.append(event)
                    if isinstance(event, ev.ConnectRequested):
                        conn.accept_connect()
    except ProtocolError as exc:
        raise HandoffError(f"replay failed: {exc.message}") from None
    conn.data_to_send()  #: already on the wire, sent by the first worker
    if request is None:
        raise HandoffError("the replayed reads end before a publish or play request")
    return Replayed(events=tuple(events), request=request)


def request_path(reads: Sequence[bytes]) -> str:
    """The stream path a recorded session asks for (the owner's check of a hand-off)."""
    return replay(ServerConnection(), reads).request.address.path

"""Moving a connection's descriptor between workers: `SCM_RIGHTS` over a unix socket.

Each worker listens on its own unix socket (`HandoffServer`). To hand a connection
over, the first worker connects there, sends the `Handoff` message with the
socket's descriptor attached to its first bytes (`sendmsg` with `SCM_RIGHTS`, what
`socket.send_fds` does), and waits for one byte: `ACCEPTED` once the owner has
turned the descriptor into a session. Only then does it close its own copy of the
descriptor — closing one of two references sends nothing to the client, so the
TCP connection just carries on in the owner. Every step has a deadline
(`HANDOFF_TIMEOUT_S`); a failed hand-off is the first worker's to resolve (it tells
the client and closes).

RTMPS: a TLS session cannot move with its descriptor (its keys and sequence
numbers live in the first worker's OpenSSL). So for RTMPS the first worker keeps
the TLS connection, creates a unix socket pair, hands the owner one end (marked
`secure`, with the client's address) and relays plaintext between TLS and the other
end until either side closes (`relay`). The owner serves it as any connection.
"""

from __future__ import annotations

import array
import logging
import socket
from collections.abc import Callable
from typing import Final

import trio

from rtmp_ingest.cluster.handoff import PREFIX_BYTES, Handoff, HandoffError

log = logging.getLogger("rtmp_ingest.cluster")

#: How long connecting, sending and the owner's answer may take together.
HANDOFF_TIMEOUT_S: Final = 5.0
#: The owner's answer: the descriptor is a session now.
ACCEPTED: Final = b"\x01"
#: Bytes per relay read (RTMPS through the first worker).
RELAY_BYTES: Final = 65536
#: How many hand-offs may be being received at once (each is a short exchange).
MAX_PENDING_HANDOFFS: Final = 256


async def send_connection(socket_path: str, fd: int, handoff: Handoff) -> None:
    """Gives `fd` and `handoff` to the worker listening at `socket_path`.

    Returns once the owner has accepted it; raises HandoffError otherwise.
    """
    message = handoff.encode()
    try:
        with trio.fail_after(HANDOFF_TIMEOUT_S):
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with sock:
                await sock.connect(socket_path)
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
                #: the descriptor rides on the first bytes; the rest follows plainly
                first = message[:PREFIX_BYTES]
                sent = await sock.sendmsg([first], rights)
                rest = memoryview(message)[sent:]
                while rest:
                    sent = await sock.send(rest)
                    rest = rest[sent:]
                answer = await sock.recv(1)
    except trio.TooSlowError:
        raise HandoffError(f"no answer from {socket_path} within {HANDOFF_TIMEOUT_S} s") from None
    except OSError as exc:
        raise HandoffError(f"{socket_path}: {exc.strerror or exc}") from None
    if answer != ACCEPTED:
        raise HandoffError(f"{socket_path} did not take the connection")


async def _receive_one(sock: trio.socket.SocketType) -> tuple[socket.socket, Handoff]:
    """One hand-off message and its descriptor (HandoffError for anything else)."""
    fds: list[int] = []
    buffer = bytearray()
    try:
        while len(buffer) < PREFIX_BYTES:
            data, ancillary, _flags, _addr = await sock.recvmsg(
                PREFIX_BYTES - len(buffer), socket.CMSG_SPACE(array.array("i").itemsize)
            )
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                    fds.extend(received)
            if not data:
                raise HandoffError("hand-off cut short")
            buffer += data
        header_len, replay_len = Handoff.lengths(bytes(buffer))
        total = PREFIX_BYTES + header_len + replay_len
        while len(buffer) < total:
            data = await sock.recv(min(RELAY_BYTES, total - len(buffer)))
            if not data:
                raise HandoffError("hand-off cut short")
            buffer += data
        handoff = Handoff.decode(bytes(buffer))
        if len(fds) != 1:
            raise HandoffError(f"a hand-off carries one descriptor, this one {len(fds)}")
    except BaseException:
        for fd in fds:
            socket.close(fd)
        raise
    return socket.socket(fileno=fds[0]), handoff


class HandoffServer:
    """Receives connections handed over by other workers and gives them to `adopt`."""

    def __init__(self, adopt: Callable[[socket.socket, Handoff], None]) -> None:
        #: starts the session for a received connection (it owns the socket from then on)
        self._adopt = adopt
        self._pending = trio.CapacityLimiter(MAX_PENDING_HANDOFFS)
        self.received = 0
        self.failed = 0

    async def run(
        self, socket_path: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with listener:
            await listener.bind(socket_path)
            listener.listen(MAX_PENDING_HANDOFFS)
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    sock, _ = await listener.accept()
                    nursery.start_soon(self._one, sock)

    async def _one(self, sock: trio.socket.SocketType) -> None:
        with sock:
            async with self._pending:
                try:
                    with trio.fail_after(HANDOFF_TIMEOUT_S):
                        client, handoff = await _receive_one(sock)
                except (HandoffError, trio.TooSlowError, OSError) as exc:
                    self.failed += 1
                    log.warning("hand-off not received: %s", exc)
                    return
                self.received += 1
                self._adopt(client, handoff)
                try:
                    await sock.send(ACCEPTED)
                except OSError:
                    pass  #: the sender gave up; the session is ours all the same


async def relay(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    """Copies bytes both ways until either side ends; then both are closed."""

    async def pump(source: trio.abc.Stream, sink: trio.abc.Stream, scope: trio.CancelScope) -> None:
        try:
            while data := await source.receive_some(RELAY_BYTES):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, a, b, nursery.cancel_scope)
            nursery.start_soon(pump, b, a, nursery.cancel_scope)
    finally:
        await trio.aclose_forcefully(a)
        await trio.aclose_forcefully(b)

"""The RTMP and RTMPS listeners: accept, connection limits, one session per connection.

Every connection runs in the listener's own nursery. Shutdown (`drain`) stops
accepting, asks E-RTMP publishers that announced the Reconnect capability to
reconnect (queued to all at once: a peer that does not read delays nobody) and gives
them RECONNECT_GRACE_ON_SHUTDOWN_S, kicks every session (its goodbye bounded by
`rtmp.goodbye_s`), and cancels the nursery at SHUTDOWN_TIMEOUT_S, however stalled
the peers are.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import trio

from rtmp_ingest.auth import Authorizer
from rtmp_ingest.bundle import EndReason
from rtmp_ingest.cluster.handoff import Handoff, HandoffHook
from rtmp_ingest.cluster.sockets import open_reuse_port_listeners
from rtmp_ingest.config import Config, StartupError, parse_host_port
from rtmp_ingest.server.feeds import Feeds
from rtmp_ingest.server.logtext import shown
from rtmp_ingest.server.placement import Placement
from rtmp_ingest.server.rtmp import RtmpSession

log = logging.getLogger("rtmp_ingest")

#: How long shutdown may take before connections are cut.
SHUTDOWN_TIMEOUT_S = 5.0
#: How long E-RTMP publishers get to reconnect elsewhere after a ReconnectRequest.
RECONNECT_GRACE_ON_SHUTDOWN_S = 1.0

#: A connection that held this much partial input has its memory handed back when it ends.
TRIM_AFTER_BYTES = 4 * 1024 * 1024
#: Memory is handed back at most this often (malloc_trim walks the heap).
TRIM_EVERY_S = 0.5


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where there is none (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_malloc_trim = _load_malloc_trim()

#: (address, port) a listener is bound to
Address = tuple[str, int]


class Counted(Protocol):
    """A connection as its address's count knows it (`RtmpListener.uncount`)."""

    counted_ip: str | None


class RtmpListener:
    """RTMP (and RTMPS) ingest and play: what an `RtmpSession` works with."""

    def __init__(self, config: Config, feeds: Feeds) -> None:
        #: replaced on SIGHUP (app settings); sessions read it when they decide
        self.config = config
        self.feeds = feeds
        self.registry = feeds.registry
        self.metrics = feeds.metrics
        #: the publish policy and hook (the composition root sets it before listening)
        self.authorizer: Authorizer | None = None
        #: who serves a stream when this is one node of a cluster (server/placement.py)
        self.placement: Placement | None = None
        self.sessions: set[RtmpSession] = set()
        #: partial input bytes all connections hold (see RtmpSession._account_pending)
        self.pending_total = 0
        self.per_address: Counter[str] = Counter()
        self._listener_scopes: list[trio.CancelScope] = []
        #: the nursery every connection runs in (cancelled at the shutdown deadline)
        self._connections: trio.Nursery | None = None
        self._sessions_changed = trio.Event()
        self._trim_wanted = trio.Event()
        # -- workers (docs/spec.md §9): set by the composition root before `run` --
        #: asked once a connection's stream path is known; None: one process, no hand-off
        self.handoff: HandoffHook | None = None
        #: bind with SO_REUSEPORT, so every worker listens on the same ports
        self.reuse_port = False

    async def run(
        self,
        *,
        task_status: trio.TaskStatus[tuple[Address, Address | None]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listens; reports (rtmp, rtmps) bound addresses; returns once drained."""
        config = self.config
        async with trio.open_nursery() as connections:
            self._connections = connections
            host, port = parse_host_port(config.rtmp.listen, key="rtmp.listen")
            listeners = await _listen("rtmp.listen", host, port, reuse_port=self.reuse_port)
            rtmp_bound = listeners[0].socket.getsockname()[:2]
            connections.start_soon(self._serve, listeners, False)
            rtmps_bound = None
            if config.rtmps.listen:
                host, port = parse_host_port(config.rtmps.listen, key="rtmps.listen")
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                try:
                    context.load_cert_chain(config.rtmps.cert_file, config.rtmps.key_file)
                except (OSError, ssl.SSLError) as exc:
                    raise StartupError(
                        f"rtmps.cert_file/key_file: cannot load {config.rtmps.cert_file!r}: {exc}"
                    ) from None
                tcp = await _listen("rtmps.listen", host, port, reuse_port=self.reuse_port)
                rtmps_bound = tcp[0].socket.getsockname()[:2]
                tls = [trio.SSLListener(t, context, https_compatible=False) for t in tcp]
                connections.start_soon(self._serve, tls, True)
            connections.start_soon(self._give_memory_back)
            task_status.started((rtmp_bound, rtmps_bound))
            await trio.sleep_forever()

    async def _give_memory_back(self) -> None:
        """After a connection that held much partial input ends, the freed heap pages
        go back to the OS (glibc keeps them otherwise: RSS stayed ~260 MiB after a full
        budget's publishers left). Batched, in a worker thread, at most every TRIM_EVERY_S."""
        if _malloc_trim is None:
            return
        while True:
            await self._trim_wanted.wait()
            await trio.sleep(TRIM_EVERY_S)  #: let the other victims of one burst go too
            self._trim_wanted = trio.Event()
            await trio.to_thread.run_sync(_malloc_trim, 0)

    async def _serve(self, listeners: list[Any], secure: bool) -> None:
        with trio.CancelScope() as scope:
            self._listener_scopes.append(scope)
            await trio.serve_listeners(
                lambda stream: self.handle(stream, secure=secure),
                listeners,
                handler_nursery=self._connections,
            )

    def adopt(self, sock: socket.socket, handoff: Handoff) -> None:
        """A connection another worker handed over (cluster/transfer.py): served here."""
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        if self._connections is None:
            sock.close()
            return
        self._connections.start_soon(self.handle, stream, handoff.secure, handoff)

    async def handle(
        self, stream: Any, secure: bool = False, handed_in: Handoff | None = None
    ) -> None:
        """Serves one accepted (or handed-over) connection to its end."""
        remote = _peer(stream) if handed_in is None else handed_in.remote
        ip = remote.rsplit(":", 1)[0]
        rtmp = self.config.rtmp
        if (
            len(self.sessions) >= rtmp.max_connections
            or self.per_address[ip] >= rtmp.max_connections_per_address
        ):
            self.metrics.connections_refused += 1
            log.warning(
                "refused connection remote=%s reason=too-many-connections (%d total, %d from it)",
                remote,
                len(self.sessions),
                self.per_address[ip],
            )
            await trio.aclose_forcefully(stream)
            return
        session = RtmpSession(self, stream, remote, secure=secure, handed_in=handed_in)
        self.sessions.add(session)
        self.per_address[ip] += 1
        session.counted_ip = ip
        self.metrics.connections_total += 1
        try:
            if secure and handed_in is None:
                with trio.move_on_after(rtmp.handshake_timeout_s) as scope:
                    await stream.do_handshake()
                if scope.cancelled_caught:
                    log.info("timeout remote=%s waiting for TLS handshake", remote)
                    await trio.aclose_forcefully(stream)
                    return
            await session.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.aclose_forcefully(stream)
        except Exception:
            log.exception(
                "internal error on connection remote=%s stream=%s; connection closed",
                remote,
                shown(session.stream_path or "-"),
            )
            await trio.aclose_forcefully(stream)
        finally:
            self.sessions.discard(session)
            self._sessions_changed.set()
            if session.pending_peak >= TRIM_AFTER_BYTES:
                self._trim_wanted.set()
            self.uncount(session)
            del session  #: its buffers go now, before memory is handed back

    def uncount(self, session: Counted) -> None:
        """Takes a connection out of its address's count (`rtmp.max_connections_per_address`):
        at its end, or once the cluster's credentials showed it is another node's or
        worker's (a relayed publish, a pull: server/elsewhere.py, server/rtmp.py). Those
        all come from a few addresses and are bounded by the limits where their clients
        arrived; counted, the 101st relay or pull between two nodes would be refused."""
        ip = session.counted_ip
        if ip is None:
            return
        session.counted_ip = None
        self.per_address[ip] -= 1
        if not self.per_address[ip]:
            del self.per_address[ip]

    async def drain(self) -> None:
        """Ends every connection within SHUTDOWN_TIMEOUT_S (see the module docstring)."""
        for scope in self._listener_scopes:
            scope.cancel()
        log.info(
            "shutting down: %d connections, %d feeds",
            len(self.sessions),
            len(self.feeds.publishers),
        )
        deadline = trio.current_time() + SHUTDOWN_TIMEOUT_S
        capable = [
            s
            for s in self.sessions
            if s.feed is not None and s.reconnect_capable and s.conn.error is None
        ]
        for session in capable:
            session.conn.send_reconnect_request(description="Server restarting; reconnect please.")
            session.queue_output()
        if capable:
            await trio.sleep(RECONNECT_GRACE_ON_SHUTDOWN_S)
        for session in list(self.sessions):
            session.kick(EndReason.SHUTDOWN, "Server shutting down.")
        with trio.move_on_at(deadline):
            while self.sessions:
                self._sessions_changed = trio.Event()
                await self._sessions_changed.wait()
        if self._connections is not None:
            self._connections.cancel_scope.cancel()


async def _listen(
    key: str, host: str, port: int, *, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """TCP listeners on host:port; a failure is a one-line StartupError naming the key."""
    try:
        if reuse_port:
            return await open_reuse_port_listeners(port, host=host)
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        shown_host = f"[{host}]" if ":" in host else host
        raise StartupError(f"{key} {shown_host}:{port}: {exc.strerror or exc}") from None


def _peer(stream: Any) -> str:
    inner = getattr(stream, "transport_stream", stream)
    try:
        host, port = inner.socket.getpeername()[:2]
    except (OSError, AttributeError, ValueError, TypeError):
        return "unknown"  #: not an IP socket (a unix socket pair, a test stream)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

"""Listening sockets every worker binds: `SO_REUSEPORT` (docs/spec.md §9).

With `SO_REUSEPORT` on every socket of a port (same user), Linux lets each worker
bind and listen on it and spreads new connections over the listeners by a hash of
the connection's addresses. The supervisor keeps a bound, not listening, socket on a
port it picked for port 0, so the port stays reserved while workers come and go.
"""

from __future__ import annotations

import socket

import trio

#: Pending connections per listening socket (what trio.open_tcp_listeners uses by default).
LISTEN_BACKLOG = 0xFFFF


async def open_reuse_port_listeners(port: int, *, host: str | None) -> list[trio.SocketListener]:
    """trio.open_tcp_listeners with SO_REUSEPORT: every worker binds the same port and
    the kernel spreads new connections over them (docs/spec.md §9)."""
    infos = await trio.socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(LISTEN_BACKLOG)
            except OSError:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except OSError:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners

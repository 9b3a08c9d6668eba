"""The daemon: listeners, the bundle's clock and event pump, and shutdown.

`Daemon.run()` opens one nursery with the RTMP (and RTMPS) listener, the HTTP
server, the bundle pump (drains bundle events: logs them, tells superseded
publishers, feeds the SSE subscribers and the metrics) and the bundle clock
(calls `registry.tick` at `registry.next_deadline_s()`). It reports the bound
addresses through `task_status`, so tests bind port 0.

Shutdown (SIGINT/SIGTERM → `shutdown()`): stop accepting, ask E-RTMP publishers
that announced the Reconnect capability to reconnect, end every feed with a
status its encoder logs, close every connection, and return within
`SHUTDOWN_TIMEOUT_S`.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import trio

from rtmp_ingest.auth import Keyring, TokenClaims
from rtmp_ingest.bundle import (
    EndReason,
    Registry,
    Superseded,
)
from rtmp_ingest.config import Config, parse_host_port
from rtmp_ingest.outputs.names import source_segment
from rtmp_ingest.server.events import EventHub
from rtmp_ingest.server.hls import HlsService
from rtmp_ingest.server.play import Player
from rtmp_ingest.server.record import RecorderService
from rtmp_ingest.server.rtmp import RtmpSession

log = logging.getLogger("rtmp_ingest")

#: How long shutdown may take before connections are cut.
SHUTDOWN_TIMEOUT_S = 5.0
#: How long E-RTMP publishers get to reconnect elsewhere after a ReconnectRequest.
RECONNECT_GRACE_ON_SHUTDOWN_S = 1.0


@attrs.define
class Metrics:
    """Counters the Prometheus collector reads (gauges are read live from the daemon)."""

    connections_total: int = 0
    connections_refused: int = 0
    protocol_errors: int = 0
    publishes: int = 0
    supersedes: int = 0
    bytes_in_ended: int = 0  #: bytes of feeds that have ended (live feeds are added at scrape)
    player_bytes_ended: int = 0  #: bytes sent to players that have left
    player_dropped_ended: int = 0  #: frames dropped for players that have left
    refused: dict[str, int] = attrs.Factory(dict)


@attrs.frozen
class Bound:
    """Where the daemon listens (ports resolved when 0 was asked)."""

    rtmp: tuple[str, int]
    rtmps: tuple[str, int] | None
    http: tuple[str, int]


class Daemon:
    """One server process: its registry, sessions, listeners and API."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.registry: Registry = Registry(config.bundle.bundle_config())
        self.metrics = Metrics()
        self.hub = EventHub()
        self.sessions: set[RtmpSession] = set()
        self.players: set[Player] = set()
        #: set (and replaced) whenever the bundle changed; players wait on it for a source
        self.bundle_changed = trio.Event()
        self.publishers: dict[int, RtmpSession] = {}
        self.per_address: Counter[str] = Counter()
        self.started_at = time.time()
        self.secret = b""
        #: the keyring (secret + revocations); `revocations` is the same object (its revoke())
        self.revocations: Keyring | None = None
        self._poke = trio.Event()
        self._shutdown = trio.Event()
        self._listener_scopes: list[trio.CancelScope] = []
        self.bound: Bound | None = None
        self.hls = HlsService(self)
        self.recorder = RecorderService(self)

    # -- tokens ----------------------------------------------------------------------

    def _load_auth(self) -> None:
        keyring = Keyring.load(self.data_dir, secret=self.config.auth.secret)
        self.secret = keyring.secret
        self.revocations = keyring

    def verify_token(
        self, token: str, *, stream_path: str, source_id: str, remote_ip: str
    ) -> TokenClaims:
        assert self.revocations is not None
        return self.revocations.verify(
            token,
            stream_path=stream_path,
            source_id=source_id,
            remote_ip=remote_ip,
            now_s=time.time(),
        )

    # -- feeds -----------------------------------------------------------------------

    def feed_started(self, session: RtmpSession) -> None:
        assert session.feed is not None
        self.publishers[session.feed.feed_id] = session
        self.metrics.publishes += 1
        self._poke.set()

    def end_feed(self, session: RtmpSession, reason: EndReason) -> None:
        feed = session.feed
        if feed is None:
            return
        if self.publishers.pop(feed.feed_id, None) is None:
            return
        now = trio.current_time()
        stats = feed.statistics(now_s=now)
        self.metrics.bytes_in_ended += stats.bytes_in
        if feed.end_reason is None:
            self.registry.end_feed(feed, reason, now_s=now)
        log.info(
            "unpublish stream=%s sourceId=%r remote=%s feed=%d reason=%s bytes=%d uptime=%.1fs",
            feed.stream_path,
            feed.source_id,
            session.remote,
            feed.feed_id,
            (feed.end_reason or reason).value,
            stats.bytes_in,
            stats.uptime_s,
        )
        self._poke.set()

    def kick_source(self, stream_path: str, source_id: str) -> bool:
        """Ends the feed on air of a source (operator action); False if none."""
        stats = self.registry.source_statistics(stream_path, source_id, now_s=trio.current_time())
        if stats is None or stats.on_air_feed_id is None:
            return False
        session = self.publishers.get(stats.on_air_feed_id)
        if session is None:
            return False
        session.kick(EndReason.KICKED, "Your feed was stopped by the server operator.")
        log.info(
            "kick stream=%s sourceId=%r remote=%s feed=%d",
            stream_path,
            source_id,
            session.remote,
            stats.on_air_feed_id,
        )
        return True

    def source_urls(self, stream_path: str, source_id: str, *, host: str = "") -> dict[str, str]:
        """Where viewers get a source: absolute with `host` (the API request's), else relative."""
        query = f"?sourceId={quote(source_id, safe='')}" if source_id else ""
        name = quote(stream_path)
        assert self.bound is not None
        http_port = self.bound.http[1]
        rtmp_port = self.bound.rtmp[1]
        hls = f"/hls/{name}/{source_segment(source_id)}/index.m3u8"
        if host:
            return {
                "rtmp": f"rtmp://{host}:{rtmp_port}/{name}{query}",
                "flv": f"http://{host}:{http_port}/{name}.flv{query}",
                "hls": f"http://{host}:{http_port}{hls}",
            }
        return {
            "rtmp": f"rtmp://:{rtmp_port}/{name}{query}",
            "flv": f"/{name}.flv{query}",
            "hls": hls,
        }

    def stream_hls_url(self, stream_path: str, *, host: str = "") -> str:
        """The stream's multivariant playlist (every live source)."""
        assert self.bound is not None
        path = f"/hls/{quote(stream_path)}/index.m3u8"
        return f"http://{host}:{self.bound.http[1]}{path}" if host else path

    def http_routes(self) -> list[Any]:
        """HTTP routes of the outputs (HLS, the multiview page, HTTP-FLV)."""
        from rtmp_ingest.api import hls, httpflv, web  # noqa: PLC0415 - api depends on server

        return hls.routes(self) + web.routes(self) + httpflv.routes(self)

    def output_statistics(self) -> dict[str, int]:
        """players, bytes_out, frames_dropped over every output."""
        players = list(self.players)
        return {
            "players": len(players),
            "bytes_out": self.metrics.player_bytes_ended + sum(p.track.bytes for p in players),
            "frames_dropped": self.metrics.player_dropped_ended + sum(p.dropped() for p in players),
        }

    def players_of(self, stream_path: str, source_id: str) -> list[Player]:
        return [
            p
            for p in self.players
            if p.stream_path == stream_path
            and p.reader is not None
            and p.reader.source_id == source_id
        ]

    # -- tasks -----------------------------------------------------------------------

    async def _pump_events(self) -> None:
        """Drains bundle events: logs, supersede handling, SSE, metrics."""
        wake = trio.Event()
        self.registry.set_event_wakeup(wake.set)
        while True:
            await wake.wait()
            wake = trio.Event()
            self.registry.set_event_wakeup(wake.set)
            for event in self.registry.drain_events():
                self._on_bundle_event(event)
            self.bundle_changed.set()
            self.bundle_changed = trio.Event()

    def _on_bundle_event(self, event: Any) -> None:
        if isinstance(event, Superseded):
            self.metrics.supersedes += 1
            session = self.publishers.get(event.feed_id)
            remote = session.remote if session else "-"
            log.info(
                "supersede stream=%s sourceId=%r remote=%s feed=%d by_feed=%d",
                event.stream_path,
                event.source_id,
                remote,
                event.feed_id,
                event.by_feed_id,
            )
            if session is not None:
                session.kick(
                    EndReason.SUPERSEDED,
                    f"Superseded: a newer feed took over sourceId {event.source_id!r} "
                    f"of {event.stream_path}.",
                )
        else:
            name = type(event).__name__.lower()
            source = getattr(event, "source_id", None)
            log.info(
                "%s stream=%s%s",
                name,
                event.stream_path,
                f" sourceId={source!r}" if source is not None else "",
            )
        self.hub.publish(event, wall_origin_s=self.registry.wall_origin_s)
        self.hls.on_event(event)
        self.recorder.on_event(event)

    async def _clock(self) -> None:
        """Calls registry.tick when a grace period expires."""
        while True:
            deadline = self.registry.next_deadline_s()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._poke.wait()
            self._poke = trio.Event()
            self.registry.tick(now_s=trio.current_time())

    async def _handle_rtmp(self, stream: trio.abc.Stream, *, secure: bool) -> None:
        remote = _peer(stream)
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
        session = RtmpSession(self, stream, remote, secure=secure)
        self.sessions.add(session)
        self.per_address[ip] += 1
        self.metrics.connections_total += 1
        try:
            if secure:
                with trio.move_on_after(rtmp.handshake_timeout_s) as scope:
                    await stream.do_handshake()  # type: ignore[attr-defined]
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
                session.stream_path or "-",
            )
            await trio.aclose_forcefully(stream)
        finally:
            self.sessions.discard(session)
            self.per_address[ip] -= 1
            if not self.per_address[ip]:
                del self.per_address[ip]

    async def run(self, *, task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED) -> None:
        """Serves until shutdown() (or cancellation)."""
        from rtmp_ingest.api.http import serve_http  # noqa: PLC0415 - api depends on server

        self._load_auth()
        self.registry.wall_origin_s = time.time() - trio.current_time()
        config = self.config
        if config.auth.mode == "open":
            log.warning(
                'auth.mode is "open": ANYONE can publish to any stream, with multisource. '
                'Set [auth] mode = "token" for production.'
            )
        async with trio.open_nursery() as nursery:
            await nursery.start(self.hls.run)
            await nursery.start(self.recorder.run)
            nursery.start_soon(self._pump_events)
            nursery.start_soon(self._clock)
            rtmp_host, rtmp_port = parse_host_port(config.rtmp.listen, key="rtmp.listen")
            listeners = await trio.open_tcp_listeners(rtmp_port, host=rtmp_host)
            rtmp_bound = listeners[0].socket.getsockname()[:2]
            nursery.start_soon(self._serve, listeners, False, nursery)
            rtmps_bound = None
            if config.rtmps.listen:
                host, port = parse_host_port(config.rtmps.listen, key="rtmps.listen")
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(config.rtmps.cert_file, config.rtmps.key_file)
                tcp = await trio.open_tcp_listeners(port, host=host)
                rtmps_bound = tcp[0].socket.getsockname()[:2]
                tls = [trio.SSLListener(t, context, https_compatible=False) for t in tcp]
                nursery.start_soon(self._serve, tls, True, nursery)
            http_bound = await nursery.start(serve_http, self)
            self.bound = Bound(rtmp=rtmp_bound, rtmps=rtmps_bound, http=http_bound)
            log.info(
                "listening rtmp=%s:%d%s http=%s:%d",
                *rtmp_bound,
                f" rtmps={rtmps_bound[0]}:{rtmps_bound[1]}" if rtmps_bound else "",
                *http_bound,
            )
            task_status.started(self.bound)
            await self._shutdown.wait()
            await self._drain()
            nursery.cancel_scope.cancel()

    async def _serve(self, listeners: list[Any], secure: bool, connections: trio.Nursery) -> None:
        """Accepts until shutdown; connections live in `connections`, so they outlast this."""
        with trio.CancelScope() as scope:
            self._listener_scopes.append(scope)
            await trio.serve_listeners(
                lambda stream: self._handle_rtmp(stream, secure=secure),
                listeners,
                handler_nursery=connections,
            )

    def shutdown(self) -> None:
        """Starts a graceful shutdown (safe to call from a signal handler task)."""
        self._shutdown.set()

    async def _drain(self) -> None:
        for scope in self._listener_scopes:
            scope.cancel()
        log.info(
            "shutting down: %d connections, %d feeds", len(self.sessions), len(self.publishers)
        )
        capable = [s for s in self.publishers.values() if s.reconnect_capable]
        for session in capable:
            session.conn.send_reconnect_request(description="Server restarting; reconnect please.")
            try:
                await session._flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                pass
        if capable:
            await trio.sleep(RECONNECT_GRACE_ON_SHUTDOWN_S)
        for session in list(self.sessions):
            session.kick(EndReason.SHUTDOWN, "Server shutting down.")
        with trio.move_on_after(SHUTDOWN_TIMEOUT_S):
            while self.sessions:
                await trio.sleep(0.05)
        self.recorder.close_all()
        with trio.move_on_after(SHUTDOWN_TIMEOUT_S):
            while self.recorder.recordings:
                await trio.sleep(0.02)
        await self.hub.aclose()


def _peer(stream: trio.abc.Stream) -> str:
    inner = getattr(stream, "transport_stream", stream)
    try:
        host, port = inner.socket.getpeername()[:2]  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return "unknown"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

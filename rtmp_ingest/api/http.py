"""The HTTP server: control API, event stream, health, metrics (starlette on hypercorn, on trio).

Routes (JSON; errors are `{"error": "..."}` with a 4xx):

    GET    /healthz                                         200 when every listener is up, else 503
    GET    /api/v1                                          name and version
    GET    /api/v1/config                                   effective config, secrets masked
    GET    /api/v1/streams                                  every live stream
    GET    /api/v1/streams/{path}                           one stream
    GET    /api/v1/streams/{path}/sources/{sourceId}        one source (`_` = default)
    DELETE /api/v1/streams/{path}/sources/{sourceId}[?ban_s=N]  kick the feed on air
    DELETE /api/v1/streams/{path}/feeds/{feedId}[?ban_s=N]  kick any feed (standby too)
    POST   /api/v1/tokens                                   mint a publish token
    POST   /api/v1/tokens/{id}/revoke                       revoke one
    GET    /api/v1/events[?stream=PATH]                     Server-Sent Events (docs/spec.md §3.10)
    GET    /metrics                                         Prometheus text

With `http.admin_key` set, /api/v1/* (and /metrics with `protect_metrics`) need
`Authorization: Bearer <admin_key>`; /healthz never does (probes). Every response
carries `Server: rtmp-ingest/VERSION`. The server is reached only through the
`ApiServer` protocol (api/defs.py); listener limits live in api/serve.py.
"""

from __future__ import annotations

import functools
import hmac
import logging
import math
import socket
import time
from collections.abc import Callable
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rtmp_ingest import __version__
from rtmp_ingest.api.claims import parse_json_body, token_warning
from rtmp_ingest.api.defs import INTERNAL_LEG_SCOPE, ApiServer
from rtmp_ingest.api.events import event_json
from rtmp_ingest.api.metrics import make_registry
from rtmp_ingest.api.serve import BodyLimit, ConnectionStats, HttpLimits, HttpListener
from rtmp_ingest.api.sse import EventStreamResponse
from rtmp_ingest.api.urls import source_urls, stream_hls_url, url_problem
from rtmp_ingest.api.views import config_view, source_json, stream_json
from rtmp_ingest.auth import KeyringError, tokens
from rtmp_ingest.bundle import Active
from rtmp_ingest.cluster.sockets import open_reuse_port_listeners
from rtmp_ingest.config import parse_host_port
from rtmp_ingest.outputs.names import DEFAULT_SOURCE_IN_PATH

log = logging.getLogger("rtmp_ingest.http")

#: Token ids are short (auth.tokens.new_token_id); the keyring refuses longer ones.
MAX_TOKEN_ID_CHARS = 64
#: The `Server` header of every response.
SERVER_HEADER = f"rtmp-ingest/{__version__}"


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def parse_ban_s(text: str | None, *, max_ban_s: float) -> float:
    """The `ban_s` query parameter: 0 when absent; ValueError unless 0 ≤ N ≤ `max_ban_s`
    (`auth.max_ban_s`)."""
    if text is None or text == "":
        return 0.0
    try:
        ban_s = float(text)
    except ValueError:
        raise ValueError(f"ban_s must be a number of seconds, not {text[:40]!r}") from None
    if not (math.isfinite(ban_s) and 0 <= ban_s <= max_ban_s):
        raise ValueError(f"ban_s must be between 0 and {max_ban_s:g} seconds (auth.max_ban_s)")
    return ban_s


class Api:
    """Request handlers bound to one server."""

    def __init__(
        self, server: ApiServer, *, connection_stats: ConnectionStats | None = None
    ) -> None:
        self.server = server
        self.metrics_registry = make_registry(server, http=connection_stats)

    def _authorized(self, request: Request) -> bool:
        key = self.server.config.http.admin_key
        if not key:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), key.encode()
        )

    def _guard(self, request: Request) -> JSONResponse | None:
        if self._authorized(request):
            return None
        return error(401, "admin key required: send Authorization: Bearer <http.admin_key>")

    def _wall(self) -> float:
        return self.server.registry.wall_origin_s

    def _webrtc(self, path: str, source_id: str) -> dict[str, Any] | None:
        """WHEP's verdict on a source (docs/spec.md §7), once a viewer asked; else None."""
        whep = getattr(self.server, "whep", None)
        verdict = whep.playability(path, source_id) if whep is not None else None
        if verdict is None:
            return None
        return {"playable": verdict.playable, "reason": verdict.reason}

    def _ports(self) -> tuple[int, int]:
        """(http, rtmp) ports: the bound ones, or the configured ones before binding."""
        bound = self.server.bound
        if bound is not None and bound.http is not None:
            return bound.http[1], bound.rtmp[1]
        config = self.server.config
        return (
            parse_host_port(config.http.listen, key="http.listen")[1],
            parse_host_port(config.rtmp.listen, key="rtmp.listen")[1],
        )

    def _source_extra(self, request: Request) -> Callable[[str, str], dict[str, Any]]:
        """Per-source fields from the outputs: viewer URLs (on the host the caller used) and stats."""
        host = request.url.hostname or ""
        http_port, rtmp_port = self._ports()

        def extra(path: str, source_id: str) -> dict[str, Any]:
            server = self.server
            players = server.players_of(path, source_id)
            hls = server.hls.sources.get((path, source_id))
            recording = server.recorder.recordings.get((path, source_id))
            out: dict[str, Any] = {
                "record": None
                if recording is None
                else {
                    "file": recording.current_file,
                    "bytesWritten": recording.bytes_written,
                    "filesWritten": recording.files_written,
                },
                "hls": None
                if hls is None
                else {
                    "tracks": [
                        {
                            "track": t.name,
                            "codecs": t.codecs_attr,
                            "segments": len(t.segments),
                            "bandwidth": t.bandwidth(),
                            "targetDuration": t.target_duration,
                            "bytesOut": t.bytes_out,
                            "framesCut": t.frames_cut,
                        }
                        for t in hls.live_tracks()
                    ],
                    "framesSkipped": hls.frames_skipped,
                },
                "urls": source_urls(
                    path, source_id, host=host, http_port=http_port, rtmp_port=rtmp_port
                ),
                "webrtc": self._webrtc(path, source_id),
                "outputs": {
                    "players": len(players),
                    "rtmpPlayers": sum(1 for p in players if p.kind == "rtmp"),
                    "flvPlayers": sum(1 for p in players if p.kind == "flv"),
                    "bytesOut": sum(p.track.bytes for p in players),
                    "framesDropped": sum(p.dropped() for p in players),
                    "skips": sum(p.skips() for p in players),
                },
            }
            if (problem := url_problem(path)) is not None:
                out["urlProblem"] = problem
            elif getattr(server, "whep", None) is not None:
                from rtmp_ingest.api.whep import whep_url  # noqa: PLC0415 - with WebRTC only

                out["urls"]["whep"] = whep_url(path, source_id, host=host, http_port=http_port)
            return out

        return extra

    def _stream_json(self, stats: Any, request: Request) -> dict[str, Any]:
        host = request.url.hostname or ""
        out = stream_json(
            stats,
            wall_origin_s=self._wall(),
            extra=self._source_extra(request),
            sessions=self.server.publishers,
        )
        out["hls"] = stream_hls_url(stats.stream_path, host=host, http_port=self._ports()[0])
        return out

    # -- info, health, config ----------------------------------------------------------

    async def info(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        return JSONResponse({"name": "rtmp-ingest", "version": __version__})

    async def healthz(self, request: Request) -> Response:
        listeners = dict(self.server.listeners_up())
        healthy = bool(listeners) and all(listeners.values())
        return JSONResponse(
            {
                "status": "ok" if healthy else "unavailable",
                "listeners": listeners,
                "version": __version__,
            },
            status_code=200 if healthy else 503,
            headers={"Cache-Control": "no-store"},
        )

    async def config(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        return JSONResponse({"config": config_view(self.server), "version": __version__})

    # -- streams, sources, feeds -------------------------------------------------------

    async def streams(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        registry = self.server.registry
        now = trio.current_time()
        streams = []
        for path in registry.stream_paths():
            stats = registry.stream_statistics(path, now_s=now)
            if stats is not None:
                streams.append(self._stream_json(stats, request))
        cluster = getattr(self.server, "cluster", None)
        if cluster is not None:  #: a node: every stream of the cluster, with its owner
            streams = cluster.pulling.listing(streams)
        return JSONResponse({"streams": streams})

    async def stream(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        path = request.path_params["path"].strip("/")
        stats = self.server.registry.stream_statistics(path, now_s=trio.current_time())
        if stats is None:
            return error(404, f"no live stream {path!r}")
        return JSONResponse(self._stream_json(stats, request))

    async def source(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        path = request.path_params["path"].strip("/")
        source_id = request.path_params["source_id"]
        source_id = "" if source_id == DEFAULT_SOURCE_IN_PATH else source_id
        stats = self.server.registry.source_statistics(path, source_id, now_s=trio.current_time())
        if stats is None:
            return error(404, f"no source {source_id!r} in stream {path!r}")
        if request.method == "DELETE":
            try:
                ban_s = parse_ban_s(
                    request.query_params.get("ban_s"), max_ban_s=self.server.config.auth.max_ban_s
                )
            except ValueError as exc:
                return error(400, str(exc))
            try:
                kicked = self.server.kick_source(path, source_id, ban_s=ban_s)
            except ValueError as exc:  # a ban the ban list refuses
                return error(400, str(exc))
            if not kicked:
                return error(409, f"source {source_id!r} of {path!r} has no feed on air")
            return JSONResponse(
                {
                    "kicked": True,
                    "stream": path,
                    "sourceId": source_id,
                    "feedId": stats.on_air_feed_id,
                    "banS": ban_s,
                }
            )
        return JSONResponse(
            source_json(
                stats,
                wall_origin_s=self._wall(),
                extra=self._source_extra(request)(path, source_id),
                sessions=self.server.publishers,
            )
        )

    async def kick_feed(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        path = request.path_params["path"].strip("/")
        text = request.path_params["feed_id"]
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            return error(400, f"feed id must be a number, not {text[:40]!r}")
        feed_id = int(text)
        try:
            ban_s = parse_ban_s(
                request.query_params.get("ban_s"), max_ban_s=self.server.config.auth.max_ban_s
            )
        except ValueError as exc:
            return error(400, str(exc))
        stats = self.server.registry.stream_statistics(path, now_s=trio.current_time())
        source = next(
            (
                s
                for s in (stats.sources if stats is not None else ())
                if any(f.feed_id == feed_id for f in s.feeds)
            ),
            None,
        )
        if source is None:
            return error(404, f"no feed {feed_id} in stream {path!r}")
        try:
            kicked = self.server.kick_feed(feed_id, ban_s=ban_s)
        except ValueError as exc:
            return error(400, str(exc))
        if not kicked:
            return error(404, f"feed {feed_id} of {path!r} has ended")
        return JSONResponse(
            {
                "kicked": True,
                "stream": path,
                "sourceId": source.source_id,
                "feedId": feed_id,
                "banS": ban_s,
            }
        )

    # -- tokens ------------------------------------------------------------------------

    async def mint_token(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        try:
            body = parse_json_body(await request.body())
        except ValueError as exc:
            return error(400, str(exc))
        if not isinstance(body, dict):
            return error(400, "body must be a JSON object")
        keyring = self.server.keyring
        if keyring is None:
            return error(503, "the server has not loaded its keyring yet")
        try:
            now_s = time.time()
            claims = tokens.claims_from_json(body, now_s=now_s)
            if claims.expires_at is not None and claims.expires_at <= now_s:
                return error(400, "'expiresAt' is in the past: the token would never be accepted")
            # the keyring appends to its issued-token log: file I/O off the event loop
            token = await trio.to_thread.run_sync(
                functools.partial(keyring.mint, claims, via="api")
            )
        except tokens.TokenClaimsError as exc:
            return error(400, str(exc))
        except KeyringError as exc:  # the issued-token log could not be written
            return error(503, str(exc))
        log.info(
            "token minted id=%s label=%r streams=%d multisource=%s",
            claims.token_id,
            claims.label[:64],
            len(claims.streams),
            claims.multisource,
        )
        out: dict[str, Any] = {"token": token, "id": claims.token_id, "claims": claims.to_json()}
        if (warning := token_warning(token)) is not None:
            out["warning"] = warning
        return JSONResponse(out, status_code=201)

    async def revoke_token(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        token_id = request.path_params["token_id"]
        keyring = self.server.keyring
        if keyring is None:
            return error(503, "the server has not loaded its keyring yet")
        if not (0 < len(token_id) <= MAX_TOKEN_ID_CHARS and token_id.isascii()):
            return error(400, f"{token_id[:64]!r} is not a token id")
        try:
            added = await trio.to_thread.run_sync(keyring.revoke, token_id)
        except KeyringError as exc:  # the revocation list could not be written
            return error(503, str(exc))
        log.info("token revoked id=%r%s", token_id[:64], "" if added else " (already)")
        return JSONResponse({"id": token_id, "revoked": True, "alreadyRevoked": not added})

    # -- events, metrics ---------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        stream_filter = request.query_params.get("stream") or None
        return EventStreamResponse(
            self.server.hub,
            stream_filter,
            lambda: self._current_state(stream_filter),
            internal=bool(request.scope.get(INTERNAL_LEG_SCOPE)),
        )

    def _current_state(self, stream_filter: str | None) -> list[tuple[str, dict[str, Any]]]:
        """`active` events for every source on air now, so a new subscriber starts in sync."""
        registry = self.server.registry
        now = trio.current_time()
        out = []
        for path in registry.stream_paths():
            if stream_filter is not None and path != stream_filter:
                continue
            stats = registry.stream_statistics(path, now_s=now)
            for source in stats.sources if stats else ():
                if source.on_air_feed_id is None or source.timeline_origin_wall_s is None:
                    continue
                event = Active(
                    stream_path=path,
                    source_id=source.source_id,
                    feed_id=source.on_air_feed_id,
                    tracks=source.tracks,
                    timeline_origin_wall_s=source.timeline_origin_wall_s,
                )
                out.append(event_json(event, wall_origin_s=self._wall()))
        return out

    async def metrics(self, request: Request) -> Response:
        if self.server.config.http.protect_metrics and (denied := self._guard(request)) is not None:
            return denied
        return Response(generate_latest(self.metrics_registry), media_type=CONTENT_TYPE_LATEST)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return error(404, f"no such endpoint: {request.method} {request.url.path[:200]}")

    async def method_not_allowed(self, request: Request, exc: Exception) -> Response:
        return error(405, f"method {request.method} not allowed on {request.url.path[:200]}")


class ServerHeader:
    """ASGI middleware: `Server: rtmp-ingest/VERSION` on every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"server"]
                message = {**message, "headers": [*headers, (b"server", SERVER_HEADER.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_header)


def build_app(
    server: ApiServer,
    *,
    extra_routes: list[Any] | None = None,
    connection_stats: ConnectionStats | None = None,
) -> Starlette:
    """The ASGI app: the API's routes plus `extra_routes` (the outputs': `output_routes`)."""
    api = Api(server, connection_stats=connection_stats)
    http = server.config.http
    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/api/v1", api.info, methods=["GET"]),
        Route("/api/v1/config", api.config, methods=["GET"]),
        Route("/api/v1/streams", api.streams, methods=["GET"]),
        Route(
            "/api/v1/streams/{path:path}/sources/{source_id:path}",
            api.source,
            methods=["GET", "DELETE"],
        ),
        Route("/api/v1/streams/{path:path}/feeds/{feed_id}", api.kick_feed, methods=["DELETE"]),
        Route("/api/v1/streams/{path:path}", api.stream, methods=["GET"]),
        Route("/api/v1/tokens", api.mint_token, methods=["POST"]),
        Route("/api/v1/tokens/{token_id}/revoke", api.revoke_token, methods=["POST"]),
        Route("/api/v1/events", api.events, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        *(extra_routes or ()),
    ]
    middleware = [
        Middleware(ServerHeader),
        Middleware(BodyLimit, max_body_bytes=http.max_body_bytes),
        Middleware(
            CORSMiddleware,
            allow_origins=list(http.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS", "PATCH"],
            allow_headers=["Authorization", "Content-Type", "If-Match"],
            #: WHIP/WHEP clients in a browser read these (RFC 9725)
            expose_headers=["Location", "Link", "Accept-Post", "ETag", "Feed-Id"],
        ),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: api.not_found, 405: api.method_not_allowed},
    )


def limits_of(server: ApiServer) -> HttpLimits:
    http = server.config.http
    return HttpLimits(
        max_connections=http.max_connections,
        max_connections_per_address=http.max_connections_per_address,
        write_timeout_s=http.write_timeout_s,
    )


def output_routes(server: ApiServer) -> list[Any]:
    """The outputs' HTTP routes: LL-HLS, the multiview page and its assets, HTTP-FLV."""
    from rtmp_ingest.api import hls, httpflv, web  # noqa: PLC0415 - httpflv imports server.play

    return hls.routes(server) + web.routes(server) + httpflv.routes(server)


async def serve_http(
    server: ApiServer,
    *,
    extra_routes: list[Any] | None = None,
    reuse_port: bool = False,
    internal_socket: str | None = None,
    outer: Callable[[Any], Any] | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Binds `http.listen`, reports the bound (host, port) and serves until cancelled.

    `extra_routes`: what the composition root adds (the WebRTC endpoints when enabled).
    In a worker (docs/spec.md §9, cluster/): `reuse_port` binds with SO_REUSEPORT,
    `internal_socket` serves the same app on a unix socket for the other workers, and
    `outer` wraps the app (forwarding a stream's requests to its owner).
    """
    host, port = parse_host_port(server.config.http.listen, key="http.listen")
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = logging.getLogger("rtmp_ingest.http.server")
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 75.0
    config.include_server_header = False
    stats = ConnectionStats()
    app = build_app(
        server,
        extra_routes=output_routes(server) + list(extra_routes or ()),
        connection_stats=stats,
    )
    if outer is not None:
        app = outer(app)
    if reuse_port:
        listeners = await open_reuse_port_listeners(port, host=host or None)
    else:
        listeners = await trio.open_tcp_listeners(port, host=host or None)
    listener = HttpListener(app, config, limits_of(server), stats=stats)
    bound_host, bound_port = listeners[0].socket.getsockname()[:2]
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve, listeners)
        if internal_socket is not None:
            internal = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await internal.bind(internal_socket)
            internal.listen(limits_of(server).max_connections)
            await nursery.start(listener.serve, [trio.SocketListener(internal)])
        task_status.started((bound_host, bound_port))

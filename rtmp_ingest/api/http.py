"""The HTTP server: control API, event stream, metrics (starlette on hypercorn, on trio).

Routes (JSON; errors are `{"error": "..."}` with a 4xx):

    GET    /api/v1/streams                                  every live stream
    GET    /api/v1/streams/{path}                           one stream
    DELETE /api/v1/streams/{path}/sources/{sourceId}        kick the feed on air (`_` = default)
    POST   /api/v1/tokens                                   mint a publish token
    POST   /api/v1/tokens/{id}/revoke                       revoke one
    GET    /api/v1/events[?stream=PATH]                     Server-Sent Events (SPEC.md §3.10)
    GET    /metrics                                         Prometheus text

With `http.admin_key` set, /api/v1/* (and /metrics with `protect_metrics`)
need `Authorization: Bearer <admin_key>`.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rtmp_ingest.api.metrics import make_registry
from rtmp_ingest.api.views import source_json, stream_json
from rtmp_ingest.auth import tokens
from rtmp_ingest.bundle import Active
from rtmp_ingest.config import parse_host_port
from rtmp_ingest.outputs.names import DEFAULT_SOURCE_IN_PATH
from rtmp_ingest.server.events import event_json

if TYPE_CHECKING:
    from rtmp_ingest.app import App as Daemon

log = logging.getLogger("rtmp_ingest.http")

#: SSE comment sent when nothing happened for this long, so proxies keep the stream open.
SSE_KEEPALIVE_S = 15.0
#: Longest token lifetime the API mints.
MAX_TOKEN_TTL_S = 10 * 365 * 86400


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Api:
    """Request handlers bound to one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.metrics_registry = make_registry(daemon)

    def _authorized(self, request: Request) -> bool:
        key = self.daemon.config.http.admin_key
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
        return self.daemon.registry.wall_origin_s

    def _webrtc(self, path: str, source_id: str) -> dict[str, Any] | None:
        """WHEP's verdict on a source (docs/spec.md §7), once a viewer asked; else None."""
        whep = getattr(self.daemon, "whep", None)
        verdict = whep.playability(path, source_id) if whep is not None else None
        if verdict is None:
            return None
        return {"playable": verdict.playable, "reason": verdict.reason}

    def _source_extra(self, request: Request) -> Any:
        """Per-source fields from the outputs: viewer URLs (on the host the caller used) and stats."""
        host = request.url.hostname or ""
        if ":" in host:
            host = f"[{host}]"

        def extra(path: str, source_id: str) -> dict[str, Any]:
            players = self.daemon.players_of(path, source_id)
            hls = self.daemon.hls.sources.get((path, source_id))
            recording = self.daemon.recorder.recordings.get((path, source_id))
            return {
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
                        }
                        for t in hls.live_tracks()
                    ],
                    "framesSkipped": hls.frames_skipped,
                },
                "urls": self.daemon.source_urls(path, source_id, host=host),
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

        return extra

    def _stream_json(self, stats: Any, request: Request) -> dict[str, Any]:
        host = request.url.hostname or ""
        out = stream_json(stats, wall_origin_s=self._wall(), extra=self._source_extra(request))
        out["hls"] = self.daemon.stream_hls_url(
            stats.stream_path, host=f"[{host}]" if ":" in host else host
        )
        return out

    async def streams(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        registry = self.daemon.registry
        now = trio.current_time()
        streams = []
        for path in registry.stream_paths():
            stats = registry.stream_statistics(path, now_s=now)
            if stats is not None:
                streams.append(self._stream_json(stats, request))
        return JSONResponse({"streams": streams})

    async def stream(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        path = request.path_params["path"].strip("/")
        stats = self.daemon.registry.stream_statistics(path, now_s=trio.current_time())
        if stats is None:
            return error(404, f"no live stream {path!r}")
        return JSONResponse(self._stream_json(stats, request))

    async def source(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        path = request.path_params["path"].strip("/")
        source_id = request.path_params["source_id"]
        source_id = "" if source_id == DEFAULT_SOURCE_IN_PATH else source_id
        stats = self.daemon.registry.source_statistics(path, source_id, now_s=trio.current_time())
        if stats is None:
            return error(404, f"no source {source_id!r} in stream {path!r}")
        if request.method == "DELETE":
            if not self.daemon.kick_source(path, source_id):
                return error(409, f"source {source_id!r} of {path!r} has no feed on air")
            return JSONResponse({"kicked": True, "stream": path, "sourceId": source_id})
        return JSONResponse(
            source_json(
                stats,
                wall_origin_s=self._wall(),
                extra=self._source_extra(request)(path, source_id),
            )
        )

    async def mint_token(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, "body must be JSON")
        if not isinstance(body, dict):
            return error(400, "body must be a JSON object")
        try:
            claims = claims_from_request(body)
        except ValueError as exc:
            return error(400, str(exc))
        token = tokens.mint(claims, self.daemon.secret)
        log.info(
            "token minted id=%s label=%r streams=%s multisource=%s",
            claims.token_id,
            claims.label,
            ",".join(claims.streams),
            claims.multisource,
        )
        return JSONResponse(
            {"token": token, "id": claims.token_id, "claims": claims.to_json()}, status_code=201
        )

    async def revoke_token(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        token_id = request.path_params["token_id"]
        revocations = self.daemon.revocations
        assert revocations is not None
        added = await trio.to_thread.run_sync(revocations.revoke, token_id)
        log.info("token revoked id=%s%s", token_id, "" if added else " (already)")
        return JSONResponse({"id": token_id, "revoked": True, "alreadyRevoked": not added})

    async def events(self, request: Request) -> Response:
        if (denied := self._guard(request)) is not None:
            return denied
        stream_filter = request.query_params.get("stream") or None
        subscription = self.daemon.hub.subscribe(stream_filter)
        current = self._current_state(stream_filter)

        async def body() -> AsyncIterator[str]:
            try:
                yield ": rtmp_ingest events\nretry: 2000\n\n"
                for name, payload in current:
                    yield f"event: {name}\ndata: {json.dumps(payload)}\n\n"
                while True:
                    with trio.move_on_after(SSE_KEEPALIVE_S) as scope:
                        try:
                            name, payload = await subscription.receive.receive()
                        except trio.EndOfChannel:
                            return
                    if scope.cancelled_caught:
                        yield ": keepalive\n\n"
                        continue
                    yield f"event: {name}\ndata: {json.dumps(payload)}\n\n"
            finally:
                subscription.close()

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def _current_state(self, stream_filter: str | None) -> list[tuple[str, dict[str, Any]]]:
        """`active` events for every source on air now, so a new subscriber starts in sync."""
        registry = self.daemon.registry
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
        if self.daemon.config.http.protect_metrics and (denied := self._guard(request)) is not None:
            return denied
        return Response(generate_latest(self.metrics_registry), media_type=CONTENT_TYPE_LATEST)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return error(404, f"no such endpoint: {request.method} {request.url.path}")

    async def method_not_allowed(self, request: Request, exc: Exception) -> Response:
        return error(405, f"method {request.method} not allowed on {request.url.path}")


def _string_list(body: dict[str, Any], key: str, *, required: bool = False) -> list[str] | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ValueError(f"{key!r} is required")
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key!r} must be a list of strings")
    return value


def claims_from_request(body: dict[str, Any], *, now: float | None = None) -> tokens.TokenClaims:
    """Token claims from an API request body (or CLI options), validated."""
    now = time.time() if now is None else now
    streams = _string_list(body, "streams", required=True) or []
    if not streams:
        raise ValueError("'streams' must name at least one stream or pattern")
    ttl = body.get("ttl")
    expires_at = body.get("expiresAt")
    if ttl is not None:
        if isinstance(ttl, str):
            ttl_s = tokens.parse_duration_s(ttl)
        elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
            ttl_s = float(ttl)
        else:
            raise ValueError("'ttl' must be seconds or a duration like '24h'")
        if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
            raise ValueError(f"'ttl' must be between 1 s and {MAX_TOKEN_TTL_S} s")
        expires_at = now + ttl_s
    elif expires_at is not None and (
        isinstance(expires_at, bool) or not isinstance(expires_at, (int, float))
    ):
        raise ValueError("'expiresAt' must be a Unix time in seconds")
    multisource = body.get("multisource", False)
    if not isinstance(multisource, bool):
        raise ValueError("'multisource' must be true or false")
    record = body.get("record")
    if record is not None and not isinstance(record, bool):
        raise ValueError("'record' must be true, false or null (the app's setting)")
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > 128:
        raise ValueError("'label' must be a string of at most 128 characters")
    networks = _string_list(body, "networks")
    for network in networks or ():
        import ipaddress  # noqa: PLC0415

        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"'networks': {network!r} is not an address or CIDR network") from None
    return tokens.TokenClaims(
        token_id=tokens.new_token_id(),
        streams=streams,
        multisource=multisource,
        source_ids=_string_list(body, "sourceIds"),
        networks=networks,
        expires_at=float(expires_at) if expires_at is not None else None,
        issued_at=now,
        label=label,
        record=record,
    )


def build_app(daemon: Daemon) -> Starlette:
    api = Api(daemon)
    routes = [
        Route("/api/v1/streams", api.streams, methods=["GET"]),
        Route(
            "/api/v1/streams/{path:path}/sources/{source_id:path}",
            api.source,
            methods=["GET", "DELETE"],
        ),
        Route("/api/v1/streams/{path:path}", api.stream, methods=["GET"]),
        Route("/api/v1/tokens", api.mint_token, methods=["POST"]),
        Route("/api/v1/tokens/{token_id}/revoke", api.revoke_token, methods=["POST"]),
        Route("/api/v1/events", api.events, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        *daemon.http_routes(),
    ]
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=list(daemon.config.http.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: api.not_found, 405: api.method_not_allowed},
    )


async def serve_http(
    daemon: Daemon, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
) -> None:
    host, port = parse_host_port(daemon.config.http.listen, key="http.listen")
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("rtmp_ingest.http.server")
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 75.0
    app = build_app(daemon)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        bound = binds[0].split("://", 1)[1]
        bound_host, _, bound_port = bound.rpartition(":")
        task_status.started((bound_host.strip("[]"), int(bound_port)))

"""HTTP in a worker: a stream's requests go to its owner, the stream list covers the machine.

docs/spec.md §9. An HTTP connection lands on any worker (`SO_REUSEPORT`). Requests
that name a stream — its API resource and kicks, HLS playlists and parts, HTTP-FLV,
WHIP publish and WHEP play — are served by the stream's owner, because only the
owner has its bundle. They are **forwarded**, not handed over: an HTTP/1.1 connection
carries many requests for different streams (a player's page fetches HLS of several
sources, keep-alive), so there is no one owner to give the socket to. The forward is
one internal HTTP request over the owner's unix socket (`Layout.http_socket`),
streamed both ways (an HTTP-FLV response or a blocking LL-HLS part stream through as
they come), with the client's address in `X-Rtmp-Ingest-Client` and the run's secret
in `X-Rtmp-Ingest-Hop`, so the owner checks tokens against the real client and an
outside client cannot forge either header (a wrong secret is a 403).

WHIP/WHEP sessions (`/whip-session/…`, `/whep-session/…`) name no stream, so the
worker that serves the POST appends `w=ID` to the `Location` it answers with; later
PATCH/DELETE requests carry it and are forwarded to that worker.

A token revocation (`POST /api/v1/tokens/ID/revoke`) is sent to every other live
worker first, then applied by the worker it reached, which answers: after the answer
no worker admits the token (each holds the revocation list in memory; the file is
shared).

`GET /api/v1/streams` asks every live worker and merges the lists; each stream (in
the list and in `GET /api/v1/streams/PATH`) says which worker serves it
(`"worker": {"id": …, "pid": …}`). The event stream (`GET /api/v1/events`) and
`GET /metrics` are the whole machine's too: the worker reached merges every worker's
(cluster/machine.py).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, urlencode

import httpx

from rtmp_ingest.api.defs import INTERNAL_LEG_SCOPE
from rtmp_ingest.cluster.machine import LEG_HEADER, MachineEvents, MachineMetrics

log = logging.getLogger("rtmp_ingest.cluster")

HOP_HEADER: Final = b"x-rtmp-ingest-hop"
CLIENT_HEADER: Final = b"x-rtmp-ingest-client"
#: How long the owner may take to start answering a forwarded request (its body may
#: then stream for as long as the client reads: HTTP-FLV, blocking HLS parts).
FORWARD_CONNECT_TIMEOUT_S: Final = 5.0
#: How long an internal request of the stream list may take per worker.
AGGREGATE_TIMEOUT_S: Final = 5.0
#: Idle internal connections kept open per target worker, for the next forward. How many
#: are open at once is not capped here: each carries a client the worker it reached
#: admitted under its `http.max_connections` (httpx's default cap of 100 would make the
#: 101st HTTP-FLV viewer or event subscriber forwarded to one worker wait, then fail).
FORWARD_KEEPALIVE_CONNECTIONS: Final = 32
#: Headers of a hop that the forwarder does not pass on (RFC 9110 §7.6.1).
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade"}
)
_STREAM_RESOURCE = re.compile(r"^/api/v1/streams/(.+?)(?:/sources/.*|/feeds/[^/]+)?$")
_STREAM_ONLY = re.compile(r"^/api/v1/streams/(.+?)/?$")
_SESSION_PREFIXES = ("/whip-session/", "/whep-session/")
_REVOKE = re.compile(r"^/api/v1/tokens/[^/]+/revoke$")
_OFFER_PREFIXES = ("/whip/", "/whep/")


class Cluster(Protocol):
    """What the forwarder needs of the worker (cluster/worker.py `WorkerAgent`)."""

    worker_id: int
    pids: dict[int, int]
    restarts: dict[int, int]

    def owner_id(self, stream_path: str) -> int: ...

    def live_workers(self) -> list[int]: ...

    @property
    def worker_count(self) -> int: ...

    async def wait_table_changed(self) -> None: ...

    def http_socket(self, worker_id: int) -> str: ...

    @property
    def hop_secret(self) -> str: ...


def stream_of(path: str) -> str | None:
    """The stream path an HTTP request path is about, or None (served by any worker)."""
    match = _STREAM_RESOURCE.match(path)
    if match:
        return match.group(1).strip("/")
    if path.startswith("/hls/"):
        parts = path[len("/hls/") :].split("/")
        return "/".join(parts[:2]) if len(parts) >= 2 else None
    for prefix in _OFFER_PREFIXES:
        if path.startswith(prefix):
            return path[len(prefix) :].strip("/") or None
    if path.endswith(".flv") and len(path) > len("/.flv"):
        return path[1 : -len(".flv")]
    return None


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _send_json(send: Callable[..., Any], status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class Forwarder:
    """ASGI middleware (the outermost): forward, aggregate, or serve here."""

    def __init__(self, app: Any, cluster: Cluster) -> None:
        self.app = app
        self.cluster = cluster
        self._clients: dict[int, httpx.AsyncClient] = {}
        self._events = MachineEvents(cluster, lambda worker_id: self._client(worker_id))
        self._metrics = MachineMetrics(cluster, lambda worker_id: self._client(worker_id))

    def _client(self, worker_id: int) -> httpx.AsyncClient:
        client = self._clients.get(worker_id)
        if client is None:
            transport = httpx.AsyncHTTPTransport(
                uds=self.cluster.http_socket(worker_id),
                limits=httpx.Limits(
                    max_connections=None,
                    max_keepalive_connections=FORWARD_KEEPALIVE_CONNECTIONS,
                ),
            )
            client = httpx.AsyncClient(
                transport=transport,
                base_url="http://worker",
                timeout=httpx.Timeout(FORWARD_CONNECT_TIMEOUT_S, read=None),
            )
            self._clients[worker_id] = client
        return client

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hop = _header(scope, HOP_HEADER)
        if hop is not None:
            if not hmac.compare_digest(hop, self.cluster.hop_secret.encode()):
                await _send_json(send, 403, {"error": "bad internal hop"})
                return
            await self._serve_here(self._internal_scope(scope), receive, send)
            return
        if _header(scope, CLIENT_HEADER) is not None:
            scope = {**scope, "headers": [h for h in scope["headers"] if h[0] != CLIENT_HEADER]}
        path: str = scope["path"]
        if scope["method"] == "GET" and path.rstrip("/") == "/api/v1/streams":
            await self._aggregate(scope, send)
            return
        if scope["method"] == "GET" and path.rstrip("/") == "/api/v1/events":
            await self._events(scope, receive, send, self._outgoing_headers(scope))
            return
        if scope["method"] == "GET" and path == "/metrics":
            await self._metrics(scope, send, self._outgoing_headers(scope))
            return
        if scope["method"] == "POST" and _REVOKE.match(path):
            await self._revoke_everywhere(scope, receive, send)
            return
        target = self._target(scope)
        if target is None or target == self.cluster.worker_id:
            await self._serve_here(scope, receive, send)
            return
        await self._forward(target, scope, receive, send)

    def _target(self, scope: dict[str, Any]) -> int | None:
        path: str = scope["path"]
        if path.startswith(_SESSION_PREFIXES):
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            worker = query.get("w", "")
            return int(worker) if worker.isdigit() else None
        stream = stream_of(path)
        return None if stream is None else self.cluster.owner_id(stream)

    def _internal_scope(self, scope: dict[str, Any]) -> dict[str, Any]:
        """A forwarded request as the client made it: its address, without our headers."""
        client = scope.get("client")
        value = _header(scope, CLIENT_HEADER)
        if value:
            host, _, port = value.decode("latin-1").rpartition(":")
            client = (host.strip("[]"), int(port) if port.isdigit() else 0)
        leg = _header(scope, LEG_HEADER) is not None
        drop = (HOP_HEADER, CLIENT_HEADER, LEG_HEADER)
        headers = [h for h in scope["headers"] if h[0] not in drop]
        return {**scope, "headers": headers, "client": client, INTERNAL_LEG_SCOPE: leg}

    async def _serve_here(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "POST" and path.startswith(_OFFER_PREFIXES):
            await self.app(scope, receive, self._tagging_location(send))
        elif method == "GET" and _STREAM_ONLY.match(path) and stream_of(path) is not None:
            await self.app(scope, receive, self._tagging_worker(send))
        else:
            await self.app(scope, receive, send)

    def _worker_json(self) -> dict[str, int]:
        me = self.cluster.worker_id
        return {"id": me, "pid": self.cluster.pids.get(me, 0)}

    def _tagging_location(self, send: Any) -> Any:
        """Adds w=ID to a WHIP/WHEP session's Location, so its later requests find it."""

        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for key, value in message.get("headers", []):
                    if key.lower() == b"location":
                        joiner = b"&" if b"?" in value else b"?"
                        value = value + joiner + urlencode({"w": self.cluster.worker_id}).encode()
                    headers.append((key, value))
                message = {**message, "headers": headers}
            await send(message)

        return tagged

    def _tagging_worker(self, send: Any) -> Any:
        """Adds "worker" to a stream's JSON (its body is small: buffered, then sent)."""
        start: dict[str, Any] = {}
        body = bytearray()

        async def tagged(message: dict[str, Any]) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            data = bytes(body)
            if start.get("status") == 200:
                try:
                    document = json.loads(data)
                    document["worker"] = self._worker_json()
                    data = json.dumps(document).encode()
                except (ValueError, TypeError):
                    pass
            headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            headers.append((b"content-length", str(len(data)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": data})

        return tagged

    def _outgoing_headers(self, scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        headers = [
            (k, v)
            for k, v in scope["headers"]
            if k not in _HOP_BY_HOP and k not in (HOP_HEADER, CLIENT_HEADER, LEG_HEADER)
        ]
        headers.append((HOP_HEADER, self.cluster.hop_secret.encode()))
        client = scope.get("client")
        if client:
            host, port = client[0], client[1]
            shown = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
            headers.append((CLIENT_HEADER, shown.encode()))
        return headers

    async def _forward(self, target: int, scope: dict[str, Any], receive: Any, send: Any) -> None:
        has_body = _header(scope, b"content-length") not in (None, b"0") or (
            _header(scope, b"transfer-encoding") is not None
        )

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body", False):
                    return

        query = scope.get("query_string", b"")
        url = scope.get("raw_path") or scope["path"].encode()
        if query:
            url = url + b"?" + query
        client = self._client(target)
        headers = self._outgoing_headers(scope)
        if has_body and _header(scope, b"content-length") is None:
            headers.append((b"transfer-encoding", b"chunked"))
        request = client.build_request(
            scope["method"],
            url.decode("latin-1"),
            headers=headers,
            content=body() if has_body else None,
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning(
                "forward to worker=%d failed: %s %s: %s",
                target,
                scope["method"],
                scope["path"],
                exc,
            )
            await _send_json(
                send, 502, {"error": f"the worker serving this stream ({target}) is not reachable"}
            )
            return
        try:
            headers_out = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": headers_out,
                }
            )
            async for chunk in response.aiter_raw():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.HTTPError as exc:
            log.info("forwarded response from worker=%d cut: %s", target, exc)
        finally:
            await response.aclose()

    async def _revoke_everywhere(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Makes every other live worker revoke, then revokes here and answers: once the
        client has its answer, no worker admits the token."""
        headers = [h for h in self._outgoing_headers(scope) if h[0] != b"content-length"]
        for worker_id in self.cluster.live_workers():
            if worker_id == self.cluster.worker_id:
                continue
            try:
                response = await self._client(worker_id).post(
                    scope["path"], headers=headers, timeout=AGGREGATE_TIMEOUT_S
                )
            except httpx.HTTPError as exc:
                log.error("revocation not applied on worker=%d: %s", worker_id, exc)
                continue
            if response.status_code != 200:
                #: the same request fails here too (a bad id, no admin key): it answers
                log.info("revocation on worker=%d: HTTP %d", worker_id, response.status_code)
        await self.app(scope, receive, send)

    async def _aggregate(self, scope: dict[str, Any], send: Any) -> None:
        """GET /api/v1/streams over every live worker."""
        headers = self._outgoing_headers(scope)
        streams: list[Any] = []
        workers = []
        for worker_id in self.cluster.live_workers():
            url = "/api/v1/streams"
            query = scope.get("query_string", b"")
            if query:
                url += "?" + query.decode("latin-1")
            try:
                response = await self._client(worker_id).get(
                    url, headers=headers, timeout=AGGREGATE_TIMEOUT_S
                )
            except httpx.HTTPError as exc:
                workers.append({"id": worker_id, "reachable": False})
                log.info("stream list: worker=%d not reachable: %s", worker_id, exc)
                continue
            if response.status_code != 200:
                await _send_json(send, response.status_code, response.json())
                return
            pid = self.cluster.pids.get(worker_id, 0)
            found = response.json().get("streams", [])
            for stream in found:
                stream["worker"] = {"id": worker_id, "pid": pid}
            streams += found
            workers.append({"id": worker_id, "pid": pid, "reachable": True, "streams": len(found)})
        await _send_json(send, 200, {"streams": one_per_path(streams), "workers": workers})


def one_per_path(streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The merged stream list with each stream once.

    With `[cluster]` every worker also lists the cluster's streams it does not hold
    (`"local": false`, cluster/pulls.py `Pulls.listing`), so one stream may come from
    several workers: the worker that holds it wins; a stream no worker here holds is
    listed once, without a worker (none of them serves it).
    """
    held = {s["path"] for s in streams if s.get("local", True)}
    out = []
    seen: set[str] = set()
    for stream in streams:
        path = str(stream.get("path"))
        if stream.get("local", True):
            out.append(stream)
        elif path not in held and path not in seen:
            seen.add(path)
            out.append({k: v for k, v in stream.items() if k != "worker"})
    return out

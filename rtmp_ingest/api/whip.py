"""WHIP (RFC 9725) over starlette: publish a WebRTC source into a stream's bundle.

    POST    /whip/APP/STREAM?sourceId=ID[&priority=N][&token=T]   application/sdp offer
            Authorization: Bearer TOKEN (or ?token=)
            → 201, application/sdp answer, Location: /whip-session/ID,
              Feed-Id: the feed's id in the API and its events
    DELETE  /whip-session/ID      → 200, the feed ends (unpublish)
    PATCH   /whip-session/ID      → 405: no trickle ICE or ICE restart (the answer
                                     carries every candidate)
    OPTIONS /whip/APP/STREAM      → 204 with Accept-Post: application/sdp

Errors are text/plain: 400 malformed offer or query, 401/403 refused by the
publish policy (the same reason text RTMP encoders get), 409/429 bundle
limits, 413 offer too large, 415 not application/sdp, 422 no supported codec,
503 WebRTC process unavailable. In a cluster, a stream another node owns gets
`307` to that node's WHIP URL (RFC 9725 §4.5: clients follow it). ICE servers from the configuration are
announced as `Link: <url>; rel="ice-server"` headers (RFC 9725 §4.4). Every
response exposes Location and Link to browsers (CORS).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rtmp_ingest.server.placement import PlacementError
from rtmp_ingest.server.webrtc_link import WebrtcService, WhipError

log = logging.getLogger("rtmp_ingest.whip")

#: An SDP offer with every codec and candidate a browser sends is ~6 KiB.
MAX_OFFER_BYTES = 64 * 1024
SESSION_PREFIX = "/whip-session/"
EXPOSE = {"Access-Control-Expose-Headers": "Location, Link, Accept-Post, Feed-Id"}


def _text(status: int, text: str, **headers: str) -> Response:
    return Response(
        text + "\n", status_code=status, media_type="text/plain", headers={**EXPOSE, **headers}
    )


#: With a cluster (docs/spec.md §9): the base URL ("http://HOST:PORT") of the node that
#: owns a stream path, None when this node does; raises PlacementError (→ 503).
OwnerUrl = Callable[[str], Awaitable[str | None]]


class Whip:
    """WHIP handlers bound to one WebRTC service."""

    def __init__(self, service: WebrtcService, owner_url: OwnerUrl | None = None) -> None:
        self.service = service
        self.owner_url = owner_url

    def _links(self) -> list[tuple[str, str]]:
        config = self.service.config
        links = []
        for url in config.ice_servers:
            value = f'<{url}>; rel="ice-server"'
            if url.startswith(("turn:", "turns:")) and config.turn_username:
                value += (
                    f'; username="{config.turn_username}"; '
                    f'credential="{config.turn_credential}"; credential-type="password"'
                )
            links.append(("link", value))
        return links

    def _with_links(self, response: Response) -> Response:
        for key, value in self._links():
            response.headers.append(key, value)
        return response

    async def options(self, request: Request) -> Response:
        return self._with_links(
            Response(
                status_code=204,
                headers={**EXPOSE, "Accept-Post": "application/sdp", "Allow": "POST, OPTIONS"},
            )
        )

    async def publish(self, request: Request) -> Response:
        path = request.path_params["path"].strip("/")
        app, _, stream = path.partition("/")
        if not app or not stream:
            return _text(400, "Publish to /whip/APP/STREAM.")
        if self.owner_url is not None:
            #: another node owns the stream: the client publishes there (RFC 9725 §4.5)
            try:
                owner = await self.owner_url(path)
            except PlacementError as exc:
                return _text(503, str(exc))
            if owner is not None:
                raw = request.url.query
                target = f"{owner}{request.url.path}" + (f"?{raw}" if raw else "")
                return _text(307, "This stream is served by another node.", Location=target)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/sdp":
            return _text(415, "The offer must be sent as Content-Type: application/sdp.")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_OFFER_BYTES:
                return _text(413, f"The SDP offer exceeds {MAX_OFFER_BYTES} bytes.")
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError:
            return _text(400, "The SDP offer is not UTF-8 text.")
        if not offer.lstrip().startswith("v=0"):
            return _text(400, "Malformed SDP offer: it must start with v=0.")
        query = dict(request.query_params)
        token = query.pop("token", "")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            token = value.strip()
        priority = query.get("priority", "0") or "0"
        try:
            int(priority)
        except ValueError:
            return _text(400, f"priority must be an integer, got {priority!r}.")
        client = request.client
        remote = f"{client.host}:{client.port}" if client else "unknown"
        if client and ":" in client.host:
            remote = f"[{client.host}]:{client.port}"
        try:
            session = await self.service.publish(
                app=app, stream=stream, query=query, token=token, remote=remote, offer=offer
            )
        except WhipError as exc:
            return _text(exc.status, exc.text)
        location = f"{SESSION_PREFIX}{session.location}"
        #: Feed-Id: the feed's id in the API and its events (the publish page follows it)
        feed_id = str(session.feed.feed_id) if session.feed is not None else ""
        return self._with_links(
            Response(
                session.answer,
                status_code=201,
                media_type="application/sdp",
                headers={**EXPOSE, "Location": location, "Feed-Id": feed_id},
            )
        )

    async def session(self, request: Request) -> Response:
        location = request.path_params["location"]
        if request.method == "DELETE":
            if self.service.delete(location):
                return Response(status_code=200, headers=EXPOSE)
            return _text(404, "No such WHIP session.")
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={**EXPOSE, "Allow": "DELETE, OPTIONS"})
        #: PATCH: trickle ICE and ICE restarts are not supported (RFC 9725 §4.3.1)
        return _text(
            405,
            "Trickle ICE and ICE restart are not supported: the answer carries every candidate.",
            Allow="DELETE, OPTIONS",
        )


def routes(service: WebrtcService, owner_url: OwnerUrl | None = None) -> list[Any]:
    """The WHIP routes; mount them in the HTTP app when WebRTC is enabled."""
    whip = Whip(service, owner_url)
    return [
        Route("/whip/{path:path}", whip.publish, methods=["POST"]),
        Route("/whip/{path:path}", whip.options, methods=["OPTIONS"]),
        Route(SESSION_PREFIX + "{location}", whip.session, methods=["DELETE", "PATCH", "OPTIONS"]),
    ]

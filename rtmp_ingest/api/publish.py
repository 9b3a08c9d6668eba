"""The publish page: `GET /publish/APP/STREAM` makes a browser a WHIP source (docs/spec.md §7).

The page (api/static/publish.html) picks camera + microphone or the screen, a
sourceId (prefilled from `?sourceId=`), an optional publish token (sent as
`Authorization: Bearer`) and a priority, and publishes with WHIP (RFC 9725) to
`/whip/APP/STREAM` of the same server: H.264 first in its offer (every output
carries it), the offer sent once ICE gathering is complete (no trickle ICE),
the session DELETEd on Stop and on pagehide. It shows the state — connecting,
live, waiting to go on air, standing by, superseded, ended — from the peer
connection and the control API (the source's feeds, and the stream's event
stream for `superseded` naming its feed: the WHIP answer's `Feed-Id` header),
and the outgoing bitrate from `getStats()`. Its script is plain JavaScript
served by this server (`/assets/publish-DIGEST.js`, no build step, nothing from
the internet); the page's Content-Security-Policy allows no other script.

With `[webrtc] enabled = false` the page still loads and says WHIP is off.
"""

from __future__ import annotations

import hashlib
import html
import json
from functools import cache
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from rtmp_ingest.api.defs import ApiServer

STATIC = Path(__file__).with_name("static")
PAGE_FILE = STATIC / "publish.html"
SCRIPT_FILE = STATIC / "publish.js"
#: Stream paths the page is served for: APP/STREAM of these characters (the name goes
#: into the page; anything else is refused rather than escaped into a script)
PATH_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./")
MAX_PATH_CHARS = 256
#: The page runs its own script only and talks to this server only (media: the preview)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "connect-src 'self'; media-src 'self' blob: mediastream:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'"
)


@cache
def script() -> tuple[bytes, str]:
    """The page's script and the path it is served at (its digest in the name)."""
    data = SCRIPT_FILE.read_bytes()
    return data, f"/assets/publish-{hashlib.sha256(data).hexdigest()[:12]}.js"


def page(stream_path: str, *, whip: bool) -> str:
    """The page for one stream; `whip` false: it says WHIP ingest is off."""
    config = json.dumps({"stream": stream_path, "whip": whip}).replace("</", "<\\/")
    return (
        PAGE_FILE.read_text(encoding="utf-8")
        .replace("__TITLE__", html.escape(stream_path))
        .replace("__CONFIG__", config)
        .replace("__SCRIPT__", script()[1])
    )


def valid_path(path: str) -> bool:
    app, _, stream = path.partition("/")
    return (
        bool(app and stream)
        and len(path) <= MAX_PATH_CHARS
        and set(path) <= PATH_CHARACTERS
        and ".." not in path.split("/")
    )


def routes(server: ApiServer) -> list[Any]:
    async def publish_page(request: Request) -> Response:
        path = request.path_params["path"].strip("/")
        if not valid_path(path):
            return HTMLResponse(
                "<p>Open /publish/APP/STREAM (letters, digits, - _ . /).</p>", status_code=400
            )
        return HTMLResponse(
            page(path, whip=server.config.webrtc.enabled),
            headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP},
        )

    async def publish_script(request: Request) -> Response:
        return Response(
            script()[0],
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    return [
        Route("/publish/{path:path}", publish_page, methods=["GET"]),
        Route(script()[1], publish_script, methods=["GET"]),
    ]

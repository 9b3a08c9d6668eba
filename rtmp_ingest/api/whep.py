"""WHEP over starlette: play one source of a stream over WebRTC (draft-ietf-wish-whep).

    POST    /whep/APP/STREAM[?sourceId=ID]   application/sdp offer (recvonly)
            → 201, application/sdp answer (sendonly, every candidate),
              Location: /whep-session/ID
    DELETE  /whep-session/ID      → 200, the session ends
    PATCH   /whep-session/ID      → 405: no trickle ICE or ICE restart
    OPTIONS /whep/APP/STREAM      → 204 with Accept-Post: application/sdp
    GET     /whep-view/APP/STREAM[?sourceId=ID]   a minimal player page (no external script)

With no sourceId the viewer gets the default source, else the top priority one
(as RTMP play). Errors are text/plain: 400 malformed offer, 409 the source is
not live (after waiting `webrtc.whep_wait_s`), 413 offer too large, 415 not
application/sdp, 422 a source WebRTC cannot carry (B-frames, HEVC) or an offer
without its codec, 503 WebRTC process unavailable. ICE servers are announced
as `Link` headers; CORS exposes Location and Link.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from rtmp_ingest.api.whip import EXPOSE, MAX_OFFER_BYTES, Whip, _text
from rtmp_ingest.server.webrtc_link import WhipError
from rtmp_ingest.server.whep import WhepService

SESSION_PREFIX = "/whep-session/"
#: The player page: one <video>, the WHEP exchange without trickle ICE (the offer goes out
#: once gathering is complete), the session DELETEd on unload. `window.whep` says how it
#: goes (state, pictures shown, size, video codec) for tests and the curious.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>WHEP __PATH__</title>
<style>body{margin:0;background:#111;color:#ddd;font:14px sans-serif}
video{width:100vw;max-height:92vh;background:#000}#s{padding:4px 8px}</style></head>
<body><video id="v" autoplay muted playsinline controls></video><div id="s">connecting</div>
<script>
const whep = window.whep = {state: "new", frames: 0, width: 0, height: 0, audioSamples: 0,
                           codec: null, error: null};
const video = document.getElementById("v"), status = document.getElementById("s");
const endpoint = "/whep/__PATH__" + location.search;
let session = null;
function show(text) { status.textContent = text; }
function count(now, meta) {
  whep.frames += 1; whep.width = meta.width; whep.height = meta.height;
  video.requestVideoFrameCallback(count);
}
async function start() {
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  const stream = new MediaStream();
  pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; };
  pc.onconnectionstatechange = () => { whep.state = pc.connectionState; show(pc.connectionState); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === "complete") return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
    setTimeout(done, 2000);
  });
  const response = await fetch(endpoint, {method: "POST", body: pc.localDescription.sdp,
                                          headers: {"Content-Type": "application/sdp"}});
  const text = await response.text();
  if (response.status !== 201) { whep.state = "refused"; whep.error = text; show(text); return; }
  session = response.headers.get("Location");
  await pc.setRemoteDescription({type: "answer", sdp: text});
  video.requestVideoFrameCallback(count);
  setInterval(async () => {
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "audio") whep.audioSamples = r.totalSamplesReceived;
      if (r.type === "inbound-rtp" && r.kind === "video" && stats.get(r.codecId))
        whep.codec = stats.get(r.codecId).mimeType;
    });
    if (whep.state === "connected")
      show(`${whep.codec || ""} ${whep.width}x${whep.height} · ${whep.frames} pictures`);
  }, 500);
}
addEventListener("pagehide", () => { if (session) fetch(session, {method: "DELETE", keepalive: true}); });
start().catch((e) => { whep.state = "error"; whep.error = String(e); show(String(e)); });
</script></body></html>
"""
CORS = {"Access-Control-Allow-Origin": "*"}


def whep_url(stream_path: str, source_id: str, *, host: str, http_port: int) -> str:
    """A source's WHEP endpoint as the API shows it (`urls.whep`): absolute on `host`."""
    query = f"?sourceId={quote(source_id, safe='')}" if source_id else ""
    path = f"/whep/{quote(stream_path)}{query}"
    if not host:
        return path
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{http_port}{path}"


class Whep:
    """WHEP handlers bound to one WHEP service."""

    def __init__(self, service: WhepService) -> None:
        self.service = service
        self._links = Whip(service.webrtc)

    async def options(self, request: Request) -> Response:
        return self._links._with_links(
            Response(
                status_code=204,
                headers={
                    **EXPOSE,
                    **CORS,
                    "Accept-Post": "application/sdp",
                    "Allow": "POST, OPTIONS",
                    "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
                    "Access-Control-Allow-Headers": "Content-Type, Authorization",
                },
            )
        )

    async def play(self, request: Request) -> Response:
        path = request.path_params["path"].strip("/")
        app, _, stream = path.partition("/")
        if not app or not stream:
            return _text(400, "Play /whep/APP/STREAM.", **CORS)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/sdp":
            return _text(415, "The offer must be sent as Content-Type: application/sdp.", **CORS)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_OFFER_BYTES:
                return _text(413, f"The SDP offer exceeds {MAX_OFFER_BYTES} bytes.", **CORS)
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError:
            return _text(400, "The SDP offer is not UTF-8 text.", **CORS)
        if not offer.lstrip().startswith("v=0"):
            return _text(400, "Malformed SDP offer: it must start with v=0.", **CORS)
        source_id = request.query_params.get("sourceId")
        query = dict(request.query_params)
        token = query.pop("token", "")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            token = value.strip()
        client = request.client
        remote = f"{client.host}:{client.port}" if client else "unknown"
        try:
            viewer = await self.service.play(
                app=app,
                stream=stream,
                source_id=source_id,
                remote=remote,
                offer=offer,
                query=query,
                token=token,
            )
        except WhipError as exc:
            self.service.refused[exc.status] = self.service.refused.get(exc.status, 0) + 1
            return _text(exc.status, exc.text, **CORS)
        return self._links._with_links(
            Response(
                viewer.answer,
                status_code=201,
                media_type="application/sdp",
                headers={**EXPOSE, **CORS, "Location": f"{SESSION_PREFIX}{viewer.location}"},
            )
        )

    async def page(self, request: Request) -> Response:
        path = request.path_params["path"].strip("/")
        app, _, stream = path.partition("/")
        if not app or not stream or not all(c.isalnum() or c in "-_./" for c in path):
            return _text(400, "Open /whep-view/APP/STREAM.")
        return HTMLResponse(PAGE.replace("__PATH__", path))

    async def session(self, request: Request) -> Response:
        location = request.path_params["location"]
        if request.method == "DELETE":
            if self.service.delete(location):
                return Response(status_code=200, headers={**EXPOSE, **CORS})
            return _text(404, "No such WHEP session.", **CORS)
        if request.method == "OPTIONS":
            return Response(
                status_code=204,
                headers={
                    **EXPOSE,
                    **CORS,
                    "Allow": "DELETE, OPTIONS",
                    "Access-Control-Allow-Methods": "DELETE, OPTIONS",
                },
            )
        return _text(
            405,
            "Trickle ICE and ICE restart are not supported: the answer carries every candidate.",
            Allow="DELETE, OPTIONS",
            **CORS,
        )


def routes(service: WhepService) -> list[Any]:
    """The WHEP routes; mount them in the HTTP app when WebRTC is enabled."""
    whep = Whep(service)
    return [
        Route("/whep/{path:path}", whep.play, methods=["POST"]),
        Route("/whep/{path:path}", whep.options, methods=["OPTIONS"]),
        Route("/whep-view/{path:path}", whep.page, methods=["GET"]),
        Route(SESSION_PREFIX + "{location}", whep.session, methods=["DELETE", "PATCH", "OPTIONS"]),
    ]

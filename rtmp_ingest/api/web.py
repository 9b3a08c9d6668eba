"""The multiview page: `GET /view/APP/STREAM` shows every source of a stream live.

One tile per source, each playing the source's LL-HLS playlist with hls.js
(low-latency mode; Safari plays HLS natively), labelled with the sourceId,
its state and codecs. The page reads `/api/v1/streams/PATH` once and then
follows `/api/v1/events?stream=PATH` (SSE): a tile appears on `active`, is
marked on `reconnecting`/`superseded` and goes on `inactive`. A tile whose
source's codecs (RFC 6381, from the source's `hls.tracks` in the API) the
browser's `MediaSource.isTypeSupported` refuses says "not playable in this
browser" and names the codec instead of showing a black box.

When WHEP is served (`[webrtc]`), each tile plays its source over WebRTC first
(`/whep/APP/STREAM?sourceId=ID`, sub-second) and falls back to LL-HLS when that
fails (refused, e.g. 422 for B-frames, or no connection); the label says which
and the tile's latency (WebRTC: the browser's jitter buffer plus half the round
trip; LL-HLS: hls.js's).

The page loads no script from the internet: hls.js is vendored in the package
(api/static/, see its README) and served at `/assets/hls-VERSION.min.js`;
`http.hlsjs_url` may point elsewhere (a local mirror). With an admin key set the
API needs a bearer header the page cannot send, so the page asks for the key
once and keeps it in the browser's session storage.
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

from rtmp_ingest.api import publish
from rtmp_ingest.api.defs import ApiServer

#: The vendored hls.js (api/static/README.md says where it comes from).
HLSJS_VERSION = "1.7.4"
HLSJS_SHA256 = "cfc70cc9e9fc63d071919e087670abc760c8fd1bc889b88588026e4d22193bbe"
HLSJS_FILE = Path(__file__).with_name("static") / "hls.min.js"
#: Where the server serves it (the version in the name, so it is cacheable for good).
HLSJS_PATH = f"/assets/hls-{HLSJS_VERSION}.min.js"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__ · multiview</title>
<style>
  body { margin: 0; background: #111; color: #eee; font: 14px system-ui, sans-serif; }
  header { padding: 8px 12px; display: flex; gap: 16px; align-items: baseline; }
  header h1 { font-size: 16px; margin: 0; }
  #status { color: #9a9; }
  #grid { display: grid; gap: 6px; padding: 6px;
          grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); }
  .tile { background: #000; position: relative; aspect-ratio: 16 / 9; }
  .tile video { width: 100%; height: 100%; object-fit: contain; background: #000; }
  .label { position: absolute; left: 6px; top: 6px; background: rgba(0,0,0,.6);
           padding: 2px 6px; border-radius: 3px; }
  .tile.reconnecting .label { background: #a60; }
  .unplayable { position: absolute; inset: 0; display: flex; align-items: center;
                justify-content: center; text-align: center; padding: 12px; color: #f96; }
  .unplayable[hidden] { display: none; }
  .empty { padding: 24px; color: #888; }
</style>
<script src="__HLSJS__"></script>
</head>
<body>
<header><h1>__TITLE__</h1><span id="status">connecting…</span></header>
<div id="grid"><div class="empty" id="empty">No source is live yet; tiles appear as sources go on air.</div></div>
<script>
const STREAM = __STREAM__;
const WHEP = __WHEP__;
const grid = document.getElementById("grid");
const statusLine = document.getElementById("status");
const tiles = new Map();
let key = sessionStorage.getItem("rtmp_ingest_admin_key") || "";

function headers() { return key ? {"Authorization": "Bearer " + key} : {}; }
function name(sourceId) { return sourceId === "" ? "_" : encodeURIComponent(sourceId); }
function playlist(sourceId) {
  return "/hls/" + STREAM.split("/").map(encodeURIComponent).join("/") + "/" + name(sourceId) + "/index.m3u8";
}

function show(sourceId, state, tracks) {
  let tile = tiles.get(sourceId);
  if (!tile) {
    tile = document.createElement("div");
    tile.className = "tile";
    const video = document.createElement("video");
    video.muted = true; video.autoplay = true; video.playsInline = true; video.controls = true;
    const label = document.createElement("div");
    label.className = "label";
    const unplayable = document.createElement("div");
    unplayable.className = "unplayable";
    unplayable.hidden = true;
    tile.append(video, label, unplayable);
    grid.append(tile);
    tiles.set(sourceId, tile);
    document.getElementById("empty")?.remove();
    attach(tile, video, sourceId);
  }
  if (state === "live") checkCodecs(tile, sourceId);
  const codecs = (tracks || []).map(t => t.codec + (t.width ? " " + t.width + "x" + t.height : "")).join(", ");
  tile.info = (sourceId || "default") + " · " + state + (codecs ? " · " + codecs : "");
  label(tile);
  tile.classList.toggle("reconnecting", state !== "live");
}

function label(tile) {
  const latency = tile.mode === "webrtc" ? tile.latency : tile.hls?.latency;
  tile.querySelector(".label").textContent = tile.info + (tile.mode ? " · " + tile.mode : "") +
    (latency != null ? " · " + Math.round(latency * 1000) + " ms" : "");
}
setInterval(() => tiles.forEach(async (tile) => {
  if (tile.pc) {
    (await tile.pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video" && r.jitterBufferEmittedCount) {
        tile.jitter = r.jitterBufferDelay / r.jitterBufferEmittedCount;
      } else if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime != null) {
        tile.rtt = r.currentRoundTripTime;
      }
    });
    tile.latency = tile.jitter != null ? tile.jitter + (tile.rtt || 0) / 2 : null;
  }
  label(tile);
}), 1000);

function whepUrl(sourceId) {
  return "/whep/" + STREAM.split("/").map(encodeURIComponent).join("/") +
    (sourceId === "" ? "" : "?sourceId=" + encodeURIComponent(sourceId));
}

function closeWhep(tile) {
  if (tile.session) fetch(tile.session, {method: "DELETE", keepalive: true}).catch(() => {});
  tile.pc?.close();
  tile.pc = tile.session = null;
}

async function attachWhep(tile, video, sourceId) {
  const pc = tile.pc = new RTCPeerConnection({iceServers: []});
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  const media = new MediaStream();
  pc.ontrack = (e) => { media.addTrack(e.track); video.srcObject = media; };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {  // no trickle ICE: the offer carries every candidate
    if (pc.iceGatheringState === "complete") return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
    setTimeout(done, 2000);
  });
  const response = await fetch(whepUrl(sourceId), {method: "POST", body: pc.localDescription.sdp,
                                                   headers: {"Content-Type": "application/sdp"}});
  const answer = await response.text();
  if (response.status !== 201) throw new Error(answer);
  tile.session = response.headers.get("Location");
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  await new Promise((ok, fail) => {
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") ok();
      else if (["failed", "closed"].includes(pc.connectionState)) fail(new Error(pc.connectionState));
    };
    setTimeout(() => fail(new Error("no WebRTC connection")), 10000);
  });
  tile.mode = "webrtc";
  pc.onconnectionstatechange = () => {
    if (["failed", "closed"].includes(pc.connectionState) && tiles.get(sourceId) === tile) {
      closeWhep(tile);
      attach(tile, video, sourceId);
    }
  };
}

function attach(tile, video, sourceId, attempt = 0) {
  if (WHEP && window.RTCPeerConnection && !tile.noWebrtc) {
    attachWhep(tile, video, sourceId).catch((error) => {
      closeWhep(tile);
      tile.noWebrtc = String(error.message || error);  // LL-HLS from now on
      attach(tile, video, sourceId);
    });
    return;
  }
  tile.mode = "ll-hls";
  const url = playlist(sourceId);
  if (window.Hls && Hls.isSupported()) {
    const hls = new Hls({lowLatencyMode: true, backBufferLength: 10});
    tile.hls = hls;
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (data.fatal && tiles.get(sourceId) === tile && attempt < 30) {
        hls.destroy();
        setTimeout(() => attach(tile, video, sourceId, attempt + 1), 1000);
      }
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  } else {
    video.src = url;  // Safari: native HLS
  }
}

// RFC 6381 codecs of the source's HLS tracks (video0 → video/mp4, audio0 → audio/mp4)
// that this browser's MediaSource cannot decode; [] when it can or cannot tell
function unsupported(hlsTracks) {
  if (!window.MediaSource || !MediaSource.isTypeSupported) return [];
  return (hlsTracks || []).filter(t => t.codecs).filter(t => {
    const kind = t.track.startsWith("audio") ? "audio" : "video";
    return !MediaSource.isTypeSupported(kind + '/mp4; codecs="' + t.codecs + '"');
  }).map(t => t.codecs);
}

async function checkCodecs(tile, sourceId, attempt = 0) {
  if (tile.codecCheck && attempt === 0) return;
  tile.codecCheck = true;
  let source = null;
  try {
    const response = await fetch("/api/v1/streams/" + STREAM + "/sources/" + name(sourceId), {headers: headers()});
    if (response.ok) source = await response.json();
  } catch (error) { /* retried below */ }
  if (tiles.get(sourceId) !== tile) return;
  const tracks = source && source.hls ? source.hls.tracks : [];
  if (!tracks.length) {
    // HLS tracks appear with the first segment: look again shortly
    if (attempt < 20) setTimeout(() => checkCodecs(tile, sourceId, attempt + 1), 1000);
    else tile.codecCheck = false;
    return;
  }
  const bad = unsupported(tracks);
  const box = tile.querySelector(".unplayable");
  box.hidden = bad.length === 0;
  box.textContent = bad.length ? "not playable in this browser (" + bad.join(", ") + ")" : "";
  tile.codecCheck = false;
}

function drop(sourceId) {
  const tile = tiles.get(sourceId);
  if (!tile) return;
  tile.hls?.destroy();
  closeWhep(tile);
  tile.remove();
  tiles.delete(sourceId);
}

async function start() {
  let response = await fetch("/api/v1/streams/" + STREAM, {headers: headers()});
  if (response.status === 401) {
    key = prompt("Admin key for this server's API") || "";
    sessionStorage.setItem("rtmp_ingest_admin_key", key);
    response = await fetch("/api/v1/streams/" + STREAM, {headers: headers()});
  }
  if (response.ok) {
    for (const source of (await response.json()).sources) show(source.sourceId, source.state, source.tracks);
  }
  follow();
}

async function follow() {
  // EventSource cannot send headers, so the stream is read with fetch
  while (true) {
    try {
      const response = await fetch("/api/v1/events?stream=" + encodeURIComponent(STREAM), {headers: headers()});
      statusLine.textContent = "live";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      while (true) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
          const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          const type = (block.match(/^event: (.*)$/m) || [])[1];
          const data = (block.match(/^data: (.*)$/m) || [])[1];
          if (!type || !data) continue;
          const event = JSON.parse(data);
          if (type === "active" || type === "updated") show(event.sourceId, "live", event.tracks);
          else if (type === "reconnecting") show(event.sourceId, "reconnecting");
          else if (type === "inactive") drop(event.sourceId);
        }
      }
    } catch (error) { /* reconnect below */ }
    statusLine.textContent = "reconnecting…";
    await new Promise(resolve => setTimeout(resolve, 2000));
  }
}

start();
</script>
</body>
</html>
"""


def page(stream_path: str, hlsjs_url: str, *, whep: bool = False) -> str:
    return (
        _PAGE.replace("__TITLE__", html.escape(stream_path))
        .replace("__WHEP__", "true" if whep else "false")
        .replace("__HLSJS__", html.escape(hlsjs_url, quote=True))
        .replace("__STREAM__", json.dumps(stream_path).replace("</", "<\\/"))
    )


@cache
def hlsjs() -> bytes:
    """The vendored hls.js, checked against its recorded digest once."""
    data = HLSJS_FILE.read_bytes()
    if hashlib.sha256(data).hexdigest() != HLSJS_SHA256:
        raise RuntimeError(f"{HLSJS_FILE} is not hls.js {HLSJS_VERSION} (sha256 differs)")
    return data


def hlsjs_url(configured: str) -> str:
    """The script the page loads: `http.hlsjs_url`, or the copy this server serves."""
    return configured or HLSJS_PATH


def routes(server: ApiServer) -> list[Any]:
    async def view(request: Request) -> Response:
        path = request.path_params["path"].strip("/")
        if "/" not in path:
            return HTMLResponse("<p>Use /view/APP/STREAM</p>", status_code=400)
        return HTMLResponse(
            page(
                path,
                hlsjs_url(server.config.http.hlsjs_url),
                whep=server.config.webrtc.enabled and server.config.webrtc.whep_enabled,
            ),
            headers={"Cache-Control": "no-cache"},
        )

    async def script(request: Request) -> Response:
        return Response(
            hlsjs(),
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    return [
        Route("/view/{path:path}", view, methods=["GET"]),
        Route(HLSJS_PATH, script, methods=["GET"]),
        *publish.routes(server),  #: the browser's WHIP publish page
    ]

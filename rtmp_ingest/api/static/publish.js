// The publish page (GET /publish/APP/STREAM): a browser as a WHIP (RFC 9725) source.
//
// Start: camera + microphone (getUserMedia) or the screen (getDisplayMedia); one sendonly
// transceiver per track, H.264 first in the video codec order (every output carries it);
// the offer goes out once ICE gathering is complete (the server takes no trickle ICE),
// with the token as `Authorization: Bearer`. The 201's Location is DELETEd on Stop and on
// pagehide; its Feed-Id header names our feed in the bundle.
//
// State: "connecting" until the peer connection is up; then the bundle decides, read from
// the control API (/api/v1/streams/…/sources/ID, refreshed on every event of the stream's
// event stream and every STATE_POLL_MS): "live" (our feed is on air), "pending" (waiting to
// go on air: the server asked for a keyframe), "standby" (another feed of the sourceId is on
// air). A `superseded` event naming our feed → "superseded" (the server ends the peer
// connection). The server closing the connection otherwise → "ended". Without access to the
// API (an admin key this page does not have), "live" means connected and sending.
// `window.publish` mirrors what the page shows (tests read it).
"use strict";

const CONFIG = JSON.parse(document.getElementById("config").textContent);
const STATE_POLL_MS = 2000;
const STATS_MS = 1000;
//: longest wait for ICE gathering before the offer goes with the candidates it has
const GATHER_TIMEOUT_MS = 5000;
//: after the server ended the connection, how long a late `superseded` event may still
//: name our feed (the event and the connection's end race)
const SUPERSEDED_GRACE_MS = 3000;
const API_KEY_STORAGE = "rtmp_ingest_admin_key";

const $ = (id) => document.getElementById(id);
const publish = window.publish = {
  state: "idle", detail: "", location: null, feedId: null, sourceId: null,
  bitrateKbps: null, codec: null, width: 0, height: 0, framesSent: 0,
  api: null, supersededBy: null, error: null,
};
let run = null;  // the current attempt: {pc, media, location, ...}; null when idle

function show(state, detail) {
  publish.state = state;
  if (detail !== undefined) publish.detail = detail;
  const badge = $("state");
  badge.textContent = {pending: "waiting to go on air", standby: "standing by"}[state] || state;
  badge.className = state;
  $("detail").textContent = publish.detail;
  const busy = run !== null;
  $("start").disabled = busy;
  $("stop").disabled = !busy;
  for (const id of ["media", "sourceId", "token", "priority"]) $(id).disabled = busy;
}

function apiHeaders() {
  const key = sessionStorage.getItem(API_KEY_STORAGE);
  return key ? {"Authorization": "Bearer " + key} : {};
}

function quotePath(path) { return path.split("/").map(encodeURIComponent).join("/"); }

// ICE servers the endpoint announces (RFC 9725 §4.4: Link rel="ice-server"); [] if none
async function iceServers(url) {
  let response;
  try { response = await fetch(url, {method: "OPTIONS"}); } catch (error) { return []; }
  const servers = [];
  for (const part of (response.headers.get("Link") || "").split(/,(?=\s*<)/)) {
    const match = part.match(/<([^>]+)>/);
    if (!match || !/rel="?ice-server"?/.test(part)) continue;
    const server = {urls: match[1]};
    const user = part.match(/username="([^"]*)"/), secret = part.match(/credential="([^"]*)"/);
    if (user) server.username = user[1];
    if (secret) server.credential = secret[1];
    servers.push(server);
  }
  return servers;
}

// video codecs with H.264 (packetization-mode=1 first) ahead of the rest; RTX etc. kept
function h264First(kind) {
  const capabilities = (window.RTCRtpReceiver && RTCRtpReceiver.getCapabilities(kind)) ||
                       RTCRtpSender.getCapabilities(kind);
  const rank = (codec) => {
    if (codec.mimeType.toLowerCase() !== "video/h264") return 2;
    return /packetization-mode=1/.test(codec.sdpFmtpLine || "") ? 0 : 1;
  };
  return capabilities.codecs.slice().sort((a, b) => rank(a) - rank(b));
}

// the picture with sound if the browser gives it, else the picture alone (no microphone,
// or a browser that cannot capture a screen's audio)
async function capture(kind) {
  const devices = navigator.mediaDevices;
  const video = kind === "screen" ? {frameRate: 30}
    : {width: {ideal: 1280}, height: {ideal: 720}, frameRate: {ideal: 30}};
  const get = (constraints) => kind === "screen" ? devices.getDisplayMedia(constraints)
                                                 : devices.getUserMedia(constraints);
  try {
    return await get({video, audio: true});
  } catch (error) {
    if (!["NotFoundError", "OverconstrainedError", "TypeError", "NotReadableError"].includes(error.name)) throw error;
    return get({video});
  }
}

function gathered(pc) {
  return new Promise((done) => {
    if (pc.iceGatheringState === "complete") return done();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") done();
    });
    setTimeout(done, GATHER_TIMEOUT_MS);
  });
}

async function start() {
  const sourceId = $("sourceId").value.trim();
  const token = $("token").value.trim();
  const priority = $("priority").value.trim() || "0";
  const attempt = run = {pc: null, media: null, location: null, stopped: false, timers: []};
  publish.error = publish.supersededBy = publish.location = publish.feedId = null;
  publish.sourceId = sourceId;
  publish.bitrateKbps = null;
  show("connecting", "asking for " + $("media").value + "…");
  try {
    const media = attempt.media = await capture($("media").value);
    if (attempt.stopped) return finish(attempt);
    $("preview").srcObject = media;
    const endpoint = new URL("/whip/" + quotePath(CONFIG.stream), location.href);
    if (sourceId) endpoint.searchParams.set("sourceId", sourceId);
    if (priority !== "0") endpoint.searchParams.set("priority", priority);
    const pc = attempt.pc = new RTCPeerConnection({iceServers: await iceServers(endpoint)});
    for (const track of media.getTracks()) {
      const transceiver = pc.addTransceiver(track, {direction: "sendonly", streams: [media]});
      if (track.kind === "video" && transceiver.setCodecPreferences) {
        try { transceiver.setCodecPreferences(h264First("video")); } catch (error) { /* as offered */ }
      }
      // the page ends the attempt when the user stops sharing (the browser's own button)
      track.addEventListener("ended", () => { if (run === attempt) stop("stopped", "capture ended"); });
    }
    pc.addEventListener("connectionstatechange", () => connectionChanged(attempt));
    await pc.setLocalDescription(await pc.createOffer());
    show("connecting", "gathering ICE candidates…");
    await gathered(pc);
    if (attempt.stopped) return finish(attempt);
    show("connecting", "offering to the server…");
    const headers = {"Content-Type": "application/sdp"};
    if (token) headers["Authorization"] = "Bearer " + token;
    const response = await fetch(endpoint, {method: "POST", body: pc.localDescription.sdp, headers});
    const body = await response.text();
    if (response.status !== 201) {
      publish.error = body.trim();
      finish(attempt);
      return show("refused", response.status + ": " + publish.error);
    }
    attempt.location = publish.location = new URL(response.headers.get("Location"), endpoint).href;
    publish.feedId = Number(response.headers.get("Feed-Id")) || null;
    if (attempt.stopped) return finish(attempt);
    await pc.setRemoteDescription({type: "answer", sdp: body});
    show("connecting", "connecting (ICE, DTLS)…");
    attempt.timers.push(setInterval(() => sampleStats(attempt), STATS_MS));
    attempt.timers.push(setInterval(() => refresh(attempt), STATE_POLL_MS));
    follow(attempt);
  } catch (error) {
    publish.error = String(error.message || error);
    finish(attempt);
    show("error", publish.error);
  }
}

function connectionChanged(attempt) {
  const pc = attempt.pc;
  if (run !== attempt || !pc) return;
  if (pc.connectionState === "connected") {
    attempt.connected = true;
    refresh(attempt);
  } else if (["failed", "closed"].includes(pc.connectionState) && attempt.connected) {
    serverEnded(attempt, "the server ended the connection");
  } else if (pc.connectionState === "failed") {
    serverEnded(attempt, "no WebRTC connection to the server (ICE failed)");
  }
  // DTLS close_notify from the server: the transport closes before ICE notices anything
  const transport = pc.getSenders()[0]?.transport;
  if (transport && !attempt.watchingDtls) {
    attempt.watchingDtls = true;
    transport.addEventListener("statechange", () => {
      if (transport.state === "closed" && run === attempt) serverEnded(attempt, "the server ended the connection");
    });
  }
  render(attempt);
}

// the server ended our peer connection: superseded if an event says so (now or shortly)
function serverEnded(attempt, why) {
  if (attempt.ended) return;
  attempt.ended = true;
  attempt.location = null;  // the session is gone; nothing to DELETE
  finish(attempt, {keepEvents: true});
  if (publish.supersededBy !== null) return show("superseded", supersededText());
  show("ended", why);
  setTimeout(() => attempt.events?.abort(), SUPERSEDED_GRACE_MS);
}

function supersededText() {
  const by = publish.supersededBy;
  return "another feed of sourceId " + JSON.stringify(publish.sourceId) + " took over" +
         (by && by.feed ? " (feed " + by.feed + (by.protocol ? ", " + by.protocol : "") + ")" : "");
}

// what the bundle says of our feed (GET the source); null when the API is not ours to read
async function refresh(attempt) {
  if (run !== attempt && !attempt.ended) return;
  let source = null;
  try {
    const url = "/api/v1/streams/" + quotePath(CONFIG.stream) + "/sources/" +
                (publish.sourceId === "" ? "_" : encodeURIComponent(publish.sourceId));
    const response = await fetch(url, {headers: apiHeaders()});
    publish.api = response.status === 401 || response.status === 403 ? "no access" : "ok";
    if (response.ok) source = await response.json();
  } catch (error) { publish.api = "unreachable"; }
  attempt.source = source;
  if (publish.supersededBy && source && source.onAir) publish.supersededBy.protocol = source.onAir.protocol;
  render(attempt);
}

function render(attempt) {
  if (run !== attempt) {
    if (publish.state === "superseded") show("superseded", supersededText());
    return;
  }
  const pc = attempt.pc;
  if (!pc || pc.connectionState !== "connected") return show("connecting", publish.detail);
  const source = attempt.source, mine = publish.feedId;
  const sending = publish.codec ? publish.codec + (publish.width ? " " + publish.width + "x" + publish.height : "") : "";
  if (source && mine !== null) {
    if (source.onAir && source.onAir.id === mine) return show("live", "on air as " + JSON.stringify(publish.sourceId) + (sending ? " · " + sending : ""));
    if (source.pending.some((f) => f.id === mine)) return show("pending", "connected; waiting for a keyframe to go on air");
    if (source.standby.some((f) => f.id === mine)) {
      return show("standby", "feed " + (source.onAir ? source.onAir.id + " (" + source.onAir.protocol + ")" : "?") + " is on air; this one takes over if it ends");
    }
  }
  const reason = publish.api === "ok" ? "" : " (on-air state: the control API needs its admin key)";
  show("live", "connected and sending" + (sending ? " · " + sending : "") + reason);
}

// the stream's event stream (fetch: EventSource cannot send an Authorization header)
async function follow(attempt) {
  const controller = attempt.events = new AbortController();
  while (run === attempt || (attempt.ended && !controller.signal.aborted)) {
    try {
      const response = await fetch("/api/v1/events?stream=" + encodeURIComponent(CONFIG.stream),
                                   {headers: apiHeaders(), signal: controller.signal});
      if (!response.ok) return;  // no admin key: the state comes from the connection only
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const type = (block.match(/^event: (.*)$/m) || [])[1];
          const data = (block.match(/^data: (.*)$/m) || [])[1];
          if (type && data) onEvent(attempt, type, JSON.parse(data));
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    await new Promise((resolve) => setTimeout(resolve, STATE_POLL_MS));
  }
}

function onEvent(attempt, type, event) {
  if (event.sourceId !== publish.sourceId) return;
  if (type === "superseded" && publish.feedId !== null && event.feedId === publish.feedId) {
    publish.supersededBy = {feed: event.byFeedId, protocol: null};
    if (run === attempt) {
      attempt.location = null;  // the server ends the session itself
      finish(attempt, {keepEvents: true});
    }
    show("superseded", supersededText());
    refresh(attempt).then(() => attempt.events?.abort());
    return;
  }
  refresh(attempt);
}

async function sampleStats(attempt) {
  const pc = attempt.pc;
  if (!pc || run !== attempt) return;
  let bytes = 0, codecId = null;
  const stats = await pc.getStats();
  stats.forEach((report) => {
    if (report.type !== "outbound-rtp") return;
    bytes += (report.bytesSent || 0) + (report.headerBytesSent || 0);
    if (report.kind === "video") {
      codecId = report.codecId;
      publish.width = report.frameWidth || 0;
      publish.height = report.frameHeight || 0;
      publish.framesSent = report.framesEncoded || 0;
    }
  });
  const codec = codecId && stats.get(codecId);
  publish.codec = codec ? codec.mimeType.replace(/^video\//, "") : null;
  const now = performance.now();
  if (attempt.lastBytes !== undefined && now > attempt.lastAt) {
    publish.bitrateKbps = Math.round((bytes - attempt.lastBytes) * 8 / (now - attempt.lastAt));
    $("bitrate").textContent = publish.bitrateKbps + " kbit/s out";
  }
  attempt.lastBytes = bytes;
  attempt.lastAt = now;
  render(attempt);
}

// releases an attempt: its timers, capture, peer connection and (unless kept) its events
function finish(attempt, {keepEvents = false} = {}) {
  attempt.stopped = true;
  for (const timer of attempt.timers) clearInterval(timer);
  attempt.timers = [];
  attempt.media?.getTracks().forEach((track) => track.stop());
  attempt.pc?.close();
  if (!keepEvents) attempt.events?.abort();
  if (run === attempt) run = null;
  $("preview").srcObject = null;
  $("bitrate").textContent = "";
}

function unpublish(attempt) {
  if (attempt.location) {
    fetch(attempt.location, {method: "DELETE", keepalive: true}).catch(() => {});
    attempt.location = null;
  }
}

function stop(state = "stopped", detail = "unpublished") {
  const attempt = run;
  if (!attempt) return;
  unpublish(attempt);
  finish(attempt);
  show(state, detail);
}

$("form").addEventListener("submit", (event) => { event.preventDefault(); if (!run) start(); });
$("stop").addEventListener("click", () => stop());
addEventListener("pagehide", () => { if (run) unpublish(run); });

const query = new URLSearchParams(location.search);
$("sourceId").value = query.get("sourceId") ?? "";
if (query.get("priority")) $("priority").value = query.get("priority");
if (query.get("media") === "screen") $("media").value = "screen";
if (!CONFIG.whip) {
  show("error", "WHIP ingest is off on this server ([webrtc] enabled = false).");
  $("start").disabled = true;
} else {
  show("idle", "Pick what to send and a sourceId, then Start.");
}

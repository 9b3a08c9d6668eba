"""HTTP end to end: the multiview page and its local hls.js, health, config, version, the
event stream's subscribers, and the HTTP limits (body size, slow readers, connections)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from rtmp_ingest import __version__
from rtmp_ingest.api.web import HLSJS_PATH, HLSJS_SHA256, page
from rtmp_ingest.app import App as Daemon
from tests.tools import clients

pytestmark = pytest.mark.e2e


def needs(member: str):
    """For the members api/defs.py lists as NEW, until the daemon has them."""
    return pytest.mark.skipif(
        not hasattr(Daemon, member), reason=f"the daemon has no {member} yet (api/defs.py)"
    )


async def metric(running, name: str) -> float:
    text = (await running.get("/metrics")).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def raw_connection(running, request: bytes) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", running.http_port)
    await stream.send_all(request)
    return stream


async def read_head(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some()
            if not chunk:
                break
            data += chunk
    return data


async def test_the_multiview_page_is_served_for_a_stream(running):
    response = await running.get("/view/live/show")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    text = response.text
    assert 'const STREAM = "live/show";' in text
    assert "/api/v1/events?stream=" in text and "/hls/" in text
    assert "not playable in this browser" in text and "MediaSource.isTypeSupported" in text
    assert (await running.get("/view/justone")).status_code == 400


def test_a_hostile_stream_name_cannot_break_out_of_the_page():
    text = page('live/</script><script>alert(1)</script>"', "https://x.example/hls.js")
    assert "<script>alert(1)</script>" not in text
    assert text.count("</script>") == 2  #: the hls.js tag and the page's own script: no break-out
    assert "<title>live/&lt;/script&gt;" in text


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_the_page_script_is_valid_javascript(tmp_path):
    script = re.findall(r"<script>(.*?)</script>", page("live/show", "hls.js"), re.S)[0]
    (tmp_path / "page.js").write_text(script)
    result = subprocess.run(
        ["node", "--check", str(tmp_path / "page.js")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


async def test_the_page_loads_no_script_from_the_internet(running):
    text = (await running.get("/view/live/show")).text
    sources = re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", text)
    assert sources == [HLSJS_PATH]
    script = await running.get(HLSJS_PATH)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert hashlib.sha256(script.content).hexdigest() == HLSJS_SHA256
    assert "immutable" in script.headers["cache-control"]


async def test_a_configured_hlsjs_url_replaces_the_shipped_copy(start_daemon):
    running = await start_daemon(http={"hlsjs_url": "/mirror/hls.min.js"})
    assert '<script src="/mirror/hls.min.js">' in (await running.get("/view/live/show")).text


@needs("listeners_up")
async def test_healthz_is_200_with_the_listeners_up(running):
    response = await running.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["listeners"]["rtmp"] is True


async def test_the_version_is_in_the_api_and_the_metrics(running):
    info = await running.get("/api/v1")
    assert info.json() == {"name": "rtmp-ingest", "version": __version__}
    assert info.headers["server"] == f"rtmp-ingest/{__version__}"
    assert (
        f'rtmp_ingest_build_info{{version="{__version__}"}} 1.0'
        in (await running.get("/metrics")).text
    )


async def test_the_effective_config_hides_every_secret(start_daemon):
    running = await start_daemon(
        auth={"mode": "token", "secret": "e2e-secret-e2e-secret-0123456789"},
        http={"admin_key": "e2e-admin-key-e2e-admin-key"},
    )
    response = await running.get(
        "/api/v1/config", headers={"Authorization": "Bearer e2e-admin-key-e2e-admin-key"}
    )
    assert response.status_code == 200
    assert "e2e-secret" not in response.text and "e2e-admin-key" not in response.text
    config = response.json()["config"]
    assert config["auth"]["secret"] == "***" and config["http"]["admin_key"] == "***"
    assert config["http"]["listen"] == "127.0.0.1:0"
    assert (await running.get("/api/v1/config")).status_code == 401


async def test_event_subscribers_are_removed_however_the_client_leaves(running):
    # leaves before the body starts: the request is sent and the socket closed at once
    for _ in range(5):
        stream = await raw_connection(running, b"GET /api/v1/events HTTP/1.1\r\nHost: t\r\n\r\n")
        await stream.aclose()
    # leaves mid-stream, after the first bytes
    async with httpx.AsyncClient(base_url=running.http, timeout=10) as client:
        async with client.stream("GET", "/api/v1/events") as response:
            async for _ in response.aiter_bytes():
                break
    await running.wait_for(
        lambda: _zero(metric(running, "rtmp_ingest_event_subscribers")), timeout_s=15
    )


async def _zero(value) -> bool:
    return await value == 0


async def test_the_event_streams_times_are_iso_like_the_rest_api(running, spawn):
    await spawn(clients.pyav(running.url("live/iso", sourceId="cam1"), 20))
    source = await running.wait_for(lambda: _live(running, "live/iso", "cam1"), timeout_s=20)
    async with httpx.AsyncClient(base_url=running.http, timeout=10) as client:
        async with client.stream(
            "GET", "/api/v1/events", params={"stream": "live/iso"}
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    active = json.loads(line[6:])
                    break
    assert active["timelineOrigin"] == source["timelineOrigin"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", active["timelineOrigin"])


async def _live(running, stream, source_id):
    source = (await running.sources(stream)).get(source_id)
    return source if source and source["state"] == "live" else None


async def test_a_body_over_the_limit_is_refused_with_413(start_daemon):
    running = await start_daemon(http={"max_body_bytes": 4096})
    # announces 100 MB: refused from the header, nothing of it is read
    stream = await raw_connection(
        running,
        b"POST /api/v1/tokens HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n",
    )
    head = await read_head(stream)
    assert head.startswith(b"HTTP/1.1 413")
    response = await running.request("POST", "/api/v1/tokens", content=b"[" * 5000)
    assert response.status_code == 413
    assert "http.max_body_bytes" in response.json()["error"]


async def test_an_http_flv_player_that_never_reads_is_dropped(start_daemon, spawn):
    running = await start_daemon(http={"write_timeout_s": 1.0})
    await spawn(clients.pyav(running.url("live/slow"), 60))
    await running.wait_for(lambda: _live(running, "live/slow", ""), timeout_s=20)
    stalled = await raw_connection(running, b"GET /live/slow.flv HTTP/1.1\r\nHost: t\r\n\r\n")
    await running.wait_for(
        lambda: _at_least(metric(running, "rtmp_ingest_http_write_timeouts_total"), 1),
        timeout_s=40,
    )
    await running.wait_for(lambda: _zero(metric(running, "rtmp_ingest_players")), timeout_s=15)
    await stalled.aclose()


async def _at_least(value, n) -> bool:
    return await value >= n


async def test_connections_over_the_per_address_limit_get_503(start_daemon):
    running = await start_daemon(http={"max_connections_per_address": 3})
    held = []
    for _ in range(3):
        stream = await raw_connection(running, b"GET /api/v1/events HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await read_head(stream)).startswith(b"HTTP/1.1 200")
        held.append(stream)
    extra = await raw_connection(running, b"GET /api/v1 HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await read_head(extra)
    assert head.startswith(b"HTTP/1.1 503")
    assert b"too many connections" in head + await extra.receive_some()
    for stream in held:
        await stream.aclose()
    # the slots come back (a closed client's connection leaves within a second)
    await running.wait_for(lambda: _status_ok(running), timeout_s=15)
    assert await metric(running, "rtmp_ingest_http_connections_refused_total") >= 1


async def _status_ok(running) -> bool:
    try:
        return (await running.get("/api/v1")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_a_dot_segment_stream_gets_no_urls_pointing_elsewhere(running, spawn):
    publisher = await spawn(clients.pyav(running.url("live/.."), 20))

    async def listed_or_refused():
        streams = (await running.get("/api/v1/streams")).json()["streams"]
        dotted = [s for s in streams if s["path"] == "live/.."]
        if dotted:
            return dotted[0]
        return "refused" if publisher.process.returncode is not None else None

    stream = await running.wait_for(listed_or_refused, timeout_s=20)
    if stream != "refused":  #: refused at publish is the other safe outcome
        assert stream["hls"] is None
        for source in stream["sources"]:
            assert source["urls"] == {"rtmp": None, "flv": None, "hls": None}
            assert "'..'" in source["urlProblem"]


MODULES = Path(__file__).resolve().parents[2] / ".browser" / "node_modules"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
needs_browser = pytest.mark.skipif(
    not os.path.exists(CHROMIUM)
    or not shutil.which("node")
    or not (MODULES / "playwright-core").exists(),
    reason="needs Debian's chromium (apt-get install chromium) and `make browser`",
)

#: Opens the page and prints, when every tile has settled or at the deadline, each tile's
#: label, its "not playable" box and its video's state (node SCRIPT URL TILES DEADLINE_MS).
TILES_JS = """
const { chromium } = require('playwright-core');
(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--autoplay-policy=no-user-gesture-required', '--no-sandbox'],
  });
  const page = await browser.newPage();
  const scripts = [];
  page.on('request', r => { if (r.resourceType() === 'script') scripts.push(r.url()); });
  await page.goto(process.argv[2]);
  const deadline = Date.now() + Number(process.argv[4]);
  let tiles = [];
  while (Date.now() < deadline) {
    await page.waitForTimeout(500);
    tiles = await page.evaluate(() => [...document.querySelectorAll('.tile')].map(t => ({
      label: t.querySelector('.label').textContent,
      unplayable: t.querySelector('.unplayable').hidden ? null : t.querySelector('.unplayable').textContent,
      playing: t.querySelector('video').currentTime > 0.5,
    })));
    if (tiles.length >= Number(process.argv[3]) && tiles.every(t => t.unplayable || t.playing)) break;
  }
  console.log(JSON.stringify({ tiles, scripts,
    hevc: await page.evaluate(() => MediaSource.isTypeSupported('video/mp4; codecs="hvc1.1.6.L93.B0"')) }));
  await browser.close();
})();
"""


@needs_browser
async def test_a_tile_the_browser_cannot_decode_says_so(start_daemon, spawn, tmp_path):
    running = await start_daemon(bundle={"reconnect_grace_s": 1.0})
    stream = "live/codecs"
    await spawn(clients.pyav(running.url(stream, sourceId="avc"), 40))
    await spawn(clients.pyav(running.url(stream, sourceId="hevc"), 40, "--video", "hevc"))
    for source_id in ("avc", "hevc"):
        await running.wait_for(lambda s=source_id: _live(running, stream, s), timeout_s=20)
    (tmp_path / "tiles.js").write_text(TILES_JS)
    with trio.fail_after(90):
        result = await trio.run_process(
            ["node", str(tmp_path / "tiles.js"), f"{running.http}/view/{stream}", "2", "30000"],
            capture_stdout=True,
            capture_stderr=True,
            env={**os.environ, "NODE_PATH": str(MODULES)},
        )
    report = json.loads(result.stdout.decode().strip().splitlines()[-1])
    # every script the page loaded came from this server (hls.js's worker is a blob of it)
    assert report["scripts"] and all(
        url.removeprefix("blob:").startswith(running.http + "/") for url in report["scripts"]
    ), report["scripts"]
    tiles = {t["label"].split(" · ")[0]: t for t in report["tiles"]}
    assert tiles["avc"]["unplayable"] is None and tiles["avc"]["playing"], tiles
    if report["hevc"]:
        pytest.skip("this Chromium decodes HEVC: nothing to refuse")
    assert tiles["hevc"]["unplayable"].startswith("not playable in this browser (hvc1"), tiles


async def test_live_events_carry_iso_times_once_the_app_uses_the_apis_hub(running, spawn):
    if type(running.daemon.hub).__module__ != "rtmp_ingest.api.events":
        pytest.skip("the app's hub is not rtmp_ingest.api.events.EventHub yet")
    events: list = []

    async def follow(task_status=trio.TASK_STATUS_IGNORED):
        async with httpx.AsyncClient(base_url=running.http, timeout=None) as client:
            async with client.stream(
                "GET", "/api/v1/events", params={"stream": "live/iso2"}
            ) as response:
                task_status.started()
                name = None
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name:
                        events.append((name, json.loads(line[6:])))

    async with trio.open_nursery() as nursery:
        await nursery.start(follow)
        await spawn(clients.pyav(running.url("live/iso2"), 10))

        async def active():
            return next((p for n, p in events if n == "active"), None)

        payload = await running.wait_for(active, timeout_s=20)
        nursery.cancel_scope.cancel()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", payload["timelineOrigin"])

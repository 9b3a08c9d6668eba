"""The multiview page in a real browser: headless Chromium plays every source's LL-HLS with hls.js.

Runs in `make test` wherever Debian's chromium is installed (CI installs it; `make` installs
the pinned hls.js and playwright-core from npm into .browser/); skips, saying why, elsewhere.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import trio

from tests.tools import clients

REPO = Path(__file__).resolve().parents[2]
MODULES = REPO / ".browser" / "node_modules"

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM)
    or not shutil.which("node")
    or not (MODULES / "hls.js").exists()
    or not (MODULES / "playwright-core").exists(),
    reason="browser test: needs Debian's chromium (apt-get install chromium) and `make browser`",
)


@pytest.fixture
def hlsjs_url():
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(MODULES / "hls.js" / "dist")
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hls.min.js"
    server.shutdown()


async def test_chromium_plays_every_source_of_a_stream_and_follows_them(
    start_daemon, spawn, hlsjs_url
):
    running = await start_daemon(http={"hlsjs_url": hlsjs_url}, bundle={"reconnect_grace_s": 1.0})
    stream = "live/multiview"
    with trio.fail_after(90):
        await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 25))
        short = await spawn(
            clients.pyav(running.url(stream, sourceId="cam2"), 12, "--size", "160x90")
        )
        await trio.sleep(3)
        result = await trio.run_process(
            [
                "node",
                str(REPO / "tests" / "tools" / "browser_check.js"),
                f"{running.http}/view/{stream}",
                "8",
                "9000",
            ],
            capture_stdout=True,
            capture_stderr=True,
            env={**os.environ, "NODE_PATH": str(MODULES)},
        )
        short.kill()
    lines = [
        json.loads(line) for line in result.stdout.decode().splitlines() if line.startswith("{")
    ]
    last = lines[7]["tiles"]
    assert sorted(t["width"] for t in last) == [160, 320], last
    for tile in last:
        assert tile["ready"] >= 2 and tile["time"] > 2, tile
        assert tile["latency"] is not None and tile["latency"] < 3.0, (
            tile
        )  #: LL-HLS, not 3 segments
    assert lines[-1] == {"after": 1}, "the ended source's tile went with its inactive event"

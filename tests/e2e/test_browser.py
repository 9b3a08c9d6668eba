"""The multiview page in a real browser: headless Chromium plays every source's LL-HLS with hls.js.

Runs in `make test` wherever Debian's chromium is installed (CI installs it; `make` installs
the pinned hls.js and playwright-core from npm into .browser/); skips, saying why, elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.tools import clients

REPO = Path(__file__).resolve().parents[2]
MODULES = REPO / ".browser" / "node_modules"

#: samples (seconds) both tiles must have played before the latency is read: hls.js
#: starts a little behind and moves to the live edge
SETTLE_SAMPLES = 4
#: samples read after the backup was started: two cuts of each of its 5 s GOPs, twice
BACKUP_SAMPLES = 14
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


async def page_tiles(url: str, samples: int, tmp_path: Path) -> AsyncIterator[list[dict]]:
    """The multiview page's tiles, once a second (tests/tools/browser_check.js), for at
    most `samples` seconds; an early end of the check fails with its last sample and
    stderr. Leaving the loop ends the browser (use it with `contextlib.aclosing`)."""
    err = tmp_path / "browser.err"
    browser = await trio.lowlevel.open_process(
        ["node", str(REPO / "tests" / "tools" / "browser_check.js"), url, str(samples)],
        stdout=subprocess.PIPE,
        stderr=err.open("wb"),
        env={**os.environ, "NODE_PATH": str(MODULES)},
    )
    assert browser.stdout is not None
    seen = b""  #: the page's last sample, for the failure message
    buffer = b""
    try:
        while True:
            chunk = await browser.stdout.receive_some(65536)
            if not chunk:
                raise AssertionError(
                    "the browser check ended before the page did what it should; "
                    f"its last sample: {seen.decode(errors='replace')}; "
                    f"stderr: {err.read_text(errors='replace')[-2000:]}"
                )
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"{"):
                    seen = line
                    yield json.loads(line)["tiles"]
    finally:
        browser.kill()


async def test_chromium_plays_every_source_of_a_stream_and_follows_them(
    start_daemon, spawn, hlsjs_url, tmp_path
):
    running = await start_daemon(http={"hlsjs_url": hlsjs_url}, bundle={"reconnect_grace_s": 1.0})
    stream = "live/multiview"
    await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 90))
    short = await spawn(clients.pyav(running.url(stream, sourceId="cam2"), 90, "--size", "160x90"))

    async def both_live():
        sources = await running.sources(stream)
        return all(sources.get(s, {}).get("state") == "live" for s in ("cam1", "cam2"))

    await running.wait_for(both_live, timeout_s=60)
    # one JSON line a second from the page; events decide, not a schedule
    playing = None
    after_end = None
    streak = 0
    url = f"{running.http}/view/{stream}"
    with trio.fail_after(130):
        #: 110 samples: a bound on a busy machine, the events below end it early
        async with contextlib.aclosing(page_tiles(url, 110, tmp_path)) as pages:
            async for tiles in pages:
                if playing is None:
                    both = sorted(t["width"] for t in tiles) == [160, 320] and all(
                        t["ready"] >= 2 and t["time"] > 2 and t["latency"] is not None
                        for t in tiles
                    )
                    streak = streak + 1 if both else 0
                    if streak == SETTLE_SAMPLES:
                        playing = tiles
                        short.kill()  #: cam2 ends: its tile must go with the inactive event
                elif len(tiles) == 1:
                    after_end = tiles
                    break
    assert playing is not None and after_end is not None
    for tile in playing:
        #: LL-HLS: behind the live edge by parts, not by the 3 segments (6 s) plain HLS needs;
        #: the latency figure itself is measured by bench/bench_hls.py, not asserted here
        assert tile["latency"] < 3 * 2.0, tile
    assert after_end[0]["width"] == 320, "cam1 plays on after cam2's tile went"


async def test_chromium_plays_on_when_a_backup_with_a_longer_gop_takes_over(
    start_daemon, spawn, hlsjs_url, tmp_path
):
    """hls.js reads the segments cut between a long-GOP backup's keyframes (outputs/hls.py
    `_too_long`): it decodes on at the frame rate, where a drop to the next keyframe
    would leave it about half the frames (5 s GOP, segments cut at 2.44 s)."""
    running = await start_daemon(http={"hlsjs_url": hlsjs_url})
    stream = "live/backup"
    await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 90))

    async def live():
        return (await running.sources(stream)).get("cam1", {}).get("state") == "live"

    await running.wait_for(live, timeout_s=60)
    samples: list[dict] = []  #: the tile, once a second
    superseded_at: int | None = None
    streak = 0
    url = f"{running.http}/view/{stream}"
    with trio.fail_after(130):
        async with contextlib.aclosing(page_tiles(url, 100, tmp_path)) as pages:
            async for tiles in pages:
                if len(tiles) != 1:
                    continue
                samples.append(tiles[0])
                if superseded_at is None:
                    streak = streak + 1 if tiles[0]["ready"] >= 2 and tiles[0]["time"] > 2 else 0
                    if streak == SETTLE_SAMPLES:
                        await spawn(
                            clients.pyav(running.url(stream, sourceId="cam1"), 90, "--gop", "5")
                        )
                        superseded_at = len(samples)
                elif len(samples) >= superseded_at + BACKUP_SAMPLES:
                    break
    assert superseded_at is not None
    source = (await running.sources(stream))["cam1"]
    assert source["supersedeCount"] == 1, "the backup took over"
    start, end = samples[superseded_at + 2], samples[-1]  #: from once the backup is on air
    played_s = end["time"] - start["time"]
    decoded = end["frames"] - start["frames"]
    assert played_s > 0.6 * (BACKUP_SAMPLES - 3), samples[superseded_at:]
    assert decoded >= 0.8 * 25 * played_s, (
        f"{decoded} frames decoded in {played_s:.1f} s of playback: {samples[superseded_at:]}"
    )

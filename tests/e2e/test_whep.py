"""WHEP play end to end: RTMP and WHIP sources → the daemon → the WebRTC process → an aiortc viewer.

The real daemon runs on loopback in token mode with `[webrtc]` enabled (the WHIP
tests' fixture); the viewer is `tests.webrtc.whep_client`, which decodes what it
gets (H.264 passed through, Opus passed through or transcoded from AAC) and
reports frame counts, the longest gap between pictures, timestamps going
backwards and the SSRCs it sees.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from rtmp_ingest.auth import TokenClaims
from rtmp_ingest.bundle import Media

from .conftest import REPO
from .test_whip import Publisher, Whip, publish, wait_on_air, whip_server

pytest.importorskip("aiortc")
pytestmark = pytest.mark.e2e
__all__ = ["publish", "whip_server"]

REPO_PATH = Path(REPO)
#: the first picture must arrive within this (the cached GOP is sent at once)
FIRST_PICTURE_S = 5.0
#: The browser pages sample every 500 ms; a player that shows no new picture over this many
#: samples in a row (a second) froze. One still sample may be a busy machine's: the suite
#: must pass beside another process burning a core, with Chromium decoding in software.
FREEZE_SAMPLES = 2


@pytest.fixture
async def view(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Any]]:
    processes: list[trio.Process] = []

    async def start(url: str, *args: str) -> Publisher:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tests.webrtc.whep_client", url, *args],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": REPO},
        )
        processes.append(process)
        return Publisher(process)

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(5):
            await process.wait()


async def stats_until(
    viewer: Publisher, done: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0
) -> dict[str, Any]:
    """The viewer's stats lines until one satisfies `done` (first/other lines skipped)."""
    with trio.fail_after(timeout_s):
        while True:
            message = await viewer.line(timeout_s)
            stats = message.get("stats")
            if stats is not None and done(stats):
                return stats


async def stop(viewer: Publisher) -> dict[str, Any]:
    """Closes the viewer's stdin: it DELETEs its session; its {"deleted": status} line."""
    assert viewer.process.stdin is not None
    await viewer.process.stdin.aclose()
    with trio.fail_after(30):
        while True:
            message = await viewer.line()
            if "deleted" in message:
                return message


def rtmp_publisher(whip: Whip, path: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.tools.pyav_publish",
        whip.running.url(path, sourceId="cam", token=whip.token),
        "--seconds",
        "90",
        "--realtime",
        *args,
    ]


async def test_whep_plays_an_rtmp_source_through_supersedes(
    whip_server: Whip, view: Any, spawn: Any
) -> None:
    """H.264 + AAC from an RTMP encoder: the viewer decodes pictures within a short bound
    and Opus audio (transcoded once for the source); after a supersede the same peer
    connection, the same SSRCs, timestamps never backwards, no frozen second."""
    running = whip_server.running
    first_rtmp = await spawn(rtmp_publisher(whip_server, "live/w"))
    first_feed = await wait_on_air(running, "live/w", "cam")
    viewer = await view(f"{whip_server.base}/whep/live/w?sourceId=cam")
    reply = await viewer.line()
    assert reply["status"] == 201, reply
    assert reply["location"].startswith("/whep-session/")
    assert "a=sendonly" in reply["body"]
    first = await viewer.line()
    assert first["first"] in ("video", "audio")
    before = await stats_until(viewer, lambda s: s["video"] >= 25 and s["audio"] >= 25)
    assert before["size"] == [320, 180]
    whep = running.daemon.whep
    assert whep is not None and len(whep.transcoders) == 1
    for _ in range(1):
        await spawn(rtmp_publisher(whip_server, "live/w"))
        with trio.fail_after(60):
            while await wait_on_air(running, "live/w", "cam") == first_feed:
                await trio.sleep(0.02)
        first_feed = await wait_on_air(running, "live/w", "cam")
        mark = (await stats_until(viewer, lambda s: True))["video"]
        after = await stats_until(viewer, lambda s, m=mark: s["video"] >= m + 50)
        assert after["state"] == "connected"
        assert after["ssrcs"] == before["ssrcs"], "same senders across the supersede"
        assert after["backwards"] == {"video": 0, "audio": 0}
        assert after["max_gap_s"] < 1.0, "no frozen second"
    assert after["audio"] > before["audio"] + 50
    assert len(whep.transcoders) == 1, "AAC is transcoded once per source"
    assert viewer.states.count("connected") == 1
    #: the WHIP fixture runs in disconnect mode: the superseded encoder was cut
    assert first_rtmp.process.returncode not in (None, 0)
    assert any(p.kind == "whep" for p in running.daemon.players)
    source = (await running.sources("live/w"))["cam"]
    assert source["urls"]["whep"].endswith("/whep/live/w?sourceId=cam")
    assert source["webrtc"] == {"playable": True, "reason": None}
    assert source["outputs"]["players"] == 1  #: the WHEP viewer
    metrics = (await running.get("/metrics")).text
    assert "rtmp_ingest_whep_viewers 1.0" in metrics
    assert "rtmp_ingest_whep_transcoders 1.0" in metrics
    assert (await stop(viewer))["deleted"] == 200
    with trio.fail_after(10):
        while whep.viewers or whep.transcoders:
            await trio.sleep(0.05)


async def test_whep_plays_a_whip_source(whip_server: Whip, publish: Any, view: Any) -> None:
    """A WebRTC publisher's H.264 and Opus reach a WebRTC viewer, passed through."""
    publisher = await publish(
        f"{whip_server.base}/whip/live/ww?sourceId=cam", "--token", whip_server.token
    )
    assert (await publisher.line())["status"] == 201
    await wait_on_air(whip_server.running, "live/ww", "cam")
    viewer = await view(f"{whip_server.base}/whep/live/ww")
    reply = await viewer.line()
    assert reply["status"] == 201, reply
    stats = await stats_until(viewer, lambda s: s["video"] >= 30 and s["audio"] >= 30)
    assert stats["backwards"] == {"video": 0, "audio": 0}
    whep = whip_server.running.daemon.whep
    assert whep is not None and not whep.transcoders, "Opus passes through"


async def test_whep_refusals(whip_server: Whip, view: Any, spawn: Any) -> None:
    """409 for a source that is not live, 422 with the reason for B-frames, HEVC and an AV1
    source for a viewer that did not offer AV1,
    OPTIONS with Accept-Post, PATCH 405, DELETE of an unknown session 404."""
    base = whip_server.base
    viewer = await view(f"{base}/whep/live/nothing?sourceId=cam")
    reply = await viewer.line()
    assert reply["status"] == 409 and "not live" in reply["body"]
    running = whip_server.running
    await spawn(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=25",
            "-c:v",
            "libx264",
            "-bf",
            "2",
            "-g",
            "25",
            "-t",
            "60",
            "-f",
            "flv",
            running.url("live/bf", sourceId="cam", token=whip_server.token),
        ]
    )
    await wait_on_air(running, "live/bf", "cam")
    with trio.fail_after(30):
        while True:
            viewer = await view(f"{base}/whep/live/bf?sourceId=cam")
            reply = await viewer.line()
            if reply["status"] == 422:
                break
            assert reply["status"] == 201  #: the cached GOP had no B-frame yet
            await stop(viewer)
    assert "B-frames" in reply["body"]
    whep = running.daemon.whep
    assert whep is not None
    verdict = whep.playability("live/bf", "cam")
    assert verdict is not None and not verdict.playable and "B-frames" in (verdict.reason or "")
    webrtc = (await running.sources("live/bf"))["cam"]["webrtc"]
    assert webrtc["playable"] is False and "B-frames" in webrtc["reason"]
    await spawn(rtmp_publisher(whip_server, "live/hevc", "--video", "hevc"))
    await wait_on_air(running, "live/hevc", "cam")
    viewer = await view(f"{base}/whep/live/hevc?sourceId=cam")
    reply = await viewer.line()
    assert reply["status"] == 422 and "hevc" in reply["body"]
    #: an AV1 source for a viewer that did not offer AV1 (aiortc offers H.264 and VP9)
    await spawn(rtmp_publisher(whip_server, "live/av1", "--video", "av1"))
    await wait_on_air(running, "live/av1", "cam")
    viewer = await view(f"{base}/whep/live/av1?sourceId=cam")
    reply = await viewer.line()
    assert reply["status"] == 422 and "av1" in reply["body"]
    async with httpx.AsyncClient() as client:
        options = await client.options(f"{base}/whep/live/x")
        assert options.status_code == 204
        assert options.headers["accept-post"] == "application/sdp"
        patch = await client.patch(f"{base}/whep-session/nope", content=b"a=x")
        assert patch.status_code == 405
        gone = await client.delete(f"{base}/whep-session/nope")
        assert gone.status_code == 404
        bad = await client.post(
            f"{base}/whep/live/w", content=b"hello", headers={"Content-Type": "text/plain"}
        )
        assert bad.status_code == 415


MODULES = REPO_PATH / ".browser" / "node_modules"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
browser_needed = pytest.mark.skipif(
    not os.path.exists(CHROMIUM)
    or not shutil.which("node")
    or not (MODULES / "playwright-core").exists(),
    reason="browser test: needs Debian's chromium (apt-get install chromium) and `make browser`",
)


@browser_needed
async def test_chromium_plays_an_rtmp_source_over_whep_through_a_supersede(
    whip_server: Whip, spawn: Any
) -> None:
    """Headless Chromium on the daemon's WHEP player page: pictures of an RTMP source
    (H.264 passed through, AAC as Opus) for 8 s and more, across a supersede, and no
    half-second without a new picture once playing."""
    running = whip_server.running
    await spawn(rtmp_publisher(whip_server, "live/cr"))
    first_feed = await wait_on_air(running, "live/cr", "cam")
    browser = await trio.lowlevel.open_process(
        [
            "node",
            str(REPO_PATH / "tests" / "tools" / "whep_check.js"),
            f"{whip_server.base}/whep-view/live/cr?sourceId=cam",
            "40",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NODE_PATH": str(MODULES)},
    )
    assert browser.stdout is not None
    samples: list[dict[str, Any]] = []
    buffer = b""
    superseded_at: int | None = None
    try:
        with trio.fail_after(60):
            while True:
                chunk = await browser.stdout.receive_some(65536)
                assert chunk, f"the browser check ended early: {samples[-3:]}"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.startswith(b"{"):
                        samples.append(json.loads(line)["whep"])
                last = samples[-1] if samples else {}
                assert last.get("state") not in ("refused", "error", "failed"), last
                if superseded_at is None and last.get("frames", 0) >= 50:
                    superseded_at = last["frames"]
                    await spawn(rtmp_publisher(whip_server, "live/cr"))
                    with trio.fail_after(30):
                        while await wait_on_air(running, "live/cr", "cam") == first_feed:
                            await trio.sleep(0.02)
                if superseded_at is not None and last["frames"] >= superseded_at + 8 * 25:
                    break
    finally:
        browser.kill()
    playing = [s for s in samples if s["frames"] > 0]
    assert playing[-1]["width"] == 320 and playing[-1]["state"] == "connected"
    for before, after in zip(playing, playing[FREEZE_SAMPLES:]):
        assert after["frames"] > before["frames"], "a picture at least every second"
    assert playing[-1]["audioSamples"] > 8 * 48000 * 0.8, "Opus audio decoded too"


async def chromium_samples(url: str, enough: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Runs the page in Chromium until a sample satisfies `enough`; that sample."""
    browser = await trio.lowlevel.open_process(
        ["node", str(REPO_PATH / "tests" / "tools" / "whep_check.js"), url, "40"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NODE_PATH": str(MODULES)},
    )
    assert browser.stdout is not None
    buffer = b""
    try:
        with trio.fail_after(60):
            while True:
                chunk = await browser.stdout.receive_some(65536)
                assert chunk, "the browser check ended early"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.startswith(b"{"):
                        sample: dict[str, Any] = json.loads(line)["whep"]
                        assert sample.get("state") not in ("refused", "error", "failed"), sample
                        if enough(sample):
                            return sample
    finally:
        browser.kill()


@browser_needed
async def test_chromium_plays_a_whip_source_over_whep(whip_server: Whip, publish: Any) -> None:
    """A WebRTC publisher (aiortc) → Chromium over WHEP: H.264 and Opus passed through."""
    publisher = await publish(
        f"{whip_server.base}/whip/live/cw?sourceId=cam", "--token", whip_server.token
    )
    assert (await publisher.line())["status"] == 201
    await wait_on_air(whip_server.running, "live/cw", "cam")
    sample = await chromium_samples(
        f"{whip_server.base}/whep-view/live/cw",
        lambda s: s["frames"] >= 60 and s["audioSamples"] >= 48000,
    )
    assert sample["width"] == 320 and sample["state"] == "connected"


async def test_twenty_viewers_of_one_source_through_a_supersede_none_stalls(
    whip_server: Whip, view: Any, spawn: Any
) -> None:
    """20 WHEP viewers of one RTMP source (one Opus transcoder for all) while it is
    superseded: every one keeps getting pictures, none goes a second without one."""
    running = whip_server.running
    await spawn(rtmp_publisher(whip_server, "live/many", "--size", "160x90"))
    first_feed = await wait_on_air(running, "live/many", "cam")
    viewers = await view(f"{whip_server.base}/whep/live/many?sourceId=cam", "--viewers", "20")
    assert (await viewers.line())["status"] == 201
    started = await stats_until(
        viewers,
        lambda s: s["video"] >= 25 and all(o and o[0] >= 25 for o in s["others"]),
        timeout_s=90,
    )
    assert len(started["others"]) == 19
    whep = running.daemon.whep
    assert whep is not None and len(whep.viewers) == 20 and len(whep.transcoders) == 1
    await spawn(rtmp_publisher(whip_server, "live/many", "--size", "160x90"))
    with trio.fail_after(60):
        while await wait_on_air(running, "live/many", "cam") == first_feed:
            await trio.sleep(0.02)
    marks = [started["video"]] + [o[0] for o in started["others"]]
    after = await stats_until(
        viewers,
        lambda s: all(
            n >= m + 75 for n, m in zip([s["video"]] + [o[0] for o in s["others"]], marks)
        ),
        timeout_s=90,
    )
    assert after["max_gap_s"] < 1.0
    assert all(o[1] < 1.0 and o[2] == "connected" for o in after["others"]), after["others"]


async def test_a_reconnect_inside_grace_keeps_the_viewer_session(
    whip_server: Whip, view: Any, spawn: Any
) -> None:
    """The RTMP encoder drops and comes back within the bundle's grace: the viewer's peer
    connection, SSRCs and timeline carry on, and pictures resume."""
    running = whip_server.running
    encoder = await spawn(rtmp_publisher(whip_server, "live/rc"))
    await wait_on_air(running, "live/rc", "cam")
    viewer = await view(f"{whip_server.base}/whep/live/rc?sourceId=cam")
    assert (await viewer.line())["status"] == 201
    before = await stats_until(viewer, lambda s: s["video"] >= 25)
    encoder.kill()
    await encoder.wait()
    await spawn(rtmp_publisher(whip_server, "live/rc"))
    mark = (await stats_until(viewer, lambda s: True))["video"]
    after = await stats_until(viewer, lambda s: s["video"] >= mark + 50)
    assert after["ssrcs"] == before["ssrcs"] and after["state"] == "connected"
    assert after["backwards"] == {"video": 0, "audio": 0}
    assert viewer.states.count("connected") == 1
    whep = running.daemon.whep
    assert whep is not None and len(whep.viewers) == 1


async def test_the_play_hook_decides_for_whep_viewers(
    start_daemon: Callable[..., Any], view: Any, spawn: Any
) -> None:
    """auth.hooks with "play": the operator's service is asked about each WHEP viewer
    (protocol "webrtc") and its refusal is the viewer's 403; an allowed viewer plays."""
    asked: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            asked.append(body)
            self.send_response(403 if body.get("stream") == "live/denied" else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        running = await start_daemon(
            auth={
                "hooks": {
                    "url": f"http://127.0.0.1:{server.server_address[1]}/",
                    "actions": ["play"],
                }
            },
            webrtc={"enabled": True, "host_addresses": ["127.0.0.1"]},
        )
        assert running.daemon.webrtc is not None
        assert await running.daemon.webrtc.wait_ready(timeout_s=30)
        denied = await view(f"{running.http}/whep/live/denied?sourceId=cam")
        reply = await denied.line()
        assert reply["status"] == 403, reply
        await spawn(
            [
                sys.executable,
                "-m",
                "tests.tools.pyav_publish",
                running.url("live/ok", sourceId="cam"),
                "--seconds",
                "60",
                "--realtime",
            ]
        )
        await wait_on_air(running, "live/ok", "cam")
        allowed = await view(f"{running.http}/whep/live/ok?sourceId=cam")
        assert (await allowed.line())["status"] == 201
        await stats_until(allowed, lambda s: s["video"] >= 10)
        assert [(a["protocol"], a["stream"], a["sourceId"]) for a in asked] == [
            ("webrtc", "live/denied", "cam"),
            ("webrtc", "live/ok", "cam"),
        ]
    finally:
        server.shutdown()


@browser_needed
async def test_multiview_plays_sources_over_webrtc_and_falls_back_to_ll_hls(
    start_daemon: Callable[..., Any], spawn: Any
) -> None:
    """The multiview page with WHEP served: an H.264 source plays over WebRTC (its tile
    says so, with a latency), a B-frame source is refused by WHEP (422) and its tile
    plays LL-HLS instead; the tile of a source that ends goes."""
    hlsjs = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(MODULES / "hls.js" / "dist")
    )
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), hlsjs)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        running = await start_daemon(
            http={"hlsjs_url": f"http://127.0.0.1:{files.server_address[1]}/hls.min.js"},
            bundle={"reconnect_grace_s": 1.0},
            webrtc={"enabled": True, "host_addresses": ["127.0.0.1"]},
        )
        assert running.daemon.webrtc is not None
        assert await running.daemon.webrtc.wait_ready(timeout_s=30)
        stream = "live/mv"
        rtc = await spawn(
            [
                sys.executable,
                "-m",
                "tests.tools.pyav_publish",
                running.url(stream, sourceId="rtc"),
                "--seconds",
                "90",
                "--realtime",
            ]
        )
        await spawn(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=160x90:rate=25",
                "-c:v",
                "libx264",
                "-bf",
                "2",
                "-g",
                "25",
                "-t",
                "90",
                "-f",
                "flv",
                running.url(stream, sourceId="bf"),
            ]
        )
        await wait_on_air(running, stream, "rtc")
        await wait_on_air(running, stream, "bf")
        browser = await trio.lowlevel.open_process(
            [
                "node",
                str(REPO_PATH / "tests" / "tools" / "multiview_check.js"),
                f"{running.http}/view/{stream}",
                "60",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "NODE_PATH": str(MODULES)},
        )
        assert browser.stdout is not None
        buffer = b""
        playing = None
        after_end = None
        try:
            with trio.fail_after(75):
                while after_end is None:
                    chunk = await browser.stdout.receive_some(65536)
                    assert chunk, f"the page did not do what it should: {playing}"
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if not line.startswith(b"{"):
                            continue
                        tiles = {t["label"].split(" ")[0]: t for t in json.loads(line)["tiles"]}
                        if playing is None:
                            rtc_tile, bf_tile = tiles.get("rtc"), tiles.get("bf")
                            if (
                                rtc_tile
                                and bf_tile
                                and rtc_tile["mode"] == "webrtc"
                                and rtc_tile["frames"] >= 50
                                and rtc_tile["latency"] is not None
                                and bf_tile["mode"] == "ll-hls"
                                and bf_tile["frames"] >= 25
                            ):
                                playing = tiles
                                rtc.kill()  #: its tile must go with the inactive event
                        elif "rtc" not in tiles:
                            after_end = tiles
        finally:
            browser.kill()
        assert playing["rtc"]["width"] == 320 and playing["bf"]["width"] == 160
        assert "B-frames" in playing["bf"]["fallback"]
        assert playing["rtc"]["latency"] < 1.0, playing["rtc"]
        assert "webrtc" in playing["rtc"]["label"] and " ms" in playing["rtc"]["label"]
        assert list(after_end) == ["bf"]
    finally:
        files.shutdown()


async def test_a_viewer_waits_for_its_source_when_configured(
    start_daemon: Callable[..., Any], view: Any, spawn: Any
) -> None:
    """webrtc.whep_wait_s: a WHEP POST for a source not live yet is answered once it goes
    on air (within the wait), and the viewer plays it."""
    running = await start_daemon(
        webrtc={"enabled": True, "host_addresses": ["127.0.0.1"], "whep_wait_s": 30.0}
    )
    assert running.daemon.webrtc is not None
    assert await running.daemon.webrtc.wait_ready(timeout_s=30)
    viewer = await view(f"{running.http}/whep/live/later?sourceId=cam")
    whep = running.daemon.whep
    assert whep is not None
    with trio.fail_after(10):
        while whep.waiting == 0:  #: the POST is in, waiting
            await trio.sleep(0.05)
    await spawn(
        [
            sys.executable,
            "-m",
            "tests.tools.pyav_publish",
            running.url("live/later", sourceId="cam"),
            "--seconds",
            "60",
            "--realtime",
        ]
    )
    assert (await viewer.line())["status"] == 201
    await stats_until(viewer, lambda s: s["video"] >= 10)


async def test_a_stalled_webrtc_process_never_slows_ingest(
    whip_server: Whip, view: Any, spawn: Any
) -> None:
    """The WebRTC process stops (SIGSTOP) while a viewer watches: the RTMP source keeps
    being ingested at its rate, the daemon drops viewer media instead of queueing it
    without bound; the process resumes and the viewer plays on."""
    running = whip_server.running
    await spawn(rtmp_publisher(whip_server, "live/stall"))
    await wait_on_air(running, "live/stall", "cam")
    viewer = await view(f"{whip_server.base}/whep/live/stall?sourceId=cam")
    assert (await viewer.line())["status"] == 201
    await stats_until(viewer, lambda s: s["video"] >= 25)
    service, whep = whip_server.service, running.daemon.whep
    assert service.process_id is not None and whep is not None
    service.max_queued_messages = 50  #: small, so the bound is reached quickly
    registry = running.daemon.registry

    def frames_out() -> int:
        stats = registry.source_statistics("live/stall", "cam", now_s=trio.current_time())
        assert stats is not None
        return stats.frames_out

    os.kill(service.process_id, signal.SIGSTOP)
    try:
        before = frames_out()
        with trio.fail_after(30):
            while whep.statistics()["link_frames_dropped"] == 0:
                await trio.sleep(0.05)
        with trio.fail_after(30):
            while frames_out() < before + 100:  #: ~2 s of media still ingested
                await trio.sleep(0.05)
        queued = service._out.statistics().current_buffer_used if service._out else 0
        assert queued <= service.max_queued_messages + 10  #: + control messages
    finally:
        os.kill(service.process_id, signal.SIGCONT)
    mark = (await stats_until(viewer, lambda s: True))["video"]
    after = await stats_until(viewer, lambda s: s["video"] >= mark + 50)
    assert after["state"] == "connected"


async def test_viewer_tokens_when_required(
    start_daemon: Callable[..., Any], view: Any, spawn: Any
) -> None:
    """webrtc.whep_require_token: no token is a 401, a token for other streams a 403 with
    the reason, a token covering the stream plays (Bearer or ?token=)."""
    running = await start_daemon(
        webrtc={"enabled": True, "host_addresses": ["127.0.0.1"], "whep_require_token": True}
    )
    webrtc, keyring = running.daemon.webrtc, running.daemon.keyring
    assert webrtc is not None and keyring is not None
    assert await webrtc.wait_ready(timeout_s=30)
    await spawn(
        [
            sys.executable,
            "-m",
            "tests.tools.pyav_publish",
            running.url("live/tok", sourceId="cam"),
            "--seconds",
            "60",
            "--realtime",
        ]
    )
    await wait_on_air(running, "live/tok", "cam")
    url = f"{running.http}/whep/live/tok?sourceId=cam"
    none = await view(url)
    assert (await none.line())["status"] == 401
    other = keyring.mint(TokenClaims(token_id="other", streams=("other/*",), multisource=True))
    wrong = await view(f"{url}&token={other}")
    reply = await wrong.line()
    assert reply["status"] == 403 and "Play refused" in reply["body"]
    good = keyring.mint(TokenClaims(token_id="viewer", streams=("live/*",), multisource=True))
    viewer = await view(f"{url}&token={good}")
    reply = await viewer.line()
    assert reply["status"] == 201, reply
    await stats_until(viewer, lambda s: s["video"] >= 10)


@browser_needed
@pytest.mark.parametrize("codec", ["vp9", "av1"])
async def test_chromium_plays_a_vp9_or_av1_source_over_whep(
    whip_server: Whip, spawn: Any, codec: str
) -> None:
    """An E-RTMP `vp09` (libvpx) or `av01` (SVT-AV1) encoder → Chromium over WHEP: the
    frames are payloaded by the daemon's own RFC 9628 / AV1 RTP payloader (aiortc has
    neither), never re-encoded; Chromium negotiates the codec and shows a picture at least
    every half second, through a supersede by a second encoder (the payloader's picture
    ids and the sender's sequence numbers run on, the new feed starts at its keyframe)."""
    running = whip_server.running
    path = f"live/{codec}"
    publisher = rtmp_publisher(whip_server, path, "--video", codec, "--audio", "opus")
    await spawn(publisher)
    first_feed = await wait_on_air(running, path, "cam")
    superseded_at: int | None = None
    browser = await trio.lowlevel.open_process(
        [
            "node",
            str(REPO_PATH / "tests" / "tools" / "whep_check.js"),
            f"{whip_server.base}/whep-view/{path}?sourceId=cam",
            "40",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NODE_PATH": str(MODULES)},
    )
    assert browser.stdout is not None
    samples: list[dict[str, Any]] = []
    buffer = b""
    try:
        with trio.fail_after(75):
            while superseded_at is None or samples[-1]["frames"] < superseded_at + 4 * 25:
                chunk = await browser.stdout.receive_some(65536)
                assert chunk, f"the browser check ended early: {samples[-3:]}"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.startswith(b"{"):
                        samples.append(json.loads(line)["whep"])
                        assert samples[-1].get("state") not in ("refused", "error", "failed"), (
                            samples[-1]
                        )
                if superseded_at is None and samples and samples[-1]["frames"] >= 4 * 25:
                    superseded_at = samples[-1]["frames"]
                    await spawn(publisher)
                    with trio.fail_after(30):
                        while await wait_on_air(running, path, "cam") == first_feed:
                            await trio.sleep(0.02)
    finally:
        browser.kill()
    playing = [s for s in samples if s["frames"] > 0]
    assert playing[-1]["codec"] == f"video/{codec.upper()}" and playing[-1]["width"] == 320
    assert playing[-1]["state"] == "connected"
    for before, after in zip(playing, playing[FREEZE_SAMPLES:]):
        assert after["frames"] > before["frames"], "a picture at least every second"
    webrtc = (await running.sources(path))["cam"]["webrtc"]
    assert webrtc["playable"] is True


#: Chromium publishes its fake camera over WHIP in VP9 only, then a second page of the same
#: browser plays the source over WHEP; prints the player page's window.whep every 500 ms.
CHROMIUM_VP9_WHIP = r"""
const { chromium } = require('playwright-core');
const [base, path, token, seconds] = process.argv.slice(1);
(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--autoplay-policy=no-user-gesture-required', '--no-sandbox',
           '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
           '--disable-features=WebRtcHideLocalIpsWithMdns'],
  });
  const publisher = await browser.newPage();
  await publisher.goto(base + '/metrics');
  const reply = await publisher.evaluate(async ({ url, token }) => {
    const media = await navigator.mediaDevices.getUserMedia(
      { video: { width: 320, height: 240, frameRate: 25 }, audio: true });
    const pc = window.pc = new RTCPeerConnection({ iceServers: [] });
    const video = pc.addTransceiver(media.getVideoTracks()[0], { direction: 'sendonly' });
    pc.addTransceiver(media.getAudioTracks()[0], { direction: 'sendonly' });
    video.setCodecPreferences(RTCRtpSender.getCapabilities('video').codecs.filter((c) =>
      (c.mimeType === 'video/VP9' && (c.sdpFmtpLine || '').includes('profile-id=0'))
      || c.mimeType === 'video/rtx'));
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((done) => {
      if (pc.iceGatheringState === 'complete') return done();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
      setTimeout(done, 2000);
    });
    const response = await fetch(url, { method: 'POST', body: pc.localDescription.sdp,
      headers: { 'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + token } });
    const answer = await response.text();
    if (response.status === 201) await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    return { status: response.status, body: answer };
  }, { url: base + '/whip/' + path + '?sourceId=cam', token });
  console.log(JSON.stringify({ whip: reply }));
  if (reply.status !== 201) { await browser.close(); return; }
  //: the viewer waits for the source to be on air (the test checks the API first)
  await new Promise((done) => process.stdin.once('data', done));
  const viewer = await browser.newPage();
  await viewer.goto(base + '/whep-view/' + path + '?sourceId=cam');
  const end = Date.now() + 1000 * Number(seconds);
  while (Date.now() < end) {
    await viewer.waitForTimeout(500);
    console.log(JSON.stringify({ whep: await viewer.evaluate(() => window.whep) }));
  }
  await browser.close();
})();
"""


@browser_needed
async def test_chromium_plays_a_vp9_whip_source_over_whep(whip_server: Whip) -> None:
    """A VP9 WebRTC publisher (Chromium's fake camera, VP9 only) → the bundle as E-RTMP
    vp09 → Chromium over WHEP, VP9 re-payloaded by the daemon, never re-encoded."""
    running = whip_server.running
    browser = await trio.lowlevel.open_process(
        ["node", "-e", CHROMIUM_VP9_WHIP, whip_server.base, "live/wv9", whip_server.token, "40"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NODE_PATH": str(MODULES)},
    )
    assert browser.stdout is not None and browser.stdin is not None
    samples: list[dict[str, Any]] = []
    buffer = b""
    try:
        with trio.fail_after(90):
            while not samples or samples[-1]["frames"] < 100:
                chunk = await browser.stdout.receive_some(65536)
                assert chunk, f"the browser ended early: {samples[-3:]}"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.startswith(b"{"):
                        continue
                    message = json.loads(line)
                    if "whip" in message:
                        assert message["whip"]["status"] == 201, message
                        await wait_on_air(running, "live/wv9", "cam")
                        await browser.stdin.send_all(b"go\n")
                        continue
                    samples.append(message["whep"])
                    assert samples[-1].get("state") not in ("refused", "error", "failed"), samples[
                        -1
                    ]
    finally:
        browser.kill()
    stats = running.daemon.registry.stream_statistics("live/wv9", now_s=trio.current_time())
    assert stats is not None
    codecs = {t.codec for s in stats.sources for t in s.tracks if t.media is Media.VIDEO}
    assert codecs == {"vp9"}, "the publisher sent VP9"
    playing = [s for s in samples if s["frames"] > 0]
    assert playing[-1]["codec"] == "video/VP9" and playing[-1]["width"] > 0
    for before, after in zip(playing, playing[FREEZE_SAMPLES:]):
        assert after["frames"] > before["frames"], "a picture at least every second"

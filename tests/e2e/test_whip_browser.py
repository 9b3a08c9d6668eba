"""The publish page in a real browser: headless Chromium publishes its fake camera over WHIP.

Chromium (Debian's) runs the daemon's own `/publish/APP/STREAM` page, driven by
`publish_page.js` (playwright-core pinned in .browser/, `make browser`) with a fake
camera and microphone; the test reads what the page shows (`window.publish` and its
state line) and checks the server side with what any user has: the control API,
LL-HLS segments decoded with PyAV, RTMP play decoded with PyAV. The daemon is the WHIP
tests' (token mode, superseded feeds disconnected, ICE on 127.0.0.1 only). Every wait
is on an event or a bounded poll: the page's JSON lines, the API, the players.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.tools import pyav_player

from .conftest import REPO, Running
from .test_whip import UDP_PORTS, Whip, _decode, _hls_media, whip_server

pytest.importorskip("aiortc")
MODULES = Path(REPO) / ".browser" / "node_modules"
DRIVER = Path(__file__).with_name("publish_page.js")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM)
        or not shutil.which("node")
        or not (MODULES / "playwright-core").exists(),
        reason="browser test: needs Debian's chromium (apt-get install chromium) and `make browser`",
    ),
]
__all__ = ["whip_server"]

#: Chromium starts, captures, gathers, connects: generous on a busy machine
LIVE_TIMEOUT_S = 90.0
#: pictures the HLS and RTMP players must decode from the browser's source
MIN_PICTURES = 20


class Page:
    """The driven publish page: its `window.publish` lines, and commands on stdin."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.last: dict[str, Any] = {}
        self.seen: list[str] = []  #: states in the order the page showed them
        self._buffer = b""

    async def _line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            data = await self.process.stdout.receive_some(65536)
            if not data:
                raise AssertionError(f"the page driver ended; last state {self.last}")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        assert "fatal" not in message and "pageerror" not in message, message
        return message

    async def until(
        self, done: Callable[[dict[str, Any]], bool], timeout_s: float = LIVE_TIMEOUT_S
    ) -> dict[str, Any]:
        """The page's state once `done(state)` holds (it prints every change)."""
        with trio.fail_after(timeout_s):
            while not (self.last and done(self.last)):
                message = await self._line()
                if "state" in message:
                    self.last = message
                    if not self.seen or self.seen[-1] != message["state"]:
                        self.seen.append(message["state"])
        return self.last

    async def command(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode() + b"\n")


@pytest.fixture
async def open_page(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Any]]:
    processes: list[trio.Process] = []

    async def start(url: str, token: str = "") -> Page:
        process = await trio.lowlevel.open_process(
            ["node", str(DRIVER), url, *([token] if token else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "NODE_PATH": str(MODULES), "CHROMIUM": CHROMIUM},
        )
        processes.append(process)
        return Page(process)

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(10):
            await process.wait()


def is_live(state: dict[str, Any]) -> bool:
    """What a user sees as working: "live", H.264 going out, a bitrate shown."""
    return (
        state["state"] == "live"
        and state["shown"] == "live"
        and state["codec"] == "H264"
        and (state["bitrateKbps"] or 0) > 0
        and "kbit/s" in state["bitrateText"]
    )


async def on_air_feed(running: Running, stream: str, source: str) -> dict[str, Any] | None:
    found = (await running.sources(stream)).get(source)
    return found["onAir"] if found and found["state"] == "live" and found["onAir"] else None


def codecs(source: dict[str, Any]) -> set[str]:
    return {t["codec"] for t in source["tracks"]}


async def rtmp_play(url: str, seconds: float) -> pyav_player.PlayResult:
    return await trio.to_thread.run_sync(
        functools.partial(pyav_player.play, url, seconds), abandon_on_cancel=True
    )


async def decode_hls(running: Running, stream: str, source: str) -> list[Any]:
    """The source's LL-HLS video, init + complete segments, decoded (once it has pictures)."""
    base = f"/hls/{stream}/{source}"

    async def enough() -> list[Any] | None:
        data = await _hls_media(running, base, "video0")
        if data is None:
            return None
        pictures = await trio.to_thread.run_sync(_decode, data)
        return pictures if len(pictures) >= MIN_PICTURES else None

    pictures: list[Any] = await running.wait_for(enough, timeout_s=60)
    return pictures


def rtmp_publisher(whip: Whip, stream: str, source: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.tools.pyav_publish",
        whip.running.url(stream, sourceId=source, token=whip.token),
        "--seconds",
        "120",
        "--realtime",
        *extra,
    ]


def ffmpeg_publisher(whip: Whip, stream: str, source: str) -> list[str]:
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=660:sample_rate=44100",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-bf",
        "0",
        "-c:a",
        "aac",
        "-t",
        "120",
        "-f",
        "flv",
        whip.running.url(stream, sourceId=source, token=whip.token),
    ]


async def test_the_publish_page_goes_live_decodes_everywhere_and_stop_ends_the_feed(
    whip_server: Whip, open_page: Any
) -> None:
    """Start on /publish: the page says live with its H.264 bitrate; the API lists the
    source as webrtc with H.264 + Opus; LL-HLS and RTMP play decode its pictures; Stop
    DELETEs the session: the page says stopped and the feed ends."""
    running, stream = whip_server.running, "live/page"
    page = await open_page(
        f"{whip_server.base}/publish/{stream}?sourceId=browser", whip_server.token
    )
    live = await page.until(is_live)
    assert page.seen[0] == "connecting"
    assert live["location"].startswith(f"{whip_server.base}/whip-session/")
    feed = await running.wait_for(lambda: on_air_feed(running, stream, "browser"), 30)
    assert feed["id"] == live["feedId"] and feed["protocol"] == "webrtc"
    assert feed["remoteAddr"].startswith("127.0.0.1:")
    source = (await running.sources(stream))["browser"]
    assert codecs(source) == {"h264", "opus"}
    assert live["detail"].startswith('on air as "browser"'), "the page knows it is on air"

    pictures = await decode_hls(running, stream, "browser")
    assert pictures[0].width > 0 and pictures[0].height > 0
    played = await rtmp_play(running.url(stream, sourceId="browser"), 4.0)
    assert played.error is None or played.frames_decoded, played.summary()
    assert played.video_codec == "h264" and played.frames_decoded >= MIN_PICTURES
    assert played.decode_errors == 0, played.summary()

    await page.command("stop")
    stopped = await page.until(lambda s: s["state"] == "stopped", timeout_s=30)
    assert stopped["bitrateText"] == ""
    service = whip_server.service
    with trio.fail_after(30):
        while service.sessions or await on_air_feed(running, stream, "browser"):
            await trio.sleep(0.05)
    assert not running.daemon.publishers, "the DELETE ended the feed"


async def test_a_browser_and_two_rtmp_sources_in_one_stream_then_rtmp_supersedes_the_browser(
    whip_server: Whip, open_page: Any, spawn: Any
) -> None:
    """The issue's e2e: a Chromium WHIP source beside a PyAV and an ffmpeg RTMP source in one
    stream, all listed with their codecs; the browser's source decodes over LL-HLS and RTMP
    play; then an RTMP publish of the browser's sourceId supersedes it: the server ends its
    peer connection and the page says "superseded", naming the feed that took over."""
    running, stream = whip_server.running, "live/trio"
    await spawn(rtmp_publisher(whip_server, stream, "stage"))
    await spawn(ffmpeg_publisher(whip_server, stream, "side"))
    page = await open_page(
        f"{whip_server.base}/publish/{stream}?sourceId=browser", whip_server.token
    )
    live = await page.until(is_live)

    async def all_three() -> dict[str, Any] | None:
        found = await running.sources(stream)
        wanted = ("stage", "side", "browser")
        ready = all(
            s in found and found[s]["state"] == "live" and len(found[s]["tracks"]) == 2
            for s in wanted
        )
        return found if ready else None

    sources = await running.wait_for(all_three, timeout_s=60)
    assert codecs(sources["stage"]) == {"h264", "aac"}
    assert codecs(sources["side"]) == {"h264", "aac"}
    assert codecs(sources["browser"]) == {"h264", "opus"}
    assert [sources[s]["onAir"]["protocol"] for s in ("stage", "side", "browser")] == [
        "rtmp",
        "rtmp",
        "webrtc",
    ]
    assert sources["browser"]["onAir"]["id"] == live["feedId"]

    pictures = await decode_hls(running, stream, "browser")
    assert pictures[0].width > 0
    played = await rtmp_play(running.url(stream, sourceId="browser"), 4.0)
    assert played.video_codec == "h264" and played.frames_decoded >= MIN_PICTURES
    assert played.decode_errors == 0, played.summary()

    taker = await spawn(rtmp_publisher(whip_server, stream, "browser"))
    superseded = await page.until(lambda s: s["state"] == "superseded", timeout_s=60)
    new_feed = await running.wait_for(lambda: on_air_feed(running, stream, "browser"), 30)
    assert new_feed["protocol"] == "rtmp" and new_feed["id"] != live["feedId"]
    assert superseded["shown"] == "superseded"
    assert superseded["supersededBy"]["feed"] == new_feed["id"]
    assert f"feed {new_feed['id']}" in superseded["detail"]
    with trio.fail_after(30):
        while whip_server.service.sessions:  #: the server ended the browser's session
            await trio.sleep(0.05)
    assert taker.process.returncode is None
    after = await running.sources(stream)
    assert all(after[s]["state"] == "live" for s in ("stage", "side", "browser"))


async def test_a_kick_shows_as_ended_and_closing_the_page_unpublishes(
    whip_server: Whip, open_page: Any
) -> None:
    """An operator's kick ends the browser's feed: the page says "ended", not superseded.
    Closing a publishing page (pagehide) DELETEs its session: the feed ends."""
    running, stream = whip_server.running, "live/kick"
    page = await open_page(
        f"{whip_server.base}/publish/{stream}?sourceId=browser", whip_server.token
    )
    live = await page.until(is_live)
    kicked = await running.request("DELETE", f"/api/v1/streams/{stream}/feeds/{live['feedId']}")
    assert kicked.status_code in (200, 204), kicked.text
    ended = await page.until(lambda s: s["state"] in ("ended", "superseded"), timeout_s=60)
    assert ended["state"] == "ended" and ended["supersededBy"] is None

    second = await open_page(
        f"{whip_server.base}/publish/{stream}?sourceId=second", whip_server.token
    )
    await second.until(is_live)
    await running.wait_for(lambda: on_air_feed(running, stream, "second"), 30)
    await second.command("close")
    with trio.fail_after(30):
        while whip_server.service.sessions:
            await trio.sleep(0.05)


async def test_a_standby_browser_takes_over_at_once_when_the_rtmp_feed_ends(
    whip_server: Whip, open_page: Any, spawn: Any
) -> None:
    """A page at priority -1 beside an RTMP feed of its sourceId says "standing by"; when the
    RTMP feed is kicked the server asks Chromium for a keyframe (keyframe on demand) and the
    page says live, its feed on air, well within Chromium's own keyframe interval."""
    running, stream = whip_server.running, "live/spare"
    await spawn(rtmp_publisher(whip_server, stream, "cam"))
    rtmp_feed = await running.wait_for(lambda: on_air_feed(running, stream, "cam"), 60)
    page = await open_page(
        f"{whip_server.base}/publish/{stream}?sourceId=cam&priority=-1", whip_server.token
    )
    standby = await page.until(lambda s: s["state"] == "standby" and (s["bitrateKbps"] or 0) > 0)
    assert standby["shown"] == "standing by"
    assert f"feed {rtmp_feed['id']} (rtmp) is on air" in standby["detail"]
    session = next(iter(whip_server.service.sessions.values()))
    requests_before = session.keyframe_requests
    kicked = await running.request("DELETE", f"/api/v1/streams/{stream}/feeds/{rtmp_feed['id']}")
    assert kicked.status_code in (200, 204), kicked.text
    with trio.fail_after(10):
        while (feed := await on_air_feed(running, stream, "cam")) is None or (
            feed["id"] == rtmp_feed["id"]
        ):
            await trio.sleep(0.02)
    assert feed["id"] == standby["feedId"] and feed["protocol"] == "webrtc"
    assert session.keyframe_requests > requests_before, "the takeover asked for a keyframe"
    assert session.keyframe_delay_s is not None and session.keyframe_delay_s < 2.0
    live = await page.until(is_live, timeout_s=30)
    assert live["detail"].startswith('on air as "cam"')


async def test_a_refused_token_shows_the_policy_text_and_publishes_nothing(
    whip_server: Whip, open_page: Any
) -> None:
    """The page shows the server's refusal (the text RTMP encoders get) and its status."""
    page = await open_page(f"{whip_server.base}/publish/live/nope?sourceId=browser", "bad")
    refused = await page.until(lambda s: s["state"] in ("refused", "live", "error"), 60)
    assert refused["state"] == "refused" and refused["shown"] == "refused"
    assert refused["detail"] == "401: Publish refused: malformed token."
    assert refused["location"] is None
    assert not whip_server.service.sessions
    assert whip_server.running.daemon.registry.stream_paths() == ()


async def test_without_the_api_key_the_page_says_live_from_its_connection(
    start_daemon: Callable[..., Any], open_page: Any
) -> None:
    """With `http.admin_key` set the page cannot read the API: it says live once connected
    and sending, and says why it cannot tell more; WHIP itself needs no admin key."""
    running: Running = await start_daemon(
        http={"admin_key": "operator-secret"},
        webrtc={
            "enabled": True,
            "host_addresses": ["127.0.0.1"],
            "udp_port_min": UDP_PORTS[0],
            "udp_port_max": UDP_PORTS[1],
        },
    )
    service = running.daemon.webrtc
    assert service is not None and await service.wait_ready(timeout_s=30)
    page = await open_page(f"{running.http}/publish/live/guarded?sourceId=cam")
    live = await page.until(is_live)
    assert live["api"] == "no access"
    assert "the control API needs its admin key" in live["detail"]
    assert len(service.sessions) == 1
    await page.command("stop")
    await page.until(lambda s: s["state"] == "stopped", timeout_s=30)
    with trio.fail_after(30):
        while service.sessions:
            await trio.sleep(0.05)

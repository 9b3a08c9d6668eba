"""Issue 16 defects 1, 6, 8 and 9 (`..` paths): what a stream name can do to the daemon.

A name goes into file names (recordings), token patterns, log lines and URLs; none
of them may take the daemon down, stall it or forge anything. The daemon is a real
`rtmp-ingest serve` process with a live feed and a player beside the attack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import trio

from tests.hostile import tools
from tests.hostile.test_memory import ADMIN_KEY, MAX_PLAYER_GAP_S, live_feed_and_player, mint
from tests.tools.clients import have
from tests.tools.rtmp_client import TrioRtmpClient

pytestmark = pytest.mark.e2e

RECORD_ALL = {"*": {"multisource": True, "record": True}}


async def test_a_name_too_long_for_a_file_name_does_not_stop_the_daemon(serve, nursery, tmp_path):
    """16.1: the real ffmpeg CLI publishes a 300-byte name with recording on; the daemon
    keeps running, the other feed keeps flowing, no file name component exceeds 255 bytes."""
    if not have("ffmpeg"):
        pytest.skip("ffmpeg CLI not installed")
    served = await serve(apps=RECORD_ALL)
    stop, watch, feed_id = await live_feed_and_player(served, nursery)
    long_name = "n" * 300
    started = trio.current_time()
    ffmpeg = await tools.run_logged(
        tools.ffmpeg_publish(served.url(f"live/{long_name}"), 3), tmp_path / "ffmpeg.log"
    )
    seen_live = False
    with trio.fail_after(30):
        while ffmpeg.poll() is None:
            seen_live = seen_live or await served.live_feed_id(f"live/{long_name}", "") is not None
            assert served.alive(), f"daemon exited {served.process.returncode}"
            await trio.sleep(0.1)
    await trio.sleep(0.5)  # the recorder closes the long name's files
    attack_end = trio.current_time()
    assert served.alive(), f"daemon exited {served.process.returncode}: {served.log()[-2000:]}"
    assert seen_live, "the long name never went live"
    assert ffmpeg.returncode == 0, (tmp_path / "ffmpeg.log").read_text()[-2000:]
    assert await served.live_feed_id("live/feed", "") == feed_id
    gap = watch.longest_gap_s(started, attack_end)
    assert gap < MAX_PLAYER_GAP_S, f"the live player froze {gap:.2f} s"
    recordings = Path(served.log_path).parent / "data0"
    files = [p for p in recordings.rglob("*.mp4") if p.is_file()]
    assert any("feed" not in p.parts for p in files), "the long name was not recorded"
    for path in files:
        assert all(len(part.encode()) <= 255 for part in path.parts), path
    assert "Traceback" not in served.log()
    stop.set()


async def test_token_patterns_match_long_names_in_linear_time(serve, nursery):
    """16.6: a holder of a `*/*/main` token publishes 30 KB names of many segments, twice
    at once, three times each: every publish is refused at once and the player plays on."""
    served = await serve(auth={"mode": "token"}, http={"admin_key": ADMIN_KEY})
    feed_token = await mint(served, ["live/feed"])
    pattern_token = await mint(served, ["*/*/main"])
    stop, watch, feed_id = await live_feed_and_player(served, nursery, f"feed?token={feed_token}")
    name = "a/" * 15_000 + f"x?token={pattern_token}"  # 30 KB: within max_command_bytes
    answers: list[tuple[str, float]] = []

    async def attacker() -> None:
        for _ in range(3):
            client = await TrioRtmpClient.open(served.rtmp_port)
            await client.connect("live")
            sid = await client.create_stream()
            asked = trio.current_time()
            status = await client.publish(sid, name)
            answers.append((status.code if status else "closed", trio.current_time() - asked))
            await client.aclose()

    started = trio.current_time()
    async with trio.open_nursery() as attack:
        attack.start_soon(attacker)
        attack.start_soon(attacker)
    attack_end = trio.current_time()
    assert len(answers) == 6
    for code, took_s in answers:
        assert code != "NetStream.Publish.Start"
        assert took_s < 1.0, f"refusing a 30 KB name took {took_s:.1f} s"
    gap = watch.longest_gap_s(started, attack_end)
    assert gap < MAX_PLAYER_GAP_S, f"the live player froze {gap:.1f} s"
    assert await served.live_feed_id("live/feed", "") == feed_id
    stop.set()


async def test_names_cannot_forge_or_flood_log_lines(serve):
    """16.8: a name with a newline forges no log line; a refused 60 KB name costs the log
    a short line, not its length (twice)."""
    served = await serve(auth={"mode": "token"}, http={"admin_key": ADMIN_KEY})
    forged = "2026-12-02 14:00:00,000 ERROR rtmp_ingest: forged line"
    before = len(served.log())
    for name in (f"evil\n{forged}", f"evil\r\n{forged}", "x" * 60_000):
        client = await TrioRtmpClient.open(served.rtmp_port)
        await client.connect("live")
        sid = await client.create_stream()
        status = await client.publish(sid, name)
        assert status is None or status.code != "NetStream.Publish.Start"
        await client.aclose()
    with trio.fail_after(5):  # the refusals are logged
        while "evil" not in served.log():
            await trio.sleep(0.05)
    await trio.sleep(0.3)
    log = served.log()
    for line in log.splitlines():
        assert not line.lstrip("\r").startswith(forged), "a client's name forged a log line"
    grown = len(log) - before
    assert grown < 8 * 1024, f"three refused publishes grew the log by {grown} bytes"


async def test_one_malformed_frame_then_a_thousand_good_ones_log_once(serve):
    """16.8: a malformed video message followed by 1000 good frames: a few log lines."""
    served = await serve()
    tags = tools.media_tags()
    config = next(t for t in tags if tools.is_video_config(t))
    frames = [t for t in tags if t.kind == 9 and not tools.is_video_config(t)]
    client, sid = await tools.open_publisher(served.rtmp_port, "live", "flood")
    before = served.log().count("\n")
    client.conn.send_video(sid, 0, config.body)
    client.conn.send_video(sid, 0, frames[0].body)
    client.conn.send_video(sid, 40, b"\x27\x01\x00")  # an AVC frame cut inside its header
    for i in range(1000):
        client.conn.send_video(sid, 80 + 40 * i, frames[1 + i % (len(frames) - 1)].body)
        if i % 50 == 0:
            await client.flush()
    await client.flush()
    with trio.fail_after(10):
        while await served.live_feed_id("live/flood", "") is None:
            await trio.sleep(0.05)
    await client.aclose()
    with trio.fail_after(10):
        while "unpublish" not in served.log():
            await trio.sleep(0.05)
    await trio.sleep(0.3)
    lines = served.log().count("\n") - before
    assert lines <= 8, f"one bad frame and 1000 good ones wrote {lines} log lines"


def dot_segments(url: str) -> list[str]:
    path = urlsplit(url).path if "://" in url else url.split("?")[0]
    return [s for s in path.split("/") if unquote(s) in (".", "..")]


def urls_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [u for v in value.values() for u in urls_in(v)]
    if isinstance(value, list):
        return [u for v in value for u in urls_in(v)]
    if isinstance(value, str) and (value.startswith(("http", "rtmp", "/hls", "/live"))):
        return [value]
    return []


async def test_stream_paths_with_dot_segments_never_get_urls_a_browser_rewrites(serve):
    """16.9: `live/a/../b` is refused, or no URL the API gives for it has a `.`/`..` segment
    (a browser would normalise it to another stream's URL)."""
    served = await serve()
    tags = tools.media_tags()
    for name in ("a/../b", "a/%2e%2e/b", "./c"):
        client = await TrioRtmpClient.open(served.rtmp_port)
        await client.connect("live")
        sid = await client.create_stream()
        status = await client.publish(sid, name)
        if status is not None and status.code == "NetStream.Publish.Start":
            for tag in tags[:30]:
                send = client.conn.send_video if tag.kind == 9 else client.conn.send_audio
                if tag.kind in (8, 9):
                    send(sid, tag.ts_ms, tag.body)
            await client.flush()
            with trio.move_on_after(5):
                while True:
                    listing = (await served.get("/api/v1/streams")).json()
                    if urls_in(listing):
                        break
                    await trio.sleep(0.05)
            for url in urls_in((await served.get("/api/v1/streams")).json()):
                assert not dot_segments(url), f"{name!r} got the URL {url}"
        await client.aclose()

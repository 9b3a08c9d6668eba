"""End to end: real encoders publish multisource streams to the real daemon on loopback."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest
import trio

from tests.tools import clients

pytestmark = pytest.mark.e2e

needs_ffmpeg = pytest.mark.skipif(not clients.have("ffmpeg"), reason="ffmpeg CLI not installed")
needs_gst = pytest.mark.skipif(
    not clients.have_gst_element("rtmp2sink"), reason="GStreamer not installed"
)
needs_rtmpsink = pytest.mark.skipif(
    not clients.have_gst_element("rtmpsink"), reason="librtmp sink missing"
)


async def on_air(running, stream, source_id):
    async def check():
        source = (await running.sources(stream)).get(source_id)
        return source if source and source["state"] == "live" and source["onAir"] else None

    return check


async def test_pyav_publisher_without_source_id_is_the_default_source(running, spawn):
    client = await spawn(clients.pyav(running.url("live/plain"), 4))
    source = await running.wait_for(await on_air(running, "live/plain", ""))
    assert source["sourceId"] == ""
    codecs = {t["media"]: t["codec"] for t in source["tracks"]}
    assert codecs == {"video": "h264", "audio": "aac"}
    video = next(t for t in source["tracks"] if t["media"] == "video")
    assert (video["width"], video["height"]) == (320, 180)
    assert await client.wait() == 0


@needs_ffmpeg
@needs_gst
@needs_rtmpsink
async def test_four_real_clients_publish_four_sources_of_one_stream(running, spawn):
    stream = "live/show"
    publishers = [
        await spawn(clients.pyav(running.url(stream, sourceId="pyav"), 6), "pyav"),
        await spawn(clients.ffmpeg(running.url(stream, sourceId="ffmpeg"), 6), "ffmpeg"),
        await spawn(
            clients.gstreamer(running.url(stream, sourceId="gst2"), 6, "rtmp2sink"), "gst2"
        ),
        await spawn(
            clients.gstreamer(running.url(stream, sourceId="librtmp"), 6, "rtmpsink"), "librtmp"
        ),
    ]

    async def all_live():
        sources = await running.sources(stream)
        live = {sid for sid, s in sources.items() if s["state"] == "live"}
        return sources if live == {"pyav", "ffmpeg", "gst2", "librtmp"} else None

    sources = await running.wait_for(all_live, timeout_s=20)
    for source in sources.values():
        assert {(t["media"], t["codec"]) for t in source["tracks"]} == {
            ("video", "h264"),
            ("audio", "aac"),
        }
        assert source["onAir"]["bytesIn"] > 0
    for publisher in publishers:
        assert await publisher.wait() == 0, publisher.name


async def read_events(running, stream, into, *, task_status=trio.TASK_STATUS_IGNORED):
    async with httpx.AsyncClient(base_url=running.http, timeout=None) as client:
        async with client.stream("GET", "/api/v1/events", params={"stream": stream}) as response:
            task_status.started()
            name = None
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name:
                    into.append((name, json.loads(line[6:])))


async def test_republish_with_the_same_source_id_supersedes_the_old_feed(running, spawn, nursery):
    """docs/spec.md §3.3: the new feed takes over; the old one waits as a standby below
    it and goes back on air when the new one ends (its encoder is never cut)."""
    stream = "live/swap"
    events: list = []
    await nursery.start(read_events, running, stream, events)
    first = await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 30))
    source = await running.wait_for(await on_air(running, stream, "cam1"))
    first_feed = source["onAir"]["id"]
    second = await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 4))

    async def new_feed_on_air():
        source = (await running.sources(stream)).get("cam1")
        return (
            source if source and source["onAir"] and source["onAir"]["id"] != first_feed else None
        )

    source = await running.wait_for(new_feed_on_air)
    second_feed = source["onAir"]["id"]
    assert source["supersedeCount"] == 1
    assert [f["id"] for f in source["standby"]] == [first_feed], source
    await running.wait_for(lambda: _has(events, "superseded"))
    names = [name for name, _ in events]
    assert names.index("active") < names.index("superseded")
    superseded = next(p for n, p in events if n == "superseded")
    assert superseded == {
        "stream": stream,
        "sourceId": "cam1",
        "feedId": first_feed,
        "byFeedId": second_feed,
    }
    assert await second.wait() == 0
    # the spare ended: the standby takes over again, the source never went off air
    back = await running.wait_for(await on_air(running, stream, "cam1"))
    assert back["onAir"]["id"] == first_feed
    first.kill()


async def test_in_disconnect_mode_the_superseded_ffmpeg_logs_why(start_daemon, spawn, tmp_path):
    """bundle.superseded = "disconnect": the old encoder is cut, and its log shows why."""
    running = await start_daemon(bundle={"superseded": "disconnect"})
    stream = "live/cut"
    log_path = tmp_path / "ffmpeg.log"
    with open(log_path, "wb") as log_file:
        first = await trio.lowlevel.open_process(
            [
                "verbose" if arg == "error" else arg
                for arg in clients.ffmpeg(running.url(stream, sourceId="cam1"), 30)
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        source = await running.wait_for(await on_air(running, stream, "cam1"))
        second = await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 4))
        with trio.fail_after(20):
            assert await first.wait() != 0, "the superseded encoder was disconnected"
        text = log_path.read_text(errors="replace")
        assert "Superseded: a newer feed took over sourceId 'cam1' of live/cut." in text, text[
            -2000:
        ]
        assert source["onAir"]["id"] not in [
            f["id"] for f in (await running.sources(stream))["cam1"]["standby"]
        ]
        second.kill()
    finally:
        if first.returncode is None:
            first.kill()


async def _has(events, name):
    return any(n == name for n, _ in events)


async def test_supersede_keeps_the_default_source_single_feed(running, spawn):
    first = await spawn(clients.pyav(running.url("live/single"), 15))
    await running.wait_for(await on_air(running, "live/single", ""))
    second = await spawn(clients.pyav(running.url("live/single"), 2))
    assert await second.wait() == 0
    assert set(await running.sources("live/single")) <= {""}
    first.kill()


async def test_a_superseded_encoder_that_reconnects_in_a_loop_never_takes_the_source_back(
    running, spawn
):
    """OBS reconnects by default (issue: the old encoder took the source back from the
    spare, which then died). Our own reconnect loop: the superseded encoder's host keeps
    publishing again; the spare stays on air through every attempt."""
    stream = "live/pingpong"
    old = await spawn(clients.pyav(running.url(stream, sourceId="cam"), 60))
    first = await running.wait_for(await on_air(running, stream, "cam"))
    spare = await spawn(clients.pyav(running.url(stream, sourceId="cam"), 60))

    async def spare_on_air():
        source = (await running.sources(stream)).get("cam")
        if source and source["onAir"] and source["onAir"]["id"] != first["onAir"]["id"]:
            return source
        return None

    spare_feed = (await running.wait_for(spare_on_air))["onAir"]["id"]
    old.kill()  #: the old encoder's connection drops, and it comes back, again and again
    for _ in range(3):
        again = await spawn(clients.pyav(running.url(stream, sourceId="cam"), 60))

        async def waiting_as_standby():
            #: it has sent keyframes (it could have taken over) and waits below the spare
            source = (await running.sources(stream)).get("cam")
            standby = [f for f in (source or {}).get("standby", []) if f["keyframes"] >= 1]
            return source if standby else None

        source = await running.wait_for(waiting_as_standby)
        assert source["onAir"]["id"] == spare_feed, source
        again.kill()
    source = (await running.sources(stream))["cam"]
    assert source["onAir"]["id"] == spare_feed
    spare.kill()

"""End to end over SRT: ffmpeg, srt-live-transmit and GStreamer srtsink publish MPEG-TS to
the SRT driver of a real daemon (HTTP-FLV and HLS outputs, API), beside RTMP publishers.

The daemon's own SRT listener (127.0.0.1, port 0), deciding with the same publish
policy as RTMP and WHIP (open mode; the app "solo" has multisource off).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import trio

from rtmp_ingest.server.srt import SrtServer
from rtmp_ingest.srt import lib
from tests.tools import clients, pyav_player

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not lib.available(), reason="libsrt not installed"),
    pytest.mark.skipif(not clients.have("ffmpeg"), reason="ffmpeg CLI not installed"),
]


@pytest.fixture
async def srt(start_daemon: Any) -> tuple[Any, SrtServer, int]:
    running = await start_daemon(
        srt={"latency_ms": 80},
        apps={"*": {"multisource": True}, "solo": {"multisource": False}},
    )
    server = running.daemon.srt
    assert server is not None and running.daemon.bound.srt is not None
    return running, server, running.daemon.bound.srt[1]


def ffmpeg_srt(url: str, seconds: float) -> list[str]:
    """The README's ffmpeg publisher with MPEG-TS over SRT instead of FLV over RTMP."""
    argv = clients.ffmpeg("rtmp://unused", seconds)
    return argv[:-3] + ["-f", "mpegts", url]


def srt_url(port: int, stream_id: str) -> str:
    return f"srt://127.0.0.1:{port}?streamid={stream_id}"


async def live(running: Any, stream: str, source_id: str, *, tracks: int = 2) -> Any:
    async def check() -> Any:
        source = (await running.sources(stream)).get(source_id)
        ready = source and source["state"] == "live" and source["onAir"]
        return source if ready and len(source["tracks"]) >= tracks else None

    return await running.wait_for(check, timeout_s=20)


async def decoded_frames(url: str) -> int:
    result = await trio.to_thread.run_sync(pyav_player.play, url, 2.0)
    assert result.error is None, result.error
    return result.frames_decoded


async def test_ffmpeg_publishes_over_srt_and_flv_players_decode_it(srt, spawn):
    running, server, port = srt
    url = srt_url(port, "%23!::r=live/show,m=publish,sourceId=cam")  # as ffmpeg 5.1 sends it
    await spawn(ffmpeg_srt(url, 12), "ffmpeg-srt")
    source = await live(running, "live/show", "cam")
    assert {t["media"]: t["codec"] for t in source["tracks"]} == {"video": "h264", "audio": "aac"}
    session = next(iter(server.sessions.values()))
    assert session.protocol == "srt" and session.remote.startswith("127.0.0.1:")
    assert await decoded_frames(f"{running.http}/live/show.flv?sourceId=cam") >= 25
    link = session.statistics()
    assert link["packets_received"] > 0 and link["packets_lost"] == 0


async def test_srt_live_transmit_and_an_rtmp_source_in_one_stream(srt, spawn):
    if not clients.have("srt-live-transmit"):
        pytest.skip("srt-tools not installed")
    running, _, port = srt
    encoder = " ".join(ffmpeg_srt("-", 12)[:-1]) + " -"
    relay = f"srt-live-transmit -q file://con '{srt_url(port, 'live/mix?sourceId=slt')}'"
    await spawn(["bash", "-c", f"{encoder} | {relay}"], "srt-live-transmit")
    await spawn(clients.ffmpeg(running.url("live/mix", sourceId="rtmp"), 12), "ffmpeg-rtmp")
    await live(running, "live/mix", "slt")
    await live(running, "live/mix", "rtmp")
    assert await decoded_frames(f"{running.http}/live/mix.flv?sourceId=slt") >= 25  # 2 s
    assert await decoded_frames(f"{running.http}/hls/live/mix/slt/index.m3u8") >= 10


async def test_gstreamer_srtsink(srt, spawn):
    if not clients.have_gst_element("srtsink"):
        pytest.skip("GStreamer srtsink not installed")
    running, _, port = srt
    argv = clients.gstreamer("unused", 12)
    mux = argv.index("flvmux")
    # srtsink drops what it is given before its connection is up (the first IDR and its
    # SPS/PPS): h264parse must repeat the parameter sets, as for any MPEG-TS receiver; and
    # it sends each buffer as one SRT message, so mpegtsmux must cut 7-packet buffers
    parse = argv.index("h264parse")
    argv[parse : parse + 1] = ["h264parse", "config-interval=-1"]
    mux = argv.index("flvmux")
    argv[mux : mux + 6] = [
        "mpegtsmux",
        "alignment=7",
        "name=mux",
        "!",
        "srtsink",
        f"uri=srt://127.0.0.1:{port}",
        "streamid=live/gst?sourceId=g",
    ]
    await spawn(argv, "gst-srtsink")
    await live(running, "live/gst", "g")
    assert await decoded_frames(f"{running.http}/live/gst.flv?sourceId=g") >= 25


async def test_srt_supersedes_rtmp_and_rtmp_supersedes_srt(start_daemon, spawn):
    # every client here is 127.0.0.1: with no reconnect window the RTMP encoder coming
    # back counts as a new encoder (docs/spec.md §3.3), and disconnect mode cuts the loser
    running = await start_daemon(
        srt={"latency_ms": 80}, bundle={"superseded": "disconnect", "superseded_reconnect_s": 0.0}
    )
    server = running.daemon.srt
    port = running.daemon.bound.srt[1]
    rtmp = await spawn(clients.ffmpeg(running.url("live/sw", sourceId="cam"), 30), "rtmp")
    first = await live(running, "live/sw", "cam")
    await spawn(ffmpeg_srt(srt_url(port, "live/sw?sourceId=cam"), 30), "srt")

    async def srt_on_air() -> Any:
        source = (await running.sources("live/sw")).get("cam")
        return (
            source
            if source and source["onAir"] and source["onAir"]["id"] != first["onAir"]["id"]
            else None
        )

    await running.wait_for(srt_on_air, timeout_s=20)
    srt_feed = next(iter(server.sessions.values())).feed.feed_id
    rtmp.kill()
    await spawn(clients.ffmpeg(running.url("live/sw", sourceId="cam"), 30), "rtmp2")

    async def rtmp_again() -> Any:
        source = (await running.sources("live/sw")).get("cam")
        return (
            source
            if source
            and source["onAir"]
            and source["onAir"]["id"] not in (srt_feed, first["onAir"]["id"])
            else None
        )

    await running.wait_for(rtmp_again, timeout_s=20)

    async def srt_session_closed() -> bool:
        return not server.sessions

    await running.wait_for(srt_session_closed, timeout_s=10)  # the superseded SRT feed is cut


@pytest.mark.parametrize(
    ("stream_id", "reject"),
    [("%23!::r=live/x,m=request", 1405), ("solo/x?sourceId=cam2", 1403), ("live", 1400)],
)
async def test_refusal_reaches_the_encoder_before_accept(srt, stream_id, reject, caplog):
    running, server, port = srt
    argv = ffmpeg_srt(srt_url(port, stream_id), 2)
    argv[argv.index("error")] = "warning"
    caplog.set_level("INFO", logger="rtmp_ingest.srt")
    with trio.fail_after(30):
        done = await trio.run_process(
            argv, capture_stderr=True, check=False, stdin=subprocess.DEVNULL
        )
    assert done.returncode != 0
    log = done.stderr.decode(errors="replace")
    assert "REJECT" in log or "rejection" in log.lower(), log[-500:]
    assert any(f"reject={reject}" in r.getMessage() for r in caplog.records)
    assert not server.sessions and not running.daemon.publishers


async def lossy_relay(
    listen_port: int, target_port: int, loss: float, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """A UDP relay on loopback that drops `loss` of the datagrams, each way (seeded).

    Stands in for tc netem, which needs a kernel module this machine may lack."""
    import random

    rng = random.Random(1316)
    front = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    back = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await front.bind(("127.0.0.1", listen_port))
    await back.connect(("127.0.0.1", target_port))
    peer: list[Any] = []

    async def forward() -> None:
        while True:
            data, address = await front.recvfrom(65536)
            peer[:] = [address]
            if rng.random() >= loss:
                await back.send(data)

    async def backward() -> None:
        while True:
            data = await back.recv(65536)
            if peer and rng.random() >= loss:
                await front.sendto(data, peer[0])

    with front, back:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            nursery.start_soon(backward)
            task_status.started()


async def test_ten_percent_loss_still_gives_decodable_hls(srt, spawn, nursery):
    running, server, port = srt
    relay_port = _free_udp_port()
    await nursery.start(lossy_relay, relay_port, port, 0.10)
    await spawn(ffmpeg_srt(srt_url(relay_port, "live/lossy?sourceId=cam"), 20), "lossy")
    await live(running, "live/lossy", "cam")
    playlist = "/hls/live/lossy/cam/video0.m3u8"

    async def segments() -> bool:  # a playlist is offered from its first complete segment
        response = await running.get(playlist)
        return response.status_code == 200

    await running.wait_for(segments, timeout_s=20)
    assert await decoded_frames(f"{running.http}/hls/live/lossy/cam/index.m3u8") >= 25
    link = next(iter(server.sessions.values())).statistics()
    assert link["packets_lost"] > 0 and link["packets_retransmitted"] > 0


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_hevc_and_opus_over_srt(srt, spawn):
    running, _, port = srt
    argv = ffmpeg_srt(srt_url(port, "live/hevc?sourceId=h"), 12)
    argv[argv.index("libx264")] = "libx265"
    argv[argv.index("aac")] = "libopus"
    argv[argv.index("sine=frequency=440:sample_rate=44100")] = (
        "sine=frequency=440:sample_rate=48000"
    )
    tune = argv.index("-tune")
    argv[tune : tune + 2] = ["-x265-params", "log-level=error"]
    await spawn(argv, "ffmpeg-hevc")
    source = await live(running, "live/hevc", "h")
    assert {t["media"]: t["codec"] for t in source["tracks"]} == {"video": "hevc", "audio": "opus"}
    video = next(t for t in source["tracks"] if t["media"] == "video")
    assert (video["width"], video["height"]) == (320, 180)
    assert await decoded_frames(f"{running.http}/live/hevc.flv?sourceId=h") >= 25

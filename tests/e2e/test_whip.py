"""WHIP ingest end to end: an aiortc publisher → the WebRTC process → the daemon's bundle.

The real daemon runs on loopback (port 0) in token mode with `[webrtc]` enabled: it
spawns and supervises the aiortc process and serves WHIP on its HTTP port, deciding
with the same publish policy as RTMP (a token minted by its keyring publishes,
anything else is refused with the policy's text). ICE uses 127.0.0.1 host candidates
only, no STUN server.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import av
import httpx
import m3u8
import pytest
import trio

from rtmp_ingest.auth import TokenClaims
from rtmp_ingest.bundle import Media, OutputFrame, Permissions, PublishRequest
from rtmp_ingest.server.webrtc_link import WebrtcService

from .conftest import REPO, Running

pytest.importorskip("aiortc")
#: ICE ports the server may bind (webrtc.udp_port_min/max)
UDP_PORTS = (46100, 46499)
pytestmark = pytest.mark.e2e


class Whip:
    def __init__(self, running: Running, service: WebrtcService, base: str, token: str) -> None:
        self.running = running
        self.service = service
        self.base = base
        #: a multisource token for live/* minted by the daemon's keyring
        self.token = token


@pytest.fixture
async def whip_server(start_daemon: Callable[..., Any]) -> Whip:
    running: Running = await start_daemon(
        auth={"mode": "token"},
        #: every client here is 127.0.0.1: no same-host reconnect window, and superseded
        #: feeds are cut, so "supersede" means what these tests check (the loser ends)
        bundle={"superseded": "disconnect", "superseded_reconnect_s": 0.0},
        webrtc={
            "enabled": True,
            "host_addresses": ["127.0.0.1"],
            "udp_port_min": UDP_PORTS[0],
            "udp_port_max": UDP_PORTS[1],
        },
    )
    service = running.daemon.webrtc
    assert service is not None
    assert await service.wait_ready(timeout_s=30), "the WebRTC process did not start"
    assert running.daemon.keyring is not None
    token = running.daemon.keyring.mint(
        TokenClaims(token_id="whip-tests", streams=("live/*",), multisource=True)
    )
    return Whip(running, service, running.http, token)


class Publisher:
    """The aiortc WHIP client process; its stdout lines are JSON."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""
        self.states: list[str] = []  #: its peer connection's states, in order

    async def _next(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            data = await self.process.stdout.receive_some(65536)
            if not data:
                raise AssertionError("publisher exited without output")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    async def line(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """The next message that is not a connection state."""
        with trio.fail_after(timeout_s):
            while True:
                message = await self._next()
                if "state" not in message:
                    return message
                self.states.append(message["state"])

    async def wait_state(self, *states: str, timeout_s: float = 30.0) -> str:
        with trio.fail_after(timeout_s):
            while not set(states) & set(self.states):
                message = await self._next()
                if "state" in message:
                    self.states.append(message["state"])
        return next(s for s in self.states if s in states)

    async def stop(self) -> dict[str, Any]:
        """Closes stdin: the client DELETEs its session and exits."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        return await self.line()


@pytest.fixture
async def publish(nursery: trio.Nursery) -> Any:
    processes: list[trio.Process] = []

    async def start(url: str, *args: str) -> Publisher:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tests.webrtc.whip_client", url, *args],
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


async def collect(
    reader: Any, done: Callable[[list[OutputFrame]], bool], timeout_s: float
) -> list[OutputFrame]:
    frames: list[OutputFrame] = []
    with trio.fail_after(timeout_s):
        while not done(frames):
            frames += reader.drain_nowait()
            await trio.sleep(0.05)
    return frames


def _enough(frames: list[OutputFrame]) -> bool:
    video = [f for f in frames if f.frame.media is Media.VIDEO and not f.frame.config]
    audio = [f for f in frames if f.frame.media is Media.AUDIO and not f.frame.config]
    return len(video) >= 45 and len(audio) >= 50


async def test_whip_publish_h264_opus_reaches_bundle_and_delete_ends_it(
    whip_server: Whip, publish: Any
) -> None:
    registry = whip_server.running.daemon.registry
    reader = registry.subscribe("live/show", "cam")
    client = await publish(
        f"{whip_server.base}/whip/live/show?sourceId=cam", "--token", whip_server.token
    )
    reply = await client.line()
    assert reply["status"] == 201, reply
    assert reply["location"].startswith("/whip-session/") and len(reply["location"]) > 40
    assert "a=recvonly" in reply["body"]
    candidates = [
        line.split() for line in reply["body"].splitlines() if line.startswith("a=candidate:")
    ]
    assert candidates and all(c[4] == "127.0.0.1" for c in candidates)
    assert all(UDP_PORTS[0] <= int(c[5]) <= UDP_PORTS[1] for c in candidates)
    frames = await collect(reader, _enough, timeout_s=60)

    video = [f for f in frames if f.frame.media is Media.VIDEO]
    audio = [f for f in frames if f.frame.media is Media.AUDIO]
    assert video[0].frame.config and video[0].frame.codec == "h264"
    assert video[0].frame.payload[:2] == b"\x17\x00"  #: AVC sequence header (avcC)
    assert video[1].frame.keyframe, "the first coded frame on air is a keyframe"
    assert {f.frame.codec for f in audio} == {"opus"} and audio[0].frame.config
    for track in (video, audio):
        stamps = [f.dts_ms for f in track if not f.frame.config]
        assert stamps == sorted(stamps), "timestamps never go backwards"
        assert stamps[-1] - stamps[0] > 1000  #: over a second of media
    assert video[0].frame.track_info is not None and video[0].frame.track_info.width == 320
    # audio and video on one clock: the last frames of both are near in time
    assert abs(video[-1].dts_ms - audio[-1].dts_ms) < 500

    stats = registry.source_statistics("live/show", "cam", now_s=trio.current_time())
    assert stats is not None and stats.on_air_feed_id is not None
    assert len(whip_server.running.daemon.publishers) == 1
    session = next(iter(whip_server.running.daemon.publishers.values()))
    assert session.protocol == "webrtc" and session.remote.startswith("127.0.0.1:")

    deleted = await client.stop()
    assert deleted == {"deleted": 200}
    assert not whip_server.running.daemon.publishers
    assert not whip_server.service.sessions
    reader.close()


async def test_refusals_bad_offers_and_methods(whip_server: Whip, publish: Any) -> None:
    base = whip_server.base
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        no_token = await http.post(
            "/whip/live/x", content=offer, headers={"Content-Type": "application/sdp"}
        )
        assert no_token.status_code == 401
        assert no_token.text.startswith("A publish token is required: ")
        assert no_token.headers["content-type"].startswith("text/plain")
        cross = await http.post(
            "/whip/live/x",
            content=offer,
            headers={"Content-Type": "application/sdp", "Origin": "http://studio.example"},
        )
        #: a page on another origin reads the session and its feed (http.cors_origins "*")
        exposed = cross.headers["access-control-expose-headers"]
        assert all(name in exposed for name in ("Location", "Link", "Feed-Id")), exposed
        bad = await http.post(
            "/whip/live/x?token=nope", content=offer, headers={"Content-Type": "application/sdp"}
        )
        assert bad.status_code == 401, bad.text
        assert bad.text.strip() == "Publish refused: malformed token."
        garbage = await http.post(
            "/whip/live/x",
            content="hello",
            headers={
                "Content-Type": "application/sdp",
                "Authorization": f"Bearer {whip_server.token}",
            },
        )
        assert garbage.status_code == 400
        no_media = await http.post(
            "/whip/live/x",
            content=offer,
            headers={
                "Content-Type": "application/sdp",
                "Authorization": f"Bearer {whip_server.token}",
            },
        )
        assert no_media.status_code == 400 and "no audio or video" in no_media.text
        wrong_type = await http.post(f"/whip/live/x?token={whip_server.token}", content=offer)
        assert wrong_type.status_code == 415
        options = await http.options("/whip/live/x")
        assert options.status_code == 204
        assert options.headers["accept-post"] == "application/sdp"
        patch = await http.patch("/whip-session/whatever", content="a=candidate")
        assert patch.status_code == 405
        missing = await http.delete("/whip-session/whatever")
        assert missing.status_code == 404
    vp8 = await publish(
        f"{base}/whip/live/x?sourceId=v", "--token", whip_server.token, "--codec", "vp8"
    )
    reply = await vp8.line()
    assert reply["status"] == 422 and "H.264" in reply["body"]
    registry = whip_server.running.daemon.registry
    assert registry.stream_paths() == ()
    # a bundle limit: the stream already has its 16 sources
    for index in range(16):
        registry.request_publish(
            PublishRequest(
                stream_path="live/full",
                source_id=f"s{index}",
                permissions=Permissions(app_multisource=True, token_multisource=True),
            ),
            now_s=trio.current_time(),
        )
    full = await publish(f"{base}/whip/live/full?sourceId=one-more", "--token", whip_server.token)
    reply = await full.line()
    assert reply["status"] == 409 and "16 sources" in reply["body"], reply
    assert not whip_server.service.sessions


async def test_sigkill_of_the_webrtc_process_ends_its_feeds_and_rtmp_never_notices(
    whip_server: Whip, publish: Any, spawn: Any
) -> None:
    """A kill -9 of the WebRTC process ends the WHIP feeds it carried; the supervisor starts
    a new one, and an RTMP feed beside them stays on air, the same feed, throughout."""
    running = whip_server.running
    daemon = running.daemon
    service = whip_server.service
    rtmp = await spawn(
        [
            sys.executable,
            "-m",
            "tests.tools.pyav_publish",
            running.url("live/k", sourceId="rtmp", token=whip_server.token),
            "--seconds",
            "60",
            "--realtime",
        ]
    )
    rtmp_feed = await wait_on_air(running, "live/k", "rtmp")
    reader = daemon.registry.subscribe("live/k", "cam")
    client = await publish(
        f"{whip_server.base}/whip/live/k?sourceId=cam", "--token", whip_server.token
    )
    assert (await client.line())["status"] == 201
    await collect(reader, lambda f: any(x.frame.keyframe for x in f), timeout_s=60)
    old_pid = service.process_id
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    with trio.fail_after(30):
        while service.sessions or service.process_id == old_pid:
            await trio.sleep(0.05)
    assert await service.wait_ready(timeout_s=30)
    assert service.restarts == 1
    assert await wait_on_air(running, "live/k", "rtmp") == rtmp_feed
    assert rtmp.process.returncode is None
    again = await publish(
        f"{whip_server.base}/whip/live/k?sourceId=cam", "--token", whip_server.token
    )
    assert (await again.line())["status"] == 201, "the new process takes publishes"
    reader.close()


async def wait_on_air(
    running: Running, stream: str, source: str, feed_id: int | None = None
) -> int:
    """The feed id on air for a source, once there is one (and it is `feed_id` if given)."""
    registry = running.daemon.registry
    with trio.fail_after(60):
        while True:
            stats = registry.source_statistics(stream, source, now_s=trio.current_time())
            if stats is not None and stats.on_air_feed_id is not None:
                if feed_id is None or stats.on_air_feed_id == feed_id:
                    return stats.on_air_feed_id
            await trio.sleep(0.02)


def whip_feed(service: WebrtcService, location: str) -> Any:
    session = service.by_location[location.rsplit("/", 1)[1]]
    return session


async def test_standby_takeover_asks_for_a_keyframe_at_once(
    whip_server: Whip, publish: Any
) -> None:
    """Keyframe on demand: a standby WHIP feed whose encoder has a 10 s GOP goes on air
    within a round trip or so when the feed on air ends, not at its next GOP."""
    running, service = whip_server.running, whip_server.service
    url = f"{whip_server.base}/whip/live/kf?sourceId=cam"
    main = await publish(url, "--token", whip_server.token, "--gop", "300")
    main_reply = await main.line()
    main_feed = await wait_on_air(running, "live/kf", "cam")
    spare = await publish(url + "&priority=-1", "--token", whip_server.token, "--gop", "300")
    spare_reply = await spare.line()
    assert spare_reply["status"] == 201
    spare_session = whip_feed(service, spare_reply["location"])
    with trio.fail_after(30):
        while not spare_session.connected or spare_session.frames_in < 10:
            await trio.sleep(0.02)
    assert spare_session.feed.state.value == "standby"
    requests_before = spare_session.keyframe_requests
    assert whip_feed(service, main_reply["location"]).feed.feed_id == main_feed
    ended_at = trio.current_time()
    assert await main.stop() == {"deleted": 200}
    await wait_on_air(running, "live/kf", "cam", spare_session.feed.feed_id)
    switch_s = trio.current_time() - ended_at
    assert spare_session.keyframe_requests > requests_before
    #: the daemon timed the answer (request → keyframe), as it logs it
    assert spare_session.keyframe_delay_s is not None and spare_session.keyframe_delay_s < 1.5
    #: measured: 25 ms with the request, 3 s without (aiortc's encoder restarts while its
    #: bitrate ramps up, else it would be the 10 s GOP)
    assert switch_s < 1.5, f"took {switch_s:.2f}s: the spare's GOP is 10 s"


async def test_rtmp_and_whip_supersede_each_other(
    whip_server: Whip, publish: Any, spawn: Any
) -> None:
    """An RTMP publish of the same sourceId supersedes a WHIP feed (its peer connection is
    closed by the server), and a WHIP publish supersedes an RTMP feed (its connection ends)."""
    running, service = whip_server.running, whip_server.service
    client = await publish(
        f"{whip_server.base}/whip/live/mix?sourceId=cam", "--token", whip_server.token
    )
    reply = await client.line()
    assert reply["status"] == 201
    whip_feed_id = await wait_on_air(running, "live/mix", "cam")
    rtmp = await spawn(
        [
            sys.executable,
            "-m",
            "tests.tools.pyav_publish",
            running.url("live/mix", sourceId="cam", token=whip_server.token),
            "--seconds",
            "60",
            "--realtime",
        ]
    )
    rtmp_feed_id = 0
    with trio.fail_after(60):
        while rtmp_feed_id in (0, whip_feed_id):
            rtmp_feed_id = await wait_on_air(running, "live/mix", "cam")
            await trio.sleep(0.02)
    assert await client.wait_state("closed", "failed") in ("closed", "failed")
    assert not service.sessions
    # and back: a WHIP publish takes the source from the RTMP encoder
    again = await publish(
        f"{whip_server.base}/whip/live/mix?sourceId=cam", "--token", whip_server.token
    )
    assert (await again.line())["status"] == 201
    with trio.fail_after(60):
        while await wait_on_air(running, "live/mix", "cam") == rtmp_feed_id:
            await trio.sleep(0.02)
    await rtmp.wait(timeout_s=30)  #: the superseded RTMP encoder was disconnected
    assert len(service.sessions) == 1


async def test_dtx_audio_gaps_never_hold_video(whip_server: Whip, publish: Any) -> None:
    """Opus DTX: a publisher silent every other second sends no audio then; video keeps
    coming at its rate and audio resumes at its true time (the RTP clock ran on)."""
    registry = whip_server.running.daemon.registry
    reader = registry.subscribe("live/dtx", "cam")
    client = await publish(
        f"{whip_server.base}/whip/live/dtx?sourceId=cam",
        "--token",
        whip_server.token,
        "--audio-gaps",
    )
    assert (await client.line())["status"] == 201

    def three_seconds(frames: list[OutputFrame]) -> bool:
        video = [f.dts_ms for f in frames if f.frame.media is Media.VIDEO and not f.frame.config]
        return len(video) > 2 and video[-1] - video[0] > 3500

    frames = await collect(reader, three_seconds, timeout_s=60)
    video = [f.dts_ms for f in frames if f.frame.media is Media.VIDEO and not f.frame.config]
    audio = [f.dts_ms for f in frames if f.frame.media is Media.AUDIO and not f.frame.config]
    assert max(b - a for a, b in zip(video, video[1:])) < 400, "video never waited"
    audio_gaps = [b - a for a, b in zip(audio, audio[1:])]
    assert max(audio_gaps) > 800, "the silent second shows as a jump of the audio clock"
    assert sorted(audio) == audio
    reader.close()


def _gstreamer_webrtc() -> bool:
    probe = (
        "import gi;"
        "[gi.require_version(n, '1.0') for n in ('Gst', 'GstWebRTC', 'GstSdp')];"
        "gi.require_version('Nice', '0.1');"
        "from gi.repository import Gst, GstWebRTC, GstSdp, Nice;"
        "Gst.init(None);"
        "assert all(Gst.ElementFactory.find(e) for e in "
        "('webrtcbin', 'x264enc', 'opusenc', 'nicesrc'))"
    )
    try:
        return (
            subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True).returncode == 0
        )
    except OSError:
        return False


@pytest.mark.skipif(
    not _gstreamer_webrtc(),
    reason="needs python3-gi, gir1.2-gst-plugins-bad-1.0, gir1.2-nice-0.1, gstreamer1.0-nice",
)
@pytest.mark.parametrize("codec", ["h264", "vp9"])
async def test_gstreamer_webrtcbin_publishes(whip_server: Whip, codec: str) -> None:
    """GStreamer's webrtcbin (RSA certificate) negotiates: the process is the DTLS server.
    An offer with VP9 and no H.264 is answered with VP9, carried as E-RTMP vp09."""
    registry = whip_server.running.daemon.registry
    reader = registry.subscribe("live/gst", "cam")
    process = await trio.lowlevel.open_process(
        [
            "/usr/bin/python3",
            "tests/webrtc/gst_whip_client.py",
            f"{whip_server.base}/whip/live/gst?sourceId=cam",
            "--token",
            whip_server.token,
            "--seconds",
            "60",
            "--codec",
            codec,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    client = Publisher(process)
    try:
        reply = await client.line()
        assert reply["status"] == 201 and "a=setup:passive" in reply["body"]
        frames = await collect(reader, _enough, timeout_s=60)
        video = [f for f in frames if f.frame.media is Media.VIDEO]
        assert video[0].frame.config and video[1].frame.keyframe
        assert {f.frame.codec for f in video} == {codec}
        info = video[0].frame.track_info
        assert info is not None and (info.width, info.height) == (320, 240)
        assert info.profile in ("Constrained Baseline", "Baseline", "0")
        stamps = [f.dts_ms for f in video if not f.frame.config]
        assert stamps == sorted(stamps)
        assert {f.frame.codec for f in frames if f.frame.media is Media.AUDIO} == {"opus"}
        running = whip_server.running
        hls = await running.wait_for(lambda: _hls_media(running, "/hls/live/gst/cam", "video0"), 60)
        pictures = await trio.to_thread.run_sync(_decode, hls)
        assert pictures and (pictures[0].width, pictures[0].height) == (320, 240)
    finally:
        process.kill()
        await process.wait()
        reader.close()


async def _hls_media(running: Running, base: str, track: str) -> bytes | None:
    """init + complete segments of one HLS media playlist, once it has a segment."""
    async with httpx.AsyncClient(base_url=running.http, timeout=15) as http:
        response = await http.get(f"{base}/{track}.m3u8")
        if response.status_code != 200:
            return None
        playlist = m3u8.loads(response.text)
        uris = [s.uri for s in playlist.segments if s.uri]
        init = next((s.init_section.uri for s in playlist.segments if s.init_section), None)
        if not uris or init is None:
            return None
        data = (await http.get(f"{base}/{init}")).content
        for uri in uris:
            data += (await http.get(f"{base}/{uri}")).content
        return data


def _decode(data: bytes) -> list[Any]:
    with av.open(io.BytesIO(data), format="mp4") as container:
        return list(container.decode(container.streams[0]))


async def test_a_whip_source_decodes_over_hls(whip_server: Whip, publish: Any) -> None:
    """The avcC and OpusHead the process builds are what outputs and players need."""
    running = whip_server.running
    client = await publish(
        f"{whip_server.base}/whip/live/hlsw?sourceId=cam", "--token", whip_server.token
    )
    assert (await client.line())["status"] == 201
    base = "/hls/live/hlsw/cam"
    video = await running.wait_for(lambda: _hls_media(running, base, "video0"), 60)
    audio = await running.wait_for(lambda: _hls_media(running, base, "audio0"), 60)
    pictures = await trio.to_thread.run_sync(_decode, video)
    assert len(pictures) >= 30 and (pictures[0].width, pictures[0].height) == (320, 240)
    sounds = await trio.to_thread.run_sync(_decode, audio)
    assert sounds and sounds[0].sample_rate == 48000


async def test_an_audio_only_whip_feed_goes_on_air(whip_server: Whip, publish: Any) -> None:
    registry = whip_server.running.daemon.registry
    reader = registry.subscribe("live/voice", "translator")
    client = await publish(
        f"{whip_server.base}/whip/live/voice?sourceId=translator",
        "--token",
        whip_server.token,
        "--no-video",
    )
    reply = await client.line()
    assert reply["status"] == 201 and "m=video" not in reply["body"]
    frames = await collect(reader, lambda f: len(f) > 20, timeout_s=60)
    assert {f.frame.media for f in frames} == {Media.AUDIO}
    stats = registry.source_statistics("live/voice", "translator", now_s=trio.current_time())
    assert stats is not None and [t.codec for t in stats.tracks] == ["opus"]
    reader.close()

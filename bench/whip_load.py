"""Load and fixtures of the WHIP benchmark (bench/bench_whip.py): the clip, the daemon,
WHIP publishers of the clip.

    PYTHONPATH=. .venv/bin/python bench/whip_load.py BASE N SECONDS MEDIA PREFIX

runs N aiortc WHIP publishers of MEDIA (MPEG-TS: Annex B H.264 + Opus) in one process,
sending its packets as they are (`MediaPlayer(decode=False)`: no encoder), to
BASE/whip/live/PREFIX{i}?sourceId=cam; prints {"connected": N} once all are up, DELETEs
the sessions when stdin closes or SECONDS pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.common import free_port, wait_listening

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
MEDIA_DIR = Path("/tmp/rtmp_bench_media")
#: the clip: 720p30, 2 s GOP, CBR video + Opus (longer than warm-up + any window)
CLIP_SECONDS = 60
CLIP_VIDEO_KBPS = 1450
CLIP_AUDIO_KBPS = 64
GOP_FRAMES = 60  #: 2 s at 30 fps (the clip's and the switch spare's GOP)
#: ICE ports of the bench daemon (not the e2e tests' range)
UDP_PORTS = (47000, 47999)
CONFIG = """\
log_level = "{log_level}"
[rtmp]
listen = "127.0.0.1:{port}"
max_connections_per_address = 1000
[http]
listen = "127.0.0.1:{http_port}"
[srt]
enabled = false
[hls]
enabled = false
[bundle]
max_streams = 4096
[webrtc]
enabled = true
host_addresses = ["127.0.0.1"]
udp_port_min = {udp_min}
udp_port_max = {udp_max}
keyframe_on_demand = {kod}
max_sessions = 200
"""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def gstreamer() -> bool:
    probe = "import gi; gi.require_version('GstWebRTC', '1.0'); gi.require_version('Nice', '0.1')"
    try:
        return (
            subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True).returncode == 0
        )
    except OSError:
        return False


# -- media ---------------------------------------------------------------------------


def ensure_media() -> tuple[Path, Path]:
    """The clip as MPEG-TS (Annex B H.264 + Opus, for aiortc) and FLV (for RTMP)."""
    MEDIA_DIR.mkdir(parents=True, exist_ok=True)
    name = f"whip_720p30_{CLIP_VIDEO_KBPS}k_g{GOP_FRAMES}_{CLIP_SECONDS}s"
    ts, flv = MEDIA_DIR / f"{name}.ts", MEDIA_DIR / f"{name}.flv"
    if not ts.exists():
        rate = f"{CLIP_VIDEO_KBPS}k"
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
            + ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30,noise=alls=12:allf=t"]
            + ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
            + ["-t", str(CLIP_SECONDS), "-c:v", "libx264", "-preset", "veryfast"]
            + ["-profile:v", "baseline", "-pix_fmt", "yuv420p"]
            + ["-b:v", rate, "-maxrate", rate, "-bufsize", rate]
            + [
                "-x264-params",
                f"keyint={GOP_FRAMES}:min-keyint={GOP_FRAMES}:scenecut=0:nal-hrd=cbr",
            ]
            + ["-c:a", "libopus", "-b:a", f"{CLIP_AUDIO_KBPS}k", "-ac", "2"]
            + ["-f", "mpegts", str(ts) + ".part"],
            check=True,
            timeout=600,
        )
        os.replace(str(ts) + ".part", ts)
    if not flv.exists():
        import av

        with av.open(str(ts)) as source, av.open(str(flv) + ".part", "w", format="flv") as out:
            streams = {s.index: out.add_stream_from_template(s) for s in source.streams}
            for packet in source.demux():
                if packet.dts is None:
                    continue
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
        os.replace(str(flv) + ".part", flv)
    return ts, flv


# -- the daemon ------------------------------------------------------------------------


class Daemon:
    """`rtmp-ingest serve` with WebRTC on; `pid`/`port`/`kind` as bench.common's Server."""

    kind = "ours"

    def __init__(self, *, keyframe_on_demand: bool = True, log_level: str = "warning") -> None:
        self.port, self.http_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.tmp = tempfile.mkdtemp(prefix="bench-whip-")
        self.keyframe_on_demand = keyframe_on_demand
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> Daemon:
        config = Path(self.tmp) / "config.toml"
        config.write_text(
            CONFIG.format(
                log_level=self.log_level,
                port=self.port,
                http_port=self.http_port,
                udp_min=UDP_PORTS[0],
                udp_max=UDP_PORTS[1],
                kod="true" if self.keyframe_on_demand else "false",
            )
        )
        self.log = Path(self.tmp) / "server.log"
        self.process = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "rtmp-ingest"), "serve", "--config", str(config)]
            + ["--data-dir", self.tmp],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        wait_listening(self.port, 30)
        wait_listening(self.http_port, 30)
        deadline = time.monotonic() + 60
        while self.webrtc_pid() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no WebRTC process (see {self.log})")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def webrtc_pid(self) -> int | None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if stat[1] == str(self.pid) and b"rtmp_ingest.webrtc.process" in cmdline:
                return int(entry)
        return None

    def api(self, path: str) -> Any:

        return httpx.get(self.base + path, timeout=15).json()

    def feeds(self, prefix: str) -> dict[str, dict[str, Any]]:
        """The feed on air of every stream whose path starts with `prefix`."""
        out = {}
        for stream in self.api("/api/v1/streams")["streams"]:
            if stream["path"].startswith(prefix):
                for source in stream["sources"]:
                    if source["onAir"]:
                        out[stream["path"]] = source["onAir"]
        return out


# -- WHIP publishers of the clip (a subprocess: `whip_load.py BASE N ...`) ----------------


async def _whip_publish(base: str, count: int, seconds: float, media: str, prefix: str) -> None:
    from aiortc import (
        RTCConfiguration,
        RTCPeerConnection,
        RTCRtpSender,
        RTCSessionDescription,
    )
    from aiortc.contrib.media import MediaPlayer

    from rtmp_ingest.webrtc import stack

    stack.restrict_host_addresses(["127.0.0.1"])
    sessions: list[tuple[Any, str]] = []
    connected = asyncio.Event()
    up = 0
    async with httpx.AsyncClient(timeout=30) as http:
        for index in range(count):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            player = MediaPlayer(media, decode=False)
            video = pc.addTransceiver(player.video, direction="sendonly")
            video.setCodecPreferences(
                [
                    c
                    for c in RTCRtpSender.getCapabilities("video").codecs
                    if c.mimeType.lower() in ("video/h264", "video/rtx")
                ]
            )
            pc.addTransceiver(player.audio, direction="sendonly")

            def changed(pc: Any = pc) -> None:
                nonlocal up
                if pc.connectionState == "connected":
                    up += 1
                    if up == count:
                        connected.set()

            pc.on("connectionstatechange", changed)
            await pc.setLocalDescription(await pc.createOffer())
            url = f"{base}/whip/live/{prefix}{index}?sourceId=cam"
            response = await http.post(
                url,
                content=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            )
            if response.status_code != 201:
                print(json.dumps({"error": response.status_code, "text": response.text}))
                return
            await pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
            sessions.append((pc, str(httpx.URL(url).join(response.headers["location"]))))
        await asyncio.wait_for(connected.wait(), 60)
        print(json.dumps({"connected": count}), flush=True)
        stdin = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        try:
            await asyncio.wait_for(stdin, seconds)
        except TimeoutError:
            pass
        for pc, location in sessions:
            await http.delete(location)
            await pc.close()


class WhipPublishers:
    """`count` WHIP publishers of the clip in one subprocess, up once `start()` returns."""

    def __init__(self, daemon: Daemon, count: int, media: Path, prefix: str, seconds: float):
        self.process = subprocess.Popen(
            [sys.executable, __file__, daemon.base, str(count)]
            + [str(seconds), str(media), prefix],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def wait_connected(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if '"connected"' not in line:
            self.stop()
            raise RuntimeError(f"WHIP publishers did not connect: {line!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  #: they DELETE their sessions and exit
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_feeds(daemon: Daemon, prefix: str, count: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while len(daemon.feeds(prefix)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(daemon.feeds(prefix))} of {count} feeds on air")
        time.sleep(0.2)


def bytes_in(daemon: Daemon, prefix: str) -> int:
    return sum(feed["bytesIn"] for feed in daemon.feeds(prefix).values())


def main() -> None:
    base, count, seconds, media, prefix = sys.argv[1:6]
    asyncio.run(_whip_publish(base, int(count), float(seconds), media, prefix))


if __name__ == "__main__":
    main()

"""WHEP: glass-to-glass latency against LL-HLS and HTTP-FLV, and the server's cost per viewer.

    PYTHONPATH=. .venv/bin/python bench/bench_whep.py [--seconds 40] [--viewers 1 10 20]
        [--cost-seconds 20] [--skip-latency] [--skip-cost] [--out bench/results/whep.json]

Starts `rtmp-ingest serve` with `[webrtc]` on loopback (and LL-HLS for the latency
run: defaults, 2 s segments, 0.2 s parts) and publishes over RTMP from this script
(PyAV, x264 ultrafast/zerolatency, 320x180 at 30 fps, 1 s GOP, a block of noise for
a camera-like ~1 Mbit/s, a 440 Hz AAC tone): every picture carries the publisher's
wall clock (ms, 40 bits) as a row of black/white blocks, written just before the
frame is encoded.

**Latency** (`bench/whep_latency.js`, `make browser` first): headless Chromium plays the
source three ways at once on one page (bench/latency_page.html) — WHEP, LL-HLS in
hls.js (low-latency mode, as the multiview page plays it) and HTTP-FLV in mpegts.js
(no stash buffer, latency chasing) — and reads the time code back through a canvas at
every picture it presents; latency = the compositor's display time for that picture −
the time in the picture (same machine, same clock). It spans encode, RTMP, the bundle,
each output's packaging, the player's buffer, decode and compositing: glass to glass
minus the camera. The first `--warmup` seconds of each player are left out (WHEP's
cached-GOP burst, hls.js and mpegts.js catching up). Median and p95 per player.

**Cost** (`--viewers N ...`): N aiortc WHEP viewers in this script; over
`--cost-seconds` once all are connected, the CPU time of the daemon and of the WebRTC
process (/proc/PID/stat utime+stime) and the bytes the viewers received (DTLS
transport, SRTP on the wire) give CPU-ms per viewer-Mbit, per process and summed;
the AAC→Opus transcoder's own CPU (`rtmp_ingest_whep_transcode_cpu_seconds`, the
thread time it spends) per second of audio shows it runs once per source whatever N.

Prints a table and writes every figure as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.common import free_port, wait_listening
from tests.tools.sched import normal_scheduling

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
BITS = 40
BLOCK = 8  #: block width (px) of one bit; 40 bits fill a 320 px row
ROWS = 16
#: a block of fresh noise in every picture keeps the bitrate near a real camera's (~1 Mbit/s)
NOISE = 72
WIDTH, HEIGHT, FPS = 320, 180, 30
AUDIO_RATE = 44100
PLAYERS = ("whep", "ll-hls", "http-flv")
TARGET_MEDIAN_MS, TARGET_P95_MS = 250, 400
CONFIG = """\
log_level = "warning"
[rtmp]
listen = "127.0.0.1:{port}"
[http]
listen = "127.0.0.1:{http_port}"
[hls]
enabled = {hls}
[webrtc]
enabled = true
host_addresses = ["127.0.0.1"]
whep_max_viewers = 64
"""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


#: the publisher's encoder per codec, set for live (no lookahead, no reordering); VP9
#: and AV1 go out as E-RTMP (PyAV's FLV muxer)
ENCODERS = {
    "h264": (
        "libx264",
        {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0",
        },
    ),
    "vp9": (
        "libvpx-vp9",
        {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "g": str(FPS)},
    ),
    "av1": ("libsvtav1", {"preset": "12", "svtav1-params": f"pred-struct=1:keyint={FPS}"}),
}


def publish(url: str, stop: threading.Event, codec: str = "h264") -> None:
    """RTMP publisher: time-coded pictures and a tone, paced like a live encoder."""
    import array

    import av

    out = av.open(url, "w", format="flv")
    name, options = ENCODERS[codec]
    video = out.add_stream(name, rate=FPS)
    video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    video.codec_context.gop_size = FPS
    video.codec_context.options = dict(options)
    audio = out.add_stream("aac", rate=AUDIO_RATE)
    audio.layout = "stereo"
    started = time.monotonic()
    frame_index = audio_samples = 0
    while not stop.is_set():
        due = started + frame_index / FPS
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamp = int(time.time() * 1000) & ((1 << BITS) - 1)
        luma = bytearray(b"\x80" * (WIDTH * HEIGHT))
        row = bytearray()
        for bit in range(BITS):
            row += (b"\xeb" if stamp >> (BITS - 1 - bit) & 1 else b"\x10") * BLOCK
        for y in range(ROWS):
            luma[y * WIDTH : y * WIDTH + WIDTH] = row
        noise = os.urandom(NOISE * NOISE)
        for y in range(NOISE):
            at = (ROWS + 40 + y) * WIDTH + 120
            luma[at : at + NOISE] = noise[y * NOISE : (y + 1) * NOISE]
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        frame.planes[0].update(bytes(luma))
        frame.planes[1].update(b"\x80" * frame.planes[1].buffer_size)
        frame.planes[2].update(b"\x80" * frame.planes[2].buffer_size)
        frame.pts = frame_index
        frame.time_base = Fraction(1, FPS)
        for packet in video.encode(frame):
            out.mux(packet)
        if frame_index == 0:
            normal_scheduling()  #: SVT-AV1 (root) would run the publisher at SCHED_FIFO 99
        frame_index += 1
        while audio_samples * FPS < frame_index * AUDIO_RATE:
            tone = array.array(
                "f",
                (
                    0.3 * math.sin(2 * math.pi * 440 * (audio_samples + i) / AUDIO_RATE)
                    for i in range(1024)
                ),
            ).tobytes()
            sound = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
            for plane in sound.planes:
                plane.update(tone)
            sound.sample_rate = AUDIO_RATE
            sound.pts = audio_samples
            sound.time_base = Fraction(1, AUDIO_RATE)
            for packet in audio.encode(sound):
                out.mux(packet)
            audio_samples += 1024
    out.close()


class Daemon:
    """The server on loopback with the publisher running (a context manager)."""

    def __init__(self, *, hls: bool, codec: str = "h264") -> None:
        self.hls = hls
        self.codec = codec

    def __enter__(self) -> Daemon:
        tmp = tempfile.mkdtemp(prefix="bench-whep-")
        self.port, self.http_port = free_port(), free_port()
        config = Path(tmp) / "config.toml"
        config.write_text(
            CONFIG.format(port=self.port, http_port=self.http_port, hls=str(self.hls).lower())
        )
        self.log = open(Path(tmp) / "server.log", "w")  #: closed in __exit__
        self.server = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "rtmp-ingest"), "serve", "--config", str(config)]
            + ["--data-dir", tmp],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.stop = threading.Event()
        self.publisher = threading.Thread(
            target=publish,
            args=(f"rtmp://127.0.0.1:{self.port}/live/bench", self.stop, self.codec),
        )
        try:
            wait_listening(self.port)
            wait_listening(self.http_port)
            self.publisher.start()
            deadline = time.monotonic() + 30
            while not self.webrtc_pids():
                if time.monotonic() > deadline:
                    raise RuntimeError("the WebRTC process did not start")
                time.sleep(0.1)
            time.sleep(3)  #: on air, a GOP and an HLS segment cached
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def webrtc_pids(self) -> list[int]:
        return children(self.server.pid)

    def cpu(self) -> tuple[float, float]:
        """(daemon, WebRTC process) CPU seconds so far."""
        return cpu_s(self.server.pid), sum(cpu_s(p) for p in self.webrtc_pids())

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=10) as response:
            text = response.read().decode()
        found = re.search(rf"^{name}(?:_total)?(?:{{[^}}]*}})? (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.publisher.is_alive():
            self.publisher.join(timeout=10)
        self.server.terminate()
        try:
            self.server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.server.kill()
        self.log.close()


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"samples": 0, "median_ms": None, "p95_ms": None}
    ordered = sorted(values)
    return {
        "samples": len(values),
        "median_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1),
    }


def latency(
    seconds: float, warmup_s: float, *, codec: str = "h264", players: tuple[str, ...] = PLAYERS
) -> dict[str, Any]:
    """WHEP vs LL-HLS vs HTTP-FLV in one Chromium page (see the module docstring)."""
    from rtmp_ingest.api.web import HLSJS_PATH

    modules = REPO / ".browser" / "node_modules"
    if not (modules / "mpegts.js").exists() or not (modules / "playwright-core").exists():
        raise SystemExit("bench_whep: run `make browser` first (playwright-core, mpegts.js)")
    with Daemon(hls="ll-hls" in players, codec=codec) as daemon:
        before = daemon.cpu()
        result = subprocess.run(
            ["node", str(REPO / "bench" / "whep_latency.js"), daemon.base, "live/bench"]
            + [str(seconds), HLSJS_PATH, ",".join(players)],
            capture_output=True,
            text=True,
            env={**os.environ, "NODE_PATH": str(modules)},
            timeout=seconds + 90,
            check=False,
        )
        after = daemon.cpu()
    line = next((x for x in result.stdout.splitlines() if x.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"whep_latency.js printed nothing: {result.stderr[-2000:]}")
    page = json.loads(line)
    out: dict[str, Any] = {
        "codec": codec,
        "seconds": seconds,
        "warmup_s": warmup_s,
        "players": {},
    }
    for name in players:
        samples = page["samples"].get(name, [])
        start = samples[0][0] + 1000 * warmup_s if samples else 0
        settled = [late for shown, late in samples if shown >= start]
        out["players"][name] = {"state": page["states"].get(name), **summary(settled)}
    out["daemon_cpu_s"] = round(after[0] - before[0], 2)
    out["webrtc_cpu_s"] = round(after[1] - before[1], 2)
    return out


async def _viewers(base: str, count: int, seconds: float, daemon: Daemon) -> dict[str, Any]:
    import httpx
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    from rtmp_ingest.webrtc import stack

    stack.restrict_host_addresses(["127.0.0.1"])
    pcs: list[Any] = []
    tasks: list[asyncio.Future[None]] = []
    frames = [0]

    async def consume(track: Any) -> None:
        try:
            while True:
                await track.recv()
                if track.kind == "video":
                    frames[0] += 1
        except MediaStreamError:
            return

    async def received() -> int:
        total = 0
        for pc in pcs:
            for report in (await pc.getStats()).values():
                if report.type == "transport":
                    total += report.bytesReceived
        return total

    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(count):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            response = await client.post(
                f"{base}/whep/live/bench",
                content=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            )
            assert response.status_code == 201, response.text
            await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
            pcs.append(pc)
        deadline = time.monotonic() + 30
        while any(pc.connectionState != "connected" for pc in pcs):
            if time.monotonic() > deadline:
                raise RuntimeError("viewers did not connect")
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  #: past the cached-GOP burst
        bytes0, cpu0, transcode0, frames0 = (
            await received(),
            daemon.cpu(),
            daemon.metric("rtmp_ingest_whep_transcode_cpu_seconds"),
            frames[0],
        )
        wall0 = time.monotonic()
        await asyncio.sleep(seconds)
        bytes1, cpu1, transcode1, frames1 = (
            await received(),
            daemon.cpu(),
            daemon.metric("rtmp_ingest_whep_transcode_cpu_seconds"),
            frames[0],
        )
        wall = time.monotonic() - wall0
        transcoders = daemon.metric("rtmp_ingest_whep_transcoders")
        for pc in pcs:
            await pc.close()
    mbit = (bytes1 - bytes0) * 8 / 1e6
    daemon_ms, webrtc_ms = 1000 * (cpu1[0] - cpu0[0]), 1000 * (cpu1[1] - cpu0[1])
    return {
        "viewers": count,
        "seconds": round(wall, 1),
        "viewer_mbit": round(mbit, 2),
        "viewer_mbit_per_s": round(mbit / wall, 3),
        "pictures_per_viewer_per_s": round((frames1 - frames0) / count / wall, 1),
        "daemon_cpu_ms_per_s": round(daemon_ms / wall, 1),
        "webrtc_cpu_ms_per_s": round(webrtc_ms / wall, 1),
        "daemon_cpu_ms_per_viewer_mbit": round(daemon_ms / mbit, 2),
        "webrtc_cpu_ms_per_viewer_mbit": round(webrtc_ms / mbit, 2),
        "total_cpu_ms_per_viewer_mbit": round((daemon_ms + webrtc_ms) / mbit, 2),
        "transcoders": int(transcoders),
        "transcode_cpu_ms_per_audio_s": round(1000 * (transcode1 - transcode0) / wall, 2),
    }


def cost(counts: list[int], seconds: float) -> list[dict[str, Any]]:
    """One daemon per viewer count (LL-HLS off: the daemon's CPU is ingest + WHEP only).

    Beside the plain ratios, each run after the first gives the marginal cost: the CPU
    it took beyond the first run per viewer-Mbit it sent beyond it (the fixed cost of
    ingest and of the one transcoder drops out)."""
    runs: list[dict[str, Any]] = []
    for count in counts:
        with Daemon(hls=False) as daemon:
            run = asyncio.run(_viewers(daemon.base, count, seconds, daemon))
        if runs:
            first = runs[0]
            extra_mbit = run["viewer_mbit_per_s"] - first["viewer_mbit_per_s"]
            for part in ("daemon", "webrtc"):
                extra_ms = run[f"{part}_cpu_ms_per_s"] - first[f"{part}_cpu_ms_per_s"]
                run[f"{part}_marginal_ms_per_viewer_mbit"] = (
                    round(extra_ms / extra_mbit, 2) if extra_mbit > 0 else None
                )
        runs.append(run)
        print(json.dumps(run), flush=True)
    return runs


def table(result: dict[str, Any]) -> str:
    lines = []
    if "latency" in result:
        lines += [
            "| player (Chromium) | samples | median ms | p95 ms |",
            "|---|---:|---:|---:|",
        ]
        runs = [result["latency"], *result.get("passthrough", [])]
        for run in runs:
            for name, figures in run["players"].items():
                label = name if run["codec"] == "h264" else f"{name}, {run['codec']}"
                lines.append(
                    f"| {label} | {figures['samples']} | {figures['median_ms']} "
                    f"| {figures['p95_ms']} |"
                )
    if "cost" in result:
        lines += [
            "",
            "| WHEP viewers | viewer Mbit/s | daemon ms/s | WebRTC ms/s | daemon ms/Mbit "
            "| WebRTC ms/Mbit | total ms/Mbit | marginal daemon+WebRTC ms/Mbit | transcoders "
            "| AAC→Opus ms per audio s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for run in result["cost"]:
            marginal = "–"
            if run.get("daemon_marginal_ms_per_viewer_mbit") is not None:
                marginal = (
                    f"{run['daemon_marginal_ms_per_viewer_mbit']} + "
                    f"{run['webrtc_marginal_ms_per_viewer_mbit']}"
                )
            lines.append(
                f"| {run['viewers']} | {run['viewer_mbit_per_s']} | {run['daemon_cpu_ms_per_s']} "
                f"| {run['webrtc_cpu_ms_per_s']} | {run['daemon_cpu_ms_per_viewer_mbit']} "
                f"| {run['webrtc_cpu_ms_per_viewer_mbit']} | {run['total_cpu_ms_per_viewer_mbit']} "
                f"| {marginal} | {run['transcoders']} | {run['transcode_cpu_ms_per_audio_s']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=40.0, help="latency run length")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds left out per player")
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 10, 20])
    parser.add_argument("--cost-seconds", type=float, default=20.0)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument(
        "--passthrough-codecs",
        nargs="*",
        default=["vp9", "av1"],
        choices=["vp9", "av1"],
        help="also WHEP latency of an E-RTMP source in these codecs (WHEP only)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "whep.json")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "command": " ".join(["bench/bench_whep.py", *sys.argv[1:]]),
        "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start",
        "targets": {"whep_median_ms": TARGET_MEDIAN_MS, "whep_p95_ms": TARGET_P95_MS},
    }
    if not args.skip_latency:
        result["latency"] = latency(args.seconds, args.warmup)
        print(json.dumps(result["latency"]), flush=True)
        whep = result["latency"]["players"]["whep"]
        result["whep_meets_targets"] = bool(
            whep["median_ms"] is not None
            and whep["median_ms"] <= TARGET_MEDIAN_MS
            and whep["p95_ms"] <= TARGET_P95_MS
        )
        result["passthrough"] = []
        for codec in args.passthrough_codecs:
            run = latency(args.seconds / 2, args.warmup, codec=codec, players=("whep",))
            result["passthrough"].append(run)
            print(json.dumps(run), flush=True)
    if not args.skip_cost:
        result["cost"] = cost(args.viewers, args.cost_seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()

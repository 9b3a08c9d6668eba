"""WHEP latency, publisher clock → viewer decode, and the server's cost per viewer.

    PYTHONPATH=. .venv/bin/python bench/bench_whep.py [--seconds 20] [--viewers 1 10 20] [--browser]

Starts `rtmp-ingest serve` with `[webrtc]` on loopback and publishes over RTMP
from this script (PyAV, x264 ultrafast/zerolatency, 320x180 at 30 fps, AAC):
every picture carries the publisher's wall clock (ms, 40 bits) as a row of
black/white blocks, written just before the frame is encoded. An aiortc WHEP
viewer (in this script) decodes the video and reads the blocks back: latency =
its wall clock at decode − the time in the picture (same machine, same clock),
so it spans encode, RTMP, bundle, link, packetization, SRTP over loopback,
aiortc's jitter buffer and decode — "glass to glass" minus capture and display.
`--browser` measures in headless Chromium instead (bench/whep_latency.js: the
daemon's /whep-view page, the time code read back through a canvas at each
decoded picture, so Chromium's jitter buffer, decode and compositor count too).
Prints one JSON line per run: median and p95 latency, and with N viewers the
CPU-ms of the daemon and of the WebRTC process per viewer-Mbit sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.common import free_port, wait_listening

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
BITS = 40
BLOCK = 8  #: block width (px) of one bit; 40 bits fill a 320 px row
ROWS = 16
CONFIG = """\
log_level = "warning"
[rtmp]
listen = "127.0.0.1:{port}"
[http]
listen = "127.0.0.1:{http_port}"
[hls]
enabled = false
[webrtc]
enabled = true
host_addresses = ["127.0.0.1"]
"""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def publish(url: str, seconds: float, stop: threading.Event) -> None:
    """RTMP publisher: time-coded pictures, a tone; paced like a live encoder."""
    import av

    width, height, fps = 320, 180, 30
    out = av.open(url, "w", format="flv")
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.codec_context.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "x264-params": "keyint=30:min-keyint=30:scenecut=0",
    }
    audio = out.add_stream("aac", rate=44100)
    audio.layout = "stereo"
    silence = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
    for plane in silence.planes:
        plane.update(bytes(plane.buffer_size))
    silence.sample_rate = 44100
    started = time.monotonic()
    frame_index = audio_samples = 0
    while not stop.is_set() and time.monotonic() - started < seconds:
        due = started + frame_index / fps
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamp = int(time.time() * 1000) & ((1 << BITS) - 1)
        luma = bytearray(b"\x80" * (width * height))
        row = bytearray()
        for bit in range(BITS):
            row += (b"\xeb" if stamp >> (BITS - 1 - bit) & 1 else b"\x10") * BLOCK
        for y in range(ROWS):
            luma[y * width : y * width + width] = row
        frame = av.VideoFrame(width, height, "yuv420p")
        frame.planes[0].update(bytes(luma))
        frame.planes[1].update(b"\x80" * frame.planes[1].buffer_size)
        frame.planes[2].update(b"\x80" * frame.planes[2].buffer_size)
        frame.pts = frame_index
        frame.time_base = Fraction(1, fps)
        for packet in video.encode(frame):
            out.mux(packet)
        frame_index += 1
        while audio_samples * fps < frame_index * 44100:
            silence.pts = audio_samples
            silence.time_base = Fraction(1, 44100)
            for packet in audio.encode(silence):
                out.mux(packet)
            audio_samples += 1024
    out.close()


def read_stamp(frame: object) -> int | None:
    plane = frame.planes[0]  # type: ignore[attr-defined]
    data = bytes(plane)
    line = plane.line_size
    y = ROWS // 2
    value = 0
    for bit in range(BITS):
        x = bit * BLOCK + BLOCK // 2
        value = value << 1 | (1 if data[y * line + x] > 128 else 0)
    return value


async def view(url: str, seconds: float, count: int, latencies: list[float]) -> dict:
    import httpx
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    from rtmp_ingest.webrtc import stack

    stack.restrict_host_addresses(["127.0.0.1"])
    pcs = []
    tasks = []

    async def consume(track: object, measure: bool) -> None:
        try:
            while True:
                frame = await track.recv()  # type: ignore[attr-defined]
                if measure and track.kind == "video":  # type: ignore[attr-defined]
                    now = int(time.time() * 1000) & ((1 << BITS) - 1)
                    stamp = read_stamp(frame)
                    if stamp is not None and 0 <= now - stamp < 10_000:
                        latencies.append(now - stamp)
        except MediaStreamError:
            return

    async with httpx.AsyncClient(timeout=30) as client:
        for index in range(count):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.on(
                "track",
                lambda track, m=index == 0: tasks.append(asyncio.ensure_future(consume(track, m))),
            )
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            response = await client.post(
                url, content=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
            )
            assert response.status_code == 201, response.text
            await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
            pcs.append(pc)
        await asyncio.sleep(seconds)
        for pc in pcs:
            await pc.close()
    return {}


def browser_view(url: str, seconds: float, latencies: list[float]) -> None:
    modules = REPO / ".browser" / "node_modules"
    result = subprocess.run(
        ["node", str(REPO / "bench" / "whep_latency.js"), url, str(seconds)],
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_PATH": str(modules)},
        timeout=seconds + 60,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("{"))
    latencies += json.loads(line)["latencies"]


def run(seconds: float, viewers: int, *, browser: bool = False) -> dict:
    tmp = tempfile.mkdtemp(prefix="bench-whep-")
    port, http_port = free_port(), free_port()
    config = Path(tmp) / "config.toml"
    config.write_text(CONFIG.format(port=port, http_port=http_port))
    log = open(Path(tmp) / "server.log", "w")
    server = subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "rtmp-ingest"),
            "serve",
            "--config",
            str(config),
            "--data-dir",
            tmp,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stop = threading.Event()
    try:
        wait_listening(port)
        wait_listening(http_port)
        publisher = threading.Thread(
            target=publish, args=(f"rtmp://127.0.0.1:{port}/live/bench", seconds + 30, stop)
        )
        publisher.start()
        time.sleep(3)  #: on air, the WebRTC process up
        webrtc = children(server.pid)
        latencies: list[float] = []
        before = (cpu_s(server.pid), sum(cpu_s(p) for p in webrtc), time.monotonic())
        asyncio.run(
            view(f"http://127.0.0.1:{http_port}/whep/live/bench", seconds, viewers, latencies)
        )
        after = (cpu_s(server.pid), sum(cpu_s(p) for p in webrtc), time.monotonic())
        stop.set()
        publisher.join()
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=20)
    settled = latencies[len(latencies) // 5 :]  #: the first pictures are the cached GOP
    wall = after[2] - before[2]
    return {
        "viewer": "chromium" if browser else "aiortc",
        "viewers": 1 if browser else viewers,
        "seconds": round(wall, 1),
        "samples": len(settled),
        "latency_median_ms": statistics.median(settled) if settled else None,
        "latency_p95_ms": sorted(settled)[int(len(settled) * 0.95)] if settled else None,
        "daemon_cpu_ms_per_s": round(1000 * (after[0] - before[0]) / wall, 1),
        "webrtc_cpu_ms_per_s": round(1000 * (after[1] - before[1]) / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--viewers", type=int, nargs="+", default=[1])
    parser.add_argument("--browser", action="store_true", help="measure in headless Chromium")
    args = parser.parse_args()
    if args.browser:
        print(json.dumps(run(args.seconds, 1, browser=True)), flush=True)
        return
    for count in args.viewers:
        print(json.dumps(run(args.seconds, count)), flush=True)


if __name__ == "__main__":
    main()

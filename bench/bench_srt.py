"""SRT ingest benchmarks: the TS demuxer choice, and the driver under N SRT publishers.

1. Demux (one core, no I/O): a 3 Mbit/s 720p H.264 + AAC clip (MPEG-TS made by the
   ffmpeg CLI) through
   - our sans-IO path, TS packets → PES (`ts.packets`), and all the way to the
     bundle's frames (`ts.TsMedia`: Annex B → records and length-prefixed samples);
   - PyAV's demuxer (libavformat mpegts) on a file-like, packets only: the least the
     PyAV route costs, before the same Annex B conversion and a thread hand-off per
     feed, which it would need too.
   Reported as MB/s and as CPU-ms per Mbit of the stream.
2. Load: N publishers (`ffmpeg -re -i clip.ts -c copy -f mpegts srt://...`, real time)
   into the SRT driver running in this process on a bundle registry (no outputs);
   CPU of this process (its trio thread, reader threads and libsrt's threads) per Mbit
   received, next to `srt-live-transmit` receiving the same load (SRT → UDP, one
   listener process per publisher): the reference implementation's own cost.

    PYTHONPATH=. .venv/bin/python bench/bench_srt.py [--publishers 1,10,30] [--seconds 15]
"""

from __future__ import annotations

import argparse
import io
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import av
import trio

from bench.common import free_port, table
from rtmp_ingest.bundle import Registry
from rtmp_ingest.config import SrtConfig
from rtmp_ingest.server.srt import SrtServer
from rtmp_ingest.ts import TsMedia
from rtmp_ingest.ts.packets import NEED_DATA, TsDemuxer

CLIP_SECONDS = 10
CLIP_KBPS = 3000
MESSAGE = 1316  #: SRT live payload: what the reader thread hands over at a time


def make_clip(directory: Path) -> Path:
    path = directory / "clip_3mbit.ts"
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(CLIP_SECONDS), "-c:v", "libx264", "-preset", "veryfast",
            "-b:v", f"{CLIP_KBPS - 128}k", "-maxrate", f"{CLIP_KBPS - 128}k",
            "-bufsize", f"{CLIP_KBPS}k", "-g", "60", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128k", "-f", "mpegts", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def _cpu(fn: Any, repeat: int) -> tuple[float, Any]:
    start = time.process_time()
    result = None
    for _ in range(repeat):
        result = fn()
    return (time.process_time() - start) / repeat, result


def demux_bench(clip: bytes) -> list[dict[str, Any]]:
    mbit = len(clip) * 8 / 1e6

    def ours_pes() -> int:
        demux = TsDemuxer()
        count = 0
        for pos in range(0, len(clip), MESSAGE):
            demux.receive_data(clip[pos : pos + MESSAGE])
            while demux.next_event() is not NEED_DATA:
                count += 1
        return count

    def ours_frames() -> int:
        media = TsMedia()
        count = 0
        for pos in range(0, len(clip), MESSAGE):
            count += len(media.receive(clip[pos : pos + MESSAGE]))
        return count

    def pyav_packets() -> int:
        count = 0
        with av.open(io.BytesIO(clip), format="mpegts") as container:
            for packet in container.demux():
                if packet.size:
                    count += 1
        return count

    rows = []
    for name, fn in (
        ("ours: TS → PES", ours_pes),
        ("ours: TS → bundle frames", ours_frames),
        ("PyAV mpegts demuxer → packets", pyav_packets),
    ):
        fn()  # warm up
        seconds, count = _cpu(fn, 5)
        rows.append(
            {
                "path": name,
                "items": count,
                "MB/s": round(len(clip) / seconds / 1e6, 1),
                "cpu_ms_per_mbit": round(seconds * 1000 / mbit, 3),
            }
        )
    return rows


class Host:
    def __init__(self) -> None:
        self.registry = Registry()
        self.sessions: list[Any] = []

    def feed_started(self, session: Any) -> None:
        self.sessions.append(session)

    def end_feed(self, session: Any, reason: Any) -> None:
        self.registry.end_feed(session.feed, reason, now_s=trio.current_time())


def decide(attempt: Any, *, now_s: float) -> Any:
    from rtmp_ingest.bundle import Permissions, PublishRequest

    class Permit:
        record = False
        request = PublishRequest(
            stream_path=f"{attempt.app}/{attempt.stream}",
            source_id=attempt.source_id,
            permissions=Permissions(app_multisource=True, token_multisource=True),
        )

    return Permit()


def publisher(clip: Path, url: str, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
            "-stream_loop", "-1", "-i", str(clip), "-t", str(seconds),
            "-c", "copy", "-f", "mpegts", url,
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def _proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load_ours(
    clip: Path, publishers: int, seconds: float, placement: Any = None
) -> dict[str, Any]:
    """`placement`: relays every publish to an owner instead (bench_srt_relay.py)."""
    host = Host()
    server = SrtServer(host, SrtConfig(listen="127.0.0.1:0"), decide=decide)
    server.placement = placement
    async with trio.open_nursery() as nursery:
        port = (await nursery.start(server.run))[1]
        procs = [
            publisher(clip, f"srt://127.0.0.1:{port}?streamid=live/s{i}", seconds + 3)
            for i in range(publishers)
        ]
        with trio.fail_after(20):
            while len(server.sessions) < publishers or (
                placement is not None and placement.counters["relays"] < publishers
            ):
                await trio.sleep(0.1)
        await trio.sleep(2)  # settle
        bytes0 = sum(s.bytes_in for s in server.sessions.values())
        lost0 = sum(s.statistics().get("packets_dropped", 0) for s in server.sessions.values())
        cpu0, wall0 = time.process_time(), time.monotonic()
        await trio.sleep(seconds)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        received = sum(s.bytes_in for s in server.sessions.values()) - bytes0
        dropped = sum(s.media.dropped for s in server.sessions.values())
        link_dropped = (
            sum(s.statistics().get("packets_dropped", 0) for s in server.sessions.values()) - lost0
        )
        for proc in procs:
            proc.kill()
        nursery.cancel_scope.cancel()
    for proc in procs:
        proc.wait()
    mbit = received * 8 / 1e6
    return {
        "receiver": "rtmp_ingest SRT driver",
        "publishers": publishers,
        "mbit_per_s": round(mbit / wall, 1),
        "cpu_pct": round(100 * cpu / wall, 1),
        "cpu_ms_per_mbit": round(cpu * 1000 / mbit, 3) if mbit else None,
        "frames_dropped": dropped,
        "srt_packets_dropped": link_dropped,
    }


def load_reference(clip: Path, publishers: int, seconds: float) -> dict[str, Any] | None:
    if shutil.which("srt-live-transmit") is None:
        return None
    receivers, procs, sinks = [], [], []
    for _ in range(publishers):
        port = free_port()
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sinks.append(sink)
        out = sink.getsockname()[1]
        receivers.append(
            subprocess.Popen(
                [
                    "srt-live-transmit",
                    "-q",
                    f"srt://127.0.0.1:{port}?mode=listener",
                    f"udp://127.0.0.1:{out}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        time.sleep(0.05)
        procs.append(publisher(clip, f"srt://127.0.0.1:{port}", seconds + 3))
    counted = [0]
    stop = threading.Event()

    def count() -> None:  #: what srt-live-transmit delivered, measured (UDP sinks)
        while not stop.is_set():
            ready, _, _ = select.select(sinks, [], [], 0.1)
            for sink in ready:
                counted[0] += len(sink.recv(65536))

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(3)
    cpu0 = sum(_proc_cpu_s(p.pid) for p in receivers)
    wall0, bytes0 = time.monotonic(), counted[0]
    time.sleep(seconds)
    cpu = sum(_proc_cpu_s(p.pid) for p in receivers) - cpu0
    wall = time.monotonic() - wall0
    mbit = (counted[0] - bytes0) * 8 / 1e6
    stop.set()
    counter.join()
    for proc in procs + receivers:
        proc.kill()
        proc.wait()
    for sink in sinks:
        sink.close()
    return {
        "receiver": "srt-live-transmit (SRT → UDP)",
        "publishers": publishers,
        "mbit_per_s": round(mbit / wall, 1),
        "cpu_pct": round(100 * cpu / wall, 1),
        "cpu_ms_per_mbit": round(cpu * 1000 / mbit, 3) if mbit else None,
        "frames_dropped": "-",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--publishers", default="1,10,30")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--demux-only", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp))
        data = clip.read_bytes()
        print(f"clip: {len(data) * 8 / CLIP_SECONDS / 1e6:.2f} Mbit/s, {len(data)} bytes")
        print(
            table(
                demux_bench(data),
                [("path", "path"), ("items", "items"), ("MB/s", "MB/s"),
                 ("cpu_ms_per_mbit", "CPU-ms/Mbit")],
            )
        )  # fmt: skip
        if args.demux_only:
            return
        rows = []
        for count in (int(n) for n in args.publishers.split(",")):
            rows.append(trio.run(load_ours, clip, count, args.seconds))
            reference = load_reference(clip, count, args.seconds)
            if reference:
                rows.append(reference)
            print(rows[-2:] if reference else rows[-1:], file=sys.stderr)
        print(
            table(
                rows,
                [("receiver", "receiver"), ("publishers", "publishers"),
                 ("mbit_per_s", "Mbit/s"), ("cpu_pct", "CPU %"),
                 ("cpu_ms_per_mbit", "CPU-ms/Mbit"), ("frames_dropped", "frames dropped"),
                 ("srt_packets_dropped", "SRT pkts dropped")],
            )
        )  # fmt: skip


if __name__ == "__main__":
    main()

"""WHIP ingest beside RTMP ingest: CPU per Mbit, switch time (keyframe on demand), RTMP latency.

    PYTHONPATH=. .venv/bin/python bench/bench_whip.py [--publishers 1 4 8] [--seconds 15]
        [--switches 8] [--supersedes 6] [--switch-main rtmp whip] [--latency-seconds 20]
        [--only cpu switch latency]

Every part runs `rtmp-ingest serve` (the real daemon: RTMP on loopback, `[webrtc]` on,
its aiortc process, HLS and SRT off so ingest alone is measured) and writes one JSON
line per result to bench/results/whip.jsonl, then prints a table.

- **cpu**: for each N, N WHIP publishers, then N RTMP publishers, of the same media:
  a 720p30 H.264 (Constrained Baseline, 1.45 Mbit/s CBR, 2 s GOP) + Opus (64 kbit/s)
  clip made once with ffmpeg (/tmp/rtmp_bench_media). WHIP: aiortc peer connections
  sending the clip's packets as they are (no encoder: `MediaPlayer(decode=False)`),
  all in one process (bench/whip_load.py); RTMP: ../shared/bench/rtmp_load.py
  (python publishers, paced) looping the same clip remuxed to FLV (E-RTMP Opus). Over
  the window: CPU of the daemon and of the WebRTC process (/proc) per Mbit the bundle
  received (the feeds' bytesIn), each and summed.
- **switch**: keyframe on demand. An RTMP feed (640x360) or an aiortc WHIP feed
  (`--switch-main`) is on air; a GStreamer webrtcbin spare (320x240, x264 with a 2 s
  GOP) stands by at priority -1. At a random point of the spare's GOP the feed on air
  is kicked (API DELETE): the spare's packets are flowing, it is the feed that must go
  on air from then. Measured: the kick → the first coded frame of the spare at an RTMP
  player (the frame after the new sequence header), and from the daemon's log the
  request → keyframe delay. With `webrtc.keyframe_on_demand` the server sends PLI +
  FIR at once; without, the spare goes on air at its next keyframe (uniform over the
  GOP). Then `--supersedes` times a fresh GStreamer publisher at priority 1 supersedes
  an RTMP feed: its "whip connected" (the daemon's log) → its first frame at the
  player. `BENCH_WHIP_TRACE=1` prints each takeover's log lines (where the time goes).
- **latency**: rtmp_load --latency, as bench/bench_play.py: 30 RTMP publishers of the
  3 Mbit/s clip and a player on stream 0, publish → play per frame; once alone and
  once with 4 WHIP publishers (the cpu part's) ingesting beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.common import LoadRun, rtmp_load, sleep_until, table
from bench.whip_load import (
    GOP_FRAMES,
    Daemon,
    WhipPublishers,
    bytes_in,
    cpu_s,
    ensure_media,
    gstreamer,
    wait_feeds,
)

RESULTS = REPO / "bench" / "results" / "whip.jsonl"
WARMUP_S = 4.0  #: after the last publisher is up: ICE, DTLS, first keyframes
GSTREAMER_CLIENT = REPO / "tests" / "webrtc" / "gst_whip_client.py"


def measure(daemon: Daemon, prefix: str, seconds: float, until: float | None = None) -> dict:
    webrtc = daemon.webrtc_pid()
    assert webrtc is not None
    b0, d0, w0, t0 = bytes_in(daemon, prefix), cpu_s(daemon.pid), cpu_s(webrtc), time.monotonic()
    if until is None:
        time.sleep(seconds)
    else:
        sleep_until(until)
    b1, d1, w1, t1 = bytes_in(daemon, prefix), cpu_s(daemon.pid), cpu_s(webrtc), time.monotonic()
    mbit = (b1 - b0) * 8 / 1e6
    per = (lambda cpu: round(cpu * 1000 / mbit, 2)) if mbit > 0 else (lambda cpu: None)
    return {
        "seconds": round(t1 - t0, 2),
        "ingest_mbps": round(mbit / (t1 - t0), 2),
        "daemon_cpu_ms_per_mbit": per(d1 - d0),
        "webrtc_cpu_ms_per_mbit": per(w1 - w0),
        "total_cpu_ms_per_mbit": per(d1 - d0 + w1 - w0),
        "daemon_cpu_pct": round((d1 - d0) * 100 / (t1 - t0), 1),
        "webrtc_cpu_pct": round((w1 - w0) * 100 / (t1 - t0), 1),
    }


def run_cpu(args: argparse.Namespace, ts: Path, flv: Path) -> list[dict]:
    rows = []
    with Daemon() as daemon:
        for n in args.publishers:
            prefix = f"live/whip{n}-"
            whip = WhipPublishers(daemon, n, ts, f"whip{n}-", WARMUP_S + args.seconds + 60)
            try:
                whip.wait_connected()
                wait_feeds(daemon, prefix, n)
                time.sleep(WARMUP_S)
                row = {"part": "cpu", "protocol": "whip", "publishers": n}
                row.update(measure(daemon, prefix, args.seconds))
            finally:
                whip.stop()
            rows.append(row)
            print(json.dumps(row), flush=True)
            prefix = f"live/rtmp{n}-"
            load = LoadRun(
                daemon,  # type: ignore[arg-type]
                "-n",
                str(n),
                "--seconds",
                str(args.seconds),
                "--warmup",
                str(WARMUP_S),
                "--media",
                str(flv),
                "--url-template",
                f"rtmp://127.0.0.1:{{port}}/{prefix}{{i}}?sourceId=cam",
                tag=f"-whip-bench-rtmp{n}",
            )
            start, end = load.window()
            sleep_until(start)
            row = {"part": "cpu", "protocol": "rtmp", "publishers": n}
            row.update(measure(daemon, prefix, args.seconds, until=end))
            load.result(timeout_s=args.seconds + 120)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# -- switch ----------------------------------------------------------------------------


async def _rtmp_first_new_frame(
    port: int, stream: str, ready: Any, t0_box: list[float]
) -> tuple[float, float]:
    """Plays `stream` (sourceId cam); returns when the first coded frame after a video
    sequence header different from the first one arrives (trio.current_time(), time.time())."""

    from rtmp_ingest.rtmp import NEED_DATA, ClientConnection
    from rtmp_ingest.rtmp import events as ev

    app, _, name = stream.partition("/")
    connection = await trio.open_tcp_stream("127.0.0.1", port)
    conn = ClientConnection()
    conn.connect(app, tc_url=f"rtmp://127.0.0.1:{port}/{app}")
    conn.create_stream()
    conn.play(1, name + "?sourceId=cam")
    await connection.send_all(conn.data_to_send())
    first_config: bytes | None = None
    switched = False
    try:
        while True:
            data = await connection.receive_some(65536)
            if not data:
                raise RuntimeError("the player's connection ended")
            now = trio.current_time()
            conn.receive_data(data)
            while (event := conn.next_event()) is not NEED_DATA:
                if not isinstance(event, ev.VideoData) or len(event.payload) < 2:
                    continue
                payload = event.payload
                if payload[1] == 0:  #: AVC sequence header
                    if first_config is None:
                        first_config = payload
                        ready.set()
                    elif payload != first_config and t0_box:
                        switched = True
                elif switched and payload[1] == 1:
                    return now, time.time()
            out = conn.data_to_send()
            if out:
                await connection.send_all(out)
    finally:
        await connection.aclose()


async def _one_switch(daemon: Daemon, index: int, gop_s: float, main_kind: str) -> dict:

    stream = f"live/switch-{main_kind}-{index}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if main_kind == "rtmp":
        argv = [sys.executable, "-m", "tests.tools.pyav_publish"]
        argv += [f"rtmp://127.0.0.1:{daemon.port}/{stream}?sourceId=cam", "--seconds", "120"]
        argv += ["--realtime", "--size", "640x360", "--fps", "30", "--gop", "1"]
    else:  #: an aiortc WHIP feed (its encoder's SPS differs from x264's: a new avcC)
        argv = [sys.executable, "-m", "tests.webrtc.whip_client"]
        argv += [f"{daemon.base}/whip/{stream}?sourceId=cam", "--seconds", "120"]
    main = await trio.lowlevel.open_process(
        argv,
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spare = None
    try:
        async with httpx.AsyncClient(base_url=daemon.base, timeout=15) as http:

            async def source() -> dict[str, Any] | None:
                response = await http.get(f"/api/v1/streams/{stream}/sources/cam")
                return response.json() if response.status_code == 200 else None

            with trio.fail_after(60):
                while not ((found := await source()) and found["onAir"]):
                    await trio.sleep(0.05)
            main_feed = found["onAir"]["id"]
            spare = await trio.lowlevel.open_process(
                ["/usr/bin/python3", str(GSTREAMER_CLIENT)]
                + [f"{daemon.base}/whip/{stream}?sourceId=cam&priority=-1"]
                + ["--gop", str(round(gop_s * 30)), "--seconds", "120"],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            with trio.fail_after(60):
                while True:
                    found = await source()
                    standby = found["standby"] if found else []
                    if standby and standby[0]["videoFrames"] > 45:
                        break
                    await trio.sleep(0.1)
            spare_feed = standby[0]["id"]
            ready = trio.Event()
            t0_box: list[float] = []
            result: list[tuple[float, float]] = []
            async with trio.open_nursery() as nursery:

                async def play() -> None:
                    result.append(await _rtmp_first_new_frame(daemon.port, stream, ready, t0_box))

                nursery.start_soon(play)
                with trio.fail_after(30):
                    await ready.wait()
                #: a random point of the spare's GOP
                await trio.sleep(random.uniform(0, gop_s))
                t0_box.append(trio.current_time())
                t0_wall = time.time()
                kicked = await http.delete(f"/api/v1/streams/{stream}/feeds/{main_feed}")
                kick_s = trio.current_time() - t0_box[0]
                assert kicked.status_code in (200, 204), kicked.text
                with trio.fail_after(gop_s + 10):
                    while not result:
                        await trio.sleep(0.001)
            after = await source()
            assert after is not None and after["onAir"]["id"] == spare_feed, after
            if os.environ.get("BENCH_WHIP_TRACE"):
                print(
                    json.dumps(
                        {
                            "trace": stream,
                            "kick_wall": t0_wall,
                            "player_wall": result[0][1],
                            "log": [
                                line
                                for line in daemon.log_text().splitlines()
                                if stream in line and ("active" in line or "keyframe" in line)
                            ][-3:],
                        }
                    ),
                    flush=True,
                )
            return {
                "switch_ms": round((result[0][0] - t0_box[0]) * 1000, 1),
                "kick_ms": round(kick_s * 1000, 1),
            }
    finally:
        for process in (main, spare):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()


def _connected_at(log_text: str, stream: str) -> float | None:
    """Wall time of the daemon's "whip connected" line for `stream` (ms resolution)."""
    match = re.search(
        r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO \S+: whip connected stream="
        + re.escape(stream)
        + " ",
        log_text,
        re.M,
    )
    if match is None:
        return None
    seconds = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
    return seconds + int(match.group(2)) / 1000


async def _one_supersede(daemon: Daemon, index: int, gop_s: float) -> dict:
    """A fresh GStreamer publisher at priority 1 supersedes an RTMP feed: its connection
    (the daemon's "whip connected", DTLS up, media starts) → its first frame at a player."""
    stream = f"live/supersede-{index}"
    main = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.tools.pyav_publish"]
        + [f"rtmp://127.0.0.1:{daemon.port}/{stream}?sourceId=cam", "--seconds", "120"]
        + ["--realtime", "--size", "640x360", "--fps", "30", "--gop", "1"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    taker = None
    try:
        async with httpx.AsyncClient(base_url=daemon.base, timeout=15) as http:
            with trio.fail_after(60):
                while (await http.get(f"/api/v1/streams/{stream}/sources/cam")).status_code != 200:
                    await trio.sleep(0.05)
        ready = trio.Event()
        result: list[tuple[float, float]] = []
        async with trio.open_nursery() as nursery:

            async def play() -> None:
                result.append(await _rtmp_first_new_frame(daemon.port, stream, ready, [0.0]))

            nursery.start_soon(play)
            with trio.fail_after(30):
                await ready.wait()
            #: a random point of the RTMP feed's 1 s GOP and of the newcomer's start
            await trio.sleep(random.uniform(0, gop_s))
            taker = await trio.lowlevel.open_process(
                ["/usr/bin/python3", str(GSTREAMER_CLIENT)]
                + [f"{daemon.base}/whip/{stream}?sourceId=cam&priority=1"]
                + ["--gop", str(round(gop_s * 30)), "--seconds", "120"],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            with trio.fail_after(gop_s + 30):
                while not result:
                    await trio.sleep(0.001)
        connected = _connected_at(daemon.log_text(), stream)
        assert connected is not None, "no 'whip connected' line"
        return {"switch_ms": round((result[0][1] - connected) * 1000, 1)}
    finally:
        for process in (main, taker):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()


def run_supersedes(args: argparse.Namespace) -> list[dict]:
    if not gstreamer() or not args.supersedes:
        return []
    rows = []
    gop_s = GOP_FRAMES / 30
    for on_demand in (True, False):
        with Daemon(keyframe_on_demand=on_demand, log_level="info") as daemon:
            times = [
                trio.run(_one_supersede, daemon, index, gop_s)["switch_ms"]
                for index in range(args.supersedes)
            ]
        row = {
            "part": "switch",
            "main": "rtmp",
            "case": "fresh WHIP publisher, priority 1",
            "keyframe_on_demand": on_demand,
            "spare_gop_s": gop_s,
            "switches": len(times),
            "median_ms": round(statistics.median(times), 1),
            "mean_ms": round(statistics.fmean(times), 1),
            "min_ms": min(times),
            "max_ms": max(times),
            "switch_ms": sorted(times),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def run_switches(args: argparse.Namespace) -> list[dict]:

    if not gstreamer():
        print(json.dumps({"part": "switch", "skipped": "GStreamer webrtcbin (python3-gi)"}))
        return []
    if not args.switches:
        return []
    rows = []
    gop_s = GOP_FRAMES / 30
    for main_kind, on_demand in [(k, d) for k in args.switch_main for d in (True, False)]:
        with Daemon(keyframe_on_demand=on_demand, log_level="info") as daemon:
            times, kicks = [], []
            for index in range(args.switches):
                one = trio.run(_one_switch, daemon, index, gop_s, main_kind)
                times.append(one["switch_ms"])
                kicks.append(one["kick_ms"])
            #: the daemon logs each request → keyframe delay (webrtc_link, keyframe on demand)
            delays = [
                float(m.group(1))
                for m in re.finditer(r"keyframe (\d+\.\d) ms after the request", daemon.log_text())
            ]
            row = {
                "part": "switch",
                "main": main_kind,
                "case": "standby takeover (kick)",
                "keyframe_on_demand": on_demand,
                "spare_gop_s": gop_s,
                "switches": len(times),
                "median_ms": round(statistics.median(times), 1),
                "mean_ms": round(statistics.fmean(times), 1),
                "min_ms": min(times),
                "max_ms": max(times),
                "switch_ms": sorted(times),
                #: of which: keyframe request sent → the spare's keyframe at the daemon
                "request_to_keyframe_ms": round(statistics.median(delays), 1) if delays else None,
                #: and: the kick's HTTP DELETE, sent → answered (the request goes out in it)
                "kick_http_ms": round(statistics.median(kicks), 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# -- latency ---------------------------------------------------------------------------


def run_latency(args: argparse.Namespace, ts: Path) -> list[dict]:
    rows = []
    for whip_n in (0, 4):
        with Daemon() as daemon:
            whip = None
            if whip_n:
                whip = WhipPublishers(daemon, whip_n, ts, "beside", args.latency_seconds + 180)
                whip.wait_connected()
                wait_feeds(daemon, "live/beside", whip_n)
            try:
                r = rtmp_load(
                    daemon,  # type: ignore[arg-type]
                    "-n",
                    "30",
                    "--seconds",
                    str(args.latency_seconds),
                    "--latency",
                    "--wait-quiet",
                    "10",
                    timeout_s=args.latency_seconds + 240,
                )
                whip_live = len(daemon.feeds("live/beside"))
            finally:
                if whip is not None:
                    whip.stop()
        lat = r.get("latency") or {}
        row = {
            "part": "latency",
            "rtmp_publishers": 30,
            "whip_publishers": whip_n,
            "whip_on_air_at_end": whip_live,
            "median_ms": lat.get("median_ms"),
            "p95_ms": lat.get("p95_ms"),
            "max_ms": lat.get("max_ms"),
            "frames": lat.get("frames_used"),
            "all_connected": r.get("all_connected"),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=15.0, help="cpu window per run")
    parser.add_argument("--switches", type=int, default=8, help="takeovers per mode")
    parser.add_argument(
        "--supersedes", type=int, default=6, help="supersedes by a fresh publisher per mode"
    )
    parser.add_argument(
        "--switch-main",
        nargs="+",
        choices=["rtmp", "whip"],
        default=["rtmp", "whip"],
        help="the feed on air that is kicked: an RTMP encoder or an aiortc WHIP publisher",
    )
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--only", nargs="+", choices=["cpu", "switch", "latency"])
    args = parser.parse_args()
    parts = args.only or ["cpu", "switch", "latency"]
    ts, flv = ensure_media()
    rows: list[dict] = []
    if "cpu" in parts:
        rows += run_cpu(args, ts, flv)
    if "switch" in parts:
        rows += run_switches(args)
        rows += run_supersedes(args)
    if "latency" in parts:
        rows += run_latency(args, ts)
    #: the parts not run this time keep their last rows
    kept = []
    if RESULTS.exists():
        kept = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    kept = [row for row in kept if row.get("part") not in parts]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("".join(json.dumps(row) + "\n" for row in kept + rows))
    print()
    cpu = [r for r in rows if r["part"] == "cpu"]
    if cpu:
        print(
            table(
                cpu,
                [
                    ("protocol", "ingest"),
                    ("publishers", "N"),
                    ("ingest_mbps", "Mbit/s"),
                    ("daemon_cpu_ms_per_mbit", "daemon ms/Mbit"),
                    ("webrtc_cpu_ms_per_mbit", "webrtc ms/Mbit"),
                    ("total_cpu_ms_per_mbit", "total ms/Mbit"),
                ],
            )
        )
        print()
    switch = [r for r in rows if r["part"] == "switch"]
    if switch:
        print(
            table(
                switch,
                [
                    ("case", "case"),
                    ("main", "on air before"),
                    ("keyframe_on_demand", "keyframe on demand"),
                    ("spare_gop_s", "GOP s"),
                    ("switches", "n"),
                    ("median_ms", "median ms"),
                    ("mean_ms", "mean ms"),
                    ("min_ms", "min ms"),
                    ("max_ms", "max ms"),
                    ("request_to_keyframe_ms", "request→keyframe ms"),
                    ("kick_http_ms", "kick HTTP ms"),
                ],
            )
        )
        print()
    latency = [r for r in rows if r["part"] == "latency"]
    if latency:
        print(
            table(
                latency,
                [
                    ("rtmp_publishers", "RTMP"),
                    ("whip_publishers", "WHIP beside"),
                    ("median_ms", "median ms"),
                    ("p95_ms", "p95 ms"),
                    ("max_ms", "max ms"),
                    ("frames", "frames"),
                ],
            )
        )


if __name__ == "__main__":
    main()

"""WHIP ingest cost beside RTMP ingest: server CPU-ms per Mbit, same daemon, same run.

    PYTHONPATH=. .venv/bin/python bench/bench_whip.py [--publishers 1 4] [--seconds 15]

Starts one daemon (RTMP on loopback, the WebRTC service and its aiortc process,
the WHIP routes; HLS off, so ingest alone is measured), then for each N runs N
aiortc WHIP publishers (tests/webrtc/whip_client.py: 320x240 H.264 + Opus, the
bitrate aiortc's REMB-driven encoder picks) and N RTMP publishers
(tests/tools/pyav_publish.py, realtime), one kind at a time. Over a window
after a warm-up it reads the CPU time of the daemon and of the WebRTC process
(/proc) and the media bytes the bundle received, and prints one JSON line per
run: CPU-ms per Mbit of the daemon, of the WebRTC process, and summed. The
publishers (x264 and Opus encoders) share the machine, so absolute figures
depend on it; the ratio WHIP/RTMP is the point.

Then the standby takeover (`--switches` times, with and without
`webrtc.keyframe_on_demand`): a WHIP feed on air with a spare WHIP feed at
priority -1 standing by, both with a 10 s GOP; the feed on air DELETEs its
session; measured: seconds until the spare is on air (it needs a keyframe).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GSTREAMER = Path("/usr/bin/python3").exists() and (
    subprocess.run(
        ["/usr/bin/python3", "-c", "import gi; gi.require_version('GstWebRTC', '1.0')"],
        capture_output=True,
    ).returncode
    == 0
)
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def serve(*, keyframe_on_demand: bool = True) -> None:
    """The server side, in this process: daemon + WebRTC service + WHIP routes."""
    import tempfile

    import attrs
    import trio
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve as hypercorn_serve
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from rtmp_ingest import config as config_mod
    from rtmp_ingest.api import whip
    from rtmp_ingest.bundle import Permissions, PublishRequest
    from rtmp_ingest.config import WebrtcConfig
    from rtmp_ingest.server.daemon import Daemon
    from rtmp_ingest.server.webrtc_link import WebrtcService

    @attrs.frozen
    class Permit:
        request: PublishRequest
        record: bool = False

    def decide(attempt: Any, *, now_s: float) -> Permit:
        return Permit(
            PublishRequest(
                stream_path=f"{attempt.app}/{attempt.stream}",
                source_id=attempt.source_id,
                priority=int(attempt.query.get("priority", "0") or 0),
                permissions=Permissions(app_multisource=True, token_multisource=True),
                remote_addr=attempt.remote,
            )
        )

    async def main() -> None:
        overrides = {
            "log_level": "warning",
            "rtmp": {"listen": "127.0.0.1:0", "max_connections_per_address": 1000},
            "http": {"listen": "127.0.0.1:0"},
            "hls": {"enabled": False},
            "data_dir": tempfile.mkdtemp(prefix="bench-whip-"),
        }
        daemon = Daemon(config_mod.load(None, overrides=overrides))
        service = WebrtcService(
            daemon,
            WebrtcConfig(
                enabled=True,
                host_addresses=["127.0.0.1"],
                keyframe_on_demand=keyframe_on_demand,
            ),
            decide,
        )

        async def end(request: Any) -> JSONResponse:
            """Ends the WHIP feed on air of a stream's source "cam" (what DELETE does)."""
            stats = daemon.registry.source_statistics(
                request.query_params["stream"], "cam", now_s=trio.current_time()
            )
            for session in list(service.sessions.values()):
                if stats and session.feed and session.feed.feed_id == stats.on_air_feed_id:
                    service.delete(session.location)
            return JSONResponse({})

        async def on_air(request: Any) -> JSONResponse:
            stats = daemon.registry.source_statistics(
                request.query_params["stream"], "cam", now_s=trio.current_time()
            )
            return JSONResponse(
                {
                    "on_air": stats.on_air_feed_id if stats else None,
                    "feeds": len(stats.feeds) if stats else 0,
                }
            )

        async def totals(request: Any) -> JSONResponse:
            now = trio.current_time()
            live = 0
            for path in daemon.registry.stream_paths():
                stats = daemon.registry.stream_statistics(path, now_s=now)
                if stats is not None:
                    for source in stats.sources:
                        live += sum(f.bytes_in for f in source.feeds)
            return JSONResponse(
                {
                    "bytes_in": live + daemon.metrics.bytes_in_ended,
                    "webrtc_pid": service.process_id,
                    "feeds": len(daemon.publishers),
                }
            )

        async with trio.open_nursery() as nursery:
            bound = await nursery.start(daemon.run)
            await nursery.start(service.run)
            await service.wait_ready(timeout_s=60)
            hyper = HypercornConfig()
            hyper.bind = ["127.0.0.1:0"]
            hyper.accesslog = None
            app = Starlette(
                routes=[
                    Route("/totals", totals),
                    Route("/onair", on_air),
                    Route("/end", end),
                    *whip.routes(service),
                ]
            )
            binds = await nursery.start(hypercorn_serve, app, hyper)
            print(json.dumps({"rtmp": bound.rtmp[1], "http": binds[0]}), flush=True)

    trio.run(main)


def _get(base: str, path: str) -> dict[str, Any]:
    import httpx

    return httpx.get(base + path, timeout=10).json()


def run(
    kind: str, n: int, seconds: float, ports: dict[str, Any], server_pid: int
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    clients = []
    for i in range(n):
        if kind == "whip":
            argv = [
                sys.executable,
                "-m",
                "tests.webrtc.whip_client",
                f"{ports['http']}/whip/live/{kind}{n}-{i}?sourceId=cam",
                "--seconds",
                str(seconds + 30),
                "--noise",
            ]
        else:
            argv = [
                sys.executable,
                "-m",
                "tests.tools.pyav_publish",
                f"rtmp://127.0.0.1:{ports['rtmp']}/live/{kind}{n}-{i}?sourceId=cam",
                "--seconds",
                str(seconds + 30),
                "--realtime",
                "--audio",
                "opus",
                "--size",
                "320x240",
                "--fps",
                "30",
            ]
        clients.append(
            subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        deadline = time.monotonic() + 60
        while _get(ports["http"], "/totals")["feeds"] < n and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3.0)  #: warm-up: ICE, DTLS, bitrate ramp
        first = _get(ports["http"], "/totals")
        child = first["webrtc_pid"]
        d0, c0, t0 = cpu_s(server_pid), cpu_s(child), time.monotonic()
        time.sleep(seconds)
        last = _get(ports["http"], "/totals")
        d1, c1, t1 = cpu_s(server_pid), cpu_s(child), time.monotonic()
    finally:
        for client in clients:
            client.kill()
        for client in clients:
            client.wait()
    mbit = (last["bytes_in"] - first["bytes_in"]) * 8 / 1e6
    per = (lambda cpu: round(cpu * 1000 / mbit, 2)) if mbit else (lambda cpu: None)
    return {
        "protocol": kind,
        "publishers": n,
        "ingest_mbps": round(mbit / (t1 - t0), 3),
        "daemon_cpu_ms_per_mbit": per(d1 - d0),
        "webrtc_process_cpu_ms_per_mbit": per(c1 - c0),
        "total_cpu_ms_per_mbit": per(d1 - d0 + c1 - c0),
        "feeds_at_end": last["feeds"],
    }


def switch(ports: dict[str, Any], index: int) -> float:
    """Seconds from the feed on air ending to its standby (10 s GOP) being on air."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    stream = f"live/switch{index}"
    url = f"{ports['http']}/whip/{stream}?sourceId=cam"

    def client(*extra: str) -> subprocess.Popen[bytes]:
        #: GStreamer's x264enc keeps its GOP; aiortc's encoder restarts (a keyframe) whenever
        #: its target bitrate moves, which would hide the GOP wait this measures
        argv = (
            ["/usr/bin/python3", "tests/webrtc/gst_whip_client.py", url, "--gop", "300"]
            if GSTREAMER
            else [sys.executable, "-m", "tests.webrtc.whip_client", url, "--gop", "300"]
        )
        return subprocess.Popen(
            [*argv, *extra],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def state() -> dict[str, Any]:
        return _get(ports["http"], f"/onair?stream={stream}")

    main_client = client()
    spare = None
    try:
        deadline = time.monotonic() + 60
        while state()["on_air"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first = state()["on_air"]
        url += "&priority=-1"
        spare = client("--seconds", "120")
        while state()["feeds"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)  #: the spare is connected, standing by mid-GOP
        ended = time.monotonic()
        _get(ports["http"], f"/end?stream={stream}")  #: as the publisher's DELETE would
        while state()["on_air"] in (first, None) and time.monotonic() < ended + 30:
            time.sleep(0.005)
        return time.monotonic() - ended
    finally:
        for process in (main_client, spare):
            if process is not None:
                process.kill()
                process.wait()


def run_switches(args: argparse.Namespace) -> None:
    for on_demand in (True, False):
        server = subprocess.Popen(
            [sys.executable, __file__, "serve"] + ([] if on_demand else ["--no-kf"]),
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            ports = json.loads(server.stdout.readline())
            times = sorted(switch(ports, i) for i in range(args.switches))
            print(
                json.dumps(
                    {
                        "test": "standby-takeover",
                        "keyframe_on_demand": on_demand,
                        "spare_gop_s": 10,
                        "switch_ms": [round(t * 1000) for t in times],
                        "median_ms": round(times[len(times) // 2] * 1000),
                    }
                ),
                flush=True,
            )
        finally:
            server.terminate()
            server.wait(10)


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        serve(keyframe_on_demand="--no-kf" not in sys.argv)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishers", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--switches", type=int, default=3, help="takeovers per mode (0 = skip)")
    args = parser.parse_args()
    if args.switches:
        run_switches(args)
    server = subprocess.Popen(
        [sys.executable, __file__, "serve"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        for n in args.publishers:
            for kind in ("rtmp", "whip"):
                print(json.dumps(run(kind, n, args.seconds, ports, server.pid)), flush=True)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()

"""Publish→play latency, join time and play cost: ours vs nginx-rtmp vs Node-Media-Server.

    .venv/bin/python bench/bench_play.py [--seconds 20] [--servers ours nginx nms]

Per server (fresh process per run), with ../shared/bench/rtmp_load.py --latency (python
publishers of the 3 Mbit/s clip, a python player on stream 0, frames matched by payload):
- latency at 1 and 30 publishers: median, p95, max publisher-write → player-receive;
- play → first video frame (our GOP cache vs nginx-rtmp's wait for the next keyframe);
- CPU-ms per ingest Mbit at 30 publishers with one player per stream (bench/players.py).
Prints one JSON object per run, then a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import REPO, Server, available, rtmp_load, table

PLAYERS = REPO / "bench" / "players.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--servers", nargs="+", default=["ours", "nginx", "nms"])
    parser.add_argument("--players-n", type=int, default=30)
    args = parser.parse_args()
    rows = []
    for kind in args.servers:
        if not available(kind):
            print(json.dumps({"server": kind, "skipped": "not installed"}), flush=True)
            continue
        for n in (1, 30):
            with Server(kind) as server:
                r = rtmp_load(
                    server,
                    "-n",
                    str(n),
                    "--seconds",
                    str(args.seconds),
                    "--latency",
                    "--wait-quiet",
                    "30",
                )
            lat = r.get("latency") or {}
            row = {
                "server": kind,
                "test": "latency",
                "n": n,
                "median_ms": lat.get("median_ms"),
                "p95_ms": lat.get("p95_ms"),
                "max_ms": lat.get("max_ms"),
                "first_frame_ms": lat.get("first_video_ms"),
                "frames": lat.get("frames_used"),
                "cpu_ms_per_mbit": round(r["cpu_s_per_mbit"] * 1000, 3)
                if r.get("cpu_s_per_mbit")
                else None,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
        n = args.players_n
        with Server(kind) as server:
            template = "live/s{i}?sourceId=cam{i}"
            players = subprocess.Popen(
                [
                    sys.executable,
                    str(PLAYERS),
                    "--port",
                    str(server.port),
                    "-n",
                    str(n),
                    "--seconds",
                    str(args.seconds + 3 + n * 0.05 + 6),
                    "--url-template",
                    template,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            r = rtmp_load(server, "-n", str(n), "--seconds", str(args.seconds))
            out = json.loads(players.communicate(timeout=120)[0].strip().splitlines()[-1])
        row = {
            "server": kind,
            "test": "with players",
            "n": n,
            "cpu_ms_per_mbit": round(r["cpu_s_per_mbit"] * 1000, 3)
            if r.get("cpu_s_per_mbit")
            else None,
            "cpu_pct": r.get("server_cpu_pct"),
            "players_with_video": out["players_with_video"],
            "all_connected": r.get("all_connected"),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    print()
    print(
        table(
            rows,
            [
                ("server", "server"),
                ("test", "test"),
                ("n", "N"),
                ("median_ms", "median ms"),
                ("p95_ms", "p95 ms"),
                ("max_ms", "max ms"),
                ("first_frame_ms", "play→1st frame ms"),
                ("cpu_ms_per_mbit", "CPU-ms/Mbit"),
                ("players_with_video", "players w/ video"),
            ],
        )
    )


if __name__ == "__main__":
    main()

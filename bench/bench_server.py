"""Ingest cost: our daemon vs nginx-rtmp (and Node-Media-Server), same harness, one run.

    .venv/bin/python bench/bench_server.py [--seconds 20] [--publishers 1 10 30 60]
        [--servers ours nginx] [--hold 100] [--throughput-bytes 1000000000]

For each server (fresh process per run) and each N: N python publishers of the 3 Mbit/s
clip from ../shared/bench/rtmp_load.py, each on its own stream (`/live/s{i}?sourceId=cam{i}`),
measured over a window: CPU-ms per Mbit, RSS, whether all stayed connected. Then raw
throughput (one unpaced publisher, ~1 GB, median of 3) at chunk sizes 128 and 4096, and a
hold test of `--hold` publishers. Ingest only: no players, no outputs. Prints one JSON
object per run, then a table.
"""

from __future__ import annotations

import argparse
import json

from common import Server, available, rtmp_load, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--publishers", type=int, nargs="+", default=[1, 10, 30, 60])
    parser.add_argument("--servers", nargs="+", default=["ours", "nginx"])
    parser.add_argument(
        "--hold", type=int, default=100, help="publishers for the hold test (0 = skip)"
    )
    parser.add_argument("--throughput-bytes", type=int, default=1_000_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for kind in args.servers:
        if not available(kind):
            print(json.dumps({"server": kind, "skipped": "not installed"}), flush=True)
            continue
        for n in args.publishers:
            with Server(kind) as server:
                r = rtmp_load(
                    server, "-n", str(n), "--seconds", str(args.seconds), "--wait-quiet", "30"
                )
            row = {
                "server": kind,
                "test": "load",
                "n": n,
                "cpu_ms_per_mbit": round(r["cpu_s_per_mbit"] * 1000, 3)
                if r.get("cpu_s_per_mbit")
                else None,
                "cpu_pct": r.get("server_cpu_pct"),
                "rss_mb": r.get("server_rss_MB_max"),
                "all_connected": r.get("all_connected"),
                "ingest_mbps": r.get("ingest_mbps"),
                "other_busy_cores": r.get("other_busy_cores"),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
        if args.hold:
            with Server(kind) as server:
                r = rtmp_load(server, "-n", str(args.hold), "--seconds", "10", "--stagger-ms", "30")
            row = {
                "server": kind,
                "test": "hold",
                "n": args.hold,
                "all_connected": r.get("all_connected"),
                "rss_mb": r.get("server_rss_MB_max"),
                "cpu_pct": r.get("server_cpu_pct"),
                "cpu_ms_per_mbit": round(r["cpu_s_per_mbit"] * 1000, 3)
                if r.get("cpu_s_per_mbit")
                else None,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
        for chunk in (128, 4096):
            with Server(kind) as server:
                r = rtmp_load(
                    server,
                    "--throughput",
                    str(args.throughput_bytes),
                    "--repeat",
                    str(args.repeat),
                    "--chunk-size",
                    str(chunk),
                )
            row = {
                "server": kind,
                "test": f"throughput@{chunk}",
                "mb_s": r.get("mb_per_s") or r.get("MB_per_s"),
                "cpu_pct": r.get("server_cpu_pct"),
            }
            row["raw"] = {k: v for k, v in r.items() if "mb" in k.lower() or "MB" in k}
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
                ("cpu_ms_per_mbit", "CPU-ms/Mbit"),
                ("cpu_pct", "CPU %"),
                ("rss_mb", "RSS MB"),
                ("all_connected", "all connected"),
                ("mb_s", "MB/s"),
            ],
        )
    )


if __name__ == "__main__":
    main()

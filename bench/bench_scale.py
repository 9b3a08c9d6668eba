"""More cores: publishers held at `--workers 1` and `--workers 2`, and the hand-off cost.

    PYTHONPATH=. .venv/bin/python bench/bench_scale.py [--workers 1 2] [--ladder 60 80 …]
        [--seconds 15] [--handoffs 100] [--loadgen-procs 2] [--json-out FILE]

For each worker count (a fresh `rtmp-ingest serve --workers N` per run, no outputs):
python publishers of the 3 Mbit/s clip from ../shared/bench/rtmp_load.py, one stream
each, climbing the ladder until a step fails. A step is **held** when every publisher
stayed connected the whole window and the server (the supervisor and all its workers,
summed) spent ≤ `--max-cpu-ms-per-mbit` (1.0) CPU-ms per Mbit received. Reported per
step: CPU-ms/Mbit, the server's CPU, the load generator's CPU (it shares these cores:
`loadgen_cpu_pct`), and other sessions' (`other_busy_cores`).

Then the hand-off cost: `--handoffs` sequential publishers (connect, createStream,
publish, wait for the status) against `--workers 2`; the server log says which
connections were handed over (their client port in "handed over remote=…"); the cost
per connection is the median time to publish of handed-over connections minus that of
connections that landed on their owner. Prints one JSON object per run, then tables.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from common import REPO, free_port, rtmp_load, table, wait_listening

CONFIG = """\
log_level = "info"
workers = {workers}
[rtmp]
listen = "127.0.0.1:{port}"
max_connections = 4000
max_connections_per_address = 4000
[http]
listen = "127.0.0.1:{http_port}"
[srt]
enabled = false
[bundle]
max_streams = 4096
[hls]
enabled = false
"""


class WorkersServer:
    """`rtmp-ingest serve` with `workers = N` (N = 1 is the single process)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.kind = f"ours-w{workers}"
        self.port = free_port()
        self.http_port = free_port()
        self.tmp = tempfile.mkdtemp(prefix=f"bench-scale-w{workers}-")
        self.log_path = Path(self.tmp) / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> WorkersServer:
        config = Path(self.tmp) / "config.toml"
        config.write_text(
            CONFIG.format(workers=self.workers, port=self.port, http_port=self.http_port)
        )
        exe = REPO / ".venv" / "bin" / "rtmp-ingest"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [str(exe), "serve", "--config", str(config), "--data-dir", self.tmp],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_listening(self.port, timeout_s=60)
        #: every worker must serve before the load starts (the supervisor says so)
        deadline = time.monotonic() + 60
        while self.workers > 1 and time.monotonic() < deadline:
            if "rtmp_ingest.cluster: listening" in self.log_path.read_text():
                break
            time.sleep(0.1)
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def load_step(workers: int, n: int, args: argparse.Namespace) -> dict:
    with WorkersServer(workers) as server:
        extra = ["--workers", str(args.loadgen_procs)] if args.loadgen_procs > 1 else []
        r = rtmp_load(
            server,
            "-n",
            str(n),
            "--seconds",
            str(args.seconds),
            "--stagger-ms",
            "30",
            "--wait-quiet",
            "20",
            *extra,
        )
    cpu = r.get("cpu_s_per_mbit")
    row = {
        "test": "load",
        "workers": workers,
        "n": n,
        "cpu_ms_per_mbit": round(cpu * 1000, 3) if cpu else None,
        "server_cpu_pct": r.get("server_cpu_pct"),
        "loadgen_cpu_pct": r.get("loadgen_cpu_pct"),
        "other_busy_cores": r.get("other_busy_cores"),
        "all_connected": r.get("all_connected"),
        "ingest_mbps": r.get("ingest_mbps"),
        "expected_mbps": r.get("expected_mbps"),
        "rss_mb": r.get("server_rss_MB_max"),
    }
    row["held"] = bool(
        row["all_connected"]
        and row["cpu_ms_per_mbit"] is not None
        and row["cpu_ms_per_mbit"] <= args.max_cpu_ms_per_mbit
    )
    return row


async def _publish_once(port: int, name: str) -> tuple[int, float, bool]:
    """(client port, seconds from connect to the publish status, accepted)."""
    sys.path.insert(0, str(REPO))
    from tests.tools.rtmp_client import TrioRtmpClient

    started = time.perf_counter()
    client = await TrioRtmpClient.open(port)
    local_port = client.stream.socket.getsockname()[1]
    try:
        await client.connect("live")
        stream_id = await client.create_stream()
        status = await client.publish(stream_id, f"{name}?sourceId=cam")
        elapsed = time.perf_counter() - started
        return local_port, elapsed, status is not None and "Start" in str(status.code)
    finally:
        await client.aclose()


def handoff_cost(count: int) -> dict:
    with WorkersServer(2) as server:

        async def run() -> list[tuple[int, float, bool]]:
            out = []
            for i in range(count):
                out.append(await _publish_once(server.port, f"h{i}"))
                await trio.sleep(0.02)
            return out

        results = trio.run(run)
        time.sleep(0.5)
        log = server.log_path.read_text()
    handed = {int(p) for p in re.findall(r"handed over remote=127\.0\.0\.1:(\d+)", log)}
    moved = [t * 1000 for port, t, ok in results if ok and port in handed]
    direct = [t * 1000 for port, t, ok in results if ok and port not in handed]
    row = {
        "test": "handoff",
        "workers": 2,
        "n": count,
        "handed_over": len(moved),
        "direct": len(direct),
        "failed": sum(1 for _, _, ok in results if not ok),
        "publish_ms_direct_median": round(statistics.median(direct), 2) if direct else None,
        "publish_ms_handed_median": round(statistics.median(moved), 2) if moved else None,
    }
    if moved and direct:
        row["handoff_ms"] = round(statistics.median(moved) - statistics.median(direct), 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--ladder", type=int, nargs="+", default=[60, 80, 100, 120, 140, 160, 180, 200, 240]
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--max-cpu-ms-per-mbit", type=float, default=1.0)
    parser.add_argument("--loadgen-procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--handoffs", type=int, default=100, help="0 = skip the hand-off cost")
    parser.add_argument("--json-out", default=str(REPO / "bench" / "results" / "scale.jsonl"))
    args = parser.parse_args()
    rows: list[dict] = []
    best: dict[int, int] = {}

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)
        rows.append(row)
        if args.json_out:
            with open(args.json_out, "a") as out:
                out.write(json.dumps({**row, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")

    for workers in args.workers:
        best[workers] = 0
        for n in args.ladder:
            row = load_step(workers, n, args)
            emit(row)
            if not row["held"]:
                break
            best[workers] = n
    if args.handoffs:
        emit(handoff_cost(args.handoffs))
    print()
    load = [r for r in rows if r["test"] == "load"]
    print(
        table(
            load,
            [
                ("workers", "workers"),
                ("n", "publishers"),
                ("cpu_ms_per_mbit", "CPU-ms/Mbit"),
                ("server_cpu_pct", "server CPU %"),
                ("loadgen_cpu_pct", "loadgen CPU %"),
                ("other_busy_cores", "other cores"),
                ("all_connected", "all connected"),
                ("held", "held"),
            ],
        )
    )
    print()
    for workers, n in best.items():
        print(f"workers={workers}: {n} publishers held")
    if 1 in best and 2 in best and best[1]:
        print(f"ratio 2 workers / 1 worker: {best[2] / best[1]:.2f}x (target >= 1.5x)")
    for row in rows:
        if row["test"] == "handoff":
            print(
                f"hand-off: {row.get('handoff_ms')} ms per connection "
                f"(publish median {row['publish_ms_handed_median']} ms handed over vs "
                f"{row['publish_ms_direct_median']} ms direct; {row['handed_over']} handed, "
                f"{row['direct']} direct)"
            )


if __name__ == "__main__":
    os.chdir(REPO)
    main()

"""Relay cost between two nodes (docs/spec.md §9): CPU-ms per Mbit on the relaying node.

    PYTHONPATH=. .venv/bin/python bench/bench_cluster.py [--seconds 20] [--publishers 1 10]

A real redis-server and two `rtmp-ingest serve` nodes on loopback: O owns every stream
(its leases are set in Redis before the load starts), R is the node the encoders reach.
N python publishers of the 3 Mbit/s clip (../shared/bench/rtmp_load.py), one stream each:

- `direct`: the publishers reach O; O's CPU-ms per Mbit ingested (the baseline);
- `relay-edge`: the publishers reach R with `cluster.pull = false`; R's CPU-ms per Mbit
  it received and relays to O (the relay alone);
- `relay-pull`: the same with `cluster.pull = true` (the default): R also pulls every
  source back from O for its own viewers, so it receives each Mbit twice.

Prints one JSON object per run (also written to `--json-out`), then a table. The load
generator runs on the same two cores; `other_busy_cores` says how busy the machine was
besides. `run(mode, n, seconds)` is the whole measurement, for another bench to call
(a section of bench_scale.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, free_port, rtmp_load, table, wait_listening

sys.path.insert(0, str(REPO))
from tests.cluster.redis_server import redis_server

NODE_CONFIG = """\
log_level = "warning"
data_dir = "{data}"
[rtmp]
listen = "127.0.0.1:{port}"
max_connections_per_address = 1000
[http]
listen = "127.0.0.1:{http_port}"
[srt]
enabled = false
[bundle]
max_streams = 4096
[hls]
enabled = false
[cluster]
redis = "{redis}"
node_id = "{name}"
secret = "bench-cluster-secret-0123456789"
key_prefix = "bench"
pull = {pull}
"""
#: How long the owner's leases set before the load last (it renews them once it serves).
PRESET_LEASE_MS = 600_000


class Node:
    """One cluster node process (what `common.rtmp_load` measures: `pid`, `port`, `kind`)."""

    def __init__(self, name: str, redis: str, *, pull: bool) -> None:
        self.kind = name
        self.port = free_port()
        self.http_port = free_port()
        self.tmp = tempfile.mkdtemp(prefix=f"bench-cluster-{name}-")
        config = Path(self.tmp) / "config.toml"
        config.write_text(
            NODE_CONFIG.format(
                data=self.tmp,
                port=self.port,
                http_port=self.http_port,
                redis=redis,
                name=name,
                pull="true" if pull else "false",
            )
        )
        self.process = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "rtmp-ingest"), "serve", "--config", str(config)],
            stdout=open(Path(self.tmp) / "server.log", "w"),
            stderr=subprocess.STDOUT,
        )
        wait_listening(self.port)
        time.sleep(0.5)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def preset_leases(redis_url: str, owner: str, n: int) -> None:
    """Streams live/s0..s{n-1} belong to `owner` before any publisher arrives."""
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    for i in range(n):
        subprocess.run(
            ["redis-cli", "-p", port, "SET", f"bench:lease:live/s{i}", owner]
            + ["PX", str(PRESET_LEASE_MS)],
            check=True,
            capture_output=True,
        )


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(mode: str, n: int, seconds: float) -> dict[str, object]:
    with redis_server() as redis_url:
        owner = Node("O", redis_url, pull=True)
        edge = Node("R", redis_url, pull=mode == "relay-pull")
        try:
            preset_leases(redis_url, "O", n)
            target = owner if mode == "direct" else edge
            owner_cpu_before = cpu_s(owner.pid)
            started = time.monotonic()
            r = rtmp_load(target, "-n", str(n), "--seconds", str(seconds), "--wait-quiet", "30")
            owner_cpu_pct = (cpu_s(owner.pid) - owner_cpu_before) / (time.monotonic() - started)
        finally:
            edge.stop()
            owner.stop()
    return {
        "test": mode,
        "n": n,
        "node_measured": target.kind,
        "cpu_ms_per_mbit": round(r["cpu_s_per_mbit"] * 1000, 3)
        if r.get("cpu_s_per_mbit")
        else None,
        "cpu_pct": r.get("server_cpu_pct"),
        "ingest_mbps": r.get("ingest_mbps"),
        "all_connected": r.get("all_connected"),
        "owner_cpu_pct_whole_run": round(owner_cpu_pct * 100, 1),
        "loadgen_cpu_pct": r.get("loadgen_cpu_pct"),
        "other_busy_cores": r.get("other_busy_cores"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--publishers", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--modes", nargs="+", default=["direct", "relay-edge", "relay-pull"])
    parser.add_argument("--json-out", default=str(REPO / "bench" / "results" / "cluster.jsonl"))
    args = parser.parse_args()
    rows = []
    for n in args.publishers:
        for mode in args.modes:
            row = run(mode, n, args.seconds)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.json_out:
        with open(args.json_out, "w") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)
    print(
        table(
            rows,
            [
                ("test", "test"),
                ("n", "publishers"),
                ("node_measured", "node"),
                ("cpu_ms_per_mbit", "CPU-ms/Mbit"),
                ("cpu_pct", "node CPU %"),
                ("ingest_mbps", "Mbit/s"),
                ("all_connected", "all connected"),
                ("owner_cpu_pct_whole_run", "owner CPU %"),
                ("loadgen_cpu_pct", "loadgen CPU %"),
                ("other_busy_cores", "other busy cores"),
            ],
        )
    )


if __name__ == "__main__":
    main()

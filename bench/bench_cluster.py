"""Relay cost between two nodes (docs/spec.md §9): CPU-ms per Mbit on the relaying node.

    PYTHONPATH=. .venv/bin/python bench/bench_cluster.py [--seconds 20] [--publishers 1 10]
        [--workers 2]

A real redis-server and two `rtmp-ingest serve` nodes on loopback: O owns every stream
(its leases are set in Redis before the load starts), R is the node the encoders reach.
N python publishers of the 3 Mbit/s clip (../shared/bench/rtmp_load.py), one stream each:

- `direct`: the publishers reach O; O's CPU-ms per Mbit ingested (the baseline);
- `relay-edge`: the publishers reach R with `cluster.pull = false`; R's CPU-ms per Mbit
  it received and relays to O (the relay alone);
- `relay-pull`: the same with `cluster.pull = true` (the default): R also pulls every
  source back from O for its own viewers, so it receives each Mbit twice.

With `--workers N` both nodes run `workers = N` (docs/spec.md §9: every worker is a node
O.wN / R.wN; the leases are preset to the worker of O that owns each stream there), and
the CPU measured is the node's supervisor and all its workers.

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
import urllib.request
from pathlib import Path

from common import REPO, free_port, rtmp_load, table, wait_listening

sys.path.insert(0, str(REPO))
from rtmp_ingest.cluster.node import worker_node_id
from rtmp_ingest.cluster.ownership import rendezvous_owner
from tests.cluster.redis_server import redis_server

NODE_CONFIG = """\
log_level = "warning"
workers = {workers}
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

    def __init__(self, name: str, redis: str, *, pull: bool, workers: int = 1) -> None:
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
                workers=workers,
            )
        )
        self.process = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "rtmp-ingest"), "serve", "--config", str(config)],
            stdout=open(Path(self.tmp) / "server.log", "w"),
            stderr=subprocess.STDOUT,
        )
        wait_listening(self.port)
        if workers > 1:
            self._wait_workers(workers)
        time.sleep(0.5)

    def _wait_workers(self, workers: int, timeout_s: float = 60.0) -> None:
        """Until the API lists every worker as reachable (all of them serve)."""
        url = f"http://127.0.0.1:{self.http_port}/api/v1/streams"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    listed = json.load(response).get("workers", [])
                if sum(1 for w in listed if w.get("reachable")) == workers:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"node {self.kind}: not all {workers} workers serve")

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


def preset_leases(redis_url: str, owner: str, n: int, *, workers: int = 1) -> None:
    """Streams live/s0..s{n-1} belong to `owner` (with workers: to the worker of `owner`
    that owns each stream on its machine) before any publisher arrives."""
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    for i in range(n):
        holder = owner
        if workers > 1:
            holder = worker_node_id(owner, rendezvous_owner(f"live/s{i}", range(workers)))
        subprocess.run(
            ["redis-cli", "-p", port, "SET", f"bench:lease:live/s{i}", holder]
            + ["PX", str(PRESET_LEASE_MS)],
            check=True,
            capture_output=True,
        )


def cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its children (a supervisor's live workers)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_s(child) for child in children)


def run(mode: str, n: int, seconds: float, *, workers: int = 1) -> dict[str, object]:
    with redis_server() as redis_url:
        owner = Node("O", redis_url, pull=True, workers=workers)
        edge = Node("R", redis_url, pull=mode == "relay-pull", workers=workers)
        try:
            preset_leases(redis_url, "O", n, workers=workers)
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
        "workers": workers,
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
    parser.add_argument("--workers", type=int, default=1, help="workers per node")
    parser.add_argument("--modes", nargs="+", default=["direct", "relay-edge", "relay-pull"])
    parser.add_argument("--json-out", default=str(REPO / "bench" / "results" / "cluster.jsonl"))
    args = parser.parse_args()
    rows = []
    for n in args.publishers:
        for mode in args.modes:
            row = run(mode, n, args.seconds, workers=args.workers)
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
                ("workers", "workers"),
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

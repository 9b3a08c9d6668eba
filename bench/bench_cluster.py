"""Relay and pull costs between nodes (docs/spec.md §9): CPU-ms per Mbit on one node.

    PYTHONPATH=. .venv/bin/python bench/bench_cluster.py [--seconds 20] [--publishers 1 10]
        [--workers 2] [--modes direct relay-edge relay-pull]
    PYTHONPATH=. .venv/bin/python bench/bench_cluster.py --publishers 30 --edges 2
        --modes owner-always owner-on-demand owner-on-demand-viewer

A real redis-server and two `rtmp-ingest serve` nodes on loopback: O owns every stream
(its leases are set in Redis before the load starts), R is the node the encoders reach.
N python publishers of the 3 Mbit/s clip (../shared/bench/rtmp_load.py), one stream each:

- `direct`: the publishers reach O; O's CPU-ms per Mbit ingested (the baseline);
- `relay-edge`: the publishers reach R with `cluster.pull = "never"`; R's CPU-ms per Mbit
  it received and relays to O (the relay alone);
- `relay-pull`: the same with `cluster.pull = "always"`: R also pulls every source back
  from O for its own viewers, so it receives each Mbit twice.

What the pulls cost the owner (the OWNER-MODES): O and `--edges` idle nodes E1.. with the
same `cluster.pull`, the publishers reach O, and O's CPU-ms per Mbit ingested is measured
with, beside it, O's egress to the edges (ss: bytes acknowledged on O's RTMP port), the
pulls the edges hold (their `rtmp_ingest_cluster_pulls`) and the edges' CPU:

- `owner-always`: `pull = "always"`, every edge pulls every source (N x edges plays of O);
- `owner-on-demand`: `pull = "on_demand"` (the default), nobody watches: nothing pulled;
- `owner-on-demand-viewer`: the same with one RTMP player (bench/players.py) of
  live/s0 on E1 from before the window: E1 pulls that stream's one source.

With `--workers N` both nodes run `workers = N` (docs/spec.md §9: every worker is a node
O.wN / R.wN; the leases are preset to the worker of O that owns each stream there), and
the CPU measured is the node's supervisor and all its workers.

Prints one JSON object per run (also written to `--json-out`), then a table. The load
generator (and the player) run on the same two cores; `other_busy_cores` says how busy the
machine was besides (in the owner modes the edges count in it; `busy_cores_besides_bench`
is what is left without them and the player: the kernel and other sessions). `run(mode, n, seconds)` is the whole measurement, for another bench to call
(a section of bench_scale.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import REPO, LoadRun, free_port, rtmp_load, sleep_until, table, wait_listening

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
pull = "{pull}"
"""
#: A node's start (imports, Redis, listeners) on a machine other sessions keep busy
NODE_START_TIMEOUT_S = 60.0
#: How long the owner's leases set before the load last (it renews them once it serves).
PRESET_LEASE_MS = 600_000


class Node:
    """One cluster node process (what `common.rtmp_load` measures: `pid`, `port`, `kind`)."""

    def __init__(self, name: str, redis: str, *, pull: str, workers: int = 1) -> None:
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
                pull=pull,
                workers=workers,
            )
        )
        self.process = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "rtmp-ingest"), "serve", "--config", str(config)],
            stdout=open(Path(self.tmp) / "server.log", "w"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_listening(self.port, timeout_s=NODE_START_TIMEOUT_S)
            if workers > 1:
                self._wait_workers(workers)
        except RuntimeError as exc:
            self.stop()
            log = (Path(self.tmp) / "server.log").read_text()[-2000:]
            raise RuntimeError(f"node {name} did not start: {exc}; its log: {log!r}") from None
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
        owner = Node("O", redis_url, pull="always", workers=workers)
        try:
            edge = Node(
                "R", redis_url, pull="always" if mode == "relay-pull" else "never", workers=workers
            )
        except BaseException:
            owner.stop()
            raise
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


#: The modes that measure the owner with idle edges → (cluster.pull, a player on E1)
OWNER_MODES = {
    "owner-always": ("always", False),
    "owner-on-demand": ("on_demand", False),
    "owner-on-demand-viewer": ("on_demand", True),
}
#: The owner modes' warm-up (s after the last publisher started): the edges' pulls are up
OWNER_WARMUP_S = 5.0
_SS_ACKED = re.compile(r"bytes_acked:(\d+)")
_PULLS_METRIC = re.compile(r"^rtmp_ingest_cluster_pulls\{[^}]*\} ([0-9.e+]+)$", re.M)


def sent_bytes(port: int) -> dict[str, int]:
    """Bytes acknowledged by the peer, per established TCP socket on local port `port`."""
    out = subprocess.run(
        ["ss", "-H", "-t", "-i", "-n", "state", "established", "(", "sport", "=", f":{port}", ")"],
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout
    sockets: dict[str, int] = {}
    peer = None
    for line in out.splitlines():
        if line and not line[0].isspace():
            fields = line.split()
            peer = fields[3] if len(fields) >= 4 else None
            sockets.setdefault(peer or "?", 0)
        if peer is not None and (acked := _SS_ACKED.search(line)):
            sockets[peer] = int(acked.group(1))
    return sockets


def pulls_held(node: Node) -> int:
    """The node's `rtmp_ingest_cluster_pulls` (sources it pulls from their owner now)."""
    url = f"http://127.0.0.1:{node.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        found = _PULLS_METRIC.search(response.read().decode())
    return int(float(found.group(1))) if found else 0


def run_owner(
    mode: str, n: int, seconds: float, *, edges: int = 2, wait_quiet_s: float = 30.0
) -> dict[str, object]:
    """One of the OWNER_MODES: the owner's cost of `edges` idle nodes' pulls."""
    pull, viewer = OWNER_MODES[mode]
    with redis_server() as redis_url:
        nodes: list[Node] = []  #: stopped however the run ends, even half started
        player = None
        try:
            owner = Node("O", redis_url, pull=pull)
            nodes.append(owner)
            others = []
            for i in range(edges):
                others.append(Node(f"E{i + 1}", redis_url, pull=pull))
                nodes.append(others[-1])
            preset_leases(redis_url, "O", n)
            load = LoadRun(
                owner,
                *("-n", str(n), "--seconds", str(seconds), "--wait-quiet", str(wait_quiet_s)),
                *("--warmup", str(OWNER_WARMUP_S)),
                tag=f"-{mode}",
            )
            window = load.window()
            if viewer:
                player = subprocess.Popen(
                    [sys.executable, str(REPO / "bench" / "players.py")]
                    + ["--port", str(others[0].port), "-n", "1", "--url-template", "live/s0"]
                    + ["--seconds", str(window[1] - time.time() + 1.0)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            sleep_until(window[0])
            before = _owner_sample(owner, others, player)
            sleep_until(window[1])
            after = _owner_sample(owner, others, player)
            r = load.result()
            watched = None
            if player is not None:
                out, _ = player.communicate(timeout=30)
                watched = json.loads(out.splitlines()[-1])["players_with_video"] == 1
        finally:
            if player is not None and player.poll() is None:
                player.kill()
                player.wait()
            for node in reversed(nodes):
                node.stop()
    wall = after.t - before.t
    sent = sum(b - before.sent.get(peer, 0) for peer, b in after.sent.items())
    return {
        "test": mode,
        "workers": 1,
        "n": n,
        "edges": edges,
        "node_measured": "O",
        "cpu_ms_per_mbit": round(r["cpu_s_per_mbit"] * 1000, 3)
        if r.get("cpu_s_per_mbit")
        else None,
        "cpu_pct": r.get("server_cpu_pct"),
        "ingest_mbps": r.get("ingest_mbps"),
        "owner_egress_mbps": round(sent * 8 / 1e6 / wall, 2),
        "pulls_at_start": before.pulls,
        "pulls_at_end": after.pulls,
        "edges_cpu_pct": round(100 * (after.edges_cpu - before.edges_cpu) / wall, 1),
        "viewer_got_video": watched,
        "all_connected": r.get("all_connected"),
        "loadgen_cpu_pct": r.get("loadgen_cpu_pct"),
        "player_cpu_pct": round(100 * (after.player_cpu - before.player_cpu) / wall, 2)
        if player is not None
        else None,
        "other_busy_cores": r.get("other_busy_cores"),
        #: what is left of other_busy_cores without the edges and the player: other sessions
        "busy_cores_besides_bench": round(
            (r.get("other_busy_cores") or 0.0)
            - (after.edges_cpu - before.edges_cpu + after.player_cpu - before.player_cpu) / wall,
            2,
        ),
        "quiet_wait_s": r.get("quiet_wait_s"),
    }


@dataclasses.dataclass(frozen=True)
class OwnerSample:
    """What the owner modes read at each end of the window."""

    t: float
    sent: dict[str, int]
    pulls: int
    edges_cpu: float
    player_cpu: float


def _owner_sample(
    owner: Node, others: list[Node], player: subprocess.Popen[str] | None
) -> OwnerSample:
    return OwnerSample(
        t=time.monotonic(),
        sent=sent_bytes(owner.port),
        pulls=sum(pulls_held(node) for node in others),
        edges_cpu=sum(cpu_s(node.pid) for node in others),
        player_cpu=cpu_s(player.pid) if player is not None else 0.0,
    )


RELAY_COLUMNS = [
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
]
OWNER_COLUMNS = [
    ("test", "test"),
    ("n", "publishers"),
    ("edges", "edges"),
    ("cpu_ms_per_mbit", "owner CPU-ms/Mbit"),
    ("cpu_pct", "owner CPU %"),
    ("ingest_mbps", "Mbit/s in"),
    ("owner_egress_mbps", "Mbit/s to edges"),
    ("pulls_at_start", "pulls"),
    ("pulls_at_end", "pulls at end"),
    ("edges_cpu_pct", "edges CPU %"),
    ("viewer_got_video", "viewer video"),
    ("all_connected", "all connected"),
    ("loadgen_cpu_pct", "loadgen CPU %"),
    ("player_cpu_pct", "player CPU %"),
    ("busy_cores_besides_bench", "busy cores besides"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--publishers", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--workers", type=int, default=1, help="workers per node (relay modes)")
    parser.add_argument("--edges", type=int, default=2, help="idle nodes (owner modes)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=30.0,
        help="owner modes: at most this long before each run for the machine to be idle",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["direct", "relay-edge", "relay-pull"],
        choices=["direct", "relay-edge", "relay-pull", *OWNER_MODES],
    )
    parser.add_argument(
        "--json-out",
        help="JSON lines (default bench/results/cluster.jsonl, cluster_owner.jsonl when "
        "every mode is an owner mode); the table goes beside it as .txt",
    )
    args = parser.parse_args()
    owner_only = all(mode in OWNER_MODES for mode in args.modes)
    json_out = args.json_out or str(
        REPO / "bench" / "results" / ("cluster_owner.jsonl" if owner_only else "cluster.jsonl")
    )
    rows = []
    for n in args.publishers:
        for mode in args.modes:
            if mode in OWNER_MODES:
                row = run_owner(
                    mode, n, args.seconds, edges=args.edges, wait_quiet_s=args.wait_quiet
                )
            else:
                row = run(mode, n, args.seconds, workers=args.workers)
            print(json.dumps(row), flush=True)
            rows.append(row)
    tables = []
    for columns, kind in ((RELAY_COLUMNS, False), (OWNER_COLUMNS, True)):
        chosen = [row for row in rows if (row["test"] in OWNER_MODES) == kind]
        if chosen:
            tables.append(table(chosen, columns))
    text = "\n\n".join(tables)
    print(text)
    if json_out:
        with open(json_out, "w") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)
        Path(json_out).with_suffix(".txt").write_text(text + "\n")


if __name__ == "__main__":
    main()

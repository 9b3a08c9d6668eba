"""`rtmp-ingest cluster status`: the cluster as its Redis registry shows it (docs/spec.md §9).

Nodes grouped by machine (with `workers > 1` every worker is a node MACHINE.wN of its
own: addresses, age, heartbeat, the counters each reports: streams owned, local
publishers, players, relays, pulls), then the leases: which node owns which stream,
with the sources the owner last wrote. Read only; it runs beside the nodes.
"""

from __future__ import annotations

import json
import time
from typing import Any

import attrs

from rtmp_ingest.cluster.registry import NodeInfo, open_registry
from rtmp_ingest.config import ClusterConfig

#: The node id the status command uses on the registry (it takes no lease).
STATUS_NODE_ID = "cluster-status"


async def gather(settings: ClusterConfig) -> dict[str, Any]:
    """Nodes, leases and streams per node, as plain data (the `--json` output)."""
    async with open_registry(
        settings.redis,
        node_id=STATUS_NODE_ID,
        prefix=settings.key_prefix,
        lease_s=settings.lease_s,
        timeline_keep_s=settings.timeline_keep_s,
        timeout_s=settings.redis_timeout_s,
    ) as registry:
        nodes = await registry.nodes()
        leases = await registry.leases()
        streams: dict[str, list[dict[str, Any]]] = {}
        for path, owner in sorted(leases.items()):
            timelines = await registry.timelines(path)
            streams.setdefault(owner, []).append(
                {
                    "stream": path,
                    "sources": {
                        sid: attrs.asdict(state) for sid, state in sorted(timelines.items())
                    },
                }
            )
    now = time.time()
    machines: dict[str, list[str]] = {}
    for node in sorted(nodes, key=_machine_order):
        machines.setdefault(node.machine or node.node_id, []).append(node.node_id)
    return {
        "at": now,
        "nodes": [
            {
                **attrs.asdict(node),
                "age_s": round(now - node.started_at_s, 1),
                "heartbeat_age_s": round(now - node.heartbeat_at_s, 2),
            }
            for node in nodes
        ],
        "machines": machines,
        "leases": dict(sorted(leases.items())),
        "streams_per_node": streams,
    }


def _machine_order(node: NodeInfo) -> tuple[str, int, str]:
    return (node.machine or node.node_id, -1 if node.worker is None else node.worker, node.node_id)


def render(data: dict[str, Any]) -> str:
    """The table `cluster status` prints (a machine's workers under it)."""
    machines = data.get("machines", {})
    lines = [
        f"{len(machines)} machine(s), {len(data['nodes'])} node(s), "
        f"{len(data['leases'])} stream lease(s)",
        "",
    ]
    header = (
        "MACHINE", "NODE", "RTMP", "HTTP", "UP", "BEAT", "STREAMS", "PUBS", "PLAYERS", "RELAYS",
        "PULLS",
    )  # fmt: skip
    rows = [header]
    by_id = {node["node_id"]: node for node in data["nodes"]}
    ordered = [(machine, by_id[n]) for machine, ids in machines.items() for n in ids if n in by_id]
    shown_machine = ""
    for machine, node in ordered:
        m = node["metrics"]
        rows.append(
            (
                machine if machine != shown_machine else "",
                node["node_id"],
                node["rtmp"],
                node["http"] or "-",
                f"{node['age_s']:.0f}s",
                f"{node['heartbeat_age_s']:.1f}s",
                *(
                    str(m.get(k, 0))
                    for k in ("streams", "publishers", "players", "relays", "pulls")
                ),
            )
        )
        shown_machine = machine
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    live_nodes = {node["node_id"] for node in data["nodes"]}
    for owner, streams in sorted(data["streams_per_node"].items()):
        gone = "" if owner in live_nodes else "  (node gone: the lease lapses)"
        lines += ["", f"{owner}: {len(streams)} stream(s){gone}"]
        for stream in streams:
            sources = ", ".join(
                f"{sid or '(default)'}{'' if s['live'] else ' (away)'} dts={s['last_dts_ms']}"
                for sid, s in stream["sources"].items()
            )
            lines.append(f"  {stream['stream']}  {sources or '-'}")
    return "\n".join(lines)


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True)

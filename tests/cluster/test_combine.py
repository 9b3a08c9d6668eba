"""Workers and nodes combined (docs/spec.md §9): the worker ownership of each machine
(cluster/ownership.py) in front of the node placement (cluster/node.py), as the RTMP
driver composes them (server/elsewhere.py: hand-off to the stream's worker first, then
`owner_of` there; a relay lands on any worker of the owner's machine and is handed on).

The property: whatever machines, live workers, lease holder (live or dead, holding the
stream or only its lease) and pulled copies there are, every publish of a stream —
reaching any worker of any machine, one after another — ends in the same worker of the
same machine, which then holds the stream's lease and is its machine's worker-level
owner; a relayed publish is never relayed again, and never inside its own machine.
"""

from __future__ import annotations

import functools
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.bundle import Registry
from rtmp_ingest.cluster import status
from rtmp_ingest.cluster.node import ClusterNode, sibling_worker, worker_node_id
from rtmp_ingest.cluster.ownership import LOCAL, WorkerOwnership
from rtmp_ingest.cluster.registry import NodeInfo
from rtmp_ingest.config import load
from rtmp_ingest.server.counters import Metrics
from rtmp_ingest.server.feeds import Feeds
from tests.cluster.memory_registry import MemoryStore

PATH = "live/show"
SECRET = "combine-test-secret-0123456789"


def test_a_worker_node_id_names_its_machine_and_index():
    assert worker_node_id("edge-1", 3) == "edge-1.w3"
    assert sibling_worker("edge-1.w3", machine_id="edge-1") == 3
    for other in ("edge-1", "edge-10.w3", "edge-1.w", "edge-1.w03", "edge-1.wx", "edge.w1"):
        assert sibling_worker(other, machine_id="edge-1") is None


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    machines = []
    for _ in range(draw(st.integers(1, 3))):
        count = draw(st.integers(1, 3))
        live = draw(st.sets(st.integers(0, count - 1), min_size=1))
        machines.append((count, sorted(live)))
    lease = draw(st.none() | st.tuples(st.integers(0, len(machines) - 1), st.integers(0, 2)))
    if lease is not None:
        lease = (lease[0], lease[1] % machines[lease[0]][0])
    holds = draw(st.booleans())
    #: per machine: a live worker that holds a pulled copy of the stream (index), or None
    pulled = [draw(st.none() | st.integers(0, 2)) for _ in machines]
    arrivals = draw(
        st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=4)
    )
    return {
        "machines": machines,
        "lease": lease,
        "holds": holds,
        "pulled": pulled,
        "arrivals": arrivals,
    }


def _config(machine: int) -> Any:
    return load(
        None,
        overrides={
            "cluster": {
                "redis": "redis://memory/0",
                "node_id": f"M{machine}",
                "secret": SECRET,
                "pull": False,
            }
        },
    )


async def _run(scenario: dict[str, Any]) -> list[tuple[int, int]]:
    store = MemoryStore()
    machines = scenario["machines"]
    #: machine → the table its supervisor sends (live workers, holders)
    holders: list[dict[str, int]] = [{} for _ in machines]
    ownerships: dict[tuple[int, int], WorkerOwnership] = {}
    nodes: dict[tuple[int, int], ClusterNode] = {}

    def node_id(m: int, w: int) -> str:
        return f"M{m}" if machines[m][0] == 1 else worker_node_id(f"M{m}", w)

    def table(m: int) -> None:
        for w in machines[m][1]:
            ownerships[(m, w)].update(live=machines[m][1], holders=holders[m])

    lease = scenario["lease"]
    if lease is not None:
        m, w = lease
        store.leases[PATH] = node_id(m, w)
        if w not in machines[m][1]:  #: died a moment ago: its entry has not lapsed yet
            store.nodes[node_id(m, w)] = NodeInfo(
                node_id=node_id(m, w),
                rtmp=f"m{m}:1935",
                http="",
                started_at_s=0.0,
                heartbeat_at_s=0.0,
            )
        elif scenario["holds"]:
            holders[m][PATH] = w
    for m, (_count, live) in enumerate(machines):
        pull = scenario["pulled"][m]
        if pull is not None and PATH not in holders[m] and (lease is None or lease[0] != m):
            holders[m][PATH] = live[pull % len(live)]

    async with trio.open_nursery() as nursery:
        for m, (count, live) in enumerate(machines):
            for w in live:
                ownership = ownerships[(m, w)] = WorkerOwnership(w, live=live)
                node = ClusterNode(
                    _config(m),
                    Feeds(Registry(), Metrics()),
                    machine=ownership if count > 1 else None,
                    opener=store.open,
                )
                nodes[(m, w)] = node
                await nursery.start(functools.partial(node.run, rtmp=(f"m{m}", 1935), http=None))
                assert node.node_id == node_id(m, w)
            table(m)
        if lease is not None and scenario["holds"] and lease[1] in machines[lease[0]][1]:
            nodes[lease].owned[PATH] = 0.0

        async def arrive(m: int, pick: int, *, relayed: bool) -> tuple[int, int]:
            live = machines[m][1]
            k = live[pick % len(live)]
            owner = ownerships[(m, k)].owner_of(PATH)
            w = k if owner is LOCAL else owner.worker_id  # type: ignore[union-attr]
            assert w in live, "handed to a worker that is not live"
            found = await nodes[(m, w)].owner_of(PATH, relayed=relayed)
            if found is None:
                holders[m][PATH] = w  #: its registry holds the stream: the table says so
                table(m)
                return m, w
            assert not relayed, "a relayed publish was relayed again"
            target = int(found.rtmp_host[1:])
            assert target != m, "relayed inside its own machine"
            return await arrive(target, pick + 1, relayed=True)

        served = []
        for m, pick in scenario["arrivals"]:
            served.append(await arrive(m % len(machines), pick, relayed=False))
        for m, w in served:
            assert store.leases[PATH] == node_id(m, w)
            assert ownerships[(m, w)].owner_id(PATH) == w
        nursery.cancel_scope.cancel()
    return served


@settings(deadline=None)
@given(scenarios())
def test_a_publish_reaching_any_worker_of_any_node_ends_at_the_one_owner(scenario):
    served = trio.run(_run, scenario)
    assert len(set(served)) == 1, served


def test_a_dead_workers_lease_is_moved_to_the_machines_owner_at_once():
    """Worker 0 of M0 died holding the lease (its entry has not lapsed); M0 has worker 1
    left: a publish anywhere ends at M0.w1 without waiting for the lease to lapse."""
    scenario = {
        "machines": [(2, [1]), (2, [0, 1])],
        "lease": (0, 0),
        "holds": False,
        "pulled": [None, 0],
        "arrivals": [(1, 0), (1, 1), (0, 0)],
    }
    assert trio.run(_run, scenario) == [(0, 1)] * 3


def test_cluster_status_groups_workers_under_their_machine():
    def node(node_id: str, machine: str, worker: int | None) -> dict[str, Any]:
        return {
            "node_id": node_id,
            "machine": machine,
            "worker": worker,
            "rtmp": "h:1935",
            "http": "",
            "age_s": 1.0,
            "heartbeat_age_s": 0.1,
            "metrics": {"streams": 1},
        }

    data = {
        "nodes": [node("A.w1", "A", 1), node("A.w0", "A", 0), node("B", "", None)],
        "machines": {"A": ["A.w0", "A.w1"], "B": ["B"]},
        "leases": {"live/a": "A.w1"},
        "streams_per_node": {},
    }
    lines = status.render(data).splitlines()
    assert lines[0] == "2 machine(s), 3 node(s), 1 stream lease(s)"
    rows = [line.split() for line in lines[3:6]]
    assert [r[:2] for r in rows] == [["A", "A.w0"], ["A.w1", "h:1935"], ["B", "B"]]

"""Which worker owns a stream: rendezvous (highest random weight) hashing, pure.

docs/spec.md §9: every feed and every player of one stream must meet in one
process, the stream's owner. Each (stream path, worker id) pair gets a score
from a keyed hash; the live worker with the highest score owns the path. When a
worker leaves, only the paths it owned move (each to its second-highest score);
when one joins, only the paths it now wins move to it; every worker wins about
1/N of all paths (tests/cluster/test_ownership.py proves the three).

A stream that is already held somewhere stays there: after a worker died its
streams went to the survivors, and when it comes back new connections for those
streams must still reach the worker that holds them (`overrides_for` names such
holdings). So `WorkerOwnership` keeps the supervisor's table of *holders* (every
path a live worker's registry holds) and looks it up first; rendezvous decides only
for a stream nobody holds. The holders table also tells the SRT worker whether a
stream is held elsewhere (SRT cannot be handed over, see cluster/worker.py).

With `[cluster]` this comes first (docs/spec.md §9): a connection reaches the
stream's worker on its machine, and only that worker asks the node-level placement
(cluster/node.py `ClusterNode`, whose `local_owner` is this answer); a caller gets
`LOCAL` or a `Worker(id)`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Final, Protocol

import attrs

#: Key of the score hash: fixed, so every worker (and the supervisor) agrees.
HASH_KEY: Final = b"rtmp_ingest.workers.v1"


@attrs.frozen
class Local:
    """This process owns the stream: serve it here."""


@attrs.frozen
class Worker:
    """Another worker of this machine owns the stream."""

    worker_id: int


#: The one `Local` value.
LOCAL: Final = Local()


class Ownership(Protocol):
    """What a driver asks once a connection's stream path is known."""

    def owner_of(self, stream_path: str) -> Local | Worker: ...


def score(stream_path: str, worker_id: int) -> int:
    """The rendezvous weight of `worker_id` for `stream_path` (a 64-bit integer)."""
    digest = hashlib.blake2b(
        f"{worker_id}\x00{stream_path}".encode(), digest_size=8, key=HASH_KEY
    ).digest()
    return int.from_bytes(digest, "big")


def ranking(stream_path: str, workers: Iterable[int]) -> list[int]:
    """The workers from the best owner of `stream_path` to the worst."""
    return sorted(workers, key=lambda w: (score(stream_path, w), -w), reverse=True)


def rendezvous_owner(stream_path: str, workers: Iterable[int]) -> int:
    """The worker with the highest weight for `stream_path`; ValueError if there is none."""
    best: int | None = None
    best_key = (-1, 0)
    for worker in workers:
        key = (score(stream_path, worker), -worker)
        if key > best_key:
            best, best_key = worker, key
    if best is None:
        raise ValueError("no live worker to own a stream")
    return best


def overrides_for(holders: Mapping[str, int], live: Iterable[int]) -> dict[str, int]:
    """Paths held by a live worker that is not their rendezvous owner (the supervisor's table)."""
    alive = sorted(set(live))
    if not alive:
        return {}
    return {
        path: worker
        for path, worker in holders.items()
        if worker in alive and rendezvous_owner(path, alive) != worker
    }


def _worker_set(workers: Iterable[int]) -> frozenset[int]:
    return frozenset(workers)


@attrs.define
class WorkerOwnership:
    """One worker's view: itself, the live workers, and the supervisor's holders."""

    worker_id: int
    live: frozenset[int] = attrs.field(converter=_worker_set)
    #: stream path → the live worker whose registry holds it
    holders: dict[str, int] = attrs.field(factory=dict)

    def update(self, *, live: Iterable[int], holders: Mapping[str, int]) -> None:
        """Takes the supervisor's latest table (sent whenever a worker or a holding changes)."""
        self.live = frozenset(live) | {self.worker_id}
        self.holders = dict(holders)

    def holder_of(self, stream_path: str) -> int | None:
        """The live worker that holds `stream_path`, or None."""
        holder = self.holders.get(stream_path)
        return holder if holder is not None and holder in self.live else None

    def owner_id(self, stream_path: str) -> int:
        holder = self.holder_of(stream_path)
        if holder is not None:
            return holder
        return rendezvous_owner(stream_path, self.live | {self.worker_id})

    def owner_of(self, stream_path: str) -> Local | Worker:
        owner = self.owner_id(stream_path)
        return LOCAL if owner == self.worker_id else Worker(owner)

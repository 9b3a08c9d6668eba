"""Rendezvous ownership of stream paths (docs/spec.md §9): stable, balanced, overridable."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.cluster.ownership import (
    LOCAL,
    Worker,
    WorkerOwnership,
    overrides_for,
    ranking,
    rendezvous_owner,
)

paths = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-/", min_size=1, max_size=40)
worker_sets = st.sets(st.integers(min_value=0, max_value=63), min_size=2, max_size=16)


@settings(deadline=None)  #: no timing in a pure test (the machine is shared)
@given(st.lists(paths, min_size=1, max_size=50, unique=True), worker_sets, st.data())
def test_a_worker_leaving_moves_only_its_own_streams(names, workers, data):
    leaving = data.draw(st.sampled_from(sorted(workers)))
    before = {p: rendezvous_owner(p, workers) for p in names}
    after = {p: rendezvous_owner(p, workers - {leaving}) for p in names}
    for path in names:
        if before[path] != leaving:
            assert after[path] == before[path]
        else:
            assert after[path] != leaving
            #: it goes to the path's second choice
            assert after[path] == ranking(path, workers)[1]


@settings(deadline=None)  #: no timing in a pure test (the machine is shared)
@given(st.lists(paths, min_size=1, max_size=50, unique=True), worker_sets, st.data())
def test_a_worker_joining_takes_only_streams_it_now_owns(names, workers, data):
    joining = data.draw(st.integers(min_value=64, max_value=80))
    for path in names:
        before = rendezvous_owner(path, workers)
        after = rendezvous_owner(path, workers | {joining})
        assert after in (before, joining)


@settings(deadline=None)  #: no timing in a pure test (the machine is shared)
@given(paths, worker_sets)
def test_the_owner_does_not_depend_on_the_order_workers_are_listed(path, workers):
    ordered = sorted(workers)
    assert rendezvous_owner(path, ordered) == rendezvous_owner(path, reversed(ordered))
    assert ranking(path, ordered)[0] == rendezvous_owner(path, ordered)


def test_streams_spread_evenly_over_workers():
    for count in (2, 3, 8):
        owners = Counter(rendezvous_owner(f"live/cam{i}", range(count)) for i in range(8000))
        expected = 8000 / count
        assert set(owners) == set(range(count))
        #: within 10 % of an even share (binomial sd is ~1 % here)
        assert all(abs(n - expected) < 0.1 * expected for n in owners.values()), owners


def test_every_worker_computes_the_same_owner():
    views = [WorkerOwnership(i, live={0, 1, 2}) for i in range(3)]
    for n in range(200):
        path = f"live/s{n}"
        owner = rendezvous_owner(path, [0, 1, 2])
        answers = [v.owner_of(path) for v in views]
        assert answers[owner] == LOCAL
        assert all(a == Worker(owner) for i, a in enumerate(answers) if i != owner)


def test_a_held_stream_stays_with_its_holder_when_its_owner_comes_back():
    # worker 0 died: its stream went to worker 1, which holds it now
    path = next(p for p in (f"live/s{n}" for n in range(100)) if rendezvous_owner(p, [0, 1]) == 0)
    assert rendezvous_owner(path, [1]) == 1
    table = overrides_for({path: 1}, live=[0, 1])  #: worker 0 is back
    assert table == {path: 1}
    back = WorkerOwnership(0, live={0, 1})
    back.update(live={0, 1}, holders={path: 1})
    assert back.owner_of(path) == Worker(1)
    #: once worker 1 no longer holds it, the path goes home
    back.update(live={0, 1}, holders={})
    assert back.owner_of(path) == LOCAL


def test_an_override_naming_a_dead_worker_is_ignored():
    view = WorkerOwnership(0, live={0, 1})
    view.update(live={0}, holders={"live/x": 1})
    assert view.owner_of("live/x") == LOCAL
    assert overrides_for({"live/x": 1}, live=[0]) == {}


def test_no_worker_at_all_is_an_error():
    try:
        rendezvous_owner("live/x", [])
    except ValueError:
        return
    raise AssertionError("expected ValueError")

"""The node-to-node client (cluster/relay.py) against owners that misbehave, on a MockClock:
every wait on the other node is bounded and ends in a PlacementError with the reason."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from rtmp_ingest.cluster.relay import RtmpRelay, _name
from rtmp_ingest.rtmp.address import parse_address
from rtmp_ingest.rtmp.limits import DEFAULT_LIMITS
from rtmp_ingest.server.placement import PlacementError, RemoteOwner
from tests.cluster.redis_server import free_port

TIMEOUT_S = 5.0


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def relay(port: int) -> RtmpRelay:
    return RtmpRelay(
        RemoteOwner("A", "127.0.0.1", port, ""),
        stream_path="live/show",
        query={"sourceId": "cam1"},
        limits=DEFAULT_LIMITS,
        timeout_s=TIMEOUT_S,
        max_buffer_bytes=1 << 20,
        counters={"relays": 0, "relay_bytes": 0},
    )


async def test_an_owner_that_accepts_and_never_answers_times_out(mock_clock):
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[trio.SocketStream] = []

        async def mute() -> None:
            accepted.append(await listeners[0].accept())  #: then never reads nor writes

        nursery.start_soon(mute)
        started = trio.current_time()
        with pytest.raises(PlacementError, match="did not answer in time"):
            await relay(port).open()
        assert trio.current_time() - started == pytest.approx(TIMEOUT_S)
        nursery.cancel_scope.cancel()
    for stream in accepted:
        await stream.aclose()
    await listeners[0].aclose()


async def test_an_owner_that_is_down_is_named():
    with pytest.raises(PlacementError, match=r"owner \(A\) cannot be reached"):
        await relay(free_port()).open()


async def test_an_owner_that_closes_at_once_is_a_failed_relay():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def slam() -> None:
            stream = await listeners[0].accept()
            await stream.aclose()

        nursery.start_soon(slam)
        with pytest.raises(PlacementError):
            await relay(port).open()
    await listeners[0].aclose()


@given(
    st.text(min_size=1, max_size=20).filter(
        lambda s: not set(s) & set("/?") and s.strip(".") and all(ord(c) >= 32 for c in s)
    ),
    st.dictionaries(
        st.sampled_from(["sourceId", "token", "priority", "x"]), st.text(max_size=20), max_size=4
    ),
)
def test_the_owner_reads_the_stream_and_query_the_relay_sends(stream, query):
    """What the relay puts on the wire parses back, on the owner, to the same path and query
    (a stream path as an address parsed it: no "?" in it)."""
    clean = {k: v for k, v in query.items() if not any(ord(c) < 32 for c in v)}
    app, name = _name(f"live/{stream}", clean)
    address = parse_address(app=app, tc_url=f"rtmp://127.0.0.1/{app}", name=name)
    assert address.query == clean
    assert address.path == f"live/{stream}"

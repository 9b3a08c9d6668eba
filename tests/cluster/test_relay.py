"""The node-to-node client (cluster/relay.py) against owners that misbehave, on a MockClock:
every wait on the other node is bounded and ends in a PlacementError with the reason; and
a relay that does not get to carry the publish (refused, failed, or its open cancelled
because the encoder left) closes its connection to the owner, which sees the EOF."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from rtmp_ingest.cluster.relay import RtmpRelay, _name
from rtmp_ingest.rtmp import NEED_DATA, PAUSED, ServerConnection
from rtmp_ingest.rtmp import events as ev
from rtmp_ingest.rtmp.address import parse_address
from rtmp_ingest.rtmp.limits import DEFAULT_LIMITS
from rtmp_ingest.server.placement import PlacementError, RemoteOwner
from tests.cluster.redis_server import free_port

TIMEOUT_S = 5.0
#: Bound on the owner's wait for the relay's EOF (a leaked socket would never send it).
EOF_WAIT_S = 10.0


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


class Owner:
    """A fake owner on loopback: the server-role core behind one accepted connection,
    which accepts the connect and answers `publish` as `answer` says ("refuse": an error
    status; "never": no answer) — or, with "mute", reads and never answers anything. It
    never closes the connection itself: `eof` is set when the relay closed it."""

    def __init__(self, listener: trio.SocketListener, answer: str) -> None:
        self.listener = listener
        self.answer = answer
        #: the relay is connected and has sent bytes ("mute"), or asked to publish
        self.reached = trio.Event()
        self.eof = trio.Event()

    async def serve(self) -> None:
        stream = await self.listener.accept()
        await self.listener.aclose()
        conn = ServerConnection()
        async with stream:
            with trio.fail_after(EOF_WAIT_S):
                try:
                    while data := await stream.receive_some(65536):
                        if self.answer == "mute" or self.reached.is_set():
                            self.reached.set()
                            continue  #: nothing more from this owner
                        conn.receive_data(data)
                        self._decide(conn)
                        await stream.send_all(conn.data_to_send())
                except trio.BrokenResourceError:
                    pass  #: a reset: the relay closed with our answer unread — closed too
            self.eof.set()

    def _decide(self, conn: ServerConnection) -> None:
        while (event := conn.next_event()) is not NEED_DATA and event is not PAUSED:
            if isinstance(event, ev.ConnectRequested):
                conn.accept_connect()
            elif isinstance(event, ev.PublishRequested):
                if self.answer == "refuse":
                    conn.reject_publish(event.stream_id, "Bad token.")
                self.reached.set()
                return


async def _owner(nursery: trio.Nursery, answer: str) -> tuple[Owner, int]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    owner = Owner(listeners[0], answer)
    nursery.start_soon(owner.serve)
    return owner, listeners[0].socket.getsockname()[1]


@pytest.mark.parametrize("answer", ["mute", "never"])
async def test_a_cancelled_open_closes_the_connection_to_the_owner(answer):
    """The encoder leaves (or the node shuts down) while the relay opens: right after the
    connect ("mute": the owner has the relay's first bytes), or while the owner decides
    the publish ("never"). The owner's connection is closed, not left half-open."""
    async with trio.open_nursery() as nursery:
        owner, port = await _owner(nursery, answer)
        relaying = relay(port)
        with trio.CancelScope() as scope:

            async def cancel_when_reached() -> None:
                await owner.reached.wait()
                scope.cancel()

            nursery.start_soon(cancel_when_reached)
            await relaying.open()
        assert scope.cancelled_caught
        await owner.eof.wait()
    assert relaying.counters["relays"] == 0


async def test_a_refused_publish_closes_the_connection_to_the_owner():
    async with trio.open_nursery() as nursery:
        owner, port = await _owner(nursery, "refuse")
        relaying = relay(port)
        assert await relaying.open() == "Bad token."
        await owner.eof.wait()
    assert relaying.counters["relays"] == 0


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

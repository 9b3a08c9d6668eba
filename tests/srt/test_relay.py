"""An SRT publish of a stream another process serves: relayed to the owner (docs/spec.md §9).

The SRT driver on loopback with a real libsrt caller, a real bundle registry and an
in-memory placement and relay (the shapes of `server.placement`), plus the pure
`RelayedMedia` and the workers' credentials (`WorkerRelays` → `WorkerAgent.inbound`).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from rtmp_ingest.bundle import EndReason, Frame, Media, Registry
from rtmp_ingest.cluster.hops import WorkerRelays
from rtmp_ingest.cluster.relay import HOP_KEYS
from rtmp_ingest.cluster.worker import Layout, WorkerAgent
from rtmp_ingest.config import SrtConfig
from rtmp_ingest.rtmp.limits import Limits
from rtmp_ingest.server.placement import PlacementError, RemoteOwner, Vouched
from rtmp_ingest.server.srt import SrtServer
from rtmp_ingest.server.srt_relay import RelayedMedia, message_of
from rtmp_ingest.srt import lib
from rtmp_ingest.ts import TsMedia
from tests.srt import caller
from tests.srt.test_server import Host, decide, publish, wait_until
from tests.ts.media import encode_ts

needs_libsrt = pytest.mark.skipif(
    not lib.available(), reason="libsrt not installed (apt-get install libsrt1.5-openssl)"
)

OWNER = RemoteOwner(node_id="nodeB", rtmp_host="127.0.0.1", rtmp_port=1935, http="")


class FakeRelay:
    """A `PublishRelay` that keeps what it is given."""

    def __init__(self, *, refusal: str | None = None, keep_up: bool = True) -> None:
        self.refusal = refusal
        self.keep_up = keep_up
        self.messages: list[tuple[int, int, bytes]] = []
        self.closed = False
        self.cancelled = False
        self.end = trio.Event()
        self.reason = "unpublished"

    async def open(self) -> str | None:
        return self.refusal

    async def run(self) -> str:
        try:
            await self.end.wait()
        except trio.Cancelled:
            self.cancelled = True
            raise
        return self.reason

    def forward(self, type_id: int, timestamp_ms: int, payload: bytes) -> bool:
        self.messages.append((type_id, timestamp_ms, payload))
        return self.keep_up

    def close(self) -> None:
        self.closed = True
        self.end.set()

    def owner_ends(self, reason: str) -> None:
        self.reason = reason
        self.end.set()


class FakePlacement:
    """A node that believes nodeB holds every stream; `owner_of` says what the test sets."""

    def __init__(self, relay: FakeRelay, *, owner: RemoteOwner | None = OWNER) -> None:
        self.relay = relay
        self.owner = owner
        self.error: str | None = None
        self.hold = False  #: owner_of never answers
        self.opened: list[dict[str, Any]] = []

    def remote_holder(self, stream_path: str) -> str | None:
        return "nodeB"

    async def owner_of(self, stream_path: str, *, relayed: bool = False) -> RemoteOwner | None:
        if self.hold:
            await trio.sleep_forever()
        if self.error is not None:
            raise PlacementError(self.error)
        return self.owner

    def open_relay(self, owner: RemoteOwner, **where: Any) -> FakeRelay:
        """Keeps what the driver asked (stream_path, query, app, remote)."""
        self.opened.append({"owner": owner, **where, "query": dict(where["query"])})
        return self.relay


async def start(
    nursery: trio.Nursery, placement: FakePlacement, **settings: Any
) -> tuple[SrtServer, Host, int]:
    host = Host(Registry())
    server = SrtServer(host, SrtConfig(listen="127.0.0.1:0", **settings), decide=decide)
    server.placement = placement
    bound = await nursery.start(server.run)
    return server, host, bound[1]


def expected_messages(data: bytes) -> list[tuple[int, int, bytes]]:
    return [m for m in map(message_of, TsMedia().receive(data)) if m is not None]


def relay_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("relay end")]


# -- the driver with a real caller ----------------------------------------------------


async def publish_until_ended(port: int, stream_id: str, data: bytes) -> int:
    """`publish` for a connection the server may end while the caller still sends (the
    owner's refusal, a full buffer): the send stops there, as an encoder's would."""
    sock = await trio.to_thread.run_sync(lambda: caller.connect(port, stream_id))
    try:
        await trio.to_thread.run_sync(caller.send_ts, sock, data)
    except lib.SrtError:
        pass  #: ended by the server mid-send: what the test then checks
    return sock


@pytest.fixture(autouse=True)
def _srt_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The driver's operator log lines (what the tests read)."""
    caplog.set_level(logging.INFO, "rtmp_ingest.srt")


@needs_libsrt
async def test_media_goes_to_the_owner_in_order(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    relay = FakeRelay()
    placement = FakePlacement(relay)
    server, host, port = await start(nursery, placement)
    data = encode_ts("h264", "aac")
    sock = await publish(port, "#!::r=live/show,m=publish,sourceId=cam1,token=t1", data)
    expected = expected_messages(data)
    await wait_until(lambda: len(relay.messages) >= len(expected))
    assert relay.messages == expected  #: the sequence headers first, every frame in order
    assert {m[0] for m in expected} == {8, 9}
    opened = placement.opened[0]
    assert opened["stream_path"] == "live/show"
    assert opened["query"] == {"sourceId": "cam1", "token": "t1"}
    assert opened["remote"].startswith("127.0.0.1:")  #: the encoder's address, for the owner
    assert opened["protocol"] == "srt"  #: and its protocol: the owner shows an SRT source
    assert not host.started  #: no local feed: the owner has it
    assert host.registry.stream_statistics("live/show", now_s=0.0) is None
    caller.close(sock)
    await wait_until(lambda: not server.sessions)
    assert relay.closed
    assert any("protocol=srt" in line and "owner=nodeB" in line for line in relay_lines(caplog))


@needs_libsrt
async def test_the_owners_refusal_ends_the_connection(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    relay = FakeRelay(refusal="Bad token.")
    server, _host, port = await start(nursery, FakePlacement(relay))
    sock = await publish_until_ended(port, "live/show?sourceId=cam1", encode_ts("h264"))
    await wait_until(lambda: server.connections_total == 1 and not server.sessions)
    caller.close(sock)
    (line,) = relay_lines(caplog)
    assert "stream=live/show sourceId='cam1' protocol=srt remote=127.0.0.1:" in line
    assert line.endswith("owner=nodeB: refused by the owner: Bad token.")
    assert not relay.messages


@needs_libsrt
async def test_the_owner_ending_the_relay_ends_the_connection(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    relay = FakeRelay()
    server, _host, port = await start(nursery, FakePlacement(relay))
    sock = await publish(port, "live/show?sourceId=cam1", encode_ts("h264"))
    await wait_until(lambda: bool(relay.messages))
    relay.owner_ends("Superseded by a newer feed.")
    await wait_until(lambda: not server.sessions)
    caller.close(sock)
    assert relay_lines(caplog)[0].endswith("owner=nodeB: Superseded by a newer feed.")


@needs_libsrt
async def test_an_owner_that_does_not_keep_up_ends_the_connection(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    relay = FakeRelay(keep_up=False)
    server, _host, port = await start(nursery, FakePlacement(relay))
    sock = await publish_until_ended(port, "live/show?sourceId=cam1", encode_ts("h264", "aac"))
    await wait_until(lambda: server.connections_total == 1 and not server.sessions)
    caller.close(sock)
    assert "does not keep up" in relay_lines(caplog)[0]
    assert relay.closed


@needs_libsrt
async def test_media_waiting_for_the_owner_is_bounded(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    placement = FakePlacement(FakeRelay())
    placement.hold = True
    server, _host, port = await start(nursery, placement)
    server.relay_backlog_bytes = 2000
    sock = await publish_until_ended(port, "live/show?sourceId=cam1", encode_ts("h264", "aac"))
    await wait_until(lambda: server.connections_total == 1 and not server.sessions)
    caller.close(sock)
    assert "did not answer before 2000 bytes" in relay_lines(caplog)[0]


@needs_libsrt
async def test_an_unreachable_registry_ends_the_connection_with_why(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    placement = FakePlacement(FakeRelay())
    placement.error = "The cluster registry cannot be reached; try again later."
    server, _host, port = await start(nursery, placement)
    sock = await publish_until_ended(port, "live/show?sourceId=cam1", encode_ts("h264"))
    await wait_until(lambda: server.connections_total == 1 and not server.sessions)
    caller.close(sock)
    assert relay_lines(caplog)[0].endswith("refused: " + placement.error)


@needs_libsrt
async def test_served_here_after_all(nursery: trio.Nursery) -> None:
    """The holder let go before the session asked: an ordinary local feed, nothing lost."""
    placement = FakePlacement(FakeRelay(), owner=None)
    server, host, port = await start(nursery, placement)
    data = encode_ts("h264", "aac")
    sock = await publish(port, "live/show?sourceId=cam1", data)
    await wait_until(lambda: bool(host.started))
    session = host.started[0]
    expected = TsMedia().receive(data)
    registry = host.registry
    await wait_until(
        lambda: (
            registry.feed_statistics(session.feed, now_s=trio.current_time()).frames_in
            == len(expected)
        )
    )
    assert not placement.opened
    caller.close(sock)
    await wait_until(lambda: bool(host.ended))
    assert not server.sessions


@needs_libsrt
async def test_shutdown_closes_a_relayed_publish(nursery: trio.Nursery) -> None:
    relay = FakeRelay()
    server, _host, port = await start(nursery, FakePlacement(relay))
    sock = await publish(port, "live/show?sourceId=cam1", encode_ts("h264"))
    await wait_until(lambda: bool(relay.messages))
    server.stop_accepting()
    server.kick_all(EndReason.SHUTDOWN, "Server shutting down.")
    await wait_until(lambda: not server.sessions)
    caller.close(sock)
    assert relay.cancelled and relay.closed  #: the relay's run is cancelled, then closed


# -- the media, pure ------------------------------------------------------------------


def _frame(track: str, media: Media, dts: int, size: int = 10, *, config: bool = False) -> Frame:
    return Frame(track, media, "h264" if media is Media.VIDEO else "aac", dts, bytes(size), config)


def test_backlog_goes_first_then_frames_in_order() -> None:
    media = RelayedMedia(max_backlog_bytes=1000)
    early = [_frame("video0", Media.VIDEO, 0, config=True), _frame("audio0", Media.AUDIO, 0)]
    assert media.push(early) is None
    relay = FakeRelay()
    assert media.attach(relay) is None
    assert (
        media.push([_frame("video0", Media.VIDEO, 40), _frame("audio1", Media.AUDIO, 40)]) is None
    )
    assert [(t, ts) for t, ts, _ in relay.messages] == [(9, 0), (8, 0), (9, 40)]
    assert media.backlog == [] and media.backlog_bytes == 0


def test_backlog_is_bounded() -> None:
    media = RelayedMedia(max_backlog_bytes=25)
    assert media.push([_frame("video0", Media.VIDEO, 0, 20)]) is None
    assert media.push([_frame("video0", Media.VIDEO, 40, 20)]) is not None


def test_a_full_relay_buffer_is_reported() -> None:
    media = RelayedMedia(max_backlog_bytes=1000)
    media.attach(FakeRelay(keep_up=False))
    assert media.push([_frame("video0", Media.VIDEO, 0)]) == (
        "The stream's owner does not keep up; reconnect."
    )


# -- workers: the credentials the holder's RTMP driver accepts -----------------------


def _agent(worker_id: int, secret: str = "s3cret") -> WorkerAgent:
    layout = Layout(
        run_dir="/nonexistent", worker_id=worker_id, count=2, hop_secret=secret, srt=True
    )
    return WorkerAgent(layout)


async def test_worker_relay_credentials_are_accepted_and_stripped_by_another_worker() -> None:
    sender = _agent(0)
    sender.held_elsewhere = lambda stream_path: 1  # type: ignore[method-assign]
    relays = WorkerRelays(
        sender, rtmp=("0.0.0.0", 1935), limits=Limits(), timeout_s=1.0, max_buffer_bytes=1000
    )
    assert relays.remote_holder("live/show") == "worker1"
    owner = await relays.owner_of("live/show")
    assert owner == RemoteOwner("worker1", "127.0.0.1", 1935, "")
    relay = relays.open_relay(
        owner,
        stream_path="live/show",
        query={"sourceId": "cam1"},
        app="live",
        remote="10.0.0.9:5000",
        protocol="srt",
    )
    query = relay.query
    assert set(query) >= HOP_KEYS
    assert _agent(1).inbound("live/show", query, "127.0.0.1:4000") == (
        {"sourceId": "cam1"},
        Vouched("10.0.0.9:5000", protocol="srt"),
    )
    #: another run's secret, or another stream, vouches for nothing (the keys still go)
    assert _agent(1, "other").inbound("live/show", query, "127.0.0.1:4000")[1] is None
    assert _agent(1).inbound("live/other", query, "127.0.0.1:4000") == ({"sourceId": "cam1"}, None)


async def test_a_stream_no_other_worker_holds_is_served_here() -> None:
    sender = _agent(0)
    sender.held_elsewhere = lambda stream_path: None  # type: ignore[method-assign]
    relays = WorkerRelays(
        sender, rtmp=("127.0.0.1", 1935), limits=Limits(), timeout_s=1.0, max_buffer_bytes=1000
    )
    assert relays.remote_holder("live/show") is None
    assert await relays.owner_of("live/show") is None

"""The RTMP driver over in-memory streams with a MockClock: cancellation, goodbyes, shutdown.

Server-to-client bytes go in lockstep: a peer that does not read blocks the server's
writes at once, so
these tests reach the states a stalled encoder or player puts a session in, with no
socket and no real time: the clock jumps whenever every task waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from rtmp_ingest import config as config_mod
from rtmp_ingest.app import App
from rtmp_ingest.bundle import EndReason
from rtmp_ingest.rtmp import events as ev
from rtmp_ingest.server import listener as listener_mod
from rtmp_ingest.server import rtmp_play
from rtmp_ingest.server.rtmp import RtmpSession
from tests.tools.rtmp_client import TrioRtmpClient

AVC_CONFIG = bytes.fromhex("1700000000014d401effe1000967") + b"\x00" * 8
AVC_KEY = bytes.fromhex("1701000000") + b"\x00\x00\x00\x05\x65\x88\x84\x00\x00"
#: a 64 KiB inter frame: a few of these fill any peer that does not read
AVC_INTER = bytes.fromhex("2701000000") + (65536).to_bytes(4, "big") + b"\x41" + b"\x00" * 65535


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
async def daemon(tmp_path: Any, nursery: trio.Nursery) -> AsyncIterator[App]:
    config = config_mod.load(
        None,
        overrides={
            "data_dir": str(tmp_path),
            "rtmp": {"goodbye_s": 2.0, "write_timeout_s": 10.0, "listen": "127.0.0.1:0"},
        },
    )
    daemon = App(config)
    daemon.open_auth()
    await nursery.start(daemon.feeds.run)
    await nursery.start(daemon.rtmp.run)
    yield daemon


def connect_session(daemon: App) -> tuple[TrioRtmpClient, Any]:
    """A session served in the daemon's connections nursery; the client's stream."""
    #: client → server buffered (an encoder's writes rarely block); server → client in
    #: lockstep: a client that does not read blocks the server's write at once
    up_send, up_receive = trio.testing.memory_stream_one_way_pair()
    down_send, down_receive = trio.testing.lockstep_stream_one_way_pair()
    client_end = trio.StapledStream(up_send, down_receive)
    server_end = trio.StapledStream(down_send, up_receive)
    assert daemon.rtmp._connections is not None
    daemon.rtmp._connections.start_soon(lambda: daemon.rtmp.handle(server_end, secure=False))
    return TrioRtmpClient(client_end), server_end  # type: ignore[arg-type]


async def publish(daemon: App, name: str) -> tuple[TrioRtmpClient, int]:
    client, _ = connect_session(daemon)
    await client.connect("live")
    stream_id = await client.create_stream()
    status = await client.publish(stream_id, name)
    assert status.code == "NetStream.Publish.Start"
    client.conn.send_video(stream_id, 0, AVC_CONFIG)
    client.conn.send_video(stream_id, 0, AVC_KEY)
    await client.flush()
    return client, stream_id


def session_of(daemon: App, stream_path: str) -> RtmpSession:
    return next(s for s in daemon.sessions if s.stream_path == stream_path)


async def read_all(client: TrioRtmpClient, nbytes: int = 65536) -> list[Any]:
    """Reads (nbytes at a time) until the server closes; the events the client parsed."""
    events: list[Any] = []
    while True:
        data = await client.stream.receive_some(nbytes)
        client.conn.receive_data(data)
        while True:
            event = client.conn.next_event()
            if event is ev.NEED_DATA or isinstance(event, ev.ConnectionClosed):
                break
            events.append(event)
        if not data:
            return events


async def test_a_kicked_publisher_that_reads_slowly_gets_the_whole_status(
    mock_clock: trio.testing.MockClock, daemon: App
) -> None:
    client, _stream_id = await publish(daemon, "a")
    session = session_of(daemon, "live/a")
    session.kick(EndReason.KICKED, "Your feed was stopped by the server operator.")
    # ten bytes a read: every write of the goodbye is partial, none may be cut short
    events = await read_all(client, nbytes=10)
    statuses = [e for e in events if isinstance(e, ev.Status)]
    assert [s.description for s in statuses] == ["Your feed was stopped by the server operator."]
    assert not daemon.publishers


async def test_the_goodbye_to_a_peer_that_never_reads_is_bounded(
    mock_clock: trio.testing.MockClock, daemon: App
) -> None:
    _client, _stream_id = await publish(daemon, "a")
    session = session_of(daemon, "live/a")
    started = trio.current_time()
    session.kick(EndReason.KICKED, "Your feed was stopped by the server operator.")
    with trio.fail_after(30):
        while daemon.sessions:
            await trio.sleep(0.01)
    elapsed = trio.current_time() - started
    assert daemon.config.rtmp.goodbye_s <= elapsed < daemon.config.rtmp.goodbye_s + 0.5
    assert not daemon.publishers


async def test_a_kick_while_a_write_to_a_player_is_blocked_ends_within_the_goodbye(
    mock_clock: trio.testing.MockClock, daemon: App
) -> None:
    publisher, stream_id = await publish(daemon, "a")
    player, _ = connect_session(daemon)
    await player.connect("live")
    play_id = await player.create_stream()
    await player.play(play_id, "a")
    await player.wait_for(lambda e: isinstance(e, ev.Status) and "Start" in e.code)
    # the player stops reading; the publisher goes on until the player's writes block
    session = next(s for s in daemon.sessions if s.feed is not None)
    player_session = next(s for s in daemon.sessions if s.player is not None)
    for ts in range(40, 40 * 40, 40):
        publisher.conn.send_video(stream_id, ts, AVC_INTER)
        await publisher.flush()
        if player_session._writing:
            break
    assert player_session._writing, "the player's write never blocked"
    started = trio.current_time()
    player_session.kick(EndReason.SHUTDOWN, "Server shutting down.")
    with trio.fail_after(30):
        while player_session in daemon.sessions:
            await trio.sleep(0.01)
    # not the 10 s write timeout: the goodbye's 2 s bound holds during a blocked write
    assert trio.current_time() - started < daemon.config.rtmp.goodbye_s + 0.5
    assert session in daemon.sessions  # the publisher is undisturbed


async def test_shutdown_with_twenty_stalled_players_ends_within_the_deadline(
    mock_clock: trio.testing.MockClock, daemon: App
) -> None:
    publisher, stream_id = await publish(daemon, "a")
    players = []
    for _ in range(20):
        player, _end = connect_session(daemon)
        await player.connect("live")
        play_id = await player.create_stream()
        await player.play(play_id, "a")
        await player.wait_for(lambda e: isinstance(e, ev.Status) and "Start" in e.code)
        players.append(player)
    # nobody reads any more; the publisher's frames stall every player's writes
    for ts in range(40, 40 * 10, 40):
        publisher.conn.send_video(stream_id, ts, AVC_INTER)
        with trio.move_on_after(1):
            await publisher.flush()
    stalled = [s for s in daemon.sessions if s.player is not None and s._writing]
    assert len(stalled) == 20
    started = trio.current_time()
    await daemon.rtmp.drain()
    assert trio.current_time() - started <= listener_mod.SHUTDOWN_TIMEOUT_S + 0.1
    with trio.fail_after(1):
        while daemon.sessions:
            await trio.sleep(0.01)


async def test_a_republish_on_the_same_connection_after_unpublish_is_accepted(
    mock_clock: trio.testing.MockClock, daemon: App
) -> None:
    client, stream_id = await publish(daemon, "a")
    client.conn.unpublish(stream_id, "a")
    await client.flush()
    stream_id = await client.create_stream()  #: reads the server's answers meanwhile
    assert not daemon.publishers
    status = await client.publish(stream_id, "a")
    assert status.code == "NetStream.Publish.Start", status.description
    client.conn.send_video(stream_id, 1000, AVC_CONFIG)
    client.conn.send_video(stream_id, 1000, AVC_KEY)
    await client.flush()
    assert len(daemon.publishers) == 1


def connect_socket_session(daemon: App) -> TrioRtmpClient:
    """A session on a real socket pair (the eager delivery path needs a descriptor)."""
    a, b = trio.socket.socketpair()
    assert daemon.rtmp._connections is not None
    server_end = trio.SocketStream(b)
    daemon.rtmp._connections.start_soon(lambda: daemon.rtmp.handle(server_end, secure=False))
    return TrioRtmpClient(trio.SocketStream(a))


async def feed_for(client: TrioRtmpClient, stream_id: int, start_ms: int, seconds: float) -> None:
    """Sends a keyframe then inter frames every 40 ms for `seconds` (mock time)."""
    client.conn.send_video(stream_id, start_ms, AVC_CONFIG)
    client.conn.send_video(stream_id, start_ms, AVC_KEY)
    for n in range(1, int(seconds / 0.04)):
        client.conn.send_video(stream_id, start_ms + 40 * n, AVC_INTER[:200])
        await client.flush()
        await trio.sleep(0.04)


async def test_an_rtmp_player_stays_through_a_reconnect_inside_grace(
    mock_clock: trio.testing.MockClock, tmp_path: Any, nursery: trio.Nursery
) -> None:
    # play_wait_s shorter than the time the player has been fed eagerly: the idle wait
    # must count from the last frame delivered, not from the task's last wakeup
    config = config_mod.load(
        None,
        overrides={
            "data_dir": str(tmp_path),
            "rtmp": {"play_wait_s": 2.0, "listen": "127.0.0.1:0"},
        },
    )
    daemon = App(config)
    daemon.open_auth()
    await nursery.start(daemon.feeds.run)
    await nursery.start(daemon.rtmp.run)

    async def publish_on_socket() -> tuple[TrioRtmpClient, int]:
        client = connect_socket_session(daemon)
        await client.connect("live")
        stream_id = await client.create_stream()
        assert (await client.publish(stream_id, "a")).code == "NetStream.Publish.Start"
        return client, stream_id

    first, first_id = await publish_on_socket()
    player = connect_socket_session(daemon)
    await player.connect("live")
    play_id = await player.create_stream()
    await player.play(play_id, "a")
    video_after: list[float] = []

    async def keep_reading() -> None:
        while not player.closed:
            await player._read_once()
            for event in player.events:
                if isinstance(event, ev.VideoData):
                    video_after.append(trio.current_time())
            player.events.clear()

    nursery.start_soon(keep_reading)
    await feed_for(first, first_id, 0, 3.0)
    await first.aclose()  #: the encoder drops; the source waits in grace (5 s)
    await trio.sleep(1.5)
    second, second_id = await publish_on_socket()
    reconnected_at = trio.current_time()
    await feed_for(second, second_id, 10_000, 3.0)
    assert not player.closed, "the RTMP player was ended during the reconnect"
    assert any(t > reconnected_at + 1.0 for t in video_after)
    assert daemon.rtmp._connections is not None
    daemon.rtmp._connections.cancel_scope.cancel()


async def test_an_output_failing_on_one_stream_is_contained(
    mock_clock: trio.testing.MockClock, daemon: App, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def recorder_on_event(event: Any) -> None:
        if event.stream_path == "live/bad":
            raise OSError(36, "File name too long")
        seen.append(event.stream_path)

    daemon.feeds._sinks = [
        (n, recorder_on_event if n == "record" else h) for n, h in daemon.feeds._sinks
    ]
    _bad, _ = await publish(daemon, "bad")
    _good, _ = await publish(daemon, "good")
    with trio.fail_after(5):
        while "live/good" not in seen:
            await trio.sleep(0.01)
    assert len(daemon.publishers) == 2  # both feeds still publish
    assert daemon.metrics.output_errors["record"] >= 1
    errors = [r for r in caplog.records if "output error" in r.getMessage()]
    assert len(errors) == 1 and "output=record stream=live/bad" in errors[0].getMessage()


async def paused_player(daemon: App) -> TrioRtmpClient:
    player, _ = connect_session(daemon)
    await player.connect("live")
    play_id = await player.create_stream()
    await player.play(play_id, "a")
    await player.wait_for(lambda e: isinstance(e, ev.Status) and "Start" in e.code)
    player.conn.call("pause", None, True, 0.0, stream_id=play_id, transaction_id=0)
    await player.flush()
    await player.wait_for(lambda e: isinstance(e, ev.Status) and e.code == "NetStream.Pause.Notify")
    return player


async def test_a_paused_player_that_stops_reading_is_dropped_after_the_write_timeout(
    mock_clock: trio.testing.MockClock, daemon: App
) -> None:
    await publish(daemon, "a")
    await paused_player(daemon)  # and never reads again
    started = trio.current_time()
    with trio.fail_after(60):
        while any(s.player is not None for s in daemon.sessions):
            await trio.sleep(0.1)
    timeout_s = daemon.config.rtmp.write_timeout_s
    assert trio.current_time() - started <= timeout_s + rtmp_play.PAUSED_PING_INTERVAL_S + 1


async def test_a_paused_player_that_keeps_reading_stays(
    mock_clock: trio.testing.MockClock, daemon: App, nursery: trio.Nursery
) -> None:
    await publish(daemon, "a")
    player = await paused_player(daemon)

    async def keep_reading() -> None:
        while not player.closed:
            await player._read_once()

    nursery.start_soon(keep_reading)
    # several ping rounds past the write timeout (the publisher's idle timeout is 30 s)
    await trio.sleep(25)
    assert any(s.player is not None for s in daemon.sessions)
    assert not player.closed


async def stranger_holding(daemon: App, nbytes: int) -> TrioRtmpClient:
    """A connection past the handshake that sends `nbytes` of a command it never finishes."""
    client, _ = connect_session(daemon)
    await client.connect("live")
    client.conn.send_raw_message(3, 0, 20, 0, b"\x02" + b"x" * (nbytes + 1000))
    await client.stream.send_all(client.conn.data_to_send()[:nbytes])
    return client


def budget_app(tmp_path: Any, total: int) -> App:
    return App(
        config_mod.load(
            None,
            overrides={
                "data_dir": str(tmp_path),
                "rtmp": {"listen": "127.0.0.1:0", "max_pending_bytes_total": total},
            },
        )
    )


async def test_strangers_over_the_global_memory_budget_are_dropped_first(
    mock_clock: trio.testing.MockClock, tmp_path: Any, nursery: trio.Nursery
) -> None:
    daemon = budget_app(tmp_path, 150_000)
    daemon.open_auth()
    await nursery.start(daemon.feeds.run)
    await nursery.start(daemon.rtmp.run)
    publisher, stream_id = await publish(daemon, "a")
    first = await stranger_holding(daemon, 60_000)
    second = await stranger_holding(daemon, 60_000)
    await trio.sleep(0.1)
    assert 110_000 <= daemon.rtmp.pending_total <= 150_000
    third = await stranger_holding(daemon, 60_000)  # over the budget: this one goes
    await trio.sleep(0.1)
    assert daemon.metrics.budget_drops == 1
    assert len(daemon.sessions) == 3 and daemon.rtmp.pending_total <= 150_000
    assert await third.stream.receive_some(100) == b""
    # an admitted publisher's big keyframe in progress pushes the strangers out, not itself
    publisher.conn.send_video(stream_id, 40, AVC_INTER * 2)
    await publisher.stream.send_all(publisher.conn.data_to_send()[:70_000])
    await trio.sleep(0.1)
    assert daemon.metrics.budget_drops == 2
    assert len(daemon.publishers) == 1
    assert [s.feed is not None for s in daemon.sessions].count(False) == 1
    del first, second
    daemon.rtmp._connections.cancel_scope.cancel()  # type: ignore[union-attr]


async def test_a_closed_connection_returns_its_share_of_the_budget(
    mock_clock: trio.testing.MockClock, tmp_path: Any, nursery: trio.Nursery
) -> None:
    daemon = budget_app(tmp_path, 10_000_000)
    daemon.open_auth()
    await nursery.start(daemon.feeds.run)
    await nursery.start(daemon.rtmp.run)
    stranger = await stranger_holding(daemon, 60_000)
    await trio.sleep(0.1)
    assert daemon.rtmp.pending_total >= 55_000
    await stranger.aclose()
    await trio.sleep(0.1)
    assert daemon.rtmp.pending_total == 0
    daemon.rtmp._connections.cancel_scope.cancel()  # type: ignore[union-attr]


async def test_a_kick_with_a_ban_keeps_an_auto_reconnecting_encoder_away(
    mock_clock: trio.testing.MockClock, daemon: App
) -> None:
    first, _ = await publish(daemon, "a")
    (feed_id,) = daemon.publishers
    assert daemon.kick_feed(feed_id, ban_s=60)
    await read_all(first)
    # the encoder reconnects at once, as OBS does: refused, with the reason in its log
    again, _ = connect_session(daemon)
    await again.connect("live")
    stream_id = await again.create_stream()
    status = await again.publish(stream_id, "a")
    assert status.code == "NetStream.Publish.Rejected"
    assert "may not publish from your address" in status.description
    assert daemon.metrics.refused == {"banned": 1}
    await trio.sleep(61)  # the ban ends
    _later, _ = await publish(daemon, "a")
    assert len(daemon.publishers) == 1


async def test_rtmp_runs_without_http(tmp_path: Any, nursery: trio.Nursery) -> None:
    config = config_mod.load(
        None,
        overrides={
            "data_dir": str(tmp_path),
            "rtmp": {"listen": "127.0.0.1:0"},
            "http": {"listen": ""},
            "srt": {"enabled": False},
        },
    )
    app = App(config)
    bound = await nursery.start(app.run)
    assert bound.http is None and bound.rtmp[1] > 0
    client = await TrioRtmpClient.open(bound.rtmp[1])
    await client.connect("live")
    stream_id = await client.create_stream()
    assert (await client.publish(stream_id, "a")).code == "NetStream.Publish.Start"
    app.shutdown()

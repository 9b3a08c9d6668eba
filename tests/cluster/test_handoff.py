"""A handed-over RTMP connection carries on exactly (docs/spec.md §9, cluster/handoff.py).

The first worker feeds reads to its core until the publish/play request, puts its
output on the wire and hands over the socket with its reads; the owner replays them
into a fresh core (output discarded), decides the request and carries on. Whatever the
session (real clients' recordings, a player) and whatever the read sizes, the events
and the bytes after the hand-off must be those of one uninterrupted connection fed the
same reads — byte for byte, except S1/S2 (random, and sent by the first worker only).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.cluster.handoff import (
    MAX_REPLAY_BYTES,
    Handoff,
    HandoffError,
    ReadLog,
    replay,
    request_path,
)
from rtmp_ingest.rtmp import NEED_DATA, PAUSED, ServerConnection
from rtmp_ingest.rtmp import events as ev
from tests.rtmp.helpers import FIXTURE_NAMES, HANDSHAKE_BYTES, ConnectionPair, load_fixture

#: what the server sends back to a player after accepting it (exercises the encoder state)
PLAYER_MEDIA = [(9, 0, b"\x17\x00\x00\x00\x00" + bytes(40)), (8, 0, b"\xaf\x00\x12\x10")] + [
    (9, 33 * i, b"\x27\x01\x00\x00\x00" + bytes(300 + i)) for i in range(1, 12)
]


def _is_request(event: Any) -> bool:
    return isinstance(event, ev.PublishRequested | ev.PlayRequested)


class Driver:
    """What server/rtmp.py does with reads, with the decisions a test wants."""

    def __init__(self, *, stop_at_request: bool) -> None:
        self.conn = ServerConnection()
        self.stop_at_request = stop_at_request
        self.events: list[Any] = []
        self.out = bytearray()
        self.request: Any = None

    def decide(self, event: Any) -> None:
        if isinstance(event, ev.ConnectRequested):
            self.conn.accept_connect()
        elif isinstance(event, ev.PublishRequested):
            self.conn.accept_publish(event.stream_id)
        elif isinstance(event, ev.PlayRequested):
            self.conn.accept_play(event.stream_id)
            for type_id, ts, body in PLAYER_MEDIA:
                send = self.conn.send_video if type_id == 9 else self.conn.send_audio
                send(event.stream_id, ts, body)

    def pump(self) -> None:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA or event is PAUSED:
                break
            self.events.append(event)
            if _is_request(event) and self.request is None:
                self.request = event
                if self.stop_at_request:
                    break
            self.decide(event)
            if isinstance(event, ev.ConnectionClosed):
                break
        self.out += self.conn.data_to_send()

    def read(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if not self.conn.handshake_complete and data:
            self.out += self.conn.data_to_send()
            return
        self.pump()


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` as reads of the given sizes (repeated), the last read whatever is left."""
    reads, offset, i = [], 0, 0
    while offset < len(data):
        size = sizes[i % len(sizes)]
        reads.append(data[offset : offset + size])
        offset += size
        i += 1
    return reads


def play_session() -> bytes:
    """A player's c2s bytes: connect, createStream, play, a buffer length, then stop."""
    pair = ConnectionPair()
    pair.connect(app="live", tc_url="rtmp://localhost/live")
    stream_id = pair.create_stream()
    pair.client.play(stream_id, "show?sourceId=cam2")
    pair.client.set_buffer_length(stream_id, 3000)
    pair.pump()
    pair.client.delete_stream(stream_id)
    pair.pump()
    return bytes(pair.c2s)


@cache
def sessions() -> dict[str, bytes]:
    found = {name: load_fixture(name)[0] for name in FIXTURE_NAMES}
    found["player"] = play_session()
    return found


def handed_over(reads: list[bytes]) -> tuple[Driver, Handoff, Driver, int]:
    """The first worker up to its request, the hand-off message, the owner after the rest."""
    first = Driver(stop_at_request=True)
    log = ReadLog()
    used = 0
    for data in reads:
        log.add(data)
        first.read(data)
        used += 1
        if first.request is not None:
            break
    assert first.request is not None, "the session never asked to publish or play"
    message = Handoff(
        stream_path=first.request.address.path,
        remote="192.0.2.1:50000",
        secure=False,
        from_worker=1,
        reads=log.reads,
    ).encode()
    handoff = Handoff.decode(message)
    owner = Driver(stop_at_request=False)
    replayed = replay(owner.conn, handoff.reads)
    owner.events = [*replayed.events, replayed.request]
    owner.request = replayed.request
    owner.decide(replayed.request)
    owner.pump()  #: what the first worker's core held behind the request
    for data in reads[used:]:
        owner.read(data)
    owner.read(b"")
    return first, handoff, owner, used


def uninterrupted(reads: list[bytes]) -> Driver:
    driver = Driver(stop_at_request=False)
    for data in reads:
        driver.read(data)
    driver.read(b"")
    return driver


def check(session: bytes, sizes: list[int]) -> None:
    reads = cut(session, sizes)
    reference = uninterrupted(reads)
    first, handoff, owner, _ = handed_over(reads)
    #: the owner's core saw the same history the first one did, then carried on
    assert owner.events[: len(first.events)] == first.events
    assert owner.events == reference.events
    #: what the client receives: the first worker's bytes, then the owner's
    wire = bytes(first.out) + bytes(owner.out)
    assert len(wire) == len(reference.out)
    assert wire[HANDSHAKE_BYTES:] == bytes(reference.out[HANDSHAKE_BYTES:])
    assert handoff.stream_path == reference.request.address.path
    assert request_path(handoff.reads) == handoff.stream_path


@pytest.mark.parametrize("name", [*FIXTURE_NAMES, "player"])
@pytest.mark.parametrize("sizes", [[1], [7, 1, 300], [4096], [65536], [1537, 1536, 2]])
def test_recorded_sessions_carry_on_exactly_after_a_handoff(name, sizes):
    check(sessions()[name], sizes)


@settings(deadline=None)
@given(
    st.sampled_from(sorted(sessions())),
    st.lists(st.integers(min_value=1, max_value=70000), min_size=1, max_size=12),
)
def test_any_read_sizes_carry_on_exactly(name, sizes):
    check(sessions()[name], sizes)


@settings(deadline=None)
@given(st.sampled_from(sorted(sessions())), st.data())
def test_a_handoff_at_any_cut_after_the_request_carries_on_exactly(name, data):
    """The read that carried the request may end anywhere after it (media behind it)."""
    session = sessions()[name]
    end = request_end(name)
    cut_at = data.draw(st.integers(min_value=end, max_value=len(session)))
    tail = data.draw(st.integers(min_value=1, max_value=5000))
    reads = [session[:HANDSHAKE_BYTES], session[HANDSHAKE_BYTES:cut_at]]
    reads = [r for r in reads if r] + cut(session[cut_at:], [tail])
    reference = uninterrupted(reads)
    first, _, owner, used = handed_over(reads)
    assert used == 2
    assert owner.events == reference.events
    wire = bytes(first.out) + bytes(owner.out)
    assert wire[HANDSHAKE_BYTES:] == bytes(reference.out[HANDSHAKE_BYTES:])


@cache
def request_end(name: str) -> int:
    """The fewest bytes of a session after which its request is known."""
    session = sessions()[name]
    driver = Driver(stop_at_request=True)
    for offset in range(len(session)):
        driver.read(session[offset : offset + 1])
        if driver.request is not None:
            return offset + 1
    raise AssertionError("no request")


def test_the_handshake_randomness_stays_out_of_the_state():
    """Two cores fed the same reads but answering with different S1/S2 end up alike."""
    session = sessions()["ffmpeg"]
    a, b = Driver(stop_at_request=False), Driver(stop_at_request=False)
    for data in cut(session, [1000]):
        a.read(data)
        b.read(data)
    assert a.out[1:HANDSHAKE_BYTES] != b.out[1:HANDSHAKE_BYTES]  #: random S1
    assert a.out[HANDSHAKE_BYTES:] == b.out[HANDSHAKE_BYTES:]
    assert a.events == b.events


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_garbage_is_a_handoff_error(message):
    with pytest.raises(HandoffError):
        Handoff.decode(message)


@settings(deadline=None)
@given(st.binary(max_size=4000), st.integers(min_value=1, max_value=500))
def test_garbage_replay_reads_are_a_handoff_error(data, size):
    with pytest.raises(HandoffError):
        replay(ServerConnection(), cut(b"\x03" + data, [size]))


def test_reads_cut_short_before_the_request_are_refused():
    session = sessions()["obs"]
    with pytest.raises(HandoffError, match="before a publish or play"):
        replay(ServerConnection(), [session[: request_end("obs") - 1]])


def test_a_connection_sending_too_much_before_its_request_is_not_transferable():
    log = ReadLog()
    log.add(b"\x03" * (MAX_REPLAY_BYTES - 10))
    assert not log.overflowed
    log.add(b"x" * 11)
    assert log.overflowed and log.reads == ()


def test_a_message_round_trips():
    handoff = Handoff(
        stream_path="live/show",
        remote="[2001:db8::1]:1935",
        secure=True,
        from_worker=3,
        reads=(b"\x03", b"", b"abc" * 1000),
    )
    assert Handoff.decode(handoff.encode()) == handoff
    with pytest.raises(HandoffError, match="wrong length"):
        Handoff.decode(handoff.encode() + b"x")

"""The ERROR state (as h11 has it): after a protocol error the core refuses to go on.

Once `next_event()` has raised a `RemoteProtocolError`, or a call raised a
`LocalProtocolError`, the connection is in ERROR: `next_event()` and
`receive_data()` raise that error again, every send raises `LocalProtocolError`,
and nothing new is queued for the peer. Events decoded before a remote error
still come first, and decisions on them still work.
"""

from __future__ import annotations

import typing

import pytest

from rtmp_ingest.rtmp import events as ev
from rtmp_ingest.rtmp.client import ClientConnection
from rtmp_ingest.rtmp.connection import Connection
from rtmp_ingest.rtmp.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from rtmp_ingest.rtmp.events import NEED_DATA, PAUSED, Sentinel
from rtmp_ingest.rtmp.server import (
    CONN_TRANSITIONS,
    STREAM_TRANSITIONS,
    ConnInput,
    ConnState,
    ServerConnection,
    StreamInput,
)

from .helpers import ConnectionPair, chunk, command

GARBAGE_TYPE3 = b"\xc9x"  #: a type-3 chunk on a chunk stream never seen: a protocol error


def publishing_pair() -> tuple[ConnectionPair, int]:
    pair = ConnectionPair()
    return pair, pair.publishing()


def sends(server: ServerConnection, stream_id: int) -> list[typing.Callable[[], object]]:
    return [
        lambda: server.send_video(stream_id, 0, b"\x17\x01"),
        lambda: server.send_audio(stream_id, 0, b"\xaf\x01"),
        lambda: server.send_data(stream_id, 0, b"\x02\x00\x01x"),
        lambda: server.ping(1),
        lambda: server.set_chunk_size(4096),
        lambda: server.send_window_ack_size(1000),
        lambda: server.send_abort(6),
        lambda: server.send_raw_message(3, 0, 20, 0, command("x", 0.0)),
        lambda: server.send_reconnect_request(),
        lambda: server.end_publish(stream_id, "bye"),
        lambda: server.accept_publish(stream_id),
        lambda: server.reject_publish(stream_id, "no"),
        lambda: server.accept_play(stream_id),
        lambda: server.reject_play(stream_id, "no"),
        lambda: server.end_play(stream_id, "gone"),
        lambda: server.accept_connect(),
        lambda: server.reject_connect("no"),
    ]


SENDS = len(sends(ServerConnection(), 1))


def fail_remotely(pair: ConnectionPair) -> RemoteProtocolError:
    pair.server.receive_data(GARBAGE_TYPE3)
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event()
    return info.value


@pytest.mark.parametrize("index", range(SENDS))
def test_after_a_remote_error_every_send_is_refused(index):
    pair, stream_id = publishing_pair()
    pair.server.data_to_send()
    error = fail_remotely(pair)
    assert pair.server.state is ConnState.ERROR
    assert pair.server.error is error
    with pytest.raises(LocalProtocolError, match="ERROR") as info:
        sends(pair.server, stream_id)[index]()
    assert info.value.__cause__ is error
    assert pair.server.data_to_send() == b""
    assert pair.server.state is ConnState.ERROR


def test_after_a_remote_error_receiving_raises_it_again():
    pair, _ = publishing_pair()
    error = fail_remotely(pair)
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event()
    assert info.value is error
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(b"more")
    assert info.value is error
    with pytest.raises(RemoteProtocolError):
        pair.server.receive_data(b"")


def test_events_before_the_error_come_first_and_may_be_answered():
    pair = ConnectionPair(accept=False)
    pair.pump()
    connect = chunk(
        0, 3, (body := command("connect", 1.0, {"app": "live"})), length=len(body), type_id=20
    )
    pair.server.receive_data(connect + GARBAGE_TYPE3)
    event = pair.server.next_event()
    assert isinstance(event, ev.ConnectRequested)
    assert pair.server.state is ConnState.CONNECT_PENDING  #: not yet ERROR
    pair.server.accept_connect()  #: a decision on an event before the error still works
    assert pair.server.data_to_send()
    with pytest.raises(RemoteProtocolError):
        pair.server.next_event()
    assert pair.server.state is ConnState.ERROR


def test_a_local_error_puts_the_connection_in_error():
    pair, stream_id = publishing_pair()
    with pytest.raises(LocalProtocolError) as info:
        pair.server.accept_play(stream_id)  #: a publishing stream cannot start playing
    error = info.value
    assert pair.server.state is ConnState.ERROR
    assert pair.server.error is error
    with pytest.raises(LocalProtocolError):
        pair.server.send_video(stream_id, 0, b"\x17\x01")
    with pytest.raises(LocalProtocolError) as again:
        pair.server.next_event()
    assert again.value is error


DECISION_ARGS = {
    ConnInput.ACCEPT_CONNECT: (),
    ConnInput.REJECT_CONNECT: ("no",),
    ConnInput.REJECT_PUBLISH: (1, "no"),
    ConnInput.END_PUBLISH: (1, "bye"),
}


@pytest.mark.parametrize("decision", list(ConnInput))
def test_every_connection_input_in_error_follows_the_table(decision):
    pair, _ = publishing_pair()
    fail_remotely(pair)
    assert CONN_TRANSITIONS.get((ConnState.ERROR, decision)) in (None, ConnState.ERROR)
    method = getattr(pair.server, decision.value, None)
    if method is None:  #: not a call: the peer's connect, the handshake, an error
        return
    if CONN_TRANSITIONS.get((ConnState.ERROR, decision)) is None:
        with pytest.raises(LocalProtocolError, match="ERROR"):
            method(*DECISION_ARGS[decision])
    else:
        method()
    assert pair.server.state is ConnState.ERROR


def test_close_in_error_stays_in_error():
    pair, _ = publishing_pair()
    fail_remotely(pair)
    pair.server.close()
    assert pair.server.state is ConnState.ERROR


def test_client_role_has_the_error_state_too():
    client = ClientConnection()
    client.data_to_send()
    client.receive_data(b"\x06" + bytes(3072))  #: RTMPE version: a remote protocol error
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert client.error is info.value
    with pytest.raises(LocalProtocolError):
        client.connect("live", tc_url="rtmp://h/live")
    with pytest.raises(RemoteProtocolError):
        client.receive_data(b"x")
    assert client.data_to_send() == b""


def test_a_closed_connection_ignores_input_without_decoding_it():
    pair, _ = publishing_pair()
    pair.server.close()
    pair.server.receive_data(GARBAGE_TYPE3 * 10)
    assert pair.server.next_event() is NEED_DATA
    assert pair.server.state is ConnState.CLOSED


# -- the table -----------------------------------------------------------------------------------


def test_state_table_inputs_are_enums():
    assert all(isinstance(i, ConnInput) for _s, i in CONN_TRANSITIONS)
    assert all(isinstance(i, StreamInput) for _s, i in STREAM_TRANSITIONS)


@pytest.mark.parametrize("state", list(ConnState))
def test_every_state_goes_to_error_on_a_protocol_error(state):
    assert CONN_TRANSITIONS[(state, ConnInput.PROTOCOL_ERROR)] is ConnState.ERROR


def test_error_is_terminal():
    assert {nxt for (s, _i), nxt in CONN_TRANSITIONS.items() if s is ConnState.ERROR} == {
        ConnState.ERROR
    }


# -- next_event's type -------------------------------------------------------------------------


def test_next_event_is_typed_as_events_or_sentinels_without_any():
    hints = typing.get_type_hints(Connection.next_event)
    returned = set(typing.get_args(hints["return"]))
    assert typing.Any not in returned
    assert Sentinel in returned
    assert set(typing.get_args(ev.Event)) <= returned
    assert {type(NEED_DATA), type(PAUSED)} == {Sentinel}
    assert repr(NEED_DATA) == "NEED_DATA" and repr(PAUSED) == "PAUSED"


def test_protocol_errors_share_one_base():
    assert issubclass(LocalProtocolError, ProtocolError)
    assert issubclass(RemoteProtocolError, ProtocolError)


def test_events_leaves_a_trailing_error_for_the_next_call():
    """events() returns what came before the error without entering ERROR yet."""
    pair = ConnectionPair(accept=False)
    pair.pump()
    body = command("connect", 1.0, {"app": "live"})
    pair.server.receive_data(chunk(0, 3, body, length=len(body), type_id=20) + GARBAGE_TYPE3)
    (event,) = pair.server.events()
    assert isinstance(event, ev.ConnectRequested)
    assert pair.server.error is None
    pair.server.accept_connect()
    with pytest.raises(RemoteProtocolError):
        pair.server.events()
    assert pair.server.state is ConnState.ERROR


def test_error_lets_go_of_the_input_held():
    pair, stream_id = publishing_pair()
    pair.server.receive_data(chunk(0, 6, b"v" * 128, length=5000, type_id=9, msid=stream_id))
    assert pair.server.pending_bytes == 128
    fail_remotely(pair)
    assert pair.server.pending_bytes == 0

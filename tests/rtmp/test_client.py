"""The client role: publishing and playing against our server, whole and byte by byte."""

from __future__ import annotations

from rtmp_ingest.rtmp import amf0
from rtmp_ingest.rtmp import messages as msg
from rtmp_ingest.rtmp.client import ClientConnection
from rtmp_ingest.rtmp.events import (
    AudioData,
    CommandResponse,
    DataMessage,
    PlayRequested,
    Status,
    UnknownCommand,
    UnknownMessage,
    VideoData,
)

from .helpers import ConnectionPair, pieces


def of(kind, events):
    return [e for e in events if isinstance(e, kind)]


def test_commands_pipelined_before_the_handshake_are_sent_after_it(bytewise):
    client = ClientConnection()
    client.connect("live", tc_url="rtmp://h/live")
    client.create_stream()
    first = client.data_to_send()
    assert len(first) == 1 + 1536  # only C0+C1 until the handshake completes
    pair = ConnectionPair(bytewise=bytewise, client=client)
    pair.driver.feed(first, bytewise)
    pair.pump()
    assert [r.transaction_id for r in of(CommandResponse, pair.client_events)] == [1.0, 2.0]


def test_plain_handshake_client_works_too(bytewise):
    pair = ConnectionPair(bytewise=bytewise, client=ClientConnection(digest_handshake=False))
    assert pair.publishing() == 1
    assert not pair.server._handshake.digest_used


def test_create_stream_result_carries_the_stream_id(bytewise):
    pair = ConnectionPair(bytewise=bytewise)
    pair.connect()
    txid = pair.client.create_stream()
    pair.pump()
    response = of(CommandResponse, pair.client_events)[-1]
    assert response.transaction_id == txid and ClientConnection.stream_id_of(response) == 1


def test_playing_client_receives_the_media_the_server_sends(bytewise):
    pair = ConnectionPair(bytewise=bytewise)
    pair.connect()
    sid = pair.create_stream()
    pair.client.play(sid, "mystream?token=t")
    pair.pump()
    assert of(PlayRequested, pair.server_events)[0].address.path == "live/mystream"
    codes = [s.code for s in of(Status, pair.take_client_events())]
    assert codes == ["NetStream.Play.Reset", "NetStream.Play.Start"]

    sent = [
        ("video", 0, b"\x17\x00" + b"k" * 5000),
        ("audio", 0, b"\xaf\x00\x12\x10"),
        ("audio", 23, b"\xaf\x01" + b"a" * 300),
        ("video", 33, b"\x27\x01" + b"p" * 900),
        ("video", 66, b"\x27\x01last"),
    ]
    for kind, ts, payload in sent:
        send = pair.server.send_video if kind == "video" else pair.server.send_audio
        send(sid, ts, payload)
    meta = amf0.encode("onMetaData", amf0.EcmaArray(width=160.0))
    pair.server.send_data(sid, 0, meta)
    pair.pump()
    events = pair.take_client_events()
    media = [e for e in events if isinstance(e, (AudioData, VideoData))]
    assert [
        ("video" if isinstance(e, VideoData) else "audio", e.timestamp_ms, e.payload) for e in media
    ] == sent
    assert all(e.stream_id == sid for e in media)
    assert of(DataMessage, events) == [
        DataMessage(sid, 0, "onMetaData", [amf0.EcmaArray(width=160.0)], meta)
    ]


def test_sample_access_data_message_follows_play_start(bytewise):
    pair = ConnectionPair(bytewise=bytewise)
    pair.connect()
    sid = pair.create_stream()
    pair.client.play(sid, "cam")
    pair.pump()
    data = of(DataMessage, pair.client_events)
    assert data and data[0].name == "|RtmpSampleAccess"


def test_client_answers_set_peer_bandwidth_with_its_window(bytewise):
    pair = ConnectionPair(bytewise=bytewise)
    pair.connect()
    assert pair.server._peer_window == pair.server.limits.window_ack_size


def test_unknown_server_command_and_message_types_become_events(bytewise):
    pair = ConnectionPair(bytewise=bytewise)
    pair.connect()
    pair.take_client_events()
    pair.server.send_raw_message(3, 0, msg.COMMAND_AMF0, 0, msg.command_body("onBWDone", 0, None))
    pair.server.send_raw_message(3, 0, msg.SHARED_OBJECT_AMF0, 5, b"so")
    pair.pump()
    assert pair.client_events == [
        UnknownCommand(0, "onBWDone", 0.0, [None]),
        UnknownMessage(0, msg.SHARED_OBJECT_AMF0, 5, b"so"),
    ]


def test_status_level_is_empty_when_the_server_omits_it(bytewise):
    pair = ConnectionPair(bytewise=bytewise)
    pair.connect()
    pair.take_client_events()
    pair.client.call("FCPublish", None, "s")
    pair.pump()
    status = of(Status, pair.client_events)[0]
    assert (status.level, status.code, status.description) == ("", "NetStream.Publish.Start", "s")


def test_client_fed_the_whole_pair_transcript_again_yields_the_same_events(bytewise):
    pair = ConnectionPair()
    pair.publishing()
    events = pair.client_events
    # a fresh client's own handshake differs, but the server's bytes replay all the same
    again = ClientConnection()
    for piece in pieces(bytes(pair.s2c), bytewise):
        again.receive_data(piece)
    from .helpers import drain

    assert drain(again) == events

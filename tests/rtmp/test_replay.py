"""Recorded real-client sessions (fixtures/sessions) replayed through our cores.

c2s: what ffmpeg, GStreamer, OBS and PyAV really sent, through a ServerConnection whose
driver accepts connect and publish: it must reach publishing with the path, sourceId and
token the sidecar expects, count the same media, and see Unpublished + StreamDeleted.
s2c: what rtmp_logger answered, through a ClientConnection.
"""

from __future__ import annotations

import pytest

from rtmp_ingest.rtmp.client import ClientConnection
from rtmp_ingest.rtmp.events import (
    AudioData,
    CommandResponse,
    ConnectionClosed,
    ConnectRequested,
    DataMessage,
    PublishRequested,
    Status,
    StreamCreated,
    StreamDeleted,
    Unpublished,
    VideoData,
)
from rtmp_ingest.rtmp.server import ConnState, StreamState

from .helpers import FIXTURE_NAMES, HANDSHAKE_BYTES, AcceptingDriver, drain, load_fixture, pieces

assert FIXTURE_NAMES, "no recorded sessions found in fixtures/sessions"


def count(kind, events):
    return sum(isinstance(e, kind) for e in events)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_recorded_client_session_publishes_as_expected(name, bytewise):
    c2s, _, sidecar = load_fixture(name)
    expect = sidecar["expect"]
    driver = AcceptingDriver()
    driver.feed(c2s[:HANDSHAKE_BYTES], bytewise)
    assert driver.server.state is ConnState.AWAIT_CONNECT
    driver.feed(c2s[HANDSHAKE_BYTES:], bytewise)
    driver.close()
    events = driver.events
    assert driver.error is None

    connect = events[0]
    assert isinstance(connect, ConnectRequested)
    assert (connect.app, connect.tc_url) == (expect["app"], expect["tcUrl"])
    assert connect.properties.get("flashVer") == expect["flashVer"]

    (publish,) = [e for e in events if isinstance(e, PublishRequested)]
    assert publish.name == expect["publish_name"]
    assert publish.publish_type == expect["publish_type"]
    assert publish.stream_id == expect["publish_msg_stream_id"]
    assert publish.address.path == expect["stream_path"]
    assert publish.address.param("sourceId") == expect["sourceId"]
    assert publish.address.param("token") == expect["token"]

    assert count(StreamCreated, events) == 1
    assert count(AudioData, events) == expect["audio_messages"]
    assert count(VideoData, events) == expect["video_messages"]
    assert count(DataMessage, events) == expect["data_messages"]
    metadata = next(e for e in events if isinstance(e, DataMessage))
    assert metadata.name == expect["first_data_message"][1]
    assert metadata.values[0]["encoder"] == expect["first_data_message"][2]["encoder"]

    sid = publish.stream_id
    assert events[-3:] == [Unpublished(sid, "FCUnpublish"), StreamDeleted(sid), ConnectionClosed()]
    assert driver.server.stream_state(sid) is None
    assert driver.server.state is ConnState.CONNECTED


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_recorded_session_media_timestamps_never_go_far_backwards(name):
    c2s, _, _ = load_fixture(name)
    driver = AcceptingDriver()
    driver.feed(c2s)
    for kind in (AudioData, VideoData):
        times = [e.timestamp_ms for e in driver.events if isinstance(e, kind)]
        assert times[0] < 1000 and times[-1] < 10_000
        assert all(b >= a for a, b in zip(times, times[1:]))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_media_after_publish_is_held_until_the_publish_is_accepted(name):
    c2s, _, _ = load_fixture(name)
    driver = AcceptingDriver()
    driver.decide = lambda event: (
        driver.server.accept_connect() if isinstance(event, ConnectRequested) else None
    )
    driver.feed(c2s)
    assert isinstance(driver.events[-1], PublishRequested)
    sid = driver.events[-1].stream_id
    assert driver.server.stream_state(sid) is StreamState.PUBLISH_PENDING
    driver.server.accept_publish(sid)
    rest = drain(driver.server)
    assert count(VideoData, rest) > 0 and isinstance(rest[-1], StreamDeleted)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_recorded_server_answers_replay_through_our_client(name, bytewise):
    _, s2c, _ = load_fixture(name)
    client = ClientConnection()
    client.data_to_send()
    events = []
    for piece in pieces(s2c, bytewise):
        client.receive_data(piece)
        events += drain(client)
    assert client.handshake_complete
    responses = [e for e in events if isinstance(e, CommandResponse)]
    statuses = [e for e in events if isinstance(e, Status)]
    assert responses and all(r.ok for r in responses)
    assert responses[0].values[1]["code"] == "NetConnection.Connect.Success"
    assert [s.code for s in statuses][-1] == "NetStream.Publish.Start"
    assert client.peer_chunk_size == 4096
    assert len(client.data_to_send()) >= 1536  # C2, then the window acknowledgement answer

"""Resource limits a stranger meets before and after a publish is admitted.

Commands and data have their own small size limit, checked from the chunk header
before any body is buffered; AMF decoding is bounded in work (values decoded), not
only in depth; a connection holds little until its publish is admitted; buffers
are given back once a big message is through; the limits validate what RTMP can
express at all.
"""

from __future__ import annotations

import sys

import pytest

from rtmp_ingest.rtmp import amf0, amf3
from rtmp_ingest.rtmp import messages as msg
from rtmp_ingest.rtmp.chunk import ChunkDecoder
from rtmp_ingest.rtmp.connection import QUEUED_MESSAGE_BYTES
from rtmp_ingest.rtmp.errors import RemoteProtocolError
from rtmp_ingest.rtmp.events import PAUSED
from rtmp_ingest.rtmp.limits import (
    MAX_AMF_NODES,
    MAX_COMMAND_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_PENDING_BYTES_UNADMITTED,
    RTMP_MAX_MESSAGE_BYTES,
    Limits,
)
from rtmp_ingest.rtmp.server import ServerConnection

from .helpers import ConnectionPair, chunk, drain

AUDIO, VIDEO = msg.AUDIO, msg.VIDEO
NON_MEDIA_TYPES = [
    msg.SET_CHUNK_SIZE,
    msg.USER_CONTROL,
    msg.WINDOW_ACK_SIZE,
    msg.DATA_AMF3,
    msg.SHARED_OBJECT_AMF3,
    msg.COMMAND_AMF3,
    msg.DATA_AMF0,
    msg.SHARED_OBJECT_AMF0,
    msg.COMMAND_AMF0,
    30,  #: unknown types get the small limit too
]


# -- max_message_bytes: what the 24-bit length can say ------------------------------------------


def test_default_max_message_bytes_is_reachable_by_the_24_bit_length():
    assert MAX_MESSAGE_BYTES == RTMP_MAX_MESSAGE_BYTES == 0xFFFFFF
    assert Limits().max_message_bytes == 0xFFFFFF


@pytest.mark.parametrize("field", ["max_message_bytes", "max_command_bytes"])
@pytest.mark.parametrize("value", [0, -1, 0xFFFFFF + 1, 32 * 1024 * 1024])
def test_message_limits_outside_what_rtmp_can_frame_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        Limits(**{field: value})


def test_largest_framable_media_message_is_accepted():
    decoder = ChunkDecoder()
    decoder.chunk_size = 0x7FFFFFFF
    body = bytes(0xFFFFFF)
    (message,) = decoder.feed(chunk(0, 6, body, length=len(body), type_id=VIDEO, msid=1))
    assert len(message[4]) == 0xFFFFFF


# -- max_command_bytes: from the header, before the body --------------------------------------


def test_default_command_limit_is_small():
    assert MAX_COMMAND_BYTES == 64 * 1024
    assert Limits().max_command_bytes == MAX_COMMAND_BYTES


@pytest.mark.parametrize("type_id", NON_MEDIA_TYPES)
def test_a_16_mib_command_header_is_refused_at_once_without_buffering(type_id):
    decoder = ChunkDecoder()
    with pytest.raises(RemoteProtocolError, match="max_command_bytes"):
        decoder.feed(chunk(0, 3, b"x" * 100, length=0xFFFFFF, type_id=type_id))
    assert decoder.pending_bytes <= 200  #: nothing of the body was kept


@pytest.mark.parametrize("type_id", NON_MEDIA_TYPES)
def test_command_limit_applies_to_every_header_kind(type_id):
    """A type-1 header may change the length and type of a stream's next message."""
    decoder = ChunkDecoder(limits=Limits(max_command_bytes=1000))
    decoder.feed(chunk(0, 4, b"a" * 10, length=10, type_id=AUDIO, msid=1))
    with pytest.raises(RemoteProtocolError, match="max_command_bytes"):
        decoder.feed(chunk(1, 4, b"", length=1001, type_id=type_id))


@pytest.mark.parametrize("type_id", [AUDIO, VIDEO, msg.AGGREGATE])
def test_media_keeps_the_large_limit(type_id):
    limits = Limits(max_command_bytes=1000, max_message_bytes=5000)
    decoder = ChunkDecoder(limits=limits)
    decoder.chunk_size = 10_000
    (message,) = decoder.feed(chunk(0, 6, b"m" * 4000, length=4000, type_id=type_id, msid=1))
    assert len(message[4]) == 4000
    with pytest.raises(RemoteProtocolError, match="max_message_bytes"):
        decoder.feed(chunk(0, 6, b"", length=5001, type_id=type_id, msid=1))


def test_a_command_at_the_limit_passes():
    decoder = ChunkDecoder(limits=Limits(max_command_bytes=1000))
    decoder.chunk_size = 2000
    body = b"c" * 1000
    assert decoder.feed(chunk(0, 3, body, length=1000, type_id=msg.COMMAND_AMF0))[0][4] == body


def test_server_refuses_a_huge_connect_before_it_arrives():
    pair = ConnectionPair(accept=False)
    pair.pump()
    pair.server.receive_data(chunk(0, 3, b"\x02", length=0xFFFFFF, type_id=msg.COMMAND_AMF0))
    with pytest.raises(RemoteProtocolError, match="max_command_bytes"):
        pair.server.next_event()


# -- AMF work bound ------------------------------------------------------------------------------


def test_amf_node_limit_default():
    assert Limits().max_amf_nodes == MAX_AMF_NODES
    assert 1000 <= MAX_AMF_NODES <= 16_384


@pytest.mark.parametrize(
    "body",
    [
        b"\x05" * (64 * 1024),  #: 64 Ki top-level nulls
        amf0.encode([None] * 16_000),  #: one strict array of 16 K nulls
        amf0.encode({f"k{i}": None for i in range(16_000)}),  #: 16 K properties
        b"\x0a\x00\x00\x3e\x80" + b"\x05" * 16_000,  #: strict array claiming 16 000 items
    ],
    ids=["top-level", "strict-array", "object", "claimed-array"],
)
def test_many_tiny_amf0_items_are_refused_at_the_limit(body):
    decoder = amf0.Decoder(body, max_nodes=4096)
    with pytest.raises(RemoteProtocolError, match="max_amf_nodes"):
        decoder.decode_all()
    #: the work stopped at the limit, not at the end of the message
    assert decoder.nodes <= 4097
    assert decoder.position < len(body) // 2


def test_node_limit_counts_values_and_keys():
    value = {"a": 1.0, "b": [None, None]}  #: keys a, b; values 1.0, list, None, None; obj
    body = amf0.encode(value)
    assert amf0.Decoder(body, max_nodes=7).decode_all() == [value]
    with pytest.raises(RemoteProtocolError, match="max_amf_nodes"):
        amf0.Decoder(body, max_nodes=6).decode_all()


def test_amf3_object_references_cannot_multiply_the_tree():
    """[x, x] where x = [y, y] …: 30 bytes that would expand to 2^20 values."""
    levels = 20
    data = b"\x09\x05\x01\x01\x01"  #: innermost (object index levels-1): [null, null]
    for index in range(levels - 2, -1, -1):
        #: array `index` = [its child inline (index+1), a reference to that child]
        data = b"\x09\x05\x01" + data + bytes((0x09, (index + 1) << 1))
    #: the same tree with a generous limit decodes: the bound is on the expansion
    assert len(amf3.Decoder(data, max_nodes=1 << 22, max_depth=64).decode()) == 2
    with pytest.raises(RemoteProtocolError, match="max_amf_nodes"):
        amf3.Decoder(data, max_nodes=4096, max_depth=64).decode()


def test_amf3_string_references_cannot_multiply_the_text():
    text = "t" * 60_000
    raw = text.encode()
    #: a dense array of 4000 items: the string, then 3999 references to it
    header = (4000 << 1) | 1
    data = bytearray(b"\x09")
    data += amf3._u29(header)
    data += b"\x01"
    data += b"\x06" + amf3._u29((len(raw) << 1) | 1) + raw
    data += b"\x06\x00" * 3999
    with pytest.raises(RemoteProtocolError, match="max_amf_nodes"):
        amf3.Decoder(bytes(data), max_nodes=4096).decode()


def test_connection_passes_the_node_limit_to_commands():
    pair = ConnectionPair(accept=False, server=ServerConnection(limits=Limits(max_amf_nodes=50)))
    pair.client.call("connect", {f"k{i}": None for i in range(60)})
    pair.pump()
    assert pair.driver.error is not None and "max_amf_nodes" in pair.driver.error.message


# -- memory before and after admission ---------------------------------------------------------


def test_unadmitted_allowance_default_is_much_smaller():
    limits = Limits()
    assert limits.max_pending_bytes_unadmitted == MAX_PENDING_BYTES_UNADMITTED
    assert limits.max_pending_bytes // 16 >= MAX_PENDING_BYTES_UNADMITTED


def _big_video_start(stream_id: int, length: int, sent: int) -> bytes:
    """The first chunk of a video message of `length` bytes with `sent` body bytes."""
    return chunk(0, 6, b"v" * sent, length=length, type_id=VIDEO, msid=stream_id)


def _set_chunk_size(size: int) -> bytes:
    return chunk(0, 2, size.to_bytes(4, "big"), length=4, type_id=msg.SET_CHUNK_SIZE)


def test_connection_before_publish_may_hold_only_the_small_allowance():
    limits = Limits(max_pending_bytes_unadmitted=10_000)
    pair = ConnectionPair(server=ServerConnection(limits=limits))
    pair.connect()
    pair.server.receive_data(_set_chunk_size(1 << 20) + _big_video_start(1, 1 << 20, 9_000))
    pair.driver.pump_events()
    assert pair.driver.error is None
    pair.server.receive_data(b"v" * 2_000)
    pair.driver.pump_events()
    assert pair.driver.error is not None
    assert "max_pending_bytes_unadmitted" in pair.driver.error.message


def test_admitted_publisher_gets_the_normal_allowance():
    limits = Limits(max_pending_bytes_unadmitted=10_000)
    pair = ConnectionPair(server=ServerConnection(limits=limits))
    stream_id = pair.publishing()  #: the driver accepted the publish
    pair.server.receive_data(_set_chunk_size(1 << 20) + _big_video_start(stream_id, 1 << 20, 0))
    for _ in range(20):
        pair.server.receive_data(b"v" * 50_000)
    pair.driver.pump_events()
    assert pair.driver.error is None
    assert pair.server.pending_bytes >= 1_000_000


def test_unpublish_returns_to_the_small_allowance():
    limits = Limits(max_pending_bytes_unadmitted=10_000)
    pair = ConnectionPair(server=ServerConnection(limits=limits))
    stream_id = pair.publishing()
    pair.client.unpublish(stream_id, "mystream")
    pair.pump()
    pair.server.receive_data(_set_chunk_size(1 << 20) + _big_video_start(1, 1 << 20, 20_000))
    pair.driver.pump_events()
    assert pair.driver.error is not None
    assert "max_pending_bytes_unadmitted" in pair.driver.error.message


def test_pending_bytes_counts_partial_messages_and_the_receive_buffer():
    decoder = ChunkDecoder()
    assert decoder.pending_bytes == 0
    decoder.feed(chunk(0, 6, b"v" * 128, length=1000, type_id=VIDEO, msid=1))
    assert decoder.pending_bytes == 128
    decoder.feed(b"\xc6" + b"v" * 50)  #: a partial continuation chunk stays in the buffer
    assert decoder.pending_bytes == 128 + 51
    decoder.feed(b"v" * 77)
    assert decoder.pending_bytes == 256


def test_connection_pending_bytes_is_the_decoders_plus_the_handshake():
    pair = ConnectionPair()
    pair.connect()
    assert pair.server.pending_bytes == 0
    partial_chunk = chunk(0, 6, b"v" * 100, length=500, type_id=VIDEO, msid=1)
    pair.server.receive_data(partial_chunk)  #: 100 of the first chunk's 128 body bytes
    assert pair.server.pending_bytes == len(partial_chunk)
    pair.server.receive_data(b"v" * 28)
    assert pair.server.pending_bytes == 128
    fresh = ServerConnection()
    fresh.receive_data(b"\x03" + bytes(1000))  #: part of C0+C1
    assert fresh.pending_bytes == 1001


def test_buffers_are_given_back_after_a_big_message():
    pair = ConnectionPair()
    stream_id = pair.publishing()
    body = b"\x17" + bytes(8 * 1024 * 1024)
    pair.client.set_chunk_size(0x7FFFFFFF)  #: one chunk: the receive buffer holds it all
    pair.client.send_video(stream_id, 40, body)
    pair.pump()
    frames = [e for e in pair.take_server_events() if getattr(e, "payload", b"") == body]
    assert len(frames) == 1
    del frames
    server = pair.server
    decoder = server._decoder  # the retained capacity is what this test is about
    assert server.pending_bytes == 0
    retained = sys.getsizeof(decoder._buf) + sum(
        sys.getsizeof(s.pieces) + sys.getsizeof(s.views) for s in decoder._streams.values()
    )
    assert retained < 64 * 1024
    assert sys.getsizeof(server._out) < 64 * 1024


def test_buffers_are_given_back_after_a_big_message_in_many_reads():
    pair = ConnectionPair()
    stream_id = pair.publishing()
    body = b"\x17" + bytes(4 * 1024 * 1024)
    pair.client.send_video(stream_id, 40, body)
    data = pair.client.data_to_send()
    for start in range(0, len(data), 65536):
        pair.server.receive_data(data[start : start + 65536])
    assert any(getattr(e, "payload", b"") == body for e in pair.driver.pump_events())
    decoder = pair.server._decoder  # the retained capacity is what this test is about
    assert sys.getsizeof(decoder._buf) < 64 * 1024
    assert all(not s.pieces and not s.views for s in decoder._streams.values())


def test_messages_before_the_allowance_is_exceeded_are_still_returned():
    decoder = ChunkDecoder(limits=Limits(max_pending_bytes_unadmitted=1000))
    decoder.admitted = False
    small = chunk(0, 4, b"a" * 10, length=10, type_id=AUDIO, msid=1)
    big = chunk(0, 6, b"v" * 128, length=100_000, type_id=VIDEO, msid=1)
    (message,) = decoder.feed(small + big + (b"\xc6" + b"v" * 128) * 8)
    assert message[4] == b"a" * 10
    assert decoder.error is not None and "max_pending_bytes_unadmitted" in decoder.error.message
    assert decoder.pending_bytes == 0  #: a dead decoder lets go of what it held
    with pytest.raises(RemoteProtocolError, match="max_pending_bytes_unadmitted"):
        decoder.feed(b"x")


def test_pending_bytes_counts_messages_waiting_behind_an_owed_decision():
    pair = ConnectionPair(accept=False)
    pair.pump()
    pair.connect()  #: connect is owed a decision: the rest waits
    assert pair.server.next_event() is PAUSED
    audio = chunk(0, 4, b"a" * 100, length=100, type_id=AUDIO, msid=1)
    pair.server.receive_data(audio * 10)
    assert pair.server.pending_bytes == 10 * (100 + QUEUED_MESSAGE_BYTES)
    pair.server.accept_connect()
    assert drain(pair.server) == []  #: media before a publish is dropped
    assert pair.server.pending_bytes == 0


def test_a_flood_behind_an_owed_decision_is_bounded_by_the_allowance():
    limits = Limits(max_pending_bytes_unadmitted=99 * (100 + QUEUED_MESSAGE_BYTES) + 200)
    pair = ConnectionPair(accept=False, server=ServerConnection(limits=limits))
    pair.pump()
    pair.connect()
    audio = chunk(0, 4, b"a" * 100, length=100, type_id=AUDIO, msid=1)
    for _ in range(99):
        pair.server.receive_data(audio)
    assert pair.server.next_event() is PAUSED
    pair.server.receive_data(audio * 2)
    pair.server.accept_connect()  #: the events before the error can still be answered
    with pytest.raises(RemoteProtocolError, match="max_pending_bytes_unadmitted"):
        drain(pair.server)


def test_empty_messages_behind_an_owed_decision_count_too():
    limits = Limits(max_pending_bytes_unadmitted=100 * QUEUED_MESSAGE_BYTES)
    pair = ConnectionPair(accept=False, server=ServerConnection(limits=limits))
    pair.pump()
    pair.connect()
    empty = chunk(0, 4, b"", length=0, type_id=AUDIO, msid=1)
    pair.server.receive_data(empty * 100)
    assert pair.server.next_event() is PAUSED
    pair.server.receive_data(empty)
    pair.server.accept_connect()
    with pytest.raises(RemoteProtocolError, match="max_pending_bytes_unadmitted"):
        drain(pair.server)

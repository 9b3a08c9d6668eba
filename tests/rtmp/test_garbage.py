"""The garbage rule: whatever bytes arrive, the core yields events or raises RemoteProtocolError.

Never IndexError, struct.error, KeyError, ValueError, RecursionError, UnicodeDecodeError,
AssertionError, MemoryError or any other exception. Inputs: random bytes, and valid
sessions (recorded fixtures, ConnectionPair transcripts) with random bit flips,
insertions, deletions and truncations, fed whole or at random split points.
"""

from __future__ import annotations

from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtmp_ingest.rtmp import amf0, amf3
from rtmp_ingest.rtmp import messages as msg
from rtmp_ingest.rtmp.address import parse_address
from rtmp_ingest.rtmp.chunk import ChunkDecoder
from rtmp_ingest.rtmp.client import ClientConnection
from rtmp_ingest.rtmp.errors import RemoteProtocolError
from rtmp_ingest.rtmp.events import ConnectionClosed
from rtmp_ingest.rtmp.limits import Limits

from .helpers import (
    FIXTURE_NAMES,
    HANDSHAKE_BYTES,
    AcceptingDriver,
    ConnectionPair,
    drain,
    load_fixture,
)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: small limits so that garbage hits them too
SMALL = Limits(
    max_message_bytes=100_000,
    max_pending_bytes=200_000,
    max_chunk_streams=16,
    max_amf_depth=8,
    max_amf_items=1000,
)


# -- inputs ------------------------------------------------------------------------------------


@cache
def pair_transcript() -> tuple[bytes, bytes]:
    """(c2s, s2c) of a full ConnectionPair session: publish, media, play, unpublish."""
    pair = ConnectionPair()
    sid = pair.publishing()
    pair.client.send_data(sid, 0, amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(w=1.0)))
    pair.client.send_video(sid, 0, b"\x17" + bytes(700))
    pair.client.send_audio(sid, 0x1000000, b"\xaf" + bytes(300))
    pair.client.send_raw_message(
        8, sid, msg.AGGREGATE, 5, msg.aggregate_body([(9, 0, b"v"), (8, 1, b"a")])
    )
    pair.client.ping(5)
    pair.client.set_chunk_size(64)
    pair.client.send_video(sid, 0x1000040, b"\x27" + bytes(200))
    sid2 = pair.create_stream()
    pair.client.play(sid2, "other")
    pair.pump()
    pair.server.send_video(sid2, 10, bytes(5000))
    pair.server.send_reconnect_request()
    pair.client.unpublish(sid, "mystream")
    pair.pump()
    return bytes(pair.c2s), bytes(pair.s2c)


def valid_c2s_sessions() -> st.SearchStrategy[bytes]:
    fixtures = [load_fixture(name)[0] for name in FIXTURE_NAMES]
    return st.sampled_from([*fixtures, pair_transcript()[0]])


def valid_s2c_sessions() -> st.SearchStrategy[bytes]:
    fixtures = [load_fixture(name)[1] for name in FIXTURE_NAMES]
    return st.sampled_from([*fixtures, pair_transcript()[1]])


@st.composite
def mutated(draw, sessions: st.SearchStrategy[bytes], *, keep_handshake: bool = True):
    """A valid session with 1..8 random bit flips, insertions, deletions, or a truncation."""
    data = bytearray(draw(sessions))
    low = HANDSHAKE_BYTES if keep_handshake else 0
    for _ in range(draw(st.integers(1, 8))):
        if len(data) <= low + 1:
            break
        at = draw(st.integers(low, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "flip", "insert", "delete", "truncate", "byte"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0xC3, 0x03, 0x7F, 0x80]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            del data[at:]
    return bytes(data)


splits = st.lists(st.integers(0, 70_000), max_size=8)


def pieces_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]
    out, start = [], 0
    for point in points:
        out.append(data[start:point])
        start = point
    return out


# -- what each consumer may do -------------------------------------------------------------------


def run_server(data: bytes, cuts: list[int], limits: Limits = SMALL) -> None:
    from rtmp_ingest.rtmp.server import ServerConnection

    driver = AcceptingDriver(ServerConnection(limits=limits))
    for piece in pieces_at(data, cuts):
        driver.feed(piece)
        driver.server.data_to_send()
        if driver.error is not None:
            return
    driver.close()
    if driver.error is None:
        assert isinstance(driver.events[-1], ConnectionClosed)


def run_client(data: bytes, cuts: list[int], limits: Limits = SMALL) -> None:
    client = ClientConnection(limits=limits)
    for piece in pieces_at(data, cuts):
        client.receive_data(piece)
        try:
            drain(client)
        except RemoteProtocolError:
            return
        client.data_to_send()


def run_decoder(data: bytes, cuts: list[int]) -> None:
    decoder = ChunkDecoder(limits=SMALL)
    try:
        for piece in pieces_at(data, cuts):
            decoder.feed(piece)
    except RemoteProtocolError:
        pass


def only_remote_errors(fn, *args) -> None:
    try:
        fn(*args)
    except RemoteProtocolError:
        pass


# -- connections ------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=5000), splits)
def test_random_bytes_to_server(data, cuts):
    run_server(data, cuts)


@FUZZ
@given(st.binary(max_size=3000), splits)
def test_random_chunks_after_a_valid_handshake_to_server(data, cuts):
    c2s = load_fixture(FIXTURE_NAMES[0])[0][:HANDSHAKE_BYTES]
    run_server(c2s + data, cuts)


@FUZZ
@given(mutated(valid_c2s_sessions()), splits)
def test_mutated_client_sessions_to_server(data, cuts):
    run_server(data, cuts)


@FUZZ
@given(mutated(valid_c2s_sessions(), keep_handshake=False), splits)
def test_mutated_client_sessions_with_mutated_handshakes_to_server(data, cuts):
    run_server(data, cuts)


@FUZZ
@given(st.binary(max_size=5000), splits)
def test_random_bytes_to_client(data, cuts):
    run_client(data, cuts)


@FUZZ
@given(mutated(valid_s2c_sessions()), splits)
def test_mutated_server_sessions_to_client(data, cuts):
    run_client(data, cuts)


amf_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=10), st.just(amf0.UNDEFINED)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
COMMAND_NAMES = [
    "connect",
    "createStream",
    "publish",
    "play",
    "play2",
    "deleteStream",
    "closeStream",
    "FCUnpublish",
    "FCPublish",
    "releaseStream",
    "pause",
    "receiveAudio",
    "receiveVideo",
    "_result",
    "onStatus",
    "nonsense",
]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("call"),
                st.sampled_from(COMMAND_NAMES),
                st.integers(0, 3),
                st.sampled_from([0.0, 1.0, 5.0]),
                st.lists(amf_values, max_size=4),
            ),
            st.tuples(
                st.just("raw"),
                st.integers(3, 64),
                st.integers(0, 3),
                st.integers(0, 255),
                st.integers(0, 2**32 - 1),
                st.binary(max_size=40),
            ),
        ),
        max_size=12,
    )
)
def test_well_framed_random_messages_to_both_roles(actions):
    pair = ConnectionPair()
    pair.connect()
    for action in actions:
        if action[0] == "call":
            _, name, sid, txid, args = action
            pair.client.call(name, *args, stream_id=sid, transaction_id=txid)
        else:
            _, csid, sid, type_id, ts, body = action
            if type_id == 1:  # SetChunkSize: the encoder must switch with it
                pair.client.set_chunk_size(4096)
                continue
            pair.client.send_raw_message(csid, sid, type_id, ts, body)
            pair.server.send_raw_message(csid, sid, type_id, ts, body)
    try:
        pair.pump()
    except RemoteProtocolError:
        pass  # the client role met something it refuses: fine


# -- the pieces ---------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=3000), splits)
def test_random_bytes_to_chunk_decoder(data, cuts):
    run_decoder(data, cuts)


@FUZZ
@given(mutated(valid_c2s_sessions()), splits)
def test_mutated_sessions_to_chunk_decoder(data, cuts):
    run_decoder(data[HANDSHAKE_BYTES:], cuts)


amf_bytes = st.one_of(
    st.binary(max_size=300),
    amf_values.map(lambda v: amf0.encode(v)),
    st.lists(
        st.sampled_from(
            [
                b"\x03",
                b"\x08\x00\x00\x00\x01",
                b"\x0a\x00\x00\x00\x02",
                b"\x11",
                b"\x11\x09\x03\x01",
                b"\x11\x0a\x0b\x01",
                b"\x00\x01a",
                b"\x09",
                b"\x0c\x00\x00\x00\x02",
                b"\x10\x00\x01T",
                b"\x05",
                b"\x02\x00\x01\xff",
            ]
        ),
        max_size=200,
    ).map(b"".join),
)


@st.composite
def mutated_amf(draw):
    data = bytearray(draw(amf_bytes))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=200, deadline=None)
@given(mutated_amf())
def test_garbage_to_amf0_decode_all(data):
    only_remote_errors(amf0.decode_all, data)
    only_remote_errors(lambda: amf0.decode_all(data, max_depth=3, max_items=4))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), mutated_amf().map(lambda b: b[1:])))
def test_garbage_to_amf3_decoder(data):
    only_remote_errors(lambda: amf3.Decoder(data).decode())
    only_remote_errors(lambda: amf3.Decoder(data, max_depth=3, max_items=4).decode())


def test_deep_amf_nesting_is_refused_not_a_recursion_error():
    for data in (
        b"\x0a\x00\x00\x00\x01" * 100_000,
        b"\x03\x00\x01k" * 100_000,
        b"\x11" + b"\x09\x03\x01" * 100_000,
        b"\x11\x0a\x0b\x01\x00\x01k" * 50_000,
    ):
        only_remote_errors(amf0.decode_all, data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 2**32 - 1))
def test_garbage_to_split_aggregate(body, timestamp):
    only_remote_errors(lambda: list(msg.split_aggregate(body, timestamp)))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=60))
def test_garbage_to_message_parsers(type_id, body):
    for parse in (
        lambda: msg.parse_command(type_id, body, max_depth=8, max_items=100),
        lambda: msg.parse_data(type_id, body, max_depth=8, max_items=100),
        lambda: msg.parse_user_control(body),
        lambda: msg.parse_peer_bandwidth(body),
        lambda: msg.parse_u32(body, "x"),
    ):
        only_remote_errors(parse)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.one_of(st.none(), st.text()), st.text())
def test_garbage_to_parse_address(app, tc_url, name):
    parse_address(app=app, tc_url=tc_url, name=name)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="rtmp:/[]@?#%&=.0123456789abc", max_size=40))
def test_garbage_tc_urls_to_parse_address(tc_url):
    parse_address(app="live", tc_url=tc_url, name="s")

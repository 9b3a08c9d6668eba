"""Differential tests against pyrtmp's own chunk reader and writer (tests/support/pyrtmp_oracle).

Compared only where pyrtmp is right (see the oracle's docstring): timestamps and deltas
below 2^24 (bugs 1-3, 5), chunk stream ids 2..319 (bugs 6, 15), no type-3 chunk starting a
new message (bug 4 and the type-0 ambiguity), no Abort (bug 8), no message interleaving
around a SetChunkSize (bug 7), and chunks of a known chunk stream only (bug 10).
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtmp_ingest.rtmp.chunk import ChunkDecoder, ChunkEncoder
from tests.support.pyrtmp_oracle import (
    OracleMessage,
    decode_messages,
    encode_chunks_with_pyrtmp,
)

from .helpers import FIXTURE_NAMES, HANDSHAKE_BYTES, load_fixture

SET_CHUNK_SIZE = 1
SMALL_TS = 10_000_000  #: well below 2^24 - 1, so no sum reaches 0xFFFFFF either

csids = st.one_of(st.integers(2, 63), st.integers(64, 319))
type_ids = st.integers(3, 255)
bodies = st.one_of(st.binary(min_size=1, max_size=40), st.binary(min_size=100, max_size=700))
chunk_sizes = st.one_of(st.integers(1, 200), st.integers(1, 70_000))


@st.composite
def message_lists(draw, *, empty_bodies: bool = False):
    """Ops ("msg", csid, msid, type, ts, body) or ("size", n), timestamps below SMALL_TS."""
    ops = []
    for _ in range(draw(st.integers(1, 15))):
        if draw(st.integers(0, 6)) == 0:
            ops.append(("size", draw(chunk_sizes)))
        else:
            body = draw(bodies | st.just(b"")) if empty_bodies else draw(bodies)
            ops.append(
                (
                    "msg",
                    draw(csids),
                    draw(st.integers(0, 5)),
                    draw(type_ids),
                    draw(st.integers(0, SMALL_TS)),
                    body,
                )
            )
    return ops


def our_encoding(ops) -> tuple[bytes, list[tuple]]:
    """Our encoder's bytes and the messages; never a type-3 header starting a message."""
    encoder = ChunkEncoder()
    out = bytearray()
    expected = []
    for op in ops:
        if op[0] == "size":
            body = struct.pack(">I", op[1])
            encoder.encode(2, 0, SET_CHUNK_SIZE, 0, body, out)
            encoder.set_chunk_size(op[1])
            expected.append((2, SET_CHUNK_SIZE, 0, 0, body))
            continue
        _, csid, msid, type_id, ts, body = op
        before = len(out)
        encoder.encode(csid, msid, type_id, ts, body, out)
        if out[before] >> 6 == 3:  # would hit pyrtmp bug 4: send it with a full header instead
            del out[before:]
            encoder._streams.pop(csid)
            encoder.encode(csid, msid, type_id, ts, body, out)
        expected.append((csid, type_id, msid, ts, body))
    return bytes(out), expected


def ours(data: bytes, chunk_size: int = 128) -> list[tuple]:
    decoder = ChunkDecoder()
    decoder.chunk_size = chunk_size
    return [(csid, type_id, msid, ts, body) for csid, msid, type_id, ts, body in decoder.feed(data)]


def pyrtmp(data: bytes, chunk_size: int = 128) -> list[tuple]:
    return [tuple(m) for m in decode_messages(data, initial_chunk_size=chunk_size)]


DIFF = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@DIFF
@given(message_lists())
def test_our_encoder_output_decodes_the_same_with_pyrtmp_and_ours(ops):
    data, expected = our_encoding(ops)
    assert pyrtmp(data) == ours(data) == expected


@DIFF
@given(message_lists(empty_bodies=True), st.sampled_from([128, 4096]))
def test_pyrtmp_encoded_chunks_decode_with_ours(ops, chunk_size):
    messages = []
    for op in ops:
        if op[0] == "size":
            messages.append(OracleMessage(2, SET_CHUNK_SIZE, 0, 0, struct.pack(">I", op[1])))
        else:
            _, csid, msid, type_id, ts, body = op
            messages.append(OracleMessage(csid, type_id, msid, ts, body))
    data = encode_chunks_with_pyrtmp(messages, chunk_size)
    assert ours(data, chunk_size) == [tuple(m) for m in messages]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(csids, st.integers(0xFFFFFF, 2**32 - 1), st.binary(max_size=400)),
        min_size=1,
        max_size=6,
    )
)
def test_pyrtmp_extended_timestamps_on_type0_and_type3_decode_with_ours(items):
    messages = [OracleMessage(csid, 9, 1, ts, body) for csid, ts, body in items]
    data = encode_chunks_with_pyrtmp(messages, 128)
    assert ours(data) == [tuple(m) for m in messages]


def test_recorded_sessions_decode_to_the_same_messages_with_pyrtmp_and_ours():
    """Real clients' chunk streams: same messages; timestamps are not compared because
    encoders start new messages with type-3 headers (pyrtmp bug 4)."""
    for name in FIXTURE_NAMES:
        data = load_fixture(name)[0][HANDSHAKE_BYTES:]
        untimed = lambda messages: [m[:3] + m[4:] for m in messages]  # noqa: E731
        assert untimed(pyrtmp(data)) == untimed(ours(data)), name

"""Chunk stream layer: encoder → decoder round-trips and hand-built byte sequences."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.rtmp.chunk import ChunkDecoder, ChunkEncoder
from rtmp_ingest.rtmp.errors import RemoteProtocolError
from rtmp_ingest.rtmp.limits import Limits

from .helpers import chunk, encode_messages, feed_decoder, split_feed

SET_CHUNK_SIZE, ABORT, AUDIO, VIDEO, COMMAND = 1, 2, 8, 9, 20
U32 = 1 << 32

# -- strategies ------------------------------------------------------------------------------

csids = st.one_of(
    st.integers(2, 63),
    st.integers(64, 319),
    st.integers(320, 65599),
    st.sampled_from([2, 3, 63, 64, 319, 320, 65599]),
)
msids = st.one_of(st.integers(0, 3), st.integers(0, 0xFFFFFFFF))
type_ids = st.integers(3, 255)  #: 1 and 2 are control messages the decoder obeys
bodies = st.one_of(
    st.binary(max_size=0), st.binary(max_size=40), st.binary(min_size=100, max_size=600)
)
chunk_sizes = st.one_of(st.integers(1, 16), st.integers(17, 300), st.integers(1, 70000))
timestamp_steps = st.one_of(
    st.integers(0, 100),  # ordinary deltas
    st.integers(0, 0x1FFFFFF),  # deltas that need the extended field
    st.integers(-1000, -1),  # backwards jumps
    st.integers(0, U32 - 1),  # anything, wrapping past 2^32
)


@st.composite
def sessions(draw, max_messages: int = 12):
    """(initial chunk size, ops): ops are ("msg", csid, msid, type, ts, body) or ("size", n)."""
    csid_pool = draw(st.lists(csids, min_size=1, max_size=5, unique=True))
    clock = draw(st.one_of(st.just(0), st.integers(0, U32 - 1), st.integers(U32 - 2000, U32 - 1)))
    ops = []
    for _ in range(draw(st.integers(1, max_messages))):
        if draw(st.integers(0, 5)) == 0:
            ops.append(("size", draw(chunk_sizes)))
            continue
        clock = max(0, clock + draw(timestamp_steps))
        ops.append(
            (
                "msg",
                draw(st.sampled_from(csid_pool)),
                draw(msids),
                draw(type_ids),
                clock,
                draw(bodies),
            )
        )
    return draw(chunk_sizes), ops


def encode_session(initial_size, ops):
    """Encodes ops with our encoder; returns (bytes, expected decoded messages)."""
    encoder = ChunkEncoder()
    encoder.set_chunk_size(initial_size)
    out = bytearray()
    expected = []
    for op in ops:
        if op[0] == "size":
            body = struct.pack(">I", op[1])
            encoder.encode(2, 0, SET_CHUNK_SIZE, 0, body, out)
            encoder.set_chunk_size(op[1])  #: both sides switch after the message
            expected.append((2, 0, SET_CHUNK_SIZE, 0, body))
        else:
            _, csid, msid, type_id, ts, body = op
            encoder.encode(csid, msid, type_id, ts, body, out)
            expected.append((csid, msid, type_id, ts % U32, body))
    return bytes(out), expected


def decoder_at(chunk_size: int, **limits) -> ChunkDecoder:
    decoder = ChunkDecoder(limits=Limits(**limits)) if limits else ChunkDecoder()
    decoder.chunk_size = chunk_size  #: as if a SetChunkSize had been received before
    return decoder


# -- round-trips -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(sessions())
def test_encoded_messages_decode_identically_fed_whole(session):
    data, expected = encode_session(*session)
    decoder = decoder_at(session[0])
    assert decoder.feed(data) == expected
    assert decoder.buffered_bytes == 0


@settings(max_examples=200, deadline=None)
@given(sessions(), st.lists(st.integers(0, 20000), max_size=30))
def test_encoded_messages_decode_identically_at_any_split_points(session, cuts):
    data, expected = encode_session(*session)
    assert split_feed(decoder_at(session[0]), data, cuts) == expected


@settings(max_examples=60, deadline=None)
@given(sessions(max_messages=6))
def test_encoded_messages_decode_identically_fed_byte_by_byte(session):
    data, expected = encode_session(*session)
    assert feed_decoder(decoder_at(session[0]), data, bytewise=True) == expected


@pytest.mark.parametrize("csid", [2, 63, 64, 65, 319, 320, 321, 65599])
def test_basic_header_forms_roundtrip_at_their_boundaries(csid, bytewise):
    data = encode_messages([(csid, 1, VIDEO, 5, b"v" * 300), (csid, 1, VIDEO, 10, b"w" * 300)])
    assert feed_decoder(ChunkDecoder(), data, bytewise) == [
        (csid, 1, VIDEO, 5, b"v" * 300),
        (csid, 1, VIDEO, 10, b"w" * 300),
    ]


def test_encoder_compresses_headers_and_decoder_follows(bytewise):
    messages = [(4, 1, AUDIO, t, b"a" * 10) for t in (0, 23, 46, 69)]
    data = encode_messages(messages)
    # type 0 (12-byte header), type 2 (4: new delta), then type 3 (1: same delta) twice
    assert len(data) == 12 + 4 + 1 + 1 + 4 * 10
    assert [data[offset] >> 6 for offset in (0, 22, 36, 47)] == [0, 2, 3, 3]
    assert feed_decoder(ChunkDecoder(), data, bytewise) == messages


def test_set_chunk_size_mid_session_switches_the_decoder(bytewise):
    encoder = ChunkEncoder()
    out = bytearray()
    encoder.encode(6, 1, AUDIO, 0, b"x" * 300, out)
    encoder.encode(2, 0, SET_CHUNK_SIZE, 0, struct.pack(">I", 7), out)
    encoder.set_chunk_size(7)
    encoder.encode(6, 1, AUDIO, 10, b"y" * 30, out)
    decoder = ChunkDecoder()
    got = feed_decoder(decoder, bytes(out), bytewise)
    assert [m[4] for m in got] == [b"x" * 300, struct.pack(">I", 7), b"y" * 30]
    assert decoder.chunk_size == 7


def test_set_chunk_size_ignores_the_high_bit():
    decoder = ChunkDecoder()
    decoder.feed(chunk(0, 2, struct.pack(">I", 0x80000100), length=4, type_id=SET_CHUNK_SIZE))
    assert decoder.chunk_size == 0x100


# -- timestamps --------------------------------------------------------------------------------


def test_type1_and_type2_extended_values_are_deltas(bytewise):
    data = (
        chunk(0, 4, b"a", ts=1000, length=1, type_id=AUDIO, msid=1)
        + chunk(1, 4, b"bb", ts=0x1000000, length=2, type_id=AUDIO)
        + chunk(2, 4, b"cc", ts=0xFFFFFF)
    )
    got = feed_decoder(ChunkDecoder(), data, bytewise)
    assert [m[3] for m in got] == [1000, 1000 + 0x1000000, 1000 + 0x1000000 + 0xFFFFFF]


def test_type0_extended_timestamp_is_absolute(bytewise):
    data = chunk(0, 4, b"a", ts=0x12345678, length=1, type_id=AUDIO, msid=1)
    assert feed_decoder(ChunkDecoder(), data, bytewise) == [(4, 1, AUDIO, 0x12345678, b"a")]


def _long_message(ts: int, body: bytes, *, ext_on_type3: bool) -> bytes:
    out = chunk(0, 6, body[:128], ts=ts, length=len(body), type_id=VIDEO, msid=1)
    for i in range(128, len(body), 128):
        out += chunk(3, 6, body[i : i + 128], ext=ts if ext_on_type3 else None)
    return out


BODY = bytes(range(256)) * 2


def test_type3_continuation_with_extended_timestamp_from_ffmpeg_decodes(bytewise):
    data = _long_message(0x1234567, BODY, ext_on_type3=True) + chunk(
        0, 4, b"z", length=1, type_id=AUDIO, msid=1
    )
    got = feed_decoder(ChunkDecoder(), data, bytewise)
    assert got[0] == (6, 1, VIDEO, 0x1234567, BODY)
    assert got[1][4] == b"z"


def test_type3_continuation_without_extended_timestamp_from_rtmpdump_decodes(bytewise):
    data = _long_message(0x1234567, BODY, ext_on_type3=False) + chunk(
        0, 4, b"z", length=1, type_id=AUDIO, msid=1
    )
    got = feed_decoder(ChunkDecoder(), data, bytewise)
    assert got[0] == (6, 1, VIDEO, 0x1234567, BODY)
    assert got[1][4] == b"z"


def test_type3_starting_a_new_message_after_type2_applies_the_delta(bytewise):
    data = (
        chunk(0, 4, b"a", ts=100, length=1, type_id=AUDIO, msid=1)
        + chunk(2, 4, b"b", ts=40)
        + chunk(3, 4, b"c")
        + chunk(3, 4, b"d")
    )
    assert [m[3] for m in feed_decoder(ChunkDecoder(), data, bytewise)] == [100, 140, 180, 220]


def test_type3_new_message_after_extended_type2_applies_the_extended_delta(bytewise):
    delta = 0x1000000
    data = (
        chunk(0, 4, b"a", ts=5, length=1, type_id=AUDIO, msid=1)
        + chunk(2, 4, b"b", ts=delta)
        + chunk(3, 4, b"c", ext=delta)
    )
    assert [m[3] for m in feed_decoder(ChunkDecoder(), data, bytewise)] == [
        5,
        5 + delta,
        5 + 2 * delta,
    ]


def test_type3_new_message_after_type0_adds_the_type0_field_like_ffmpeg(bytewise):
    data = chunk(0, 4, b"a", ts=100, length=1, type_id=AUDIO, msid=1) + chunk(3, 4, b"b")
    assert [m[3] for m in feed_decoder(ChunkDecoder(), data, bytewise)] == [100, 200]


def test_timestamps_wrap_modulo_2_to_the_32(bytewise):
    data = chunk(0, 4, b"a", ts=U32 - 10, length=1, type_id=AUDIO, msid=1) + chunk(
        2, 4, b"b", ts=30
    )
    assert [m[3] for m in feed_decoder(ChunkDecoder(), data, bytewise)] == [U32 - 10, 20]


def test_encoder_backwards_jump_uses_an_absolute_header(bytewise):
    messages = [(4, 1, AUDIO, 5000, b"a"), (4, 1, AUDIO, 4000, b"b"), (4, 1, AUDIO, 4100, b"c")]
    data = encode_messages(messages)
    assert feed_decoder(ChunkDecoder(), data, bytewise) == messages


# -- message assembly ----------------------------------------------------------------------------


def test_abort_discards_a_partial_message(bytewise):
    data = (
        chunk(0, 6, b"x" * 128, length=300, type_id=VIDEO, msid=1)
        + chunk(0, 2, struct.pack(">I", 6), length=4, type_id=ABORT)
        + chunk(0, 6, b"fresh", ts=7, length=5, type_id=VIDEO, msid=1)
    )
    got = feed_decoder(ChunkDecoder(), data, bytewise)
    assert got == [(2, 0, ABORT, 0, struct.pack(">I", 6)), (6, 1, VIDEO, 7, b"fresh")]


def test_abort_of_an_idle_or_unknown_chunk_stream_is_harmless():
    decoder = ChunkDecoder()
    decoder.feed(chunk(0, 2, struct.pack(">I", 40), length=4, type_id=ABORT))
    assert decoder.feed(chunk(0, 4, b"a", length=1, type_id=AUDIO, msid=1)) == [
        (4, 1, AUDIO, 0, b"a")
    ]


def test_interleaved_chunk_streams_reassemble_independently(bytewise):
    video, audio = b"V" * 300, b"A" * 200
    data = (
        chunk(0, 6, video[:128], ts=10, length=300, type_id=VIDEO, msid=1)
        + chunk(0, 4, audio[:128], ts=11, length=200, type_id=AUDIO, msid=1)
        + chunk(3, 6, video[128:256])
        + chunk(3, 4, audio[128:])
        + chunk(3, 6, video[256:])
    )
    assert feed_decoder(ChunkDecoder(), data, bytewise) == [
        (4, 1, AUDIO, 11, audio),
        (6, 1, VIDEO, 10, video),
    ]


def test_new_type0_header_in_mid_message_replaces_the_partial_message(bytewise):
    data = chunk(0, 6, b"x" * 128, length=300, type_id=VIDEO, msid=1) + chunk(
        0, 6, b"new", ts=3, length=3, type_id=VIDEO, msid=1
    )
    assert feed_decoder(ChunkDecoder(), data, bytewise) == [(6, 1, VIDEO, 3, b"new")]


def test_empty_message_decodes():
    assert ChunkDecoder().feed(chunk(0, 3, length=0, type_id=COMMAND)) == [(3, 0, COMMAND, 0, b"")]


def test_partial_chunk_changes_no_state():
    decoder = ChunkDecoder()
    data = chunk(0, 4, b"abc", ts=9, length=3, type_id=AUDIO, msid=1)
    assert decoder.feed(data[:-1]) == []
    assert decoder.buffered_bytes == len(data) - 1
    assert decoder.feed(data[-1:]) == [(4, 1, AUDIO, 9, b"abc")]


# -- protocol errors and limits -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [1, 2, 3])
def test_compressed_header_on_an_unknown_chunk_stream_is_a_protocol_error(fmt):
    with pytest.raises(RemoteProtocolError, match="chunk stream 9"):
        ChunkDecoder().feed(chunk(fmt, 9, b"x", length=1, type_id=AUDIO))


def test_message_larger_than_max_message_bytes_names_the_limit():
    decoder = ChunkDecoder(limits=Limits(max_message_bytes=100))
    assert decoder.feed(chunk(0, 4, b"a" * 100, length=100, type_id=AUDIO))
    with pytest.raises(RemoteProtocolError, match="max_message_bytes"):
        decoder.feed(chunk(0, 4, b"a" * 101, length=101, type_id=AUDIO))


def test_oversized_message_is_refused_from_its_header_alone():
    decoder = ChunkDecoder(limits=Limits(max_message_bytes=1000))
    with pytest.raises(RemoteProtocolError, match="max_message_bytes"):
        decoder.feed(chunk(0, 4, length=0xFFFFFF, type_id=VIDEO))


def test_partial_messages_beyond_max_pending_bytes_name_the_limit():
    decoder = ChunkDecoder(limits=Limits(max_pending_bytes=500))
    decoder.feed(
        chunk(0, 4, b"a" * 128, length=250, type_id=AUDIO)
        + chunk(0, 5, b"b" * 128, length=250, type_id=AUDIO)
    )
    with pytest.raises(RemoteProtocolError, match="max_pending_bytes"):
        decoder.feed(chunk(0, 6, b"c" * 128, length=200, type_id=AUDIO))


def test_completed_messages_release_their_pending_bytes():
    decoder = ChunkDecoder(limits=Limits(max_pending_bytes=300))
    for _ in range(20):
        decoder.feed(chunk(0, 4, b"a" * 128, length=250, type_id=AUDIO) + chunk(3, 4, b"a" * 122))


def test_more_chunk_streams_than_max_chunk_streams_names_the_limit():
    decoder = ChunkDecoder(limits=Limits(max_chunk_streams=3))
    decoder.feed(b"".join(chunk(0, c, b"", type_id=AUDIO) for c in (2, 3, 4)))
    with pytest.raises(RemoteProtocolError, match="max_chunk_streams"):
        decoder.feed(chunk(0, 5, b"", type_id=AUDIO))


def test_decoder_stays_failed_after_an_error():
    decoder = ChunkDecoder()
    with pytest.raises(RemoteProtocolError) as first:
        decoder.feed(chunk(3, 9, b"x"))
    with pytest.raises(RemoteProtocolError) as again:
        decoder.feed(chunk(0, 4, b"a", length=1, type_id=AUDIO))
    assert again.value is first.value


@pytest.mark.parametrize(
    "body", [b"", b"\x00\x00\x01", struct.pack(">I", 0), struct.pack(">I", 0x80000000)]
)
def test_set_chunk_size_zero_or_short_is_a_protocol_error(body):
    with pytest.raises(RemoteProtocolError):
        ChunkDecoder().feed(chunk(0, 2, body, length=len(body), type_id=SET_CHUNK_SIZE))


def test_short_abort_is_a_protocol_error():
    with pytest.raises(RemoteProtocolError):
        ChunkDecoder().feed(chunk(0, 2, b"\x00", length=1, type_id=ABORT))


@pytest.mark.parametrize("csid", [0, 1, 65600])
def test_encoder_refuses_chunk_stream_ids_outside_2_to_65599(csid):
    with pytest.raises(ValueError):
        ChunkEncoder().encode(csid, 0, AUDIO, 0, b"", bytearray())


@pytest.mark.parametrize("size", [0, 0x80000000])
def test_encoder_refuses_chunk_sizes_outside_1_to_2_31(size):
    with pytest.raises(ValueError):
        ChunkEncoder().set_chunk_size(size)

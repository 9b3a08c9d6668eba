"""Self-check of the pyrtmp oracle + executable evidence for the pyrtmp bugs it documents.

The byte streams are built by hand with a tiny spec-following encoder (stdlib only).
"""

from __future__ import annotations

import struct

import pytest

from tests.support.pyrtmp_oracle import (
    OracleError,
    OracleMessage,
    decode_messages,
    decode_throughput,
    encode_chunks_with_pyrtmp,
)

EXT = 0xFFFFFF


# --------------------------------------------------------------------------- encoder
def basic_header(fmt: int, csid: int) -> bytes:
    if 2 <= csid <= 63:
        return bytes([(fmt << 6) | csid])
    if 64 <= csid <= 319:
        return bytes([fmt << 6, csid - 64])
    return bytes([(fmt << 6) | 1]) + struct.pack("<H", csid - 64)  # spec: little-endian


def u24(v: int) -> bytes:
    return v.to_bytes(3, "big")


def chunk(fmt, csid, payload=b"", *, ts=0, length=0, mtype=0, msid=0, ext=None) -> bytes:
    """One chunk. ts = timestamp (fmt 0) or delta (fmt 1/2); ext = extended field to append."""
    out = basic_header(fmt, csid)
    field = EXT if ts >= EXT else ts
    if fmt == 0:
        out += u24(field) + u24(length) + bytes([mtype]) + struct.pack("<I", msid)
    elif fmt == 1:
        out += u24(field) + u24(length) + bytes([mtype])
    elif fmt == 2:
        out += u24(field)
    if ext is None and fmt != 3 and ts >= EXT:
        ext = ts
    if ext is not None:
        out += struct.pack(">I", ext)
    return out + payload


def message(csid, mtype, msid, ts, payload, chunk_size=128, *, ext_on_type3=True) -> bytes:
    """Type-0 chunk + type-3 continuations (extended timestamp repeated on type 3)."""
    out = chunk(0, csid, payload[:chunk_size], ts=ts, length=len(payload), mtype=mtype, msid=msid)
    for i in range(chunk_size, len(payload), chunk_size):
        e = ts if (ts >= EXT and ext_on_type3) else None
        out += chunk(3, csid, payload[i : i + chunk_size], ext=e)
    return out


def set_chunk_size(n: int, ts: int = 0) -> bytes:
    return chunk(0, 2, struct.pack(">I", n), ts=ts, length=4, mtype=1, msid=0)


def pat(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


M = OracleMessage


# --------------------------------------------------------------------------- self-check
def test_oracle_decodes_hand_built_stream():
    cmd = pat(300, 1)
    v1, v2, a1, a2 = pat(10000, 2), pat(5000, 3), pat(400, 4), pat(400, 5)
    data = message(3, 20, 0, 0, cmd, 128)  # type 0 + 2x type 3 at chunk size 128
    data += set_chunk_size(4096)
    # video 1: type 0 + type 3 + type 3 (4096+4096+1808), audio interleaved after chunk 1
    data += chunk(0, 6, v1[:4096], ts=1000, length=10000, mtype=9, msid=1)
    data += chunk(0, 4, a1, ts=1010, length=400, mtype=8, msid=1)
    data += chunk(3, 6, v1[4096:8192])
    data += chunk(3, 6, v1[8192:])
    # video 2: type 1 (delta 33, new length) + type 3 continuation
    data += chunk(1, 6, v2[:4096], ts=33, length=5000, mtype=9)
    # audio 2: type 2 (delta 23), interleaved inside video 2
    data += chunk(2, 4, a2, ts=23)
    data += chunk(3, 6, v2[4096:])
    # an empty message, and a 2-byte basic header chunk stream id
    data += chunk(0, 5, b"", ts=5, length=0, mtype=18, msid=1)
    data += message(300, 9, 1, 2000, pat(200, 6), 4096)

    assert decode_messages(data) == [
        M(3, 20, 0, 0, cmd),
        M(2, 1, 0, 0, struct.pack(">I", 4096)),
        M(4, 8, 1, 1010, a1),
        M(6, 9, 1, 1000, v1),
        M(4, 8, 1, 1033, a2),
        M(6, 9, 1, 1033, v2),
        M(5, 18, 1, 5, b""),
        M(300, 9, 1, 2000, pat(200, 6)),
    ]


def test_truncated_stream_strict_and_lenient():
    data = message(3, 20, 0, 0, pat(300, 1)) + message(6, 9, 1, 10, pat(300, 2))
    with pytest.raises(OracleError, match="trailing"):
        decode_messages(data[:-5])
    with pytest.raises(OracleError, match="incomplete"):
        decode_messages(data[: -(300 - 256) - 1])  # cut right before the last type-3 chunk
    assert decode_messages(data[:-5], strict=False) == [M(3, 20, 0, 0, pat(300, 1))]


def test_single_chunk_extended_timestamp_type0_ok():
    data = message(6, 9, 1, 0x01234567, pat(100, 1))
    assert decode_messages(data) == [M(6, 9, 1, 0x01234567, pat(100, 1))]


def test_encoder_roundtrip_through_oracle():
    msgs = [
        M(2, 1, 0, 0, struct.pack(">I", 1000)),
        M(6, 9, 1, 40, pat(2500, 1)),
        M(4, 8, 1, 45, pat(300, 2)),
        M(4, 8, 1, 46, b""),
    ]
    assert decode_messages(encode_chunks_with_pyrtmp(msgs, 128)) == msgs
    # and the encoder matches the hand-built spec encoder byte for byte
    hand = set_chunk_size(1000) + message(6, 9, 1, 40, pat(2500, 1), 1000)
    hand += message(4, 8, 1, 45, pat(300, 2), 1000) + chunk(0, 4, ts=46, length=0, mtype=8, msid=1)
    assert encode_chunks_with_pyrtmp(msgs, 128) == hand


def test_throughput_returns_positive_number():
    data = message(6, 9, 1, 0, pat(20000, 1))
    assert decode_throughput(data) > 0


# --------------------------------------------------------------------------- pyrtmp bugs
# These assert pyrtmp's (wrong) behaviour, so the oracle docs stay honest.


def test_bug1_extended_timestamp_on_type3_not_read():
    ts = 0x01000000
    data = message(6, 9, 1, ts, pat(300, 1)) + message(6, 9, 1, ts + 40, pat(10, 2))
    try:
        got = decode_messages(data)
    except OracleError:
        return
    assert got != [M(6, 9, 1, ts, pat(300, 1)), M(6, 9, 1, ts + 40, pat(10, 2))]
    # without the repeated field (non-compliant encoder) pyrtmp gets it right:
    data = message(6, 9, 1, ts, pat(300, 1), ext_on_type3=False)
    assert decode_messages(data) == [M(6, 9, 1, ts, pat(300, 1))]


def test_bug2_extended_delta_on_type1_not_read():
    data = chunk(0, 6, pat(10, 1), ts=1000, length=10, mtype=9, msid=1)
    data += chunk(1, 6, pat(10, 2), ts=EXT, length=10, mtype=9, ext=0x01000000)
    data += chunk(2, 6, pat(10, 3), ts=1)
    try:
        got = decode_messages(data, strict=False)
    except OracleError as e:
        got = e.messages
    assert got[1:] != [
        M(6, 9, 1, 1000 + 0x01000000, pat(10, 2)),
        M(6, 9, 1, 1001 + 0x01000000, pat(10, 3)),
    ]
    assert got[1].payload != pat(10, 2)  # the 4 extended bytes were taken as payload


def test_bug3_sum_equal_to_0xffffff_reads_phantom_extended_field():
    data = chunk(0, 6, pat(10, 1), ts=EXT - 1, length=10, mtype=9, msid=1)
    data += chunk(2, 6, pat(10, 2), ts=1)  # timestamp 0xFFFFFF, no extended field sent
    got = decode_messages(data, strict=False)
    assert got[0] == M(6, 9, 1, EXT - 1, pat(10, 1))
    assert got[1:] != [M(6, 9, 1, EXT, pat(10, 2))]
    assert len(got) == 1  # 4 payload bytes eaten as timestamp -> message never completes


def test_bug4_type3_new_message_does_not_reapply_delta():
    data = chunk(0, 6, pat(10, 1), ts=100, length=10, mtype=9, msid=1)
    data += chunk(1, 6, pat(10, 2), ts=40, length=10, mtype=9)
    data += chunk(3, 6, pat(10, 3))
    got = decode_messages(data)
    assert [m.timestamp for m in got] == [100, 140, 140]  # spec: 100, 140, 180


def test_bug5_timestamp_not_wrapped():
    data = chunk(0, 6, pat(10, 1), ts=0xFFFFFFF0, length=10, mtype=9, msid=1)
    data += chunk(2, 6, pat(10, 2), ts=0x20)
    got = decode_messages(data)
    assert got[1].timestamp == 0x1_0000_0010  # spec (mod 2**32): 0x10


def test_bug6_three_byte_csid_read_big_endian():
    data = message(400, 9, 1, 0, pat(10, 1))
    got = decode_messages(data)
    assert got[0].chunk_stream_id != 400
    assert got[0].chunk_stream_id == int.from_bytes((400 - 64).to_bytes(2, "little"), "big") + 64


def test_bug7_set_chunk_size_mid_message_on_other_csid():
    v = pat(300, 1)
    data = chunk(0, 6, v[:128], ts=0, length=300, mtype=9, msid=1)
    data += set_chunk_size(100)
    data += chunk(3, 6, v[128:228]) + chunk(3, 6, v[228:])
    data += message(4, 8, 1, 0, pat(10, 2), 100)
    try:
        got = decode_messages(data, strict=False)
    except OracleError as e:
        got = e.messages
    assert got != [
        M(2, 1, 0, 0, struct.pack(">I", 100)),
        M(6, 9, 1, 0, v),
        M(4, 8, 1, 0, pat(10, 2)),
    ]


def test_bug8_abort_message_ignored():
    data = chunk(0, 6, pat(128, 1), ts=0, length=300, mtype=9, msid=1)
    data += chunk(0, 2, struct.pack(">I", 6), length=4, mtype=2, msid=0)  # Abort csid 6
    data += message(6, 9, 1, 40, pat(50, 2))
    try:
        got = decode_messages(data, strict=False)
    except OracleError as e:
        got = e.messages
    assert M(6, 9, 1, 40, pat(50, 2)) not in got


def test_bug10_type3_on_unknown_csid_is_keyerror():
    with pytest.raises(OracleError, match="KeyError"):
        decode_messages(chunk(3, 6, b"x"))


def test_bug12_writer_faithful_writes_timestamp_zero():
    msgs = [M(6, 9, 1, 1234, pat(10, 1))]
    assert decode_messages(encode_chunks_with_pyrtmp(msgs, faithful=True))[0].timestamp == 0


def test_bug16_amf_non_ascii_string_truncated_on_write():
    from bitstring import BitStream
    from pyrtmp.amf.serializers import AMF0Serializer

    s = BitStream()
    AMF0Serializer.write_string_object(s, "caf\u00e9")  # 5 UTF-8 bytes, 4 chars
    assert s.bytes == b"\x02\x00\x04caf\xc3"  # spec: b"\x02\x00\x05caf\xc3\xa9"


def test_set_chunk_size_zero_or_bit31_rejected_by_pyrtmp_assertion():
    for bad in (0, 0x80000100):
        with pytest.raises(OracleError, match="AssertionError"):
            decode_messages(set_chunk_size(bad) + message(6, 9, 1, 0, pat(10, 1)))


def test_bench_session_decodes_exactly():
    from tests.support.bench_pyrtmp_oracle import synthetic_messages, synthetic_session

    want = [M(*m) for m in synthetic_messages(0.5)]
    assert decode_messages(synthetic_session(128, 0.5)) == want
    got = decode_messages(synthetic_session(4096, 0.5))
    assert got[0] == M(2, 1, 0, 0, struct.pack(">I", 4096)) and got[1:] == want

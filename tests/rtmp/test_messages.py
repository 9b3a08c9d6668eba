"""Message bodies: control/user control parsers, commands, data, aggregates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.rtmp import amf0, amf3
from rtmp_ingest.rtmp import messages as msg
from rtmp_ingest.rtmp.errors import RemoteProtocolError

LIMITS = {"max_depth": 32, "max_items": 65536}


def test_u32_peer_bandwidth_and_user_control_bodies_roundtrip():
    assert msg.parse_u32(msg.u32_body(2_500_000), "x") == 2_500_000
    assert msg.parse_peer_bandwidth(msg.peer_bandwidth_body(2_500_000, 2)) == (2_500_000, 2)
    assert msg.parse_user_control(msg.user_control_body(msg.PING_REQUEST, 77)) == (6, 77, 0)
    assert msg.parse_user_control(msg.user_control_body(msg.SET_BUFFER_LENGTH, 1, 3000)) == (
        3,
        1,
        3000,
    )


@pytest.mark.parametrize(
    "parse",
    [
        lambda b: msg.parse_u32(b, "Acknowledgement"),
        msg.parse_peer_bandwidth,
        msg.parse_user_control,
    ],
)
@pytest.mark.parametrize("body", [b"", b"\x00", b"\x00\x01\x02"])
def test_short_control_bodies_are_protocol_errors(parse, body):
    with pytest.raises(RemoteProtocolError):
        parse(body)


def test_command_roundtrips_name_transaction_id_and_arguments():
    body = msg.command_body("publish", 5, None, "mystream", "live")
    assert msg.parse_command(msg.COMMAND_AMF0, body, **LIMITS) == (
        "publish",
        5.0,
        [None, "mystream", "live"],
    )


def test_amf3_command_skips_its_format_byte():
    body = b"\x00" + msg.command_body("connect", 1, {"app": "live"})
    assert msg.parse_command(msg.COMMAND_AMF3, body, **LIMITS) == (
        "connect",
        1.0,
        [{"app": "live"}],
    )


def test_command_without_transaction_id_defaults_to_zero():
    assert msg.parse_command(msg.COMMAND_AMF0, amf0.encode("onBWDone"), **LIMITS) == (
        "onBWDone",
        0.0,
        [],
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        amf0.encode(1.0),
        amf0.encode(None, 1.0),
        amf0.encode("x", "1"),
        amf0.encode("x", True),
        amf0.encode("x", None),
    ],
)
def test_command_without_name_or_numeric_transaction_id_is_a_protocol_error(body):
    with pytest.raises(RemoteProtocolError):
        msg.parse_command(msg.COMMAND_AMF0, body, **LIMITS)


def test_data_amf3_skips_its_format_byte_and_allows_avmplus_values():
    body = b"\x00" + amf0.encode("onMetaData") + b"\x11" + amf3.encode({"w": 160})
    assert msg.parse_data(msg.DATA_AMF3, body, **LIMITS) == ["onMetaData", {"w": 160}]


# -- aggregates ----------------------------------------------------------------------------------

sub_messages = st.lists(
    st.tuples(st.sampled_from([8, 9, 18]), st.integers(0, 2**32 - 1), st.binary(max_size=50)),
    max_size=6,
)


def test_aggregate_sub_messages_are_timed_relative_to_the_first():
    body = msg.aggregate_body([(9, 1000, b"v1"), (8, 1020, b"a1"), (9, 1040, b"v2")])
    assert list(msg.split_aggregate(body, 5000)) == [
        (9, 5000, b"v1"),
        (8, 5020, b"a1"),
        (9, 5040, b"v2"),
    ]


def test_aggregate_sub_timestamps_use_the_extension_byte():
    body = msg.aggregate_body([(9, 0x01FFFFF0, b"x"), (9, 0x02000010, b"y")])
    assert [t for _, t, _ in msg.split_aggregate(body, 0)] == [0, 0x20]


@settings(max_examples=100, deadline=None)
@given(sub_messages, st.integers(0, 2**32 - 1))
def test_aggregate_roundtrips(items, base):
    parts = list(msg.split_aggregate(msg.aggregate_body(items), base))
    assert [(t, b) for t, _, b in parts] == [(t, b) for t, _, b in items]
    if items:
        first = items[0][1]
        assert [ts for _, ts, _ in parts] == [(base + t - first) % 2**32 for _, t, _ in items]


@pytest.mark.parametrize(
    "body",
    [
        b"\x09\x00\x00",  # truncated tag header
        b"\x09\x00\x00\x10" + bytes(7) + b"short",  # sub-message longer than the aggregate
        b"\x09\x00\x00\x01" + bytes(7) + b"x" + b"\x00\x00",  # truncated back pointer
    ],
)
def test_malformed_aggregate_is_a_protocol_error(body):
    with pytest.raises(RemoteProtocolError):
        list(msg.split_aggregate(body, 0))

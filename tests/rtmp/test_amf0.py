"""AMF0: every type round-trips; malformed input and limits are RemoteProtocolErrors."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.rtmp import amf0, amf3
from rtmp_ingest.rtmp.amf0 import (
    UNDEFINED,
    Date,
    EcmaArray,
    Reference,
    TypedObject,
    XmlDocument,
    decode_all,
    encode,
)
from rtmp_ingest.rtmp.errors import RemoteProtocolError

# -- strategies ---------------------------------------------------------------------------

#: keys are short strings (encoded as u16-length strings): anything but the empty key,
#: which would read as the object end marker when followed by 0x09
keys = st.text(min_size=1, max_size=8)
finite_numbers = st.floats(allow_nan=False)
scalars = st.one_of(
    finite_numbers,
    st.booleans(),
    st.text(max_size=40),
    st.none(),
    st.just(UNDEFINED),
    st.builds(Reference, st.integers(0, 0xFFFF)),
    st.builds(Date, finite_numbers, st.integers(-0x8000, 0x7FFF)),
    st.builds(XmlDocument, st.text(max_size=40)),
)


def _containers(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.dictionaries(keys, children, max_size=4),
        st.dictionaries(keys, children, max_size=4).map(EcmaArray),
        st.lists(children, max_size=4),
        st.builds(TypedObject, st.text(max_size=10), st.dictionaries(keys, children, max_size=4)),
    )


amf0_values = st.recursive(scalars, _containers, max_leaves=20)


def roundtrip(*values):
    return decode_all(encode(*values))


# -- round-trips ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(amf0_values, max_size=4))
def test_any_amf0_values_roundtrip(values):
    assert roundtrip(*values) == values


@settings(max_examples=50, deadline=None)
@given(amf0_values)
def test_decoded_containers_keep_their_amf0_type(value):
    decoded = roundtrip(value)[0]
    assert type(decoded) is type(value) or (isinstance(value, int) and isinstance(decoded, float))


def test_nan_decodes_as_nan_and_infinities_roundtrip():
    nan, inf, ninf = roundtrip(float("nan"), float("inf"), float("-inf"))
    assert math.isnan(nan)
    assert (inf, ninf) == (math.inf, -math.inf)
    assert not amf0.is_number(nan) and not amf0.is_number(inf)


def test_ints_encode_as_numbers():
    assert encode(3) == b"\x00" + struct.pack(">d", 3.0)
    assert roundtrip(3) == [3.0]


@pytest.mark.parametrize("text", ["", "é", "ストリーム", "🎥 live", "a\x00b"])
def test_non_ascii_strings_roundtrip(text):
    assert roundtrip(text) == [text]


def test_string_of_65535_utf8_bytes_is_a_short_string():
    text = "x" * 0xFFFF
    data = encode(text)
    assert data[0] == amf0.STRING
    assert roundtrip(text) == [text]


@pytest.mark.parametrize("text", ["y" * 0x10000, "é" * 40000])
def test_strings_past_65535_utf8_bytes_are_long_strings(text):
    data = encode(text)
    assert data[0] == amf0.LONG_STRING
    assert struct.unpack(">I", data[1:5])[0] == len(text.encode())
    assert roundtrip(text) == [text]


def test_long_xml_document_roundtrips():
    doc = XmlDocument("<a>" + "z" * 70000 + "</a>")
    decoded = roundtrip(doc)[0]
    assert isinstance(decoded, XmlDocument) and decoded == doc


def test_nested_objects_roundtrip():
    value = {"a": [1.0, {"b": EcmaArray(c=None)}], "d": TypedObject("T", {"e": UNDEFINED})}
    assert roundtrip(value) == [value]


def test_date_keeps_timestamp_and_timezone():
    assert roundtrip(Date(1_700_000_000_000.0, -60)) == [Date(1_700_000_000_000.0, -60)]


def test_avmplus_switch_decodes_one_amf3_value_then_back_to_amf0():
    data = b"\x11" + amf3.encode({"k": [1, "two"]}) + encode("after")
    assert decode_all(data) == [{"k": [1, "two"]}, "after"]


# -- ECMA arrays are read to their end marker ---------------------------------------------


def _ecma(count: int, body: bytes) -> bytes:
    return bytes([amf0.ECMA_ARRAY]) + struct.pack(">I", count) + body


def _prop(key: str, value) -> bytes:
    raw = key.encode()
    return struct.pack(">H", len(raw)) + raw + encode(value)


@pytest.mark.parametrize("count", [0, 1, 7, 0xFFFFFFFF])
def test_ecma_array_with_a_wrong_count_decodes_to_its_end_marker(count):
    data = _ecma(count, _prop("a", 1.0) + _prop("b", "x") + b"\x00\x00\x09") + encode("next")
    assert decode_all(data) == [EcmaArray(a=1.0, b="x"), "next"]


def test_ecma_array_without_end_marker_at_end_of_data_decodes():
    data = encode("onMetaData") + _ecma(2, _prop("width", 160.0) + _prop("height", 120.0))
    assert decode_all(data) == ["onMetaData", EcmaArray(width=160.0, height=120.0)]


def test_object_without_end_marker_is_a_protocol_error():
    with pytest.raises(RemoteProtocolError):
        decode_all(bytes([amf0.OBJECT]) + _prop("a", 1.0))


# -- malformed input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01\x02",  # truncated number
        b"\x02\x00\x05ab",  # string shorter than its length
        b"\x0c\xff\xff\xff\xffab",  # long string claiming 4 GiB
        b"\x0a\x00\x00\x00\x05\x05",  # strict array claiming more items than bytes
        b"\x09",  # object end outside an object
        b"\x0d",  # unsupported
        b"\x04",  # movieclip
        b"\x0e",  # recordset
        b"\x12",  # beyond the last marker
        b"\x0b\x00",  # truncated date
        b"\x07\x00",  # truncated reference
        b"\x10\x00\x01T",  # typed object without properties
        b"\x11",  # AVM+ switch without a value
    ],
)
def test_malformed_amf0_is_a_remote_protocol_error(data):
    with pytest.raises(RemoteProtocolError):
        decode_all(data)


def test_invalid_utf8_is_replaced_not_raised():
    assert decode_all(b"\x02\x00\x02\xff\xfe") == ["\ufffd\ufffd"]


# -- limits -------------------------------------------------------------------------------


def _nested_lists(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_at_max_depth_decodes():
    value = _nested_lists(5)
    assert decode_all(encode(value), max_depth=5) == [value]


@pytest.mark.parametrize(
    "make",
    [
        lambda v: v,  # strict arrays
        lambda v: {"k": v},
        lambda v: EcmaArray(k=v),
        lambda v: TypedObject("T", {"k": v}),
    ],
)
def test_nesting_past_max_depth_names_the_limit(make):
    value = _nested_lists(6)
    with pytest.raises(RemoteProtocolError, match="max_amf_depth"):
        decode_all(encode(make(value)), max_depth=5)


def test_default_depth_limit_stops_deep_nesting_before_recursion_error():
    data = b"\x0a\x00\x00\x00\x01" * 10_000 + b"\x05"
    with pytest.raises(RemoteProtocolError, match="max_amf_depth"):
        decode_all(data)


def test_amf3_nesting_through_the_switch_counts_against_max_depth():
    data = b"\x0a\x00\x00\x00\x01" * 3 + b"\x11" + amf3.encode(_nested_lists(3))
    assert decode_all(data, max_depth=6)
    with pytest.raises(RemoteProtocolError, match="max_amf_depth"):
        decode_all(data, max_depth=5)


@pytest.mark.parametrize(
    "value",
    [
        {str(i): 1.0 for i in range(11)},
        EcmaArray({str(i): 1.0 for i in range(11)}),
        TypedObject("T", {str(i): 1.0 for i in range(11)}),
    ],
)
def test_too_many_properties_names_max_amf_items(value):
    assert decode_all(encode(value), max_items=11) == [value]
    with pytest.raises(RemoteProtocolError, match="max_amf_items"):
        decode_all(encode(value), max_items=10)


def test_strict_array_longer_than_max_items_names_the_limit():
    value = [None] * 11
    assert decode_all(encode(value), max_items=11) == [value]
    with pytest.raises(RemoteProtocolError, match="max_amf_items"):
        decode_all(encode(value), max_items=10)


def test_encoding_an_unknown_type_is_a_type_error():
    with pytest.raises(TypeError):
        encode(object())


@pytest.mark.parametrize(
    "value", [b"\x00bytes", amf3.Amf3Array({"a": 1}, [None, "s"]), [b"", {"k": b"v"}]]
)
def test_amf3_only_values_encode_through_the_avmplus_switch(value):
    """What an AVM+ switch decodes to (ByteArray, associative arrays) encodes back."""
    body = encode(value)
    assert b"\x11" in body
    assert decode_all(body) == [value]

"""AMF3 through the AVM+ switch (0x11): the supported subset round-trips; the rest is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.rtmp import amf0, amf3
from rtmp_ingest.rtmp.amf0 import UNDEFINED, Date, XmlDocument
from rtmp_ingest.rtmp.amf3 import Amf3Array, Decoder, encode
from rtmp_ingest.rtmp.errors import RemoteProtocolError

keys = st.text(min_size=1, max_size=8)
scalars = st.one_of(
    st.just(UNDEFINED),
    st.none(),
    st.booleans(),
    st.integers(-(1 << 28), (1 << 28) - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.builds(XmlDocument, st.text(max_size=30)),
    st.builds(Date, st.floats(allow_nan=False)),
    st.binary(max_size=30),
)


def _containers(children):
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.builds(
            Amf3Array,
            st.dictionaries(keys, children, min_size=1, max_size=3),
            st.lists(children, max_size=3),
        ),
    )


amf3_values = st.recursive(scalars, _containers, max_leaves=15)


def via_switch(value):
    """An AMF3 value wrapped in AMF0 (AVM+ marker), decoded by the AMF0 decoder."""
    return amf0.decode_all(b"\x11" + encode(value))[0]


@settings(max_examples=300, deadline=None)
@given(amf3_values)
def test_supported_amf3_values_roundtrip_via_the_avmplus_switch(value):
    assert via_switch(value) == value


@settings(max_examples=100, deadline=None)
@given(st.integers(-(2**53), 2**53))
def test_integers_outside_29_bits_travel_as_doubles(number):
    decoded = via_switch(number)
    assert decoded == number


@pytest.mark.parametrize(
    "number", [0, 1, 0x7F, 0x80, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, (1 << 28) - 1, -1, -(1 << 28)]
)
def test_u29_boundaries_roundtrip_as_integers(number):
    data = encode(number)
    assert data[0] == amf3.INTEGER
    assert via_switch(number) == number


def test_string_references_resolve_to_the_first_occurrence():
    # array of two strings: "abc" inline, then string reference 0
    data = b"\x09\x05\x01" + b"\x06\x07abc" + b"\x06\x00"
    assert Decoder(data).decode() == ["abc", "abc"]


def test_object_and_trait_references_resolve():
    # dense array [obj, obj-by-trait-ref, obj-ref]: sealed trait with member "a"
    obj1 = b"\x0a\x13\x01\x03a" + b"\x04\x01"  # traits inline, sealed, 1 member "a"; a=1
    obj2 = b"\x0a\x01" + b"\x04\x02"  # traits reference 0; a=2
    ref = b"\x0a\x02"  # object reference 1 (index 0 is the array itself)
    data = b"\x09\x07\x01" + obj1 + obj2 + ref
    assert Decoder(data).decode() == [{"a": 1}, {"a": 2}, {"a": 1}]


def test_object_reference_to_itself_is_refused():
    data = b"\x09\x03\x01" + b"\x09\x00"  # array whose one item refers to the array
    with pytest.raises(RemoteProtocolError, match="itself"):
        Decoder(data).decode()


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x07\x01",  # externalizable object
        b"\x0d\x01",  # vector int
        b"\x11\x01",  # dictionary
        b"\x06\x02",  # string reference out of range
        b"\x0a\x02",  # object reference out of range
        b"\x0a\x00",  # traits reference out of range
        b"\x06\x0b",  # string shorter than its length
        b"\x04\xff\xff",  # truncated u29
        b"\x05\x00",  # truncated double
        b"\x09\xff\xff\xff\x7f\x01",  # dense count beyond the data
        b"",  # nothing
    ],
)
def test_malformed_or_unsupported_amf3_is_a_remote_protocol_error(data):
    with pytest.raises(RemoteProtocolError):
        Decoder(data).decode()
    with pytest.raises(RemoteProtocolError):
        amf0.decode_all(b"\x11" + data)


def _nested(depth):
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_amf3_nesting_past_max_depth_names_the_limit():
    data = encode(_nested(6))
    assert Decoder(data, max_depth=6).decode() == _nested(6)
    with pytest.raises(RemoteProtocolError, match="max_amf_depth"):
        Decoder(data, max_depth=5).decode()


@pytest.mark.parametrize(
    "value",
    [
        {str(i): i for i in range(5)},
        Amf3Array({str(i): i for i in range(5)}, []),
    ],
)
def test_amf3_too_many_keys_names_max_amf_items(value):
    assert Decoder(encode(value), max_items=5).decode() == value
    with pytest.raises(RemoteProtocolError, match="max_amf_items"):
        Decoder(encode(value), max_items=4).decode()


def test_amf3_dense_array_longer_than_max_items_is_refused():
    with pytest.raises(RemoteProtocolError, match="max_amf_items"):
        Decoder(encode([None] * 5), max_items=4).decode()


def test_sealed_trait_member_count_beyond_data_is_refused():
    with pytest.raises(RemoteProtocolError):
        Decoder(b"\x0a\xfb\xff\xff\x7f\x01").decode()

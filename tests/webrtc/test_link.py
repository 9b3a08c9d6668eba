"""The daemon ↔ WebRTC process link: round trips, every split point, the garbage rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.webrtc import link

SETTINGS = settings(max_examples=60, deadline=None)

controls = st.fixed_dictionaries(
    {"op": st.text(max_size=10)},
    optional={"session": st.integers(0, 2**32 - 1), "sdp": st.text(max_size=200)},
).map(link.Control)
medias = st.builds(
    link.Media,
    session=st.integers(0, 2**32 - 1),
    track=st.integers(0, 255),
    dts_ms=st.integers(-(2**63), 2**63 - 1),
    payload=st.binary(max_size=300),
    keyframe=st.booleans(),
    config=st.booleans(),
)


def encode(event: link.Control | link.Media) -> bytes:
    if isinstance(event, link.Control):
        return link.encode_control(event.message)
    return link.encode_media(
        event.session,
        event.track,
        event.dts_ms,
        event.payload,
        keyframe=event.keyframe,
        config=event.config,
    )


def decode_all(decoder: link.LinkDecoder) -> list[object]:
    out = []
    while True:
        event = decoder.next_event()
        if event is link.NEED_DATA:
            return out
        out.append(event)


@SETTINGS
@given(st.lists(st.one_of(controls, medias), max_size=8), st.data())
def test_round_trip_at_every_split(events: list, data: st.DataObject) -> None:
    wire = b"".join(map(encode, events))
    split = data.draw(st.integers(0, len(wire)))
    decoder = link.LinkDecoder()
    got: list[object] = []
    for part in (wire[:split], wire[split:]):
        if part:  #: b"" means EOF
            decoder.receive_data(part)
            got += decode_all(decoder)
    decoder.receive_data(b"")
    got += decode_all(decoder)
    assert got == [*events, link.Closed()]


def test_one_byte_at_a_time() -> None:
    events = [
        link.Control({"op": "offer", "session": 7, "sdp": "v=0\r\n"}),
        link.Media(7, 1, 123456, b"\xaf\x01abc", True, False),
    ]
    wire = b"".join(map(encode, events))
    decoder = link.LinkDecoder()
    got = []
    for i in range(len(wire)):
        decoder.receive_data(wire[i : i + 1])
        got += decode_all(decoder)
    assert got == events


@SETTINGS
@given(st.binary(max_size=200), st.booleans())
def test_garbage_raises_only_link_error(data: bytes, eof: bool) -> None:
    decoder = link.LinkDecoder(max_message_bytes=1024)
    decoder.receive_data(data)
    if eof:
        decoder.receive_data(b"")
    try:
        decode_all(decoder)
    except link.LinkError:
        pass


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x00\x00\x00\x00\x01", "0 bytes"),
        (b"\x00\x00\x00\x02\x07x", "unknown link message kind"),
        (b"\x00\x00\x00\x03\x01[]", 'string "op"'),
        (b"\x00\x00\x00\x03\x01\xff\xfe", "not JSON"),
        (b"\x00\x00\x00\x03\x02ab", "truncated media header"),
        (b"\x7f\x00\x00\x00\x02", "limit"),
    ],
)
def test_protocol_errors_name_the_problem(wire: bytes, message: str) -> None:
    decoder = link.LinkDecoder()
    decoder.receive_data(wire)
    with pytest.raises(link.LinkError, match=message):
        decode_all(decoder)


def test_eof_inside_a_message_is_an_error() -> None:
    decoder = link.LinkDecoder()
    decoder.receive_data(link.encode_control({"op": "x"})[:-1])
    decoder.receive_data(b"")
    with pytest.raises(link.LinkError, match="closed inside a message"):
        decode_all(decoder)

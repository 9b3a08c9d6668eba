"""AV1 payloader (WHEP send side) against a reference depacketizer written from the AV1
RTP specification §4 (the shape of libwebrtc's: OBUs rebuilt with size fields)."""

from __future__ import annotations

import fractions
from functools import cache

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.webrtc.av1_payload import (
    AGG_N,
    AGG_Y,
    AGG_Z,
    MIN_PAYLOAD_BYTES,
    SIZE_BIT,
    Av1Error,
    Av1Payloader,
    leb128,
    obus,
    read_leb128,
)

SETTINGS = settings(max_examples=40, deadline=None)


@cache
def encoded() -> tuple[tuple[bytes, bool], ...]:
    """Sixteen 64x64 AV1 temporal units (SVT-AV1, keyframes every 8)."""
    encoder = av.CodecContext.create("libsvtav1", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 64, 64, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.gop_size = 8
    encoder.options = {"preset": "12", "svtav1-params": "pred-struct=1:keyint=8"}
    out = []
    for index in range(16):
        picture = av.VideoFrame(64, 64, "yuv420p")
        for plane in picture.planes:
            plane.update(bytes([index * 15 % 256]) * plane.buffer_size)
        picture.pts = index
        out += [(bytes(p), p.is_keyframe) for p in encoder.encode(picture)]
    return tuple(out + [(bytes(p), p.is_keyframe) for p in encoder.encode(None)])


def depayload(payloads: list[bytes]) -> tuple[bytes, bool]:
    """(TU in the low overhead format, N on the first packet) of one TU's payloads."""
    pieces: list[bytearray] = []
    expect_z = False
    for payload in payloads:
        flags = payload[0]
        assert bool(flags & AGG_Z) == expect_z, "Z continues exactly the previous Y"
        count = flags >> 4 & 0x03
        pos, index = 1, 0
        while pos < len(payload):
            index += 1
            if index == count:
                size, pos = len(payload) - pos, pos
            else:
                size, pos = read_leb128(payload, pos)
            element = payload[pos : pos + size]
            pos += size
            if index == 1 and flags & AGG_Z:
                pieces[-1] += element
            else:
                pieces.append(bytearray(element))
        expect_z = bool(flags & AGG_Y)
    assert not expect_z, "the last packet ends on a whole OBU"
    out = bytearray()
    for obu in pieces:
        head = 2 if obu[0] & 0x04 else 1
        assert not obu[0] & SIZE_BIT
        out += bytes((obu[0] | SIZE_BIT,)) + obu[1:head] + leb128(len(obu) - head) + obu[head:]
    return bytes(out), bool(payloads[0][0] & AGG_N)


def sized(unit: bytes) -> bytes:
    """What a receiver rebuilds of a TU: its OBUs (minus those never sent) with sizes."""
    out = bytearray()
    for _, obu in obus(unit):
        head = 2 if obu[0] & 0x04 else 1
        out += bytes((obu[0] | SIZE_BIT,)) + obu[1:head] + leb128(len(obu) - head) + obu[head:]
    return bytes(out)


@SETTINGS
@given(st.integers(MIN_PAYLOAD_BYTES, 300))
def test_real_units_round_trip_and_decode(max_bytes: int) -> None:
    payloader = Av1Payloader(max_payload_bytes=max_bytes)
    units = []
    for unit, key in encoded():
        payloads = payloader.payloads(unit, keyframe=key)
        assert all(len(p) <= max_bytes for p in payloads)
        assert not any(p[0] & AGG_N for p in payloads[1:])
        rebuilt, new_sequence = depayload(payloads)
        assert rebuilt == sized(unit) and new_sequence == key
        units.append(rebuilt)
    decoder = av.CodecContext.create("libdav1d", "r")
    original = av.CodecContext.create("libdav1d", "r")
    ours = [f for u in units for f in decoder.decode(av.Packet(u))]
    ours += decoder.decode(None)
    theirs = [f for u, _ in encoded() for f in original.decode(av.Packet(u))]
    theirs += original.decode(None)
    assert len(ours) == len(theirs) > 0 and ours[0].width == 64
    assert [luma(f) for f in ours] == [luma(f) for f in theirs]


def luma(frame: av.VideoFrame) -> bytes:
    """The picture's Y samples (each row without the line padding)."""
    plane = frame.planes[0]
    data = bytes(plane)
    return b"".join(
        data[row * plane.line_size : row * plane.line_size + frame.width]
        for row in range(frame.height)
    )


obu_strategy = st.tuples(
    st.integers(0, 15), st.booleans(), st.binary(max_size=400), st.booleans()
).map(
    lambda t: (
        bytes((t[0] << 3 | (0x04 if t[1] else 0) | (SIZE_BIT if t[3] else 0),))
        + (b"\x08" if t[1] else b"")
        + (leb128(len(t[2])) if t[3] else b"")
        + t[2]
    )
)


@SETTINGS
@given(st.lists(obu_strategy, max_size=6), st.integers(MIN_PAYLOAD_BYTES, 500), st.booleans())
def test_any_obus_round_trip(elements: list[bytes], max_bytes: int, keyframe: bool) -> None:
    """Every OBU but the last carries its size (else it runs to the end of the TU)."""
    unit = b"".join(
        e if e[0] & SIZE_BIT or i == len(elements) - 1 else _with_size(e)
        for i, e in enumerate(elements)
    )
    payloads = Av1Payloader(max_payload_bytes=max_bytes).payloads(unit, keyframe=keyframe)
    if not obus(unit):
        assert payloads == []
        return
    assert all(len(p) <= max_bytes for p in payloads)
    rebuilt, _ = depayload(payloads)
    assert rebuilt == sized(unit)


def _with_size(obu: bytes) -> bytes:
    head = 2 if obu[0] & 0x04 else 1
    return bytes((obu[0] | SIZE_BIT,)) + obu[1:head] + leb128(len(obu) - head) + obu[head:]


def test_temporal_delimiters_and_padding_are_not_sent() -> None:
    unit = bytes((0x12, 0)) + bytes((15 << 3 | SIZE_BIT, 2, 0, 0)) + bytes((0x32, 1, 0xAB))
    payloads = Av1Payloader().payloads(unit, keyframe=False)
    assert payloads == [bytes((0x00, 2, 0x30, 0xAB))]  #: one frame OBU, its size field gone
    assert Av1Payloader().payloads(bytes((0x12, 0)), keyframe=True) == []


def test_n_only_for_a_keyframe_that_carries_its_sequence_header() -> None:
    key = next(unit for unit, k in encoded() if k)
    assert Av1Payloader().payloads(key, keyframe=True)[0][0] & AGG_N
    assert not Av1Payloader().payloads(key, keyframe=False)[0][0] & AGG_N
    frame_only = bytes((0x32, 1, 0xAB))
    assert not Av1Payloader().payloads(frame_only, keyframe=True)[0][0] & AGG_N


@SETTINGS
@given(st.binary(max_size=200))
def test_garbage_only_raises_av1_error(data: bytes) -> None:
    try:
        Av1Payloader(max_payload_bytes=MIN_PAYLOAD_BYTES).payloads(data, keyframe=True)
    except Av1Error:
        pass


def test_tiny_limits_refused() -> None:
    with pytest.raises(ValueError):
        Av1Payloader(max_payload_bytes=MIN_PAYLOAD_BYTES - 1)

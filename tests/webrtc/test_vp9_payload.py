"""VP9 payloader (WHEP send side) against the WHIP side's VP9 depacketizer."""

from __future__ import annotations

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.webrtc.vp9 import Vp9Depacketizer, descriptor
from rtmp_ingest.webrtc.vp9_payload import (
    FLAG_B,
    FLAG_E,
    FLAG_P,
    FLAG_V,
    MAX_DESCRIPTOR_BYTES,
    PICTURE_ID_MODULO,
    Vp9Payloader,
)
from tests.webrtc.test_vp9 import encoded

SETTINGS = settings(max_examples=40, deadline=None)
MODES = pytest.mark.parametrize("flexible", [True, False], ids=["flexible", "non-flexible"])


def depayload(
    frames: list[bytes], payloader: Vp9Payloader, *, seq0: int = 0
) -> list[tuple[bytes, bool]]:
    """Frames → payloads → RTP packets (marker on each frame's last) → the depacketizer."""
    depacketizer = Vp9Depacketizer()
    out = []
    seq = seq0
    for index, frame in enumerate(frames):
        payloads = payloader.payloads(frame)
        for number, payload in enumerate(payloads):
            marker = number == len(payloads) - 1
            units = depacketizer.push(seq & 0xFFFF, index * 3000, marker, payload, now_ms=0.0)
            out += [(u.parts[0], u.keyframe) for u in units]
            seq += 1
    return out


@MODES
@SETTINGS
@given(st.integers(MAX_DESCRIPTOR_BYTES + 1, 1500), st.integers(0, 0xFFFF))
def test_real_frames_round_trip_and_decode(flexible: bool, max_bytes: int, seq0: int) -> None:
    frames = encoded()
    payloader = Vp9Payloader(max_payload_bytes=max_bytes, flexible=flexible)
    got = depayload([f for f, _ in frames], payloader, seq0=seq0)
    assert got == list(frames)
    decoder = av.CodecContext.create("vp9", "r")
    pictures = [p for frame, _ in got for p in decoder.decode(av.Packet(frame))]
    assert len(pictures) == len(frames) and pictures[0].width == 320


@MODES
@SETTINGS
@given(
    st.lists(st.binary(min_size=1, max_size=5000), max_size=8),
    st.integers(MAX_DESCRIPTOR_BYTES + 1, 1500),
    st.integers(0, PICTURE_ID_MODULO - 1),
)
def test_any_frame_bytes_round_trip(
    flexible: bool, frames: list[bytes], max_bytes: int, picture_id: int
) -> None:
    """Whatever the frame holds (after a keyframe: the receiver waits for one) comes back."""
    key = encoded()[0][0]
    payloader = Vp9Payloader(max_payload_bytes=max_bytes, flexible=flexible, picture_id=picture_id)
    got = depayload([key, *frames], payloader)
    assert [frame for frame, _ in got] == [key, *frames]


@MODES
@SETTINGS
@given(st.binary(min_size=1, max_size=20000), st.integers(MAX_DESCRIPTOR_BYTES + 1, 1500))
def test_split_sizes(flexible: bool, frame: bytes, max_bytes: int) -> None:
    """Payloads fit, are as few as the descriptor allows, and share the frame evenly."""
    for data in (frame, encoded()[0][0]):
        payloads = Vp9Payloader(max_payload_bytes=max_bytes, flexible=flexible).payloads(data)
        assert all(len(p) <= max_bytes for p in payloads)
        pieces = []
        for payload in payloads:
            parsed = descriptor(payload)
            assert parsed is not None
            pieces.append(len(payload) - parsed[0])
        assert sum(pieces) == len(data)
        assert max(pieces) - min(pieces) <= 1
        assert len(payloads) == -(-len(data) // (max_bytes - descriptor(payloads[0])[0]))


@MODES
def test_descriptor_flags_and_picture_ids(flexible: bool) -> None:
    payloader = Vp9Payloader(max_payload_bytes=300, flexible=flexible, picture_id=0x7FFE)
    ids = []
    for frame, key in encoded()[:8]:
        payloads = payloader.payloads(frame)
        flags = [p[0] for p in payloads]
        assert flags[0] & FLAG_B and not any(f & FLAG_B for f in flags[1:])
        assert flags[-1] & FLAG_E and not any(f & FLAG_E for f in flags[:-1])
        assert all(bool(f & FLAG_P) is not key for f in flags)
        #: the scalability structure (with the resolution) on a keyframe's first payload only
        assert [bool(f & FLAG_V) for f in flags] == [key] + [False] * (len(flags) - 1)
        if key:
            ss_at = 3 if flexible else 5
            assert payloads[0][ss_at + 1 : ss_at + 5] == bytes((1, 64, 0, 240))
        ids += [int.from_bytes(p[1:3], "big") & 0x7FFF for p in payloads[:1]]
    assert ids == [0x7FFE, 0x7FFF, 0, 1, 2, 3, 4, 5]  #: +1 per frame, wrapping at 15 bits


def test_empty_frames_and_tiny_limits() -> None:
    assert Vp9Payloader().payloads(b"") == []
    with pytest.raises(ValueError):
        Vp9Payloader(max_payload_bytes=MAX_DESCRIPTOR_BYTES)


@SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.booleans(), st.binary()),
        max_size=30,
    )
)
def test_depacketizer_garbage(packets: list[tuple[int, int, bool, bytes]]) -> None:
    """Random packets yield frames or nothing from the depacketizer, never an exception."""
    depacketizer = Vp9Depacketizer()
    for now, (seq, ts, marker, payload) in enumerate(packets):
        for unit in depacketizer.push(seq, ts, marker, payload, now_ms=float(now)):
            assert unit.parts and unit.parts[0]
    depacketizer.poll(now_ms=1e9)

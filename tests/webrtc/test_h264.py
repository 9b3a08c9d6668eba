"""H.264 RTP depacketizer: random access units packetized as RFC 6184 mode 1 senders do
(single NAL, STAP-A, FU-A at random MTUs, sequence numbers and timestamps wrapping),
delivered reordered, duplicated or lossy. Complete AUs come out exactly; a broken
one never does, and after a loss only an IDR picture restarts the output."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.webrtc.h264 import (
    AccessUnit,
    AvcTrack,
    H264Depacketizer,
    avc_config_record,
    depayload,
)

SETTINGS = settings(max_examples=60, deadline=None)
SPS = bytes((0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80, 0xBF, 0xE5, 0x84))
PPS = bytes((0x68, 0xCE, 0x3C, 0x80))


def nal(kind: int, body: bytes) -> bytes:
    return bytes((0x60 | kind,)) + body


@st.composite
def access_units(draw: st.DrawFn) -> list[list[bytes]]:
    count = draw(st.integers(2, 12))
    units = []
    for index in range(count):
        keyframe = index == 0 or (draw(st.booleans()) and draw(st.booleans()))
        slices = draw(st.integers(1, 3))
        body = [
            nal(5 if keyframe else 1, draw(st.binary(min_size=1, max_size=2500)))
            for _ in range(slices)
        ]
        units.append(([SPS, PPS] if keyframe else []) + body)
    return units


def packetize(nals: list[bytes], mtu: int) -> list[bytes]:
    """RFC 6184 mode 1: STAP-A for NAL units that fit together, FU-A for large ones."""
    packets: list[bytes] = []
    pending: list[bytes] = []

    def flush() -> None:
        if len(pending) == 1:
            packets.append(pending[0])
        elif pending:
            stap = bytearray((0x78,))
            for unit in pending:
                stap += len(unit).to_bytes(2, "big") + unit
            packets.append(bytes(stap))
        pending.clear()

    for unit in nals:
        if len(unit) + 3 <= mtu:
            if 1 + sum(2 + len(x) for x in pending) + 2 + len(unit) > mtu:
                flush()
            pending.append(unit)
            continue
        flush()
        head, data = unit[0], unit[1:]
        step = mtu - 2
        for offset in range(0, len(data), step):
            start = 0x80 if offset == 0 else 0
            end = 0x40 if offset + step >= len(data) else 0
            packets.append(
                bytes(((head & 0xE0) | 28, start | end | (head & 0x1F)))
                + data[offset : offset + step]
            )
    flush()
    return packets


def rtp_stream(
    units: list[list[bytes]], mtu: int, seq0: int, ts0: int
) -> list[tuple[int, int, bool, bytes, int]]:
    """(seq, timestamp, marker, payload, AU index) for every packet."""
    out = []
    seq = seq0
    for index, nals in enumerate(units):
        packets = packetize(nals, mtu)
        for number, payload in enumerate(packets):
            out.append(
                (
                    seq & 0xFFFF,
                    (ts0 + index * 3000) & 0xFFFFFFFF,
                    number == len(packets) - 1,
                    payload,
                    index,
                )
            )
            seq += 1
    return out


def feed(
    depacketizer: H264Depacketizer, packets: list[tuple[int, int, bool, bytes, int]]
) -> list[AccessUnit]:
    out: list[AccessUnit] = []
    now = 0.0
    for seq, ts, marker, payload, _ in packets:
        now += 1.0
        out += depacketizer.push(seq, ts, marker, payload, now_ms=now)
    out += depacketizer.poll(now_ms=now + 10_000)
    return out


def reorder(packets: list, rng: random.Random, window: int) -> list:
    """Shuffles within small windows, the first packet staying first."""
    head, rest = packets[:1], packets[1:]
    out = []
    for start in range(0, len(rest), window):
        chunk = rest[start : start + window]
        rng.shuffle(chunk)
        out += chunk
    return head + out


@SETTINGS
@given(
    access_units(),
    st.integers(40, 1200),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.randoms(use_true_random=False),
    st.integers(1, 6),
    st.booleans(),
)
def test_reordered_and_duplicated_packets_reassemble_exactly(
    units: list[list[bytes]],
    mtu: int,
    seq0: int,
    ts0: int,
    rng: random.Random,
    window: int,
    duplicate: bool,
) -> None:
    packets = reorder(rtp_stream(units, mtu, seq0, ts0), rng, window)
    if duplicate:
        packets = packets + packets[-3:]
    depacketizer = H264Depacketizer()
    out = feed(depacketizer, packets)
    assert [list(u.parts) for u in out] == units
    assert [u.timestamp - out[0].timestamp for u in out] == [3000 * i for i in range(len(units))]
    assert [u.keyframe for u in out] == [any(n[0] & 0x1F == 5 for n in u) for u in units]
    assert depacketizer.frames_dropped == 0


@SETTINGS
@given(
    access_units(),
    st.integers(40, 1200),
    st.integers(0, 0xFFFF),
    st.randoms(use_true_random=False),
    st.data(),
)
def test_lost_packets_drop_their_frames_until_the_next_keyframe(
    units: list[list[bytes]], mtu: int, seq0: int, rng: random.Random, data: st.DataObject
) -> None:
    packets = rtp_stream(units, mtu, seq0, 1000)
    lost = data.draw(st.sets(st.integers(1, len(packets) - 1), max_size=4))
    delivered = [p for i, p in enumerate(packets) if i not in lost]
    broken = {packets[i][4] for i in lost}
    depacketizer = H264Depacketizer()
    out = feed(depacketizer, reorder(delivered, rng, 3))
    by_ts = {1000 + 3000 * i: i for i in range(len(units))}
    indices = [by_ts[u.timestamp] for u in out]
    assert indices == sorted(set(indices)), "in order, each at most once"
    for unit, index in zip(out, indices):
        assert index not in broken, "a frame with a lost packet is never handed over"
        assert list(unit.parts) == units[index]
    if lost and min(lost) < len(packets) - len(lost):
        #: a packet after the first lost one arrived: the gap is visible
        first_broken = min(broken)
        after = [i for i in indices if i > first_broken]
        if after:
            assert out[indices.index(after[0])].keyframe, "after a loss, output restarts at IDR"
        assert depacketizer.keyframe_needed
        assert depacketizer.frames_dropped >= 1


@SETTINGS
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_depayload_garbage_never_raises(payloads: list[bytes]) -> None:
    result = depayload(payloads)
    assert result is None or all(isinstance(n, bytes) for n in result)


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.booleans(),
            st.binary(max_size=30),
        ),
        max_size=60,
    )
)
def test_garbage_packets_never_raise(packets: list[tuple[int, int, bool, bytes]]) -> None:
    depacketizer = H264Depacketizer(max_buffered_packets=16)
    now = 0.0
    for seq, ts, marker, payload in packets:
        now += 7.0
        for unit in depacketizer.push(seq, ts, marker, payload, now_ms=now):
            assert unit.keyframe or depacketizer.frames_out > 1


def test_avc_track_sends_the_configuration_record_then_length_prefixed_samples() -> None:
    idr = nal(5, b"\x88\x84")
    track = AvcTrack()
    first = track.bodies(AccessUnit(0, (b"\x09\xf0", SPS, PPS, idr), True))
    assert first[0] == (b"\x17\x00\x00\x00\x00" + avc_config_record(SPS, PPS), False, True)
    assert first[1] == (b"\x17\x01\x00\x00\x00" + len(idr).to_bytes(4, "big") + idr, True, False)
    record = avc_config_record(SPS, PPS)
    assert record[:6] == bytes((1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1))
    inter = nal(1, b"\x9a")
    again = track.bodies(AccessUnit(3000, (SPS, PPS, inter), False))
    assert again == [
        (b"\x27\x01\x00\x00\x00" + len(inter).to_bytes(4, "big") + inter, False, False)
    ]
    assert AvcTrack().bodies(AccessUnit(0, (inter,), False)) == []  #: no SPS/PPS yet

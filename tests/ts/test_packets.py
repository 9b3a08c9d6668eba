"""The TS demuxer: round trips against an independent writer, any split, loss, garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.ts.packets import (
    NEED_DATA,
    Event,
    Lost,
    Pes,
    Program,
    TsDemuxer,
    TsError,
    crc32_mpeg,
)
from tests.ts import tsmux

VIDEO_PID, AUDIO_PID = 0x100, 0x101
STREAMS = [(0x1B, VIDEO_PID, b""), (0x0F, AUDIO_PID, b"")]


def drain(demux: TsDemuxer) -> list[Event]:
    events = []
    while (event := demux.next_event()) is not NEED_DATA:
        events.append(event)  # type: ignore[arg-type]
    return events


def feed(
    data: bytes, *, step: int | None = None, end: bool = True
) -> tuple[list[Event], TsDemuxer]:
    demux = TsDemuxer()
    events: list[Event] = []
    if step is None:
        demux.receive_data(data)
    else:
        for i in range(0, len(data), step):
            demux.receive_data(data[i : i + step])
            events += drain(demux)
    if end:
        demux.receive_data(b"")
    return events + drain(demux), demux


def stream_of(units: list[tuple[int, bytes, int, int, bool]]) -> bytes:
    """units: (pid, payload, pts, dts, bounded) → a TS with PAT/PMT first."""
    out = [tsmux.pat(), tsmux.pmt(STREAMS)]
    counters = {VIDEO_PID: 0, AUDIO_PID: 0}
    for pid, payload, pts, dts, bounded in units:
        stream_id = 0xE0 if pid == VIDEO_PID else 0xC0
        packets, counters[pid] = tsmux.packetize(
            pid, tsmux.pes(stream_id, payload, pts, dts, bounded=bounded), counters[pid]
        )
        out += packets
    return b"".join(out)


def test_crc_of_a_known_section() -> None:
    section = tsmux.section(0x00, 1, b"\x00\x01\xf0\x00")
    assert crc32_mpeg(section) == 0


units = st.lists(
    st.tuples(
        st.sampled_from([VIDEO_PID, AUDIO_PID]),
        st.binary(min_size=1, max_size=900),
        st.integers(0, (1 << 33) - 1),
        st.integers(0, (1 << 33) - 1),
        st.booleans(),
    ),
    max_size=12,
)


@given(units=units, step=st.sampled_from([None, 1, 7, 188, 1316]))
def test_round_trip(units: list[tuple[int, bytes, int, int, bool]], step: int | None) -> None:
    events, demux = feed(stream_of(units), step=step)
    assert isinstance(events[0], Program)
    assert [(s.pid, s.stream_type) for s in events[0].streams] == [
        (VIDEO_PID, 0x1B),
        (AUDIO_PID, 0x0F),
    ]
    got = [(e.pid, e.data, e.pts, e.dts) for e in events if isinstance(e, Pes)]
    # a PES ends at its length or at the next PES of the PID: the order is per PID
    for pid in (VIDEO_PID, AUDIO_PID):
        assert [g for g in got if g[0] == pid] == [
            (p, d, pts, dts) for p, d, pts, dts, _ in units if p == pid
        ]
    assert demux.cc_errors == 0 and demux.lost_pes == 0


def test_every_split_point_of_a_small_stream() -> None:
    data = stream_of([(AUDIO_PID, b"a" * 300, 90, 90, True), (VIDEO_PID, b"v" * 500, 9, 3, False)])
    whole, _ = feed(data)
    for cut in range(1, len(data)):
        demux = TsDemuxer()
        demux.receive_data(data[:cut])
        demux.receive_data(data[cut:])
        demux.receive_data(b"")
        assert drain(demux) == whole


def test_lost_packet_drops_only_that_pes() -> None:
    payloads = [bytes([i]) * 400 for i in range(5)]
    data = stream_of([(AUDIO_PID, p, 1000 * i, 1000 * i, True) for i, p in enumerate(payloads)])
    packets = [data[i : i + 188] for i in range(0, len(data), 188)]
    # packets: PAT, PMT, then 3 per PES; drop the middle packet of the third PES
    del packets[2 + 3 * 2 + 1]
    events, demux = feed(b"".join(packets))
    pes = [e.data for e in events if isinstance(e, Pes)]
    assert pes == payloads[:2] + payloads[3:]
    assert [type(e) for e in events].count(Lost) == 1
    assert demux.cc_errors == 1


def test_duplicate_packet_is_ignored_and_error_indicator_damages() -> None:
    data = stream_of([(AUDIO_PID, b"x" * 300, 0, 0, True), (AUDIO_PID, b"y" * 300, 9, 9, True)])
    packets = [data[i : i + 188] for i in range(0, len(data), 188)]
    dup = packets[:3] + [packets[2]] + packets[3:]
    events, _ = feed(b"".join(dup))
    assert [e.data for e in events if isinstance(e, Pes)] == [b"x" * 300, b"y" * 300]
    hurt = bytearray(packets[4])
    hurt[1] |= 0x80  # transport_error_indicator on the second PES's first packet
    events, _ = feed(b"".join(packets[:4] + [bytes(hurt)] + packets[5:]))
    assert [e.data for e in events if isinstance(e, Pes)] == [b"x" * 300]


def test_resync_after_garbage_between_packets() -> None:
    one = stream_of([(AUDIO_PID, b"a" * 300, 0, 0, True)])
    two = stream_of([(AUDIO_PID, b"b" * 300, 9, 9, True)])
    events, demux = feed(one + b"\x47junk\x47\x00" * 5 + two[376:])
    assert demux.sync_losses >= 1
    assert b"a" * 300 in [e.data for e in events if isinstance(e, Pes)]


def test_not_a_transport_stream() -> None:
    demux = TsDemuxer()
    with pytest.raises(TsError):
        demux.receive_data(b"\x00" * 100_000)


def test_bad_crc_pmt_is_ignored() -> None:
    good = tsmux.pmt(STREAMS)
    bad = bytearray(good)
    bad[-6] ^= 0xFF  # inside the section (the payload ends the packet)
    events, demux = feed(tsmux.pat() + bytes(bad))
    assert not events and demux.bad_sections == 1


@settings(max_examples=200)
@given(st.binary(max_size=3000))
def test_garbage_rule(data: bytes) -> None:
    for step in (None, 1, 188):
        try:
            feed(data, step=step)
        except TsError:
            pass


@given(st.binary(max_size=2000), st.integers(0, 3000))
def test_garbage_inside_a_valid_stream(noise: bytes, at: int) -> None:
    data = stream_of([(VIDEO_PID, b"v" * 1000, 0, 0, False), (AUDIO_PID, b"a" * 200, 1, 1, True)])
    at = min(at, len(data))
    try:
        feed(data[:at] + noise + data[at:], step=97)
    except TsError:
        pass

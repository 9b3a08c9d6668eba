"""VP9 RTP depacketizer and E-RTMP bodies, on frames libvpx really encodes."""

from __future__ import annotations

import fractions
import random
from functools import cache

import av
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.flv.codecs import describe_config
from rtmp_ingest.flv.tags import PacketType, parse_video
from rtmp_ingest.webrtc.vp9 import (
    Vp9Depacketizer,
    Vp9Track,
    descriptor,
    keyframe_header,
    vpcc_record,
)

SETTINGS = settings(max_examples=40, deadline=None)


@cache
def encoded() -> tuple[tuple[bytes, bool], ...]:
    """Twelve 320x240 VP9 frames (keyframes at 0 and 6)."""
    encoder = av.CodecContext.create("libvpx-vp9", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.gop_size = 6
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out = []
    for index in range(12):
        frame = av.VideoFrame(320, 240, "yuv420p")
        for plane_index, plane in enumerate(frame.planes):
            rows = 240 if plane_index == 0 else 120
            plane.update(bytes([(index * 20 + plane_index * 50) % 256]) * plane.line_size * rows)
        frame.pts = index
        out += [(bytes(p), p.is_keyframe) for p in encoder.encode(frame)]
    out += [(bytes(p), p.is_keyframe) for p in encoder.encode(None)]
    return tuple(out)


def packetize(frame: bytes, keyframe: bool, picture_id: int, mtu: int) -> list[bytes]:
    chunks = [frame[i : i + mtu] for i in range(0, len(frame), mtu)]
    packets = []
    for number, chunk in enumerate(chunks):
        flags = 0x80 | (0 if keyframe else 0x40)
        flags |= 0x08 if number == 0 else 0
        flags |= 0x04 if number == len(chunks) - 1 else 0
        head = bytearray((flags, 0x80 | picture_id >> 8 & 0x7F, picture_id & 0xFF))
        if keyframe and number == 0:
            head[0] |= 0x02  #: scalability structure: one layer, its resolution
            head += bytes((0x10,)) + (320).to_bytes(2, "big") + (240).to_bytes(2, "big")
        packets.append(bytes(head) + chunk)
    return packets


def test_keyframe_header_and_vpcc() -> None:
    (first, key), *_ = encoded()
    assert key
    header = keyframe_header(first)
    assert header is not None
    assert (header.width, header.height, header.profile, header.bit_depth) == (320, 240, 0, 8)
    record = vpcc_record(header)
    assert describe_config("vp9", record) == {"profile": "0", "level": 2.0}  #: 76800 luma samples
    assert keyframe_header(encoded()[1][0]) is None  #: an inter frame


@SETTINGS
@given(st.integers(60, 1200), st.integers(0, 0xFFFF), st.randoms(use_true_random=False))
def test_reordered_frames_reassemble_exactly(mtu: int, seq0: int, rng: random.Random) -> None:
    frames = encoded()
    packets = []
    seq = seq0
    for index, (frame, key) in enumerate(frames):
        chunks = packetize(frame, key, index, mtu)
        for number, payload in enumerate(chunks):
            packets.append((seq & 0xFFFF, index * 3000, number == len(chunks) - 1, payload))
            seq += 1
    head, rest = packets[:1], packets[1:]
    for start in range(0, len(rest), 4):
        window = rest[start : start + 4]
        rng.shuffle(window)
        rest[start : start + 4] = window
    depacketizer = Vp9Depacketizer()
    out = []
    for now, (s, ts, marker, payload) in enumerate(head + rest):
        out += depacketizer.push(s, ts, marker, payload, now_ms=float(now))
    assert [(u.parts[0], u.keyframe) for u in out] == list(frames)


def test_bodies_are_e_rtmp_vp09_and_decode() -> None:
    depacketizer = Vp9Depacketizer()
    track = Vp9Track()
    bodies = []
    seq = 0
    for index, (frame, key) in enumerate(encoded()):
        chunks = packetize(frame, key, index, 500)
        for number, payload in enumerate(chunks):
            for unit in depacketizer.push(
                seq, index * 3000, number == len(chunks) - 1, payload, now_ms=0.0
            ):
                bodies += track.bodies(unit)
            seq += 1
    packets = [parse_video(body)[0] for body, _, _ in bodies]
    assert packets[0].packet_type is PacketType.SEQUENCE_START and packets[0].codec == "vp9"
    coded = [p for p in packets if p.packet_type is PacketType.CODED_FRAMES]
    assert [p.keyframe for p in coded] == [key for _, key in encoded()]
    decoder = av.CodecContext.create("vp9", "r")
    pictures = [f for p in coded for f in decoder.decode(av.Packet(p.data))]
    assert len(pictures) == len(coded) and pictures[0].width == 320


def test_a_lost_packet_drops_frames_until_the_next_keyframe() -> None:
    depacketizer = Vp9Depacketizer()
    out = []
    seq = 0
    for index, (frame, key) in enumerate(encoded()):
        chunks = packetize(frame, key, index, 300)
        for number, payload in enumerate(chunks):
            lost = index == 2 and number == 0
            if not lost:
                out += depacketizer.push(
                    seq, index * 3000, number == len(chunks) - 1, payload, now_ms=seq * 1.0
                )
            seq += 1
    out += depacketizer.poll(now_ms=1e9)
    got = [u.timestamp // 3000 for u in out]
    assert 2 not in got
    after = [i for i in got if i > 2]
    assert after and encoded()[after[0]][1], "restarts at a keyframe"
    assert depacketizer.keyframe_needed


@SETTINGS
@given(st.binary(max_size=40))
def test_descriptor_garbage(payload: bytes) -> None:
    parsed = descriptor(payload)
    assert parsed is None or parsed[0] >= 1
    keyframe_header(payload)

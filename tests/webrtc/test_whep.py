"""WHEP's sans-IO parts: H.264 FLV frames → Annex B access units, what WebRTC can carry,
a viewer's timeline (cached GOP compressed to "now", continuous across supersedes),
AAC → Opus, and the process-side send queue's bound."""

from __future__ import annotations

import array
import asyncio
import contextlib
import fractions
import math
from typing import Any

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.bundle import Frame, Media, OutputFrame
from rtmp_ingest.outputs import webrtc_media
from rtmp_ingest.server import whep
from rtmp_ingest.webrtc import link
from rtmp_ingest.webrtc.h264 import avc_config_record

SETTINGS = settings(max_examples=60, deadline=None)
SPS = bytes((0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80, 0xBF, 0xE5, 0x84))
PPS = bytes((0x68, 0xCE, 0x3C, 0x80))
START = b"\x00\x00\x00\x01"

nals = st.lists(
    st.binary(min_size=1, max_size=300).map(lambda b: bytes((0x41,)) + b), min_size=1, max_size=6
)


def prefixed(units: list[bytes], size: int = 4) -> bytes:
    return b"".join(len(n).to_bytes(size, "big") + n for n in units)


def video_body(data: bytes, *, keyframe: bool, cts: int = 0, config: bool = False) -> bytes:
    head = 0x17 if keyframe or config else 0x27
    return bytes((head, 0 if config else 1)) + cts.to_bytes(3, "big", signed=True) + data


def out(media: Media, dts: int, body: bytes, **kwargs: Any) -> OutputFrame:
    codec = "h264" if media is Media.VIDEO else kwargs.pop("codec", "opus")
    frame = Frame(kwargs.pop("track", f"{media.value}0"), media, codec, dts, body, **kwargs)
    return OutputFrame("cam", frame, dts, False)


@SETTINGS
@given(nals, st.sampled_from([1, 2, 4]))
def test_avcc_to_annexb_round_trip(units: list[bytes], size: int) -> None:
    short = [n[: (1 << (8 * size)) - 1] for n in units]
    annexb, has_sps = webrtc_media.avcc_to_annexb(prefixed(short, size), size)
    assert annexb == b"".join(START + n for n in short)
    assert not has_sps


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from([1, 2, 4]))
def test_garbage_only_raises_value_error(data: bytes, size: int) -> None:
    try:
        webrtc_media.avcc_to_annexb(data, size)
    except ValueError:
        pass
    try:
        webrtc_media.avcc_parameter_sets(data)
    except ValueError:
        pass
    access = webrtc_media.H264Access()
    access.push(data)  #: never raises: unusable frames are counted
    assert access.malformed >= 0


def test_keyframes_carry_the_parameter_sets_and_b_frames_are_seen() -> None:
    access = webrtc_media.H264Access()
    record = avc_config_record(SPS, PPS)
    assert access.push(video_body(record, keyframe=True, config=True)) is None
    idr = bytes((0x65, 1, 2, 3))
    unit = access.push(video_body(prefixed([idr]), keyframe=True))
    assert unit == (START + SPS + START + PPS + START + idr, True, 0)
    p = bytes((0x41, 9))
    assert access.push(video_body(prefixed([p]), keyframe=False, cts=40)) == (START + p, False, 40)
    assert access.b_frames == 1
    #: a keyframe that carries its own SPS gets nothing in front
    own = access.push(video_body(prefixed([SPS, PPS, idr]), keyframe=True))
    assert own is not None and own[0] == START + SPS + START + PPS + START + idr


def test_what_webrtc_can_carry() -> None:
    record = avc_config_record(SPS, PPS)
    gop = [
        out(Media.VIDEO, 0, video_body(record, keyframe=True, config=True), config=True),
        out(Media.VIDEO, 0, video_body(prefixed([bytes((0x65, 1))]), keyframe=True)),
    ]
    assert webrtc_media.check_playable([(Media.VIDEO, "h264"), (Media.AUDIO, "aac")], gop).playable
    assert webrtc_media.h264_profile(gop) == 0x42
    hevc = webrtc_media.check_playable([(Media.VIDEO, "hevc")], [])
    assert not hevc.playable and "hevc" in (hevc.reason or "")
    b = gop + [
        out(Media.VIDEO, 40, video_body(prefixed([bytes((0x41, 1))]), keyframe=False, cts=80))
    ]
    verdict = webrtc_media.check_playable([(Media.VIDEO, "h264")], b)
    assert not verdict.playable and "B-frames" in (verdict.reason or "")


class FakeWebrtc:
    def __init__(self) -> None:
        self.sent: list[link.Media] = []
        self.full = False

    def send_media(self, data: bytes) -> bool:
        if self.full:
            return False
        decoder = link.LinkDecoder()
        decoder.receive_data(data)
        event = decoder.next_event()
        assert isinstance(event, link.Media)
        self.sent.append(event)
        return True


def viewer() -> tuple[whep.WhepViewer, FakeWebrtc]:
    fake = FakeWebrtc()
    service: Any = type(
        "S", (), {"webrtc": fake, "end_viewer": lambda *a, **k: None, "verdicts": {}}
    )()
    service.source_unplayable = lambda v, code, reason: (
        service.verdicts.__setitem__((v.stream_path, v.source_id), (code, reason)),
        v.ended.set(),
    )
    return (
        whep.WhepViewer(
            service=service,
            session_id=7,
            location="x",
            stream_path="a/b",
            source_id="cam",
            remote="",
        ),
        fake,
    )


def gop(start: int, count: int, *, audio: bool = True) -> list[OutputFrame]:
    record = avc_config_record(SPS, PPS)
    frames = [out(Media.VIDEO, start, video_body(record, keyframe=True, config=True), config=True)]
    for i in range(count):
        key = i == 0
        nal = bytes((0x65 if key else 0x41, i))
        frames.append(
            out(
                Media.VIDEO, start + 40 * i, video_body(prefixed([nal]), keyframe=key), keyframe=key
            )
        )
        if audio:
            frames.append(out(Media.AUDIO, start + 40 * i, b"\x91Opus" + b"\xfc" * 3))
    return frames


def test_the_cached_gop_ends_now_and_the_timeline_runs_on() -> None:
    """A 25-frame GOP reaches the viewer 1 ms apart ending where live continues; audio
    older than the GOP's last picture is not sent; later frames keep their spacing."""
    v, fake = viewer()
    v.frames(gop(1000, 25), first=True)
    video = [m for m in fake.sent if m.track == whep.TRACK_VIDEO]
    assert [m.dts_ms for m in video] == list(range(25))
    assert video[0].keyframe and video[0].payload.startswith(START + SPS)
    audio = [m for m in fake.sent if m.track == whep.TRACK_AUDIO]
    assert [m.dts_ms for m in audio] == [24]
    fake.sent.clear()
    # live frames, then a supersede: the bundle's output timeline runs on, a new GOP begins
    v.frames(gop(1000 + 25 * 40, 3)[1:], first=False)
    assert [m.dts_ms for m in fake.sent if m.track == 0] == [64, 104, 144]
    fake.sent.clear()
    v.frames(gop(1000 + 28 * 40 + 5, 2), first=False)
    stamps = [m.dts_ms for m in fake.sent if m.track == 0]
    assert stamps == [189, 229] and fake.sent[0].keyframe


def test_opus_from_the_transcoder_follows_the_viewer_timeline() -> None:
    v, fake = viewer()
    v.opus(500, b"early")  #: before the picture: not sent
    v.frames(gop(1000, 2, audio=False), first=True)
    fake.sent.clear()
    v.opus(1040, b"a")
    v.opus(1040, b"dup")
    v.opus(1060, b"b")
    assert [(m.dts_ms, m.payload) for m in fake.sent] == [(1, b"a"), (21, b"b")]


def aac_units(seconds: float) -> tuple[bytes, list[tuple[int, bytes]]]:
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate = 44100
    encoder.layout = "stereo"
    encoder.format = "fltp"
    encoder.open()
    units: list[tuple[int, bytes]] = []
    samples = 0
    while samples < seconds * 44100:
        tone = array.array(
            "f", (0.3 * math.sin(2 * math.pi * 440 * (samples + i) / 44100) for i in range(1024))
        ).tobytes()
        frame = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
        for plane in frame.planes:
            plane.update(tone)
        frame.sample_rate = 44100
        frame.pts = samples
        frame.time_base = fractions.Fraction(1, 44100)
        for packet in encoder.encode(frame):
            units.append((round(packet.pts * 1000 / 44100), bytes(packet)))
        samples += 1024
    return bytes(encoder.extradata), units


def test_aac_becomes_decodable_opus_on_the_same_clock() -> None:
    asc, units = aac_units(1.0)
    codec = webrtc_media.AacToOpus(bitrate=64000)
    codec.configure(asc)
    packets = [p for dts, raw in units for p in codec.push(dts + 5000, raw)]
    assert len(packets) >= 40
    stamps = [ms for ms, _ in packets]
    assert stamps == sorted(stamps) and 4900 <= stamps[0] <= 5100
    assert all(b - a == 20 for a, b in zip(stamps, stamps[1:]))
    decoder = av.CodecContext.create("libopus", "r")
    decoded = sum(f.samples for _, p in packets for f in decoder.decode(av.Packet(p)))
    assert decoded == 960 * len(packets)
    assert codec.errors == 0


def test_a_slow_viewer_queue_skips_to_the_next_keyframe() -> None:
    pytest.importorskip("aiortc")
    from rtmp_ingest.webrtc.sender import FrameTrack

    async def run() -> FrameTrack:
        track = FrameTrack("video", max_frames=4)
        track.push(0, b"k", keyframe=True)
        for i in range(1, 8):
            track.push(i, b"p", keyframe=False)  #: nobody reads: the bound is hit
        track.push(8, b"k2", keyframe=True)
        first = await track.recv()
        assert bytes(first) == b"k2" and first.pts == 8
        return track

    track = asyncio.run(run())
    assert track.skips == 1 and track.frames_dropped == 8  #: every frame before k2


def test_viewer_keyframe_requests_reach_the_daemon_rate_limited() -> None:
    pytest.importorskip("aiortc")
    from rtmp_ingest.webrtc.sender import ViewerSession

    sent: list[dict[str, Any]] = []
    session = ViewerSession(3, {}, sent.append, lambda _: None)
    sender: Any = type("Sender", (), {})()
    session._forward_pli(sender)
    sender._send_keyframe()  #: what aiortc calls on a PLI or FIR
    sender._send_keyframe()  #: within PLI_INTERVAL_S: not forwarded again
    assert sent == [{"op": "pli", "session": 3}]
    assert session.pli_forwarded == 1


def test_a_b_frame_mid_session_ends_the_viewer_and_the_api_says_why() -> None:
    v, fake = viewer()
    frames = gop(0, 2, audio=False)
    frames.append(
        out(Media.VIDEO, 80, video_body(prefixed([bytes((0x41, 7))]), keyframe=False, cts=40))
    )
    frames.append(out(Media.VIDEO, 120, video_body(prefixed([bytes((0x41, 8))]), keyframe=False)))
    v.frames(frames, first=False)
    assert len(fake.sent) == 2, "nothing after the B-frame"
    code, reason = v.service.verdicts[("a/b", "cam")]
    assert code == "b-frames" and "B-frames" in reason


def test_a_picture_lost_on_the_link_makes_video_wait_for_a_keyframe() -> None:
    v, fake = viewer()
    v.frames(gop(0, 3, audio=False), first=True)
    fake.full = True
    v.frames(gop(120, 2, audio=False)[2:], first=False)  #: one P-frame, lost
    fake.full = False
    fake.sent.clear()
    v.frames(gop(160, 3, audio=False)[2:], first=False)  #: P-frames after the loss
    assert fake.sent == [], "P-frames after the loss are held back"
    v.frames(gop(240, 2, audio=False), first=False)
    assert [m.keyframe for m in fake.sent] == [True, False]
    assert v.frames_dropped >= 2


# -- VP9 passthrough ----------------------------------------------------------------------


def vp9_body(frame: bytes, *, keyframe: bool, config: bool = False) -> bytes:
    """An E-RTMP vp09 body: ExVideoTagHeader (CodedFrames or SequenceStart), FourCC."""
    head = 0x80 | (1 if keyframe or config else 2) << 4 | (0 if config else 1)
    return bytes((head,)) + b"vp09" + frame


def vp9_out(dts: int, frame: bytes, *, keyframe: bool, config: bool = False) -> OutputFrame:
    body = vp9_body(frame, keyframe=keyframe, config=config)
    return OutputFrame(
        "cam",
        Frame("video0", Media.VIDEO, "vp9", dts, body, keyframe=keyframe, config=config),
        dts,
        False,
    )


def vp9_frames(pix_fmt: str = "yuv420p") -> list[tuple[bytes, bool]]:
    encoder = av.CodecContext.create("libvpx-vp9", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 64, 64, pix_fmt
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out = []
    for index in range(4):
        picture = av.VideoFrame(64, 64, pix_fmt)
        for plane in picture.planes:
            plane.update(bytes([index * 30 % 256]) * plane.buffer_size)
        picture.pts = index
        out += [(bytes(p), p.is_keyframe) for p in encoder.encode(picture)]
    return out + [(bytes(p), p.is_keyframe) for p in encoder.encode(None)]


def test_vp9_profile_0_is_carried_other_profiles_are_not() -> None:
    (key, _), *_ = vp9_frames()
    assert webrtc_media.check_playable([(Media.VIDEO, "vp9")], [vp9_out(0, key, keyframe=True)])
    (key444, _), *_ = vp9_frames("yuv444p")  #: profile 1
    verdict = webrtc_media.check_playable(
        [(Media.VIDEO, "vp9")], [vp9_out(0, key444, keyframe=True)]
    )
    assert not verdict.playable and "profile 1" in (verdict.reason or "")


SEQUENCE_HEADER = bytes((0x0A, 3, 0, 0, 0))  #: OBU type 1 with its size (content opaque)


def av1_out(dts: int, data: bytes, *, keyframe: bool, config: bool = False) -> OutputFrame:
    head = 0x80 | (1 if keyframe or config else 2) << 4 | (0 if config else 1)
    body = bytes((head,)) + b"av01" + data
    frame = Frame("video0", Media.VIDEO, "av1", dts, body, keyframe=keyframe, config=config)
    return OutputFrame("cam", frame, dts, False)


def av1_record(profile: int) -> bytes:
    """AV1CodecConfigurationRecord (marker+version, profile+level, …) and configOBUs."""
    return bytes((0x81, profile << 5 | 8, 0x0C, 0)) + SEQUENCE_HEADER


def test_av1_main_is_carried_other_profiles_are_not() -> None:
    main = [av1_out(0, av1_record(0), keyframe=True, config=True)]
    assert webrtc_media.check_playable([(Media.VIDEO, "av1")], main).playable
    high = [av1_out(0, av1_record(1), keyframe=True, config=True)]
    verdict = webrtc_media.check_playable([(Media.VIDEO, "av1")], high)
    assert not verdict.playable and "profile 1" in (verdict.reason or "")


def test_an_av1_viewer_gets_units_with_the_sequence_header_on_keyframes() -> None:
    v, fake = viewer()
    v.video_codec = "av1"
    v.video = webrtc_media.video_access("av1")
    delimiter, frame = bytes((0x12, 0)), bytes((0x32, 2, 0xAB, 0xCD))
    v.frames(
        [
            av1_out(0, av1_record(0), keyframe=True, config=True),
            av1_out(0, delimiter + frame, keyframe=True),  #: no sequence header of its own
            av1_out(40, delimiter + frame, keyframe=False),
            av1_out(80, bytes((0x80, 1)), keyframe=False),  #: forbidden bit: not sent
            av1_out(120, delimiter + SEQUENCE_HEADER + frame, keyframe=True),
        ],
        first=False,
    )
    assert [(m.payload, m.keyframe) for m in fake.sent] == [
        (SEQUENCE_HEADER + delimiter + frame, True),
        (delimiter + frame, False),
        (delimiter + SEQUENCE_HEADER + frame, True),
    ]
    assert v.video.malformed == 1


def test_a_vp9_viewer_gets_the_frames_as_they_are_keyframes_from_the_bitstream() -> None:
    v, fake = viewer()
    v.video_codec = "vp9"
    v.video = webrtc_media.video_access("vp9")
    frames = vp9_frames()
    batch = [vp9_out(0, b"\x01\x00\x00\x00\x00\x0a\x80", keyframe=True, config=True)]
    #: the FLV frame type is ignored: the second frame claims to be a keyframe and is not
    batch += [vp9_out(40 * i, f, keyframe=i < 2) for i, (f, _) in enumerate(frames)]
    v.frames(batch, first=False)
    assert [(m.payload, m.keyframe) for m in fake.sent] == frames
    assert [m.dts_ms for m in fake.sent] == [40 * i for i in range(len(frames))]


def test_another_playable_codec_ends_the_viewer_without_a_verdict() -> None:
    ended: list[str] = []
    v, fake = viewer()
    v.service.end_viewer = lambda viewer, reason: ended.append(reason)
    v.frames(gop(0, 2, audio=False), first=True)
    (key, _), *_ = vp9_frames()
    v.frames([vp9_out(80, key, keyframe=True)], first=False)
    assert ended == ["codec-vp9"] and not v.service.verdicts
    assert len(fake.sent) == 2


def test_the_process_packs_vp9_with_the_payloader_on_a_90khz_clock() -> None:
    pytest.importorskip("aiortc")
    from aiortc import rtcrtpsender

    from rtmp_ingest.webrtc.sender import Vp9Passthrough, install_passthrough_encoders
    from rtmp_ingest.webrtc.vp9 import Vp9Depacketizer

    install_passthrough_encoders()
    install_passthrough_encoders()  #: idempotent
    codec: Any = type("Codec", (), {"mimeType": "video/VP9"})()
    encoder = rtcrtpsender.get_encoder(codec)
    assert isinstance(encoder, Vp9Passthrough)
    depacketizer = Vp9Depacketizer()
    units = []
    frames = vp9_frames()
    seq = 0
    for index, (frame, _) in enumerate(frames):
        packet = av.Packet(frame)
        packet.pts, packet.time_base = 1000 + 40 * index, fractions.Fraction(1, 1000)
        payloads, timestamp = encoder.pack(packet)
        assert timestamp == 90 * (1000 + 40 * index)
        for number, payload in enumerate(payloads):
            marker = number == len(payloads) - 1
            units += depacketizer.push(seq, timestamp, marker, payload, now_ms=0.0)
            seq += 1
    assert [u.parts[0] for u in units] == [f for f, _ in frames]


async def test_viewer_keyframe_requests_reach_a_whip_publisher_once_per_interval(
    autojump_clock: Any,
) -> None:
    """Every viewer's PLI (each already limited by the process) → at most one keyframe
    request to the source's WebRTC publisher per `whep_pli_interval_s`; other sources'
    publishers are not asked."""
    import trio

    from rtmp_ingest.config import WebrtcConfig

    class Session:
        def __init__(self, source_id: str) -> None:
            self.stream_path, self.source_id = "a/b", source_id
            self.connected = self.has_video = True
            self.keyframe_requested_s = -math.inf
            self.asked = 0

    class Webrtc:
        viewer_control: Any = None

        def __init__(self) -> None:
            self.sessions = {1: Session("cam"), 2: Session("other")}

        def request_keyframe(self, session: Session) -> None:
            session.keyframe_requested_s = trio.current_time()
            session.asked += 1

    webrtc = Webrtc()
    service = whep.WhepService(Any, webrtc, WebrtcConfig(enabled=True, whep_pli_interval_s=1.0))  # type: ignore[arg-type]
    for session_id in (7, 8, 9):
        v, _ = viewer()
        v.service, v.session_id = service, session_id
        service.viewers[session_id] = v
    for session_id in (7, 8, 9):  #: three viewers ask at once
        webrtc.viewer_control({"op": "pli", "session": session_id})
    assert webrtc.sessions[1].asked == 1 and webrtc.sessions[2].asked == 0
    assert (service.plis_forwarded, service.plis_coalesced) == (1, 2)
    await trio.sleep(0.5)
    webrtc.viewer_control({"op": "pli", "session": 8})
    assert webrtc.sessions[1].asked == 1, "still inside the interval"
    await trio.sleep(0.5)  #: MockClock (autojump): no real wait
    webrtc.viewer_control({"op": "pli", "session": 8})
    assert webrtc.sessions[1].asked == 2
    assert service.statistics()["plis_forwarded"] == 2
    assert service.statistics()["plis_coalesced"] == 3


@pytest.mark.parametrize("codec", ["h264", "vp9", "av1"])
def test_the_answer_sends_the_source_codec_with_nack_and_rtx(codec: str) -> None:
    """Lost packets are retransmitted from the sender's short history (aiortc keeps the
    last 128 RTP packets per viewer): the answer keeps NACK feedback and an RTX stream
    for the source's codec, which is the one chosen even when the offer lists others
    first."""
    pytest.importorskip("aiortc")
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver
    from aiortc import sdp as aiortc_sdp

    from rtmp_ingest.webrtc import stack
    from rtmp_ingest.webrtc.sender import ViewerSession, install_passthrough_encoders

    stack.configure_codecs()
    stack.restrict_host_addresses(["127.0.0.1"])
    install_passthrough_encoders()  #: the AV1 entry (a viewer process has it once it serves)

    async def run() -> str:
        client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video = client.addTransceiver("video", direction="recvonly")
        capabilities = RTCRtpReceiver.getCapabilities("video")
        assert capabilities is not None
        #: the viewer prefers the other codec: the answer still picks the source's
        video.setCodecPreferences(
            sorted(capabilities.codecs, key=lambda c: c.mimeType.lower() == f"video/{codec}")
        )
        client.addTransceiver("audio", direction="recvonly")
        await client.setLocalDescription(await client.createOffer())
        session = ViewerSession(1, {}, lambda _: None, lambda _: None)
        reply = await session.negotiate(
            client.localDescription.sdp,
            video_codec=codec,
            h264_profile=66 if codec == "h264" else None,
            audio=True,
        )
        await session.close("test")
        await client.close()
        assert reply["op"] == "answer", reply
        return str(reply["sdp"])

    answer = aiortc_sdp.SessionDescription.parse(asyncio.run(run()))
    section = next(m for m in answer.media if m.kind == "video")
    chosen = section.rtp.codecs[0]
    assert chosen.mimeType.lower() == f"video/{codec}"
    assert any(f.type == "nack" and not f.parameter for f in chosen.rtcpFeedback)
    assert any(
        c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") == chosen.payloadType
        for c in section.rtp.codecs
    )


def test_whip_receivers_never_answer_av1_that_only_whep_can_send() -> None:
    pytest.importorskip("aiortc")
    from aiortc import RTCRtpSender

    from rtmp_ingest.webrtc import stack
    from rtmp_ingest.webrtc.sender import install_passthrough_encoders

    stack.configure_codecs()
    install_passthrough_encoders()
    capabilities = RTCRtpSender.getCapabilities("video")
    assert capabilities is not None
    assert "video/av1" in {c.mimeType.lower() for c in capabilities.codecs}
    received = {c.mimeType.lower() for c in stack.codec_preferences("video")}
    assert received == {"video/h264", "video/vp9", "video/rtx"}


def h264_units(count: int) -> list[tuple[bytes, bool]]:
    """`count` Annex B access units of a 320x240 x264 stream (one keyframe, then P)."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "keyint": "600"}
    out = []
    for index in range(count):
        picture = av.VideoFrame(320, 240, "yuv420p")
        for number, plane in enumerate(picture.planes):
            plane.update(bytes([(index * 7 + number * 40) % 256]) * plane.buffer_size)
        picture.pts = index
        out += [(bytes(p), p.is_keyframe) for p in encoder.encode(picture)]
    return out


def test_lost_packets_are_retransmitted_from_the_viewer_history() -> None:
    """Every 5th video packet is lost on its first way out: the viewer (aiortc) NACKs
    each, and each is sent again from the sender's history as RTX (RFC 4588: the RTX
    payload starts with the lost packet's sequence number)."""
    pytest.importorskip("aiortc")
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.rtp import RtpPacket

    from rtmp_ingest.webrtc import stack
    from rtmp_ingest.webrtc.sender import ViewerSession

    stack.configure_codecs()
    stack.restrict_host_addresses(["127.0.0.1"])
    units = h264_units(30)

    async def run() -> tuple[list[int], set[int], int]:
        client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        client.addTransceiver("video", direction="recvonly")
        client.on("track", lambda track: None)
        await client.setLocalDescription(await client.createOffer())
        session = ViewerSession(1, {}, lambda _: None, lambda _: None)
        reply = await session.negotiate(
            client.localDescription.sdp, video_codec="h264", h264_profile=66, audio=False
        )
        assert reply["op"] == "answer", reply
        await client.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
        await asyncio.wait_for(session.connected.wait(), 20)
        assert session.pc is not None
        dtls: Any = session.pc.getSenders()[0].transport
        video_pt = int(reply["sdp"].split("m=video ", 1)[1].split()[2])
        send = dtls._send_rtp  #: the plaintext RTP on its way to SRTP
        first_time: set[int] = set()
        lost: list[int] = []
        resent: set[int] = set()
        recovered = asyncio.Event()

        async def lossy(data: bytes) -> None:
            if 200 <= data[1] <= 206:  #: RTCP
                await send(data)
                return
            packet = RtpPacket.parse(data)
            if packet.payload_type != video_pt:
                resent.add(int.from_bytes(packet.payload[:2], "big"))  #: RTX: the OSN
                if len(lost) >= 5 and resent >= set(lost):
                    recovered.set()
            elif packet.sequence_number not in first_time:
                first_time.add(packet.sequence_number)
                if len(first_time) % 5 == 0 and len(lost) < 5:  #: each followed by more
                    lost.append(packet.sequence_number)
                    return
            await send(data)

        dtls._send_rtp = lossy
        for index, (unit, key) in enumerate(units):
            session.push(0, index * 33, unit, keyframe=key)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recovered.wait(), 20)
        finally:
            await session.close("test")
            await client.close()
        return lost, resent, len(first_time)

    lost, resent, sent = asyncio.run(run())
    assert len(lost) == 5 and sent >= 25
    assert set(lost) <= resent, f"lost {lost}, sent again {sorted(resent)}"


def test_the_process_configuration_sets_how_frames_are_cut() -> None:
    pytest.importorskip("aiortc")
    from aiortc import rtcrtpsender

    from rtmp_ingest.webrtc.sender import install_passthrough_encoders

    vp9: Any = type("Codec", (), {"mimeType": "video/VP9"})()
    av1: Any = type("Codec", (), {"mimeType": "video/AV1"})()
    try:
        install_passthrough_encoders({"whep_max_payload_bytes": 300, "whep_vp9_flexible": False})
        encoder = rtcrtpsender.get_encoder(vp9)
        assert (encoder.payloader.max_payload_bytes, encoder.payloader.flexible) == (300, False)
        assert rtcrtpsender.get_encoder(av1).payloader.max_payload_bytes == 300
    finally:
        install_passthrough_encoders({})
    encoder = rtcrtpsender.get_encoder(vp9)
    assert (encoder.payloader.max_payload_bytes, encoder.payloader.flexible) == (1200, True)

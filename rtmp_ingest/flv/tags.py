"""FLV / Enhanced RTMP v2 audio and video message bodies (RTMP types 8 and 9).

One RTMP media message carries one FLV tag body. Legacy bodies (FLV 10.1 §E.4.2,
§E.4.3) name the codec by a 4-bit id; Enhanced RTMP v2 (docs/ertmp.md) sets the
ExHeader bit and names it by FourCC, may wrap the packet in ModEx prefixes
(TimestampOffsetNano), and may carry several tracks in one message
(Multitrack: OneTrack, ManyTracks, ManyTracksManyCodecs).

`parse_video`/`parse_audio` turn a body into `Packet`s, one per track, with the
codec payload separated from the FLV framing. `video_body`/`audio_body` build a
single-track body back: legacy framing for track 0 of the codecs legacy players
know (H.264, AAC, MP3 and the other legacy ids), E-RTMP framing for the rest, so
a multitrack feed's layers can be sent to a player one at a time.

Every malformed body raises `TagError` (a ValueError); the driver drops that frame
and counts it. Nothing here allocates more than the body's size.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

import attrs

from rtmp_ingest.flv import codecs


class TagError(ValueError):
    """A media message body that is not a valid FLV / E-RTMP tag body."""


class PacketType(enum.IntEnum):
    """What a packet is, the same for legacy and E-RTMP framing."""

    SEQUENCE_START = 0  #: codec configuration record (AVCDecoderConfigurationRecord, ASC, …)
    CODED_FRAMES = 1
    SEQUENCE_END = 2
    METADATA = 4  #: E-RTMP video metadata (colorInfo), AMF-encoded
    MULTICHANNEL_CONFIG = 5  #: E-RTMP audio channel layout
    COMMAND = 6  #: video command frame (seek start/end), no media
    MPEG2TS_SEQUENCE_START = 7  #: E-RTMP: an AV1 video descriptor for MPEG-TS, not the av1C record


#: E-RTMP v2 VideoPacketType / AudioPacketType values.
_V_SEQUENCE_START, _V_CODED_FRAMES, _V_SEQUENCE_END, _V_CODED_FRAMES_X = 0, 1, 2, 3
_V_METADATA, _V_MPEG2TS_SEQUENCE_START, _V_MULTITRACK, _V_MODEX = 4, 5, 6, 7
_A_SEQUENCE_START, _A_CODED_FRAMES, _A_SEQUENCE_END = 0, 1, 2
_A_MULTICHANNEL_CONFIG, _A_MULTITRACK, _A_MODEX = 4, 5, 7
#: AvMultitrackType
ONE_TRACK, MANY_TRACKS, MANY_TRACKS_MANY_CODECS = 0, 1, 2

#: FLV VideoTagHeader FrameType
FRAME_KEY, FRAME_INTER, FRAME_DISPOSABLE, FRAME_GENERATED_KEY, FRAME_COMMAND = 1, 2, 3, 4, 5
LEGACY_AVC = 7
SOUND_AAC = 10
SOUND_EX_HEADER = 9


@attrs.frozen
class Packet:
    """One track's share of a media message."""

    media: str  #: "video" | "audio"
    track_id: int  #: 0 = the default track
    codec: str  #: "h264", "hevc", "av1", "vp9", "aac", "opus", … (codecs.py)
    packet_type: PacketType
    keyframe: bool
    cts_ms: int  #: composition time offset (PTS − DTS); 0 where the codec has none
    data: bytes  #: codec payload: config record, NAL units (length-prefixed), OBUs, frames
    nano_offset: int = 0  #: E-RTMP TimestampOffsetNano, 0..999999 ns
    legacy_header: int | None = None  #: first byte of a legacy audio body (rate/size/type)
    multitrack: bool = False  #: came out of an E-RTMP multitrack message


def _si24(raw: bytes, pos: int) -> int:
    value = int.from_bytes(raw[pos : pos + 3], "big")
    return value - (1 << 24) if value & 0x800000 else value


def _modex(body: bytes, pos: int, packet_type: int, modex_type: int) -> tuple[int, int, int]:
    """Reads ModEx prefixes; returns (position, next packet type, nano offset)."""
    nano = 0
    while packet_type == modex_type:
        if pos >= len(body):
            raise TagError("truncated ModEx")
        size = body[pos] + 1
        pos += 1
        if size == 256:
            if pos + 2 > len(body):
                raise TagError("truncated ModEx size")
            size = int.from_bytes(body[pos : pos + 2], "big") + 1
            pos += 2
        if pos + size + 1 > len(body):
            raise TagError("truncated ModEx data")
        data = body[pos : pos + size]
        pos += size
        kind, packet_type = body[pos] >> 4, body[pos] & 0x0F
        pos += 1
        if kind == 0 and len(data) >= 3:  #: TimestampOffsetNano
            nano = min(int.from_bytes(data[:3], "big"), 999_999)
    return pos, packet_type, nano


def _fourcc(body: bytes, pos: int) -> tuple[str, int]:
    if pos + 4 > len(body):
        raise TagError("truncated FourCC")
    return body[pos : pos + 4].decode("latin-1"), pos + 4


def _tracks(
    body: bytes, pos: int, multitrack_type: int | None, fourcc: str | None
) -> Iterator[tuple[str | None, int, bytes]]:
    """Yields (fourcc, track id, payload) for each track of the message."""
    end = len(body)
    if multitrack_type is None:
        yield fourcc, 0, body[pos:]
        return
    while pos < end:
        track_fourcc = fourcc
        if multitrack_type == MANY_TRACKS_MANY_CODECS:
            track_fourcc, pos = _fourcc(body, pos)
        if pos >= end:
            raise TagError("truncated track id")
        track_id = body[pos]
        pos += 1
        if multitrack_type == ONE_TRACK:
            yield track_fourcc, track_id, body[pos:]
            return
        if pos + 3 > end:
            raise TagError("truncated track size")
        size = int.from_bytes(body[pos : pos + 3], "big")
        pos += 3
        if pos + size > end:
            raise TagError(f"track {track_id} size {size} runs past the message")
        yield track_fourcc, track_id, body[pos : pos + size]
        pos += size


def _track_header(
    body: bytes, pos: int, packet_type: int, multitrack_code: int
) -> tuple[int, int, int | None, str | None]:
    """After the packet type: the multitrack header if `packet_type` says there is one,
    then the FourCC unless every track names its own. Returns (pos, the packet type the
    tracks carry, the multitrack type or None, the FourCC or None)."""
    multitrack_type: int | None = None
    fourcc: str | None = None
    if packet_type == multitrack_code:
        if pos >= len(body):
            raise TagError("truncated multitrack header")
        multitrack_type, packet_type = body[pos] >> 4, body[pos] & 0x0F
        pos += 1
        if multitrack_type > MANY_TRACKS_MANY_CODECS:
            raise TagError(f"unknown multitrack type {multitrack_type}")
        if packet_type == multitrack_code:
            raise TagError("multitrack inside multitrack")
    if multitrack_type != MANY_TRACKS_MANY_CODECS:
        fourcc, pos = _fourcc(body, pos)
    return pos, packet_type, multitrack_type, fourcc


def parse_video(body: bytes) -> list[Packet]:
    """Parses a video message body into one packet per track."""
    if not body:
        raise TagError("empty video message")
    b0 = body[0]
    frame_type = (b0 >> 4) & 0x07
    if not b0 & 0x80:
        return [_legacy_video(body, frame_type, b0 & 0x0F)]
    pos, packet_type, nano = _modex(body, 1, b0 & 0x0F, _V_MODEX)
    if frame_type == FRAME_COMMAND and packet_type != _V_METADATA:
        return [Packet("video", 0, "", PacketType.COMMAND, False, 0, body[pos : pos + 1], nano)]
    pos, packet_type, multitrack_type, fourcc = _track_header(body, pos, packet_type, _V_MULTITRACK)
    packets = []
    for track_fourcc, track_id, data in _tracks(body, pos, multitrack_type, fourcc):
        codec = codecs.VIDEO_FOURCC.get(track_fourcc or "")
        if codec is None:
            raise TagError(f"unknown video FourCC {track_fourcc!r}")
        packet = _ex_video_packet(codec, track_id, frame_type, packet_type, data, nano)
        packets.append(
            attrs.evolve(packet, multitrack=True) if multitrack_type is not None else packet
        )
    return packets


def _ex_video_packet(
    codec: str, track_id: int, frame_type: int, packet_type: int, data: bytes, nano: int
) -> Packet:
    keyframe = frame_type in (FRAME_KEY, FRAME_GENERATED_KEY)
    if packet_type == _V_SEQUENCE_START:
        return Packet("video", track_id, codec, PacketType.SEQUENCE_START, False, 0, data, nano)
    if packet_type == _V_MPEG2TS_SEQUENCE_START:
        return Packet(
            "video", track_id, codec, PacketType.MPEG2TS_SEQUENCE_START, False, 0, data, nano
        )
    if packet_type == _V_CODED_FRAMES:
        if codec in codecs.CTS_CODECS:
            if len(data) < 3:
                raise TagError("truncated composition time")
            return Packet(
                "video",
                track_id,
                codec,
                PacketType.CODED_FRAMES,
                keyframe,
                _si24(data, 0),
                data[3:],
                nano,
            )
        return Packet("video", track_id, codec, PacketType.CODED_FRAMES, keyframe, 0, data, nano)
    if packet_type == _V_CODED_FRAMES_X:
        return Packet("video", track_id, codec, PacketType.CODED_FRAMES, keyframe, 0, data, nano)
    if packet_type == _V_SEQUENCE_END:
        return Packet("video", track_id, codec, PacketType.SEQUENCE_END, False, 0, b"", nano)
    if packet_type == _V_METADATA:
        return Packet("video", track_id, codec, PacketType.METADATA, False, 0, data, nano)
    raise TagError(f"reserved video packet type {packet_type}")


def _legacy_video(body: bytes, frame_type: int, codec_id: int) -> Packet:
    codec = codecs.LEGACY_VIDEO.get(codec_id)
    if codec is None:
        raise TagError(f"unknown legacy video codec id {codec_id}")
    if frame_type == FRAME_COMMAND:
        return Packet("video", 0, codec, PacketType.COMMAND, False, 0, body[1:2])
    keyframe = frame_type in (FRAME_KEY, FRAME_GENERATED_KEY)
    if codec_id != LEGACY_AVC:
        return Packet("video", 0, codec, PacketType.CODED_FRAMES, keyframe, 0, body[1:])
    if len(body) < 5:
        raise TagError("truncated AVC video tag header")
    avc_type = body[1]
    if avc_type == 0:
        return Packet("video", 0, codec, PacketType.SEQUENCE_START, False, 0, body[5:])
    if avc_type == 1:
        return Packet(
            "video", 0, codec, PacketType.CODED_FRAMES, keyframe, _si24(body, 2), body[5:]
        )
    if avc_type == 2:
        return Packet("video", 0, codec, PacketType.SEQUENCE_END, False, 0, b"")
    raise TagError(f"unknown AVCPacketType {avc_type}")


def parse_audio(body: bytes) -> list[Packet]:
    """Parses an audio message body into one packet per track (empty body: none)."""
    if not body:
        return []  #: a zero-length audio message is legacy "silence"
    b0 = body[0]
    sound_format = b0 >> 4
    if sound_format != SOUND_EX_HEADER:
        return [_legacy_audio(body, sound_format)]
    pos, packet_type, nano = _modex(body, 1, b0 & 0x0F, _A_MODEX)
    pos, packet_type, multitrack_type, fourcc = _track_header(body, pos, packet_type, _A_MULTITRACK)
    packets = []
    for track_fourcc, track_id, data in _tracks(body, pos, multitrack_type, fourcc):
        codec = codecs.AUDIO_FOURCC.get(track_fourcc or "")
        if codec is None:
            raise TagError(f"unknown audio FourCC {track_fourcc!r}")
        if packet_type == _A_SEQUENCE_START:
            kind = PacketType.SEQUENCE_START
        elif packet_type == _A_CODED_FRAMES:
            kind = PacketType.CODED_FRAMES
        elif packet_type == _A_SEQUENCE_END:
            kind = PacketType.SEQUENCE_END
        elif packet_type == _A_MULTICHANNEL_CONFIG:
            kind = PacketType.MULTICHANNEL_CONFIG
        else:
            raise TagError(f"reserved audio packet type {packet_type}")
        packets.append(
            Packet(
                "audio",
                track_id,
                codec,
                kind,
                kind is PacketType.CODED_FRAMES,
                0,
                data,
                nano,
                multitrack=multitrack_type is not None,
            )
        )
    return packets


def _legacy_audio(body: bytes, sound_format: int) -> Packet:
    codec = codecs.LEGACY_AUDIO.get(sound_format)
    if codec is None:
        raise TagError(f"unknown legacy sound format {sound_format}")
    if sound_format == SOUND_AAC:
        if len(body) < 2:
            raise TagError("truncated AAC audio tag header")
        if body[1] == 0:
            return Packet(
                "audio",
                0,
                codec,
                PacketType.SEQUENCE_START,
                False,
                0,
                body[2:],
                legacy_header=body[0],
            )
        if body[1] == 1:
            return Packet(
                "audio", 0, codec, PacketType.CODED_FRAMES, True, 0, body[2:], legacy_header=body[0]
            )
        raise TagError(f"unknown AACPacketType {body[1]}")
    return Packet(
        "audio", 0, codec, PacketType.CODED_FRAMES, True, 0, body[1:], legacy_header=body[0]
    )


# -- building single-track bodies ----------------------------------------------------------

_EX_VIDEO_TYPE = {
    PacketType.SEQUENCE_START: _V_SEQUENCE_START,
    PacketType.CODED_FRAMES: _V_CODED_FRAMES,
    PacketType.SEQUENCE_END: _V_SEQUENCE_END,
    PacketType.METADATA: _V_METADATA,
    PacketType.MPEG2TS_SEQUENCE_START: _V_MPEG2TS_SEQUENCE_START,
}
_EX_AUDIO_TYPE = {
    PacketType.SEQUENCE_START: _A_SEQUENCE_START,
    PacketType.CODED_FRAMES: _A_CODED_FRAMES,
    PacketType.SEQUENCE_END: _A_SEQUENCE_END,
    PacketType.MULTICHANNEL_CONFIG: _A_MULTICHANNEL_CONFIG,
}
_AVC_TYPE = {PacketType.SEQUENCE_START: 0, PacketType.CODED_FRAMES: 1, PacketType.SEQUENCE_END: 2}
#: AAC legacy header: SoundFormat 10, 44 kHz flag, 16-bit, stereo (the value every encoder sends;
#: players read the real parameters from the AudioSpecificConfig).
_AAC_HEADER = 0xAF
#: MP3 legacy header: SoundFormat 2, 44 kHz flag, 16-bit, stereo (decoders read the frame header)
_MP3_HEADER = 0x2F


def video_body(packet: Packet, *, legacy: bool = True) -> bytes:
    """A single-track video body for `packet` (legacy AVC framing for H.264 when `legacy`)."""
    frame_type = (
        FRAME_KEY
        if packet.keyframe or packet.packet_type is not PacketType.CODED_FRAMES
        else FRAME_INTER
    )
    if packet.packet_type is PacketType.COMMAND:
        raise TagError("command frames are not forwarded")
    if legacy and packet.codec == "h264":
        avc_type = _AVC_TYPE.get(packet.packet_type)
        if avc_type is None:
            raise TagError(f"legacy AVC framing has no {packet.packet_type.name} packet")
        head = bytes(((frame_type << 4) | LEGACY_AVC, avc_type))
        return head + (packet.cts_ms & 0xFFFFFF).to_bytes(3, "big") + packet.data
    legacy_id = codecs.LEGACY_VIDEO_IDS.get(packet.codec)
    if legacy and legacy_id is not None:
        return bytes(((frame_type << 4) | legacy_id,)) + packet.data
    fourcc = codecs.VIDEO_FOURCC_OF.get(packet.codec)
    if fourcc is None:
        raise TagError(f"codec {packet.codec!r} has no E-RTMP FourCC")
    kind = _EX_VIDEO_TYPE[packet.packet_type]
    head = bytes((0x80 | (frame_type << 4) | kind,)) + fourcc.encode("latin-1")
    if kind == _V_CODED_FRAMES and packet.codec in codecs.CTS_CODECS:
        head += (packet.cts_ms & 0xFFFFFF).to_bytes(3, "big")
    return head + packet.data


def audio_body(packet: Packet, *, legacy: bool = True) -> bytes:
    """A single-track audio body for `packet` (legacy framing where a legacy id exists)."""
    if legacy and packet.codec == "aac":
        if packet.packet_type not in (PacketType.SEQUENCE_START, PacketType.CODED_FRAMES):
            raise TagError(f"legacy AAC framing has no {packet.packet_type.name} packet")
        kind = 0 if packet.packet_type is PacketType.SEQUENCE_START else 1
        return bytes((packet.legacy_header or _AAC_HEADER, kind)) + packet.data
    if legacy and packet.legacy_header is not None:
        return bytes((packet.legacy_header,)) + packet.data
    if legacy and packet.codec == "mp3" and packet.packet_type is PacketType.CODED_FRAMES:
        return bytes((_MP3_HEADER,)) + packet.data
    fourcc = codecs.AUDIO_FOURCC_OF.get(packet.codec)
    if fourcc is None:
        raise TagError(f"codec {packet.codec!r} has no E-RTMP FourCC")
    kind = _EX_AUDIO_TYPE[packet.packet_type]
    return bytes(((SOUND_EX_HEADER << 4) | kind,)) + fourcc.encode("latin-1") + packet.data

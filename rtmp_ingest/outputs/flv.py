"""One source's frames for one player: track choice, player clock, FLV tags.

RTMP play and HTTP-FLV send the same thing: the tag bodies publishers sent,
untouched, for one video track (a multitrack layer), one audio track and the
metadata of a source, on a clock that starts at 0 for this player. The bundle
has already made the source's timeline continuous across supersedes and
reconnects; here it is only shifted. Players that did not announce Enhanced
RTMP get H.264/AAC in legacy framing even when the publisher used E-RTMP;
other E-RTMP codecs (HEVC, AV1, VP9, Opus) can only go out as E-RTMP.

After a parameter change (a supersede by an encoder with other settings) the
new sequence header goes out as usual, and the first keyframe after it also
carries the new parameter sets in band (SPS/PPS, VPS for HEVC): players that
keep the first sequence header (VLC's FLV demuxer) still decode the new one.

FLV tags are written by hand: a tag is an 11-byte header, the body and a
4-byte back pointer (FLV 10.1 §E.3); passing bodies through keeps every codec
and E-RTMP detail intact, which a remuxing library would not guarantee.
"""

from __future__ import annotations

import struct

import attrs

from rtmp_ingest.bundle import Media, OutputFrame
from rtmp_ingest.flv.tags import (
    PacketType,
    TagError,
    audio_body,
    parse_audio,
    parse_video,
    video_body,
)
from rtmp_ingest.outputs.samples import parameter_sets

#: codecs whose parameter sets can travel in band in a keyframe
_INBAND_CODECS = frozenset({"h264", "hevc"})

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_DATA = 18
_TYPES = {Media.VIDEO: TAG_VIDEO, Media.AUDIO: TAG_AUDIO, Media.DATA: TAG_DATA}
_U32 = struct.Struct(">I")


def flv_header(*, audio: bool = True, video: bool = True) -> bytes:
    """FLV file header + PreviousTagSize0 (FLV 10.1 §E.2)."""
    flags = (0x04 if audio else 0) | (0x01 if video else 0)
    return b"FLV\x01" + bytes((flags,)) + _U32.pack(9) + _U32.pack(0)


def flv_tag(tag_type: int, timestamp_ms: int, body: bytes) -> bytes:
    """One FLV tag with its back pointer; the timestamp wraps at 2^32 ms."""
    ts = timestamp_ms & 0xFFFFFFFF
    size = len(body)
    header = bytes(
        (
            tag_type,
            (size >> 16) & 0xFF,
            (size >> 8) & 0xFF,
            size & 0xFF,
            (ts >> 16) & 0xFF,
            (ts >> 8) & 0xFF,
            ts & 0xFF,
            ts >> 24,
            0,
            0,
            0,
        )
    )
    return header + body + _U32.pack(size + 11)


def _is_ex_video(body: bytes) -> bool:
    return bool(body) and bool(body[0] & 0x80)


def _is_ex_audio(body: bytes) -> bool:
    return bool(body) and body[0] >> 4 == 9


class PlayerTrack:
    """Selects and times the frames of one source for one player."""

    __slots__ = (
        "_config",
        "_inband",
        "audio_track",
        "base_ms",
        "bytes",
        "frames",
        "legacy_only",
        "video_track",
        "want_audio",
        "want_video",
    )

    def __init__(
        self, *, video_track: str = "video0", audio_track: str = "audio0", legacy_only: bool = False
    ) -> None:
        self.video_track = video_track
        self.audio_track = audio_track
        #: the player announced no E-RTMP support: send H.264/AAC in legacy framing
        self.legacy_only = legacy_only
        self.base_ms: int | None = None
        self.frames = 0
        self.bytes = 0
        self.want_audio = True
        self.want_video = True
        self._config: bytes | None = None  #: the video configuration record sent last
        self._inband = b""  #: parameter sets for the next keyframe (after a change)

    def convert(self, out: OutputFrame) -> tuple[int, int, bytes] | None:
        """(FLV/RTMP type, player timestamp, body) for a frame this player gets, else None."""
        frame = out.frame
        media = frame.media
        if media is Media.VIDEO:
            if frame.track_id != self.video_track or not self.want_video:
                return None
        elif media is Media.AUDIO:
            if frame.track_id != self.audio_track or not self.want_audio:
                return None
        body = frame.payload
        if media is Media.VIDEO and frame.codec in _INBAND_CODECS:
            body = self._parameter_sets_in_band(frame.config, frame.keyframe, frame.codec, body)
        if self.legacy_only:
            legacy = self._legacy(media, frame.codec, body)
            if legacy is None:
                return None  #: a side packet (channel layout, sequence end) legacy framing cannot carry
            body = legacy
        base = self.base_ms
        if base is None:
            # The player's clock starts at its first coded frame; the side
            # frames replayed before it (metadata, sequence headers) carry the
            # source's old timestamps and go out at 0.
            if media is Media.DATA or frame.config:
                ts = 0
            else:
                base = self.base_ms = out.dts_ms
                ts = 0
        else:
            ts = out.dts_ms - base
        self.frames += 1
        self.bytes += len(body)
        return _TYPES[media], ts if ts > 0 else 0, body

    def _parameter_sets_in_band(
        self, config: bool, keyframe: bool, codec: str, body: bytes
    ) -> bytes:
        if config:
            record = coded_payload_of(body)
            if record is not None:
                if self._config is not None and record != self._config:
                    self._inband = parameter_sets(codec, record)
                self._config = record
            return body
        if not (keyframe and self._inband):
            return body
        inband, self._inband = self._inband, b""
        if len(body) > 5 and body[0] == 0x17 and body[1] == 1:
            return body[:5] + inband + body[5:]  #: legacy AVC NALUs
        try:
            packets = parse_video(body)
        except (TagError, IndexError):
            return body
        if len(packets) != 1 or packets[0].packet_type is not PacketType.CODED_FRAMES:
            return body  #: multitrack: each layer has its own parameter sets; left as sent
        packet = packets[0]
        return video_body(attrs.evolve(packet, data=inband + packet.data), legacy=False)

    @staticmethod
    def _legacy(media: Media, codec: str, body: bytes) -> bytes | None:
        try:
            if media is Media.VIDEO and codec == "h264" and _is_ex_video(body):
                return video_body(parse_video(body)[0], legacy=True)
            if media is Media.AUDIO and codec in ("aac", "mp3") and _is_ex_audio(body):
                return audio_body(parse_audio(body)[0], legacy=True)
        except (TagError, IndexError):
            return None
        return body


def coded_payload_of(body: bytes) -> bytes | None:
    """The configuration record of a video sequence-header body (legacy or E-RTMP)."""
    if len(body) > 5 and body[0] & 0x0F == 7 and not body[0] & 0x80 and body[1] == 0:
        return body[5:]
    try:
        packets = parse_video(body)
    except (TagError, IndexError, ValueError):
        return None
    for packet in packets:
        if packet.packet_type is PacketType.SEQUENCE_START:
            return packet.data
    return None

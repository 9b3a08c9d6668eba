"""One publisher's RTMP media messages → bundle frames.

Each audio/video message is parsed with `flv.tags` into one packet per track;
each packet becomes a `bundle.Frame` whose payload is a complete single-track
tag body: the message itself when it was single-track (no copy), or a body
rebuilt for that track when it came out of an E-RTMP multitrack message (so a
player of one layer gets a stream it can decode). Track ids are "video0",
"video1", … and "audio0", … by E-RTMP track id; track 0 is the default track.

Codec parameters come from the sequence headers (`flv.codecs.describe_config`)
and from onMetaData (width, height, frame rate, per-track maps for multitrack).
A malformed message drops that frame only: it is counted, and the first one of
the feed is reported so the driver logs it once.
"""

from __future__ import annotations

from typing import Any

from rtmp_ingest.bundle import Frame, Media, TrackInfo
from rtmp_ingest.flv import codecs
from rtmp_ingest.flv.tags import (
    Packet,
    PacketType,
    TagError,
    audio_body,
    parse_audio,
    parse_video,
    video_body,
)

_MEDIA = {"video": Media.VIDEO, "audio": Media.AUDIO}
_VIDEO = Media.VIDEO
_AUDIO = Media.AUDIO
#: packets that carry nothing a viewer needs live (seek commands, end of sequence, HDR
#: metadata for players we do not feed it to)
#: not forwarded: no media, or (MPEG-TS descriptor) nothing RTMP/HLS players use
_SKIPPED = (
    PacketType.COMMAND,
    PacketType.SEQUENCE_END,
    PacketType.METADATA,
    PacketType.MPEG2TS_SEQUENCE_START,
)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class FeedMedia:
    """Parsing state of one feed: per-track parameters, metadata, error counts."""

    __slots__ = ("dropped", "first_error", "metadata", "skipped", "track_info")

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}
        #: last known parameters per track id
        self.track_info: dict[str, TrackInfo] = {}
        self.dropped = 0  #: malformed messages dropped
        self.skipped = 0  #: packets not forwarded (commands, sequence end, HDR metadata)
        self.first_error: str | None = None

    def _error(self, exc: TagError) -> None:
        self.dropped += 1
        if self.first_error is None:
            self.first_error = str(exc)

    def video(self, timestamp_ms: int, body: bytes) -> list[Frame]:
        #: fast path: a legacy H.264 coded frame (what nearly every encoder sends)
        if (
            len(body) > 5
            and body[0] & 0x8F == 0x07
            and body[1] == 1
            and "video0" in self.track_info
        ):
            frame_type = body[0] >> 4
            if frame_type == 1 or frame_type == 2:
                cts = int.from_bytes(body[2:5], "big", signed=True)
                return [
                    Frame("video0", _VIDEO, "h264", timestamp_ms, body, frame_type == 1, False, cts)
                ]
        try:
            packets = parse_video(body)
        except TagError as exc:
            self._error(exc)
            return []
        return self._frames(packets, timestamp_ms, body)

    def audio(self, timestamp_ms: int, body: bytes) -> list[Frame]:
        #: fast path: a legacy AAC raw frame
        if len(body) > 2 and body[0] >> 4 == 10 and body[1] == 1 and "audio0" in self.track_info:
            return [Frame("audio0", _AUDIO, "aac", timestamp_ms, body, True, False, 0)]
        try:
            packets = parse_audio(body)
        except TagError as exc:
            self._error(exc)
            return []
        return self._frames(packets, timestamp_ms, body)

    def _frames(self, packets: list[Packet], timestamp_ms: int, body: bytes) -> list[Frame]:
        frames = []
        for packet in packets:
            if packet.packet_type in _SKIPPED:
                self.skipped += 1
                continue
            track_id = f"{packet.media}{packet.track_id}"
            config = (
                packet.packet_type is PacketType.SEQUENCE_START
                or packet.packet_type is PacketType.MULTICHANNEL_CONFIG
            )
            info = None
            if config or (packet.legacy_header is not None and track_id not in self.track_info):
                info = self._learn(track_id, packet)
            if packet.multitrack:
                try:
                    payload = rebuild(packet)
                except TagError as exc:
                    self._error(exc)
                    continue
            else:
                payload = body
            frames.append(
                Frame(
                    track_id,
                    _MEDIA[packet.media],
                    packet.codec,
                    timestamp_ms,
                    payload,
                    packet.keyframe,
                    config,
                    packet.cts_ms,
                    info,
                )
            )
        return frames

    def _learn(self, track_id: str, packet: Packet) -> TrackInfo:
        params: dict[str, Any] = {}
        if packet.packet_type is PacketType.SEQUENCE_START:
            params.update(codecs.describe_config(packet.codec, packet.data))
        if (
            packet.media == "audio"
            and "sample_rate" not in params
            and packet.legacy_header is not None
            and packet.codec != "aac"
        ):
            params.update(codecs.legacy_audio_info(packet.legacy_header))
        if packet.media == "video":
            params.update(self._video_metadata(packet.track_id))
        info = TrackInfo(
            width=params.get("width"),
            height=params.get("height"),
            frame_rate=params.get("frame_rate"),
            sample_rate=params.get("sample_rate"),
            channels=params.get("channels"),
            profile=params.get("profile"),
        )
        self.track_info[track_id] = info
        return info

    def _video_metadata(self, track: int) -> dict[str, Any]:
        meta = self.metadata
        if track:
            per_track = meta.get("videoTrackIdInfoMap")
            meta = per_track.get(str(track), {}) if isinstance(per_track, dict) else {}
            if not isinstance(meta, dict):
                return {}
        out: dict[str, Any] = {}
        width, height, rate = (
            _number(meta.get("width")),
            _number(meta.get("height")),
            _number(meta.get("framerate")),
        )
        if width and height and 0 < width < 65536 and 0 < height < 65536:
            out["width"], out["height"] = int(width), int(height)
        if rate and 0 < rate < 1000:
            out["frame_rate"] = rate
        return out

    def data(self, timestamp_ms: int, name: str, values: list[Any], payload: bytes) -> list[Frame]:
        """onMetaData (remembered for track parameters) and other data messages, passed through."""
        if name == "onMetaData" and values and isinstance(values[0], dict):
            self.metadata = dict(values[0])
        return [Frame("data0", Media.DATA, "amf0", timestamp_ms, payload)]


def rebuild(packet: Packet) -> bytes:
    """A single-track body for a packet taken out of a multitrack message."""
    return video_body(packet) if packet.media == "video" else audio_body(packet)

"""Frames as the bundle hands them to outputs, made from real PyAV encodes."""

from __future__ import annotations

from rtmp_ingest.bundle import Frame, OutputFrame
from rtmp_ingest.server.media import FeedMedia
from tests.tools.flv_media import Tag, encode_tags


def frames_of(tags: tuple[Tag, ...] | list[Tag], *, offset_ms: int = 0) -> list[Frame]:
    """What the daemon's media parsing makes of a feed's messages."""
    media = FeedMedia()
    frames: list[Frame] = []
    for tag in tags:
        if tag.kind == 9:
            frames += media.video(tag.ts_ms + offset_ms, tag.body)
        elif tag.kind == 8:
            frames += media.audio(tag.ts_ms + offset_ms, tag.body)
    return frames


def output_frames(frames: list[Frame], source_id: str = "cam1") -> list[OutputFrame]:
    seen: set[str] = set()
    out = []
    for frame in frames:
        first = frame.track_id not in seen
        seen.add(frame.track_id)
        out.append(OutputFrame(source_id, frame, frame.dts_ms, first))
    return out


def encoded(seconds: float = 4.0, **kwargs: object) -> list[OutputFrame]:
    return output_frames(frames_of(encode_tags(seconds, **kwargs)))  # type: ignore[arg-type]

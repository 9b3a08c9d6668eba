"""Small builders shared by the bundle tests: frames, publishes, readers."""

from __future__ import annotations

from rtmp_ingest.bundle import (
    Feed,
    Frame,
    Media,
    OutputFrame,
    Permissions,
    PublishRequest,
    Reader,
    Registry,
    TrackInfo,
)

MULTISOURCE = Permissions(app_multisource=True, token_multisource=True)


def video(
    dts_ms: int,
    *,
    key: bool = False,
    track: str = "video0",
    codec: str = "h264",
    cts_ms: int = 0,
    tag: bytes = b"",
) -> Frame:
    return Frame(
        track_id=track,
        media=Media.VIDEO,
        codec=codec,
        dts_ms=dts_ms,
        payload=tag or b"v%d" % dts_ms,
        keyframe=key,
        cts_ms=cts_ms,
    )


def audio(dts_ms: int, *, track: str = "audio0", codec: str = "aac", tag: bytes = b"") -> Frame:
    return Frame(
        track_id=track,
        media=Media.AUDIO,
        codec=codec,
        dts_ms=dts_ms,
        payload=tag or b"a%d" % dts_ms,
    )


def video_config(
    payload: bytes = b"avcC-720p", *, track: str = "video0", codec: str = "h264", width: int = 1280
) -> Frame:
    return Frame(
        track_id=track,
        media=Media.VIDEO,
        codec=codec,
        dts_ms=0,
        payload=payload,
        config=True,
        track_info=TrackInfo(width=width, height=width * 9 // 16),
    )


def audio_config(
    payload: bytes = b"asc-48k", *, track: str = "audio0", codec: str = "aac"
) -> Frame:
    return Frame(
        track_id=track,
        media=Media.AUDIO,
        codec=codec,
        dts_ms=0,
        payload=payload,
        config=True,
        track_info=TrackInfo(sample_rate=48000, channels=2),
    )


def metadata(payload: bytes = b"onMetaData") -> Frame:
    return Frame(track_id="data0", media=Media.DATA, codec="amf0", dts_ms=0, payload=payload)


def publish(
    registry: Registry,
    source_id: str = "",
    *,
    now_s: float = 0.0,
    priority: int = 0,
    stream_path: str = "live/show",
    remote_addr: str = "",
) -> Feed:
    """Admit a feed (multisource allowed) or fail the test."""
    result = registry.request_publish(
        PublishRequest(
            stream_path=stream_path,
            source_id=source_id,
            priority=priority,
            permissions=MULTISOURCE,
            remote_addr=remote_addr,
        ),
        now_s=now_s,
    )
    feed = getattr(result, "feed", None)
    assert feed is not None, result
    return feed


def send_gop(
    registry: Registry,
    feed: Feed,
    *,
    start_ms: int,
    frames: int,
    now_s: float,
    frame_ms: int = 33,
    with_audio: bool = False,
) -> float:
    """Push a keyframe and `frames - 1` inter frames in real time; returns the end time."""
    for n in range(frames):
        dts = start_ms + n * frame_ms
        registry.push_frame(feed, video(dts, key=n == 0), now_s=now_s)
        if with_audio:
            registry.push_frame(feed, audio(dts + 5), now_s=now_s)
        now_s += frame_ms / 1000
    return now_s


def payloads(frames: list[OutputFrame]) -> list[bytes]:
    return [out.frame.payload for out in frames]


def coded(frames: list[OutputFrame]) -> list[OutputFrame]:
    return [out for out in frames if not out.frame.config and out.frame.media is not Media.DATA]


def drain(reader: Reader) -> list[OutputFrame]:
    return reader.drain_nowait()

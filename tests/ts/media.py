"""Real MPEG-TS made with PyAV (libavformat's mpegts muxer), and frames decoded back."""

from __future__ import annotations

import fractions
import functools
import io

import av

from rtmp_ingest.bundle import Frame, Media
from rtmp_ingest.outputs.flv import flv_header, flv_tag

VIDEO = {"h264": "libx264", "hevc": "libx265"}
AUDIO = {"aac": "aac", "opus": "libopus", "mp3": "libmp3lame"}


@functools.cache
def encode_ts(
    video: str | None = "h264", audio: str | None = "aac", *, seconds: float = 2.0, gop: int = 25
) -> bytes:
    """testsrc2 (25 fps, 320x240) and a sine as one MPEG-TS, as an SRT encoder sends it."""
    out = io.BytesIO()
    container = av.open(out, "w", format="mpegts")
    streams = []
    if video:
        stream = container.add_stream(VIDEO[video], rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.gop_size = gop
        if video == "hevc":
            stream.codec_context.options = {"x265-params": "log-level=error"}
        streams.append(("v", stream))
    if audio:
        rate = 44100 if audio == "mp3" else 48000
        astream = container.add_stream(AUDIO[audio], rate=rate)
        astream.layout = "stereo"
        streams.append(("a", astream))
    frames = int(seconds * 25)
    for index in range(frames):
        for kind, stream in streams:
            if kind == "v":
                frame = av.VideoFrame(320, 240, "yuv420p")
                for plane in frame.planes:
                    plane.update(bytes([(index * 7) % 256]) * plane.buffer_size)
                frame.pts = index
                frame.time_base = fractions.Fraction(1, 25)
                container.mux(stream.encode(frame))
        if audio:
            stream = streams[-1][1]
            samples = stream.codec_context.frame_size or 1024
            rate = stream.codec_context.sample_rate
            while _audio_pts.get(id(stream), 0) < (index + 1) * rate // 25:
                pts = _audio_pts.get(id(stream), 0)
                frame = av.AudioFrame(
                    format=stream.codec_context.format.name, layout="stereo", samples=samples
                )
                for plane in frame.planes:
                    plane.update(bytes(plane.buffer_size))
                frame.sample_rate = rate
                frame.pts = pts
                frame.time_base = fractions.Fraction(1, rate)
                container.mux(stream.encode(frame))
                _audio_pts[id(stream)] = pts + samples
    for _, stream in streams:
        container.mux(stream.encode(None))
    container.close()
    _audio_pts.clear()
    return out.getvalue()


_audio_pts: dict[int, int] = {}


def to_flv(frames: list[Frame]) -> bytes:
    """The frames as an FLV file (the bodies are FLV tag bodies)."""
    out = [flv_header()]
    for frame in frames:
        kind = 9 if frame.media is Media.VIDEO else 8
        out.append(flv_tag(kind, max(frame.dts_ms, 0), frame.payload))
    return b"".join(out)


def decode_flv(data: bytes) -> dict[str, int]:
    """Decoded pictures and audio frames of an FLV file (PyAV)."""
    counts = {"video": 0, "audio": 0, "keyframes": 0}
    with av.open(io.BytesIO(data), format="flv") as container:
        for packet in container.demux():  #: the last, empty packet of a stream flushes it
            kind = packet.stream.type
            for _ in packet.decode():
                counts[kind] += 1
            if kind == "video" and packet.size and packet.is_keyframe:
                counts["keyframes"] += 1
    return counts

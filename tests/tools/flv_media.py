"""Real encoded media as RTMP message bodies, made with PyAV, and an in-process publisher.

`encode_tags` encodes FFmpeg's testsrc2 (and a sine) with PyAV into libavformat's
FLV muxer in memory and returns the tags — exactly the message bodies an
ffmpeg publisher sends (H.264 as legacy FLV, HEVC/AV1/VP9/Opus as Enhanced
RTMP). `publish_tags` sends them over RTMP with the client-role core, paced like
a live encoder when asked, and reports when each tag left, so tests can time
what the server does with a given frame.
"""

from __future__ import annotations

import fractions
import functools
import io
from collections.abc import Callable
from typing import Any

import attrs
import av
import trio
from av.video.frame import PictureType

from tests.tools.rtmp_client import TrioRtmpClient
from tests.tools.sched import normal_scheduling

VIDEO_ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1", "vp9": "libvpx-vp9"}
AUDIO_ENCODERS = {"aac": "aac", "opus": "libopus", "mp3": "libmp3lame", "flac": "flac"}


@attrs.frozen
class Tag:
    kind: int  #: 8 audio, 9 video, 18 script data
    ts_ms: int
    body: bytes

    @property
    def keyframe(self) -> bool:
        return self.kind == 9 and (self.body[0] >> 4 & 0x07) == 1


def parse_flv(data: bytes) -> list[Tag]:
    tags = []
    at = int.from_bytes(data[5:9], "big") + 4
    while at + 11 <= len(data):
        kind = data[at] & 0x1F
        size = int.from_bytes(data[at + 1 : at + 4], "big")
        ts = int.from_bytes(data[at + 4 : at + 7], "big") | data[at + 7] << 24
        tags.append(Tag(kind, ts, data[at + 11 : at + 11 + size]))
        at += 11 + size + 4
    return tags


@functools.lru_cache(maxsize=16)
def encode_tags(
    seconds: float = 4.0,
    *,
    video: str | None = "h264",
    audio: str | None = "aac",
    size: tuple[int, int] = (320, 180),
    fps: int = 25,
    gop_s: float = 1.0,
    bframes: int = 0,
    audio_gaps: tuple[tuple[float, float], ...] = (),
) -> tuple[Tag, ...]:
    """FLV tags of `seconds` of media (cached: tests share the encodes)."""
    buffer = io.BytesIO()
    # video is encoded before audio: let the interleaver hold everything (0 = no limit)
    out = av.open(buffer, "w", format="flv", container_options={"max_interleave_delta": "0"})
    streams: list[Any] = []
    vstream = astream = None
    if video:
        vstream = out.add_stream(VIDEO_ENCODERS[video], rate=fps)
        vstream.width, vstream.height = size
        vstream.pix_fmt = "yuv420p"
        gop = max(1, round(gop_s * fps))
        vstream.codec_context.gop_size = gop
        options = {"g": str(gop), "keyint_min": str(gop), "bf": str(bframes)}
        if video == "h264":
            options.update(
                {
                    "preset": "ultrafast" if not bframes else "veryfast",
                    "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}",
                }
            )
        elif video == "hevc":
            options.update(
                {
                    "preset": "ultrafast",
                    "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:log-level=error",
                }
            )
        elif video == "av1":
            options.update({"preset": "12", "svtav1-params": f"keyint={gop}"})
        elif video == "vp9":
            options.update({"deadline": "realtime", "cpu-used": "8"})
        vstream.codec_context.options = options
        streams.append(vstream)
    if audio:
        rate = 48000 if audio == "opus" else 44100
        astream = out.add_stream(AUDIO_ENCODERS[audio], rate=rate)
        astream.layout = "stereo"
        streams.append(astream)
    if vstream is not None:
        source = av.open(f"testsrc2=size={size[0]}x{size[1]}:rate={fps}", format="lavfi")
        for index, frame in enumerate(source.decode(video=0)):
            if index >= seconds * fps:
                break
            frame.pts = index
            frame.time_base = fractions.Fraction(1, fps)
            frame.pict_type = PictureType.NONE
            out.mux(vstream.encode(frame))
            if index == 0:
                normal_scheduling()  #: SVT-AV1 opened with the first frame
        source.close()
    if astream is not None:
        rate = astream.rate
        source = av.open(f"sine=frequency=440:sample_rate={rate}", format="lavfi")
        resampler = av.AudioResampler(
            format=astream.codec_context.format.name, layout="stereo", rate=rate
        )
        pts = 0
        for frame in source.decode(audio=0):
            if pts >= seconds * rate:
                break
            for converted in resampler.resample(frame):
                converted.pts = pts
                converted.time_base = fractions.Fraction(1, rate)
                pts += converted.samples
                for packet in astream.encode(converted):
                    at = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
                    if not any(start <= at < end for start, end in audio_gaps):
                        out.mux(packet)
        source.close()
    for stream in streams:
        out.mux(stream.encode(None))
    out.close()
    tags = parse_flv(buffer.getvalue())
    return tuple(sorted(tags, key=lambda t: (t.ts_ms, t.kind != 18, t.body[1:2] != b"\x00")))


async def publish_tags(
    port: int,
    path: str,
    tags: tuple[Tag, ...] | list[Tag],
    *,
    realtime: bool = True,
    on_sent: Callable[[Tag, float], None] | None = None,
    offset_ms: int = 0,
    keep_open: bool = False,
) -> TrioRtmpClient:
    """Publishes `tags` to rtmp://127.0.0.1:port/APP/NAME?query (path = "APP/NAME?query")."""
    app, name = path.split("/", 1)
    client = await TrioRtmpClient.open(port)
    await client.connect(app)
    stream_id = await client.create_stream()
    status = await client.publish(stream_id, name)
    if status is None or status.code != "NetStream.Publish.Start":
        raise RuntimeError(f"publish refused: {status}")
    started = trio.current_time()
    for tag in tags:
        if realtime:
            await trio.sleep_until(started + tag.ts_ms / 1000)
        ts = tag.ts_ms + offset_ms
        if tag.kind == 9:
            client.conn.send_video(stream_id, ts, tag.body)
        elif tag.kind == 8:
            client.conn.send_audio(stream_id, ts, tag.body)
        else:
            client.conn.send_data(stream_id, ts, tag.body)
        await client.flush()
        if on_sent is not None:
            on_sent(tag, trio.current_time())
    if not keep_open:
        await client.aclose()
    return client

"""Play an RTMP or HTTP-FLV URL with PyAV (libavformat's rtmp/http + FLV demuxer), like a viewer.

    python -m tests.tools.pyav_player URL [--seconds 5]

`play(url, seconds)` opens the URL once and demuxes for `seconds`, decoding every
video packet. It never reconnects: when the stream ends, stalls longer than
`read_timeout_s` or errors, it stops and says why in `PlayResult.error`. It
returns, per stream, the packet DTS/PTS in milliseconds with the wall-clock
(time.monotonic) arrival of each packet, and for video the count of decoded
frames, their arrival times and sizes, and the decode errors. Blocking: call
it from a thread (`trio.to_thread.run_sync`) in async tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field

import av


@dataclass
class StreamLog:
    index: int
    kind: str  #: "video" | "audio" | "data"
    codec: str
    dts_ms: list[int] = field(default_factory=list)
    pts_ms: list[int | None] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)  #: time.monotonic() per packet

    def max_jump_ms(self) -> int:
        return max((b - a for a, b in zip(self.dts_ms, self.dts_ms[1:])), default=0)

    def backwards(self) -> list[tuple[int, int]]:
        """(previous, next) DTS pairs where the timeline went backwards."""
        return [(a, b) for a, b in zip(self.dts_ms, self.dts_ms[1:]) if b < a]

    def jumps_beyond(self, slack_ms: int) -> list[tuple[int, int, float]]:
        """DTS steps larger than `slack_ms` plus the real gap between the two packets' arrivals.

        A source that was silent (a publisher reconnecting) legitimately continues
        its timeline after the wall-clock gap, which the player also saw as a pause.
        """
        out = []
        for i in range(1, len(self.dts_ms)):
            step = self.dts_ms[i] - self.dts_ms[i - 1]
            waited_ms = (self.arrival[i] - self.arrival[i - 1]) * 1000.0
            if step > slack_ms + waited_ms:
                out.append((self.dts_ms[i - 1], self.dts_ms[i], round(waited_ms, 1)))
        return out


@dataclass
class PlayResult:
    url: str
    opens: int = 0
    opened_at: float = 0.0
    streams: dict[int, StreamLog] = field(default_factory=dict)
    frames_decoded: int = 0
    decode_errors: int = 0
    frame_arrival: list[float] = field(default_factory=list)  #: time.monotonic() per decoded frame
    frame_sizes: set[tuple[int, int]] = field(default_factory=set)
    video_codec: str = ""
    error: str | None = None  #: why reading stopped early (EOF, timeout, protocol error)

    def video(self) -> StreamLog | None:
        return next((s for s in self.streams.values() if s.kind == "video"), None)

    def frames_after(self, t: float) -> int:
        return sum(1 for a in self.frame_arrival if a > t)

    def max_frame_gap_s(self) -> float:
        times = self.frame_arrival
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)

    def summary(self) -> dict[str, object]:
        return {
            "url": self.url,
            "opens": self.opens,
            "error": self.error,
            "frames_decoded": self.frames_decoded,
            "decode_errors": self.decode_errors,
            "video_codec": self.video_codec,
            "frame_sizes": sorted(self.frame_sizes),
            "max_frame_gap_s": round(self.max_frame_gap_s(), 3),
            "streams": {
                i: {
                    "kind": s.kind,
                    "codec": s.codec,
                    "packets": len(s.dts_ms),
                    "first_dts": s.dts_ms[:1],
                    "last_dts": s.dts_ms[-1:],
                    "max_jump_ms": s.max_jump_ms(),
                    "backwards": s.backwards()[:5],
                }
                for i, s in self.streams.items()
            },
        }


def _codec(stream: av.stream.Stream) -> str:
    """The codec's canonical name ("av1" rather than the decoder's "libdav1d")."""
    ctx = stream.codec_context
    if ctx is None:
        return ""
    return ctx.codec.canonical_name or ctx.name


def _options(url: str) -> tuple[str | None, dict[str, str]]:
    # no "fflags nobuffer": with it libavformat drops the packets it read while
    # probing (the cached GOP's keyframe among them) and the decoder starts blind
    options = {"analyzeduration": "1000000", "probesize": "500000"}
    if ".m3u8" in url:
        return None, {"live_start_index": "-2"}
    if url.startswith("rtmp"):
        options["rtmp_live"] = "live"
        return None, options
    return "flv", options


def play(
    url: str,
    seconds: float,
    *,
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
    decode: bool = True,
) -> PlayResult:
    """Opens `url` once and reads (and decodes video) for `seconds` after the open."""
    result = PlayResult(url)
    fmt, options = _options(url)
    try:
        container = av.open(
            url, format=fmt, options=options, timeout=(open_timeout_s, read_timeout_s)
        )
    except Exception as exc:  # noqa: BLE001 - the reason is the result
        result.error = f"open: {type(exc).__name__}: {exc}"
        return result
    result.opens = 1
    result.opened_at = time.monotonic()
    deadline = result.opened_at + seconds
    try:
        for stream in container.streams:
            result.streams[stream.index] = StreamLog(stream.index, stream.type, _codec(stream))
            if stream.type == "video":
                result.video_codec = _codec(stream)
        try:
            for packet in container.demux():
                now = time.monotonic()
                if packet.dts is None and packet.size == 0:
                    continue  #: flush packet at the end
                stream = packet.stream
                log = result.streams.get(stream.index)
                if log is None:
                    log = result.streams[stream.index] = StreamLog(
                        stream.index, stream.type, _codec(stream)
                    )
                base = stream.time_base
                if packet.dts is not None:
                    log.dts_ms.append(round(float(packet.dts * base) * 1000))
                    log.pts_ms.append(
                        round(float(packet.pts * base) * 1000) if packet.pts is not None else None
                    )
                    log.arrival.append(now)
                if decode and stream.type == "video":
                    try:
                        frames = stream.codec_context.decode(packet)
                    except av.error.FFmpegError:
                        result.decode_errors += 1
                        frames = []
                    for frame in frames:
                        result.frames_decoded += 1
                        result.frame_arrival.append(time.monotonic())
                        result.frame_sizes.add((frame.width, frame.height))
                if now >= deadline:
                    break
            else:
                result.error = "end of stream"
        except Exception as exc:  # noqa: BLE001 - a stall or a protocol error ends the read
            result.error = f"read: {type(exc).__name__}: {exc}"
    finally:
        container.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    result = play(args.url, args.seconds)
    print(json.dumps(result.summary(), indent=1, default=str))
    return 0 if result.error is None and result.frames_decoded else 1


if __name__ == "__main__":
    sys.exit(main())

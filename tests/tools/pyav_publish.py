"""Publish a synthetic test feed with PyAV's RTMP muxer (libavformat's rtmpproto), like an encoder.

    python -m tests.tools.pyav_publish URL [--seconds 5] [--video h264|hevc|av1|vp9|none]
        [--audio aac|opus|none] [--size 320x180] [--fps 25] [--gop 1.0] [--realtime]
        [--audio-gaps]

The picture is FFmpeg's testsrc2 and the sound a 440 Hz sine (lavfi inputs), encoded
in this process and written to `URL` with the FLV muxer, which sends HEVC/AV1/VP9/
Opus as Enhanced RTMP. `--realtime` paces the output like a live encoder.
`--audio-gaps` leaves 1.5 s holes in the audio every 3 s (DTX-like). Exits 1 with the
error when the server refuses or drops the publish, 0 after SECONDS of media.
"""

from __future__ import annotations

import argparse
import fractions
import sys
import time

import av
from av.video.frame import PictureType

from tests.tools.sched import normal_scheduling

ENCODERS = {
    "h264": "libx264",
    "hevc": "libx265",
    "av1": "libsvtav1",
    "vp9": "libvpx-vp9",
    "aac": "aac",
    "opus": "libopus",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--video", default="h264", choices=["h264", "hevc", "av1", "vp9", "none"])
    parser.add_argument("--audio", default="aac", choices=["aac", "opus", "none"])
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=float, default=1.0, help="seconds between keyframes")
    parser.add_argument("--realtime", action="store_true")
    parser.add_argument("--audio-gaps", action="store_true")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    try:
        out = av.open(args.url, "w", format="flv")
    except Exception as exc:  # noqa: BLE001 - report any connect failure as the exit status
        print(f"pyav_publish: connect failed: {exc}", file=sys.stderr)
        return 1
    streams = []
    video_in = audio_in = None
    vstream = astream = None
    if args.video != "none":
        vstream = out.add_stream(ENCODERS[args.video], rate=args.fps)
        vstream.width, vstream.height = width, height
        vstream.pix_fmt = "yuv420p"
        gop = max(1, round(args.gop * args.fps))
        vstream.codec_context.gop_size = gop
        options = {"g": str(gop), "keyint_min": str(gop)}
        if args.video == "h264":
            options.update(
                {
                    "preset": "ultrafast",
                    "tune": "zerolatency",
                    "sc_threshold": "0",
                    "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
                }
            )
        elif args.video == "hevc":
            options.update(
                {
                    "preset": "ultrafast",
                    "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error",
                }
            )
        elif args.video == "av1":
            options.update({"preset": "12", "svtav1-params": f"keyint={gop}"})
        elif args.video == "vp9":
            options.update({"deadline": "realtime", "cpu-used": "8"})
        vstream.codec_context.options = options
        video_in = av.open(f"testsrc2=size={width}x{height}:rate={args.fps}", format="lavfi")
        streams.append(vstream)
    if args.audio != "none":
        rate = 48000 if args.audio == "opus" else 44100
        astream = out.add_stream(ENCODERS[args.audio], rate=rate)
        astream.layout = "stereo"
        audio_in = av.open(f"sine=frequency=440:sample_rate={rate}", format="lavfi")
        streams.append(astream)
    started = time.monotonic()
    sent_video = sent_audio = 0
    vframes = video_in.decode(video=0) if video_in else None
    aframes = audio_in.decode(audio=0) if audio_in else None
    next_video = next_audio = 0.0
    resampler = (
        av.AudioResampler(format="fltp", layout="stereo", rate=astream.rate) if astream else None
    )
    audio_pts = 0
    try:
        while True:
            t_video = next_video if vframes else float("inf")
            t_audio = next_audio if aframes else float("inf")
            t = min(t_video, t_audio)
            if t >= args.seconds:
                break
            if args.realtime:
                delay = started + t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if t_video <= t_audio:
                frame = next(vframes)
                frame.pts = sent_video
                frame.time_base = fractions.Fraction(1, args.fps)
                # lavfi's decoded pictures say "I"; left so, every frame would be
                # encoded as a keyframe and the --gop setting would mean nothing
                frame.pict_type = PictureType.NONE
                for packet in vstream.encode(frame):
                    out.mux(packet)
                if sent_video % args.fps == 0:
                    normal_scheduling()  #: SVT-AV1's threads (opened with the first frame)
                sent_video += 1
                next_video = sent_video / args.fps
            else:
                frame = next(aframes)
                for converted in resampler.resample(frame):
                    converted.pts = audio_pts
                    converted.time_base = fractions.Fraction(1, astream.rate)
                    audio_pts += converted.samples
                    in_gap = args.audio_gaps and (t % 3.0) >= 1.5
                    for packet in astream.encode(converted):
                        if not in_gap:
                            out.mux(packet)
                            sent_audio += 1
                next_audio = audio_pts / astream.rate
        for stream in streams:
            for packet in stream.encode(None):
                out.mux(packet)
        out.close()
    except Exception as exc:  # noqa: BLE001 - the server refusing or dropping us is the exit status
        print(f"pyav_publish: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(
        f"pyav_publish: sent {sent_video} video and {sent_audio} audio packets in "
        f"{time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

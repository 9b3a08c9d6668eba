"""Command lines of the real publishing clients the end-to-end tests drive.

Each builder returns argv for a client that publishes a small test feed
(320x180, 25 fps, 1 s GOP, AAC) for `seconds` to `url` in real time: PyAV (this
venv), the ffmpeg CLI, GStreamer with rtmp2sink or librtmp's rtmpsink. The
tests skip a client whose binaries are missing (CI installs them).
"""

from __future__ import annotations

import shutil
import sys


def pyav(url: str, seconds: float, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.tools.pyav_publish",
        url,
        "--seconds",
        str(seconds),
        "--realtime",
        *extra,
    ]


def ffmpeg(url: str, seconds: float) -> list[str]:
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "25",
        "-keyint_min",
        "25",
        "-sc_threshold",
        "0",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        "flv",
        url,
    ]


def gstreamer(url: str, seconds: float, sink: str = "rtmp2sink") -> list[str]:
    frames = int(seconds * 25)
    audio_buffers = int(seconds * 44100 / 1024) + 1
    return [
        "gst-launch-1.0",
        "-q",
        "-e",
        "videotestsrc",
        "is-live=true",
        f"num-buffers={frames}",
        "!",
        "video/x-raw,format=I420,width=320,height=180,framerate=25/1",
        "!",
        "x264enc",
        "speed-preset=ultrafast",
        "tune=zerolatency",
        "key-int-max=25",
        "option-string=scenecut=0",
        "!",
        "video/x-h264,profile=high",
        "!",
        "h264parse",
        "!",
        "queue",
        "!",
        "flvmux",
        "name=mux",
        "streamable=true",
        "!",
        sink,
        f"location={url}",
        "audiotestsrc",
        "is-live=true",
        "wave=sine",
        "freq=440",
        "samplesperbuffer=1024",
        f"num-buffers={audio_buffers}",
        "!",
        "audioconvert",
        "!",
        "audioresample",
        "!",
        "audio/x-raw,rate=44100,channels=2",
        "!",
        "avenc_aac",
        "!",
        "aacparse",
        "!",
        "queue",
        "!",
        "mux.",
    ]


def have(binary: str) -> bool:
    return shutil.which(binary) is not None


def have_gst_element(element: str) -> bool:
    if not have("gst-inspect-1.0"):
        return False
    import subprocess

    return subprocess.run(["gst-inspect-1.0", element], capture_output=True).returncode == 0

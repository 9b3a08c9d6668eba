"""A WHIP publisher built on aiortc: H.264 + Opus over loopback, for the e2e tests.

    python -m tests.webrtc.whip_client URL [--token T] [--video/--no-video] [--seconds S]

POSTs the offer, prints one JSON line {"status", "location", "body"} on stdout,
then (on 201) sends media until stdin closes or `--seconds` pass, DELETEs the
session (unless --no-delete) and prints {"deleted": status}. ICE uses
127.0.0.1 host candidates only and no STUN server. The picture moves (a
bouncing bar), so the encoder sends real P-frames; keyframes come at start and
whenever the server sends a PLI.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import fractions
import json
import math
import os
import sys
import time

import av
import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.codecs import h264 as aiortc_h264
from aiortc.mediastreams import MediaStreamTrack

from rtmp_ingest.webrtc import stack

VIDEO_RATE = 90000
FPS = 30
AUDIO_RATE = 48000
AUDIO_SAMPLES = 960  #: 20 ms


class BarVideo(MediaStreamTrack):
    kind = "video"

    def __init__(self, *, noise: bool = False) -> None:
        super().__init__()
        self._start = 0.0
        self._count = 0
        self._noise = noise  #: random luma: the encoder spends its whole bitrate (benches)

    async def recv(self) -> av.VideoFrame:
        if not self._count:
            self._start = time.monotonic()
        due = self._start + self._count / FPS
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = av.VideoFrame(320, 240, "yuv420p")
        x = (self._count * 4) % 300
        for index, plane in enumerate(frame.planes):
            scale = 1 if index == 0 else 2
            height = 240 // scale
            row = bytearray([40 if index == 0 else 128]) * plane.line_size
            if index == 0:
                row[x : x + 20] = b"\xe0" * 20
            if index == 0 and self._noise:
                plane.update(os.urandom(plane.line_size * height))
            else:
                plane.update(bytes(row) * height)
        frame.pts = self._count * VIDEO_RATE // FPS
        frame.time_base = fractions.Fraction(1, VIDEO_RATE)
        self._count += 1
        return frame


class ToneAudio(MediaStreamTrack):
    """A 440 Hz tone; with `gaps`, every other second is silence that sends nothing (DTX)."""

    kind = "audio"

    def __init__(self, *, gaps: bool = False) -> None:
        super().__init__()
        self._start = 0.0
        self._count = 0
        self._gaps = gaps

    async def recv(self) -> av.AudioFrame:
        if not self._count:
            self._start = time.monotonic()
        per_second = AUDIO_RATE // AUDIO_SAMPLES
        if self._gaps and (self._count // per_second) % 2 == 1:
            self._count += per_second  #: a silent second: no frame, time runs on
        due = self._start + self._count * AUDIO_SAMPLES / AUDIO_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        first = self._count * AUDIO_SAMPLES
        samples = array.array(
            "h",
            (
                int(math.sin(2 * math.pi * 440 * (first + i) / AUDIO_RATE) * 8000)
                for i in range(AUDIO_SAMPLES)
            ),
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._count * AUDIO_SAMPLES
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._count += 1
        return frame


class _GopAv:
    """aiortc's H.264 encoder module sees this instead of `av`: contexts get our GOP."""

    def __init__(self, gop: int) -> None:
        self._gop = gop
        outer = self

        class CodecContext:
            @staticmethod
            def create(*args: object, **kwargs: object) -> object:
                context = av.CodecContext.create(*args, **kwargs)
                context.gop_size = outer._gop
                return context

        self.CodecContext = CodecContext

    def __getattr__(self, name: str) -> object:
        return getattr(av, name)


def say(message: dict[str, object]) -> None:
    print(json.dumps(message), flush=True)


async def publish(args: argparse.Namespace) -> int:
    stack.restrict_host_addresses(["127.0.0.1"])
    if args.gop:
        aiortc_h264.av = _GopAv(args.gop)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

    @pc.on("connectionstatechange")
    def state_changed() -> None:
        say({"state": pc.connectionState})

    if args.video:
        transceiver = pc.addTransceiver(BarVideo(noise=args.noise), direction="sendonly")
        capabilities = RTCRtpSender.getCapabilities("video")
        wanted = ("video/h264", "video/rtx") if args.codec == "h264" else ("video/vp8",)
        transceiver.setCodecPreferences(
            [c for c in capabilities.codecs if c.mimeType.lower() in wanted]
        )
    if args.audio:
        pc.addTransceiver(ToneAudio(gaps=args.audio_gaps), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    if args.offer_override is not None:
        offer = args.offer_override
    headers = {"Content-Type": "application/sdp"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(args.url, content=offer, headers=headers)
        location = response.headers.get("location")
        print(
            json.dumps(
                {"status": response.status_code, "location": location, "body": response.text}
            ),
            flush=True,
        )
        if response.status_code != 201:
            await pc.close()
            return 0
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        loop = asyncio.get_running_loop()
        stdin_closed = loop.run_in_executor(None, sys.stdin.read)
        try:
            await asyncio.wait_for(stdin_closed, args.seconds)
        except TimeoutError:
            pass
        if args.delete and location:
            base = httpx.URL(args.url)
            deleted = await client.delete(str(base.join(location)))
            say({"deleted": deleted.status_code})
    await pc.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--token", default="")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--video", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--audio", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--delete", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--offer-override", default=None)
    parser.add_argument("--noise", action="store_true", help="incompressible picture")
    parser.add_argument("--audio-gaps", action="store_true", help="DTX: silent seconds")
    parser.add_argument("--codec", choices=("h264", "vp8"), default="h264")
    parser.add_argument("--gop", type=int, default=0, help="frames between keyframes (0: x264's)")
    return asyncio.run(publish(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

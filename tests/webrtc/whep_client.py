"""A WHEP viewer built on aiortc (decoding), for the e2e tests and the bench.

    python -m tests.webrtc.whep_client URL [--seconds S] [--no-audio] [--no-video] [--viewers N]

POSTs a recvonly offer and prints one JSON line {"status", "location", "body"};
on 201 it decodes what arrives and prints {"first": "video"|"audio", "after_s"}
once per kind, then every `--report-s` a {"stats": ...} line: frames decoded
per kind, the longest wall-clock gap between two video frames since the first,
how often a track's timestamps went backwards, the SSRCs seen per kind and the
peer connection's state. Closing stdin (or `--seconds`) DELETEs the session and
prints {"deleted": status}. ICE uses 127.0.0.1 host candidates, no STUN server.
With `--viewers N` it is N viewers (peer connections) in one process: the first
prints as above, the others join the stats line as "others": their picture
counts, longest gaps and states.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtmp_ingest.webrtc import stack


def say(message: dict[str, object]) -> None:
    print(json.dumps(message), flush=True)


class Counts:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.frames = {"video": 0, "audio": 0}
        self.backwards = {"video": 0, "audio": 0}
        self.last_pts: dict[str, int] = {}
        self.last_video_s: float | None = None
        self.max_gap_s = 0.0
        self.size: tuple[int, int] | None = None
        self.quiet = False
        self.tasks: list[asyncio.Task[None]] = []

    def frame(self, kind: str, frame: Any) -> None:
        now = time.monotonic()
        if self.frames[kind] == 0 and not self.quiet:
            say({"first": kind, "after_s": round(now - self.started, 3)})
        self.frames[kind] += 1
        pts = frame.pts
        if pts is not None:
            last = self.last_pts.get(kind)
            if last is not None and pts < last:
                self.backwards[kind] += 1
            self.last_pts[kind] = pts
        if kind == "video":
            self.size = (frame.width, frame.height)
            if self.last_video_s is not None:
                self.max_gap_s = max(self.max_gap_s, now - self.last_video_s)
            self.last_video_s = now


async def consume(track: MediaStreamTrack, counts: Counts) -> None:
    try:
        while True:
            counts.frame(track.kind, await track.recv())
    except MediaStreamError:
        return


async def ssrcs(pc: RTCPeerConnection) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for receiver in pc.getReceivers():
        stats = await receiver.getStats()
        for value in stats.values():
            if getattr(value, "type", "") == "inbound-rtp":
                found.setdefault(value.kind, []).append(value.ssrc)
    return found


async def extra_viewer(args: argparse.Namespace, client: httpx.AsyncClient) -> Any:
    """Another viewer: (pc, counts, location), or None when refused."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    counts = Counts()
    counts.quiet = True

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        counts.tasks.append(asyncio.ensure_future(consume(track, counts)))

    pc.addTransceiver("video", direction="recvonly")
    if args.audio:
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    response = await client.post(
        args.url, content=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
    )
    if response.status_code != 201:
        await pc.close()
        return None
    await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
    return pc, counts, response.headers.get("location")


async def play(args: argparse.Namespace) -> int:
    stack.restrict_host_addresses(["127.0.0.1"])
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    counts = Counts()
    tasks: list[asyncio.Task[None]] = []

    @pc.on("connectionstatechange")
    def state_changed() -> None:
        say({"state": pc.connectionState})

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.ensure_future(consume(track, counts)))

    if args.video:
        pc.addTransceiver("video", direction="recvonly")
    if args.audio:
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(timeout=60) as client:
        counts.started = time.monotonic()
        response = await client.post(
            args.url, content=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
        )
        location = response.headers.get("location")
        say({"status": response.status_code, "location": location, "body": response.text})
        if response.status_code != 201:
            await pc.close()
            return 0
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        others = [await extra_viewer(args, client) for _ in range(args.viewers - 1)]
        loop = asyncio.get_running_loop()
        stdin_closed = loop.run_in_executor(None, sys.stdin.read)
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline and not stdin_closed.done():
            await asyncio.wait([stdin_closed], timeout=args.report_s)
            say(
                {
                    "stats": {
                        "video": counts.frames["video"],
                        "audio": counts.frames["audio"],
                        "max_gap_s": round(counts.max_gap_s, 3),
                        "backwards": counts.backwards,
                        "ssrcs": await ssrcs(pc),
                        "size": counts.size,
                        "state": pc.connectionState,
                        "others": [
                            None
                            if o is None
                            else [
                                o[1].frames["video"],
                                round(o[1].max_gap_s, 3),
                                o[0].connectionState,
                            ]
                            for o in others
                        ],
                    }
                }
            )
        if location:
            deleted = await client.delete(str(httpx.URL(args.url).join(location)))
            say({"deleted": deleted.status_code})
        for other in others:
            if other is not None and other[2]:
                await client.delete(str(httpx.URL(args.url).join(other[2])))
                await other[0].close()
    await pc.close()
    for task in tasks:
        task.cancel()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--viewers", type=int, default=1)
    parser.add_argument("--report-s", type=float, default=0.5)
    parser.add_argument("--video", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--audio", action=argparse.BooleanOptionalAction, default=True)
    return asyncio.run(play(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

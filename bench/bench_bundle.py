"""Benchmark: frames routed per second through the bundle registry.

One stream with 16 live sources, 4 readers per source, each source sending
30 fps video with a 2 s GOP and ~47 audio frames/s (AAC at 48 kHz).  Input
frames are built before timing (building them is the RTMP driver's cost);
the timed loop is what the ingest driver does per frame: push_frame, plus
draining every reader every 20 ms of media time as output tasks would.

Prints a small table, then one JSON line: {"frames_per_s": ...}.
Run: .venv/bin/python bench/bench_bundle.py [--seconds N]
"""

from __future__ import annotations

import argparse
import heapq
import json
import time

from rtmp_ingest.bundle import (
    Frame,
    Media,
    Permissions,
    PublishRequest,
    Registry,
    TrackInfo,
)

SOURCES = 16
READERS_PER_SOURCE = 4
VIDEO_FPS = 30
GOP_S = 2
AUDIO_FRAME_MS = 1024 * 1000 / 48000
DRAIN_EVERY_MS = 20


def build_schedule(media_s: float) -> list[tuple[float, int, Frame]]:
    """(media time, source index, frame) for every source, in arrival order."""
    video_payload = bytes(4000)  # ~1 Mbit/s at 30 fps
    key_payload = bytes(40000)
    audio_payload = bytes(380)  # ~128 kbit/s AAC
    per_source = []
    for index in range(SOURCES):
        skew_ms = index * 1.7  # sources are not in lockstep
        frames: list[tuple[float, int, Frame]] = []
        video_count = int(media_s * VIDEO_FPS)
        for n in range(video_count):
            dts = round(n * 1000 / VIDEO_FPS)
            key = n % (VIDEO_FPS * GOP_S) == 0
            frame = Frame(
                track_id="video0",
                media=Media.VIDEO,
                codec="h264",
                dts_ms=dts,
                payload=key_payload if key else video_payload,
                keyframe=key,
                cts_ms=33,
            )
            frames.append((dts + skew_ms, index, frame))
        audio_count = int(media_s * 1000 / AUDIO_FRAME_MS)
        for n in range(audio_count):
            dts = round(n * AUDIO_FRAME_MS)
            frame = Frame(
                track_id="audio0", media=Media.AUDIO, codec="aac", dts_ms=dts, payload=audio_payload
            )
            frames.append((dts + skew_ms + 0.5, index, frame))
        frames.sort(key=lambda item: item[0])
        per_source.append(frames)
    return list(heapq.merge(*per_source, key=lambda item: item[0]))


def run(media_s: float) -> dict[str, float]:
    registry = Registry(wall_origin_s=0.0)
    allow = Permissions(app_multisource=True, token_multisource=True)
    feeds = []
    readers = []
    for index in range(SOURCES):
        source_id = f"cam{index}"
        admitted = registry.request_publish(
            PublishRequest(stream_path="live/bench", source_id=source_id, permissions=allow),
            now_s=0.0,
        )
        feed = admitted.feed
        feeds.append(feed)
        for track_id, media, codec, info in (
            ("video0", Media.VIDEO, "h264", TrackInfo(width=1280, height=720, frame_rate=30.0)),
            ("audio0", Media.AUDIO, "aac", TrackInfo(sample_rate=48000, channels=2)),
        ):
            config = Frame(
                track_id=track_id,
                media=media,
                codec=codec,
                dts_ms=0,
                payload=b"\x01config",
                config=True,
                track_info=info,
            )
            registry.push_frame(feed, config, now_s=0.0)
        for _ in range(READERS_PER_SOURCE):
            readers.append(registry.subscribe("live/bench", source_id))
    schedule = build_schedule(media_s)
    push = registry.push_frame
    next_drain_ms = DRAIN_EVERY_MS
    delivered = 0
    started = time.perf_counter()
    for media_ms, index, frame in schedule:
        if media_ms >= next_drain_ms:
            for reader in readers:
                delivered += len(reader.drain_nowait())
            next_drain_ms += DRAIN_EVERY_MS
        push(feeds[index], frame, now_s=media_ms / 1000.0)
    for reader in readers:
        delivered += len(reader.drain_nowait())
    elapsed = time.perf_counter() - started
    dropped = sum(reader.statistics().dropped for reader in readers)
    return {
        "frames": len(schedule),
        "elapsed_s": elapsed,
        "frames_per_s": len(schedule) / elapsed,
        "deliveries_per_s": delivered / elapsed,
        "delivered": delivered,
        "dropped": dropped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="media seconds per source")
    parser.add_argument("--rounds", type=int, default=3, help="best of N runs")
    args = parser.parse_args()
    results = [run(args.seconds) for _ in range(args.rounds)]
    best = max(results, key=lambda result: result["frames_per_s"])
    print(f"{'sources':<22}{SOURCES}")
    print(f"{'readers per source':<22}{READERS_PER_SOURCE}")
    print(f"{'frames routed':<22}{best['frames']}")
    print(f"{'frames delivered':<22}{best['delivered']}  (dropped {best['dropped']})")
    print(f"{'best of':<22}{args.rounds} runs, {best['elapsed_s']:.3f} s")
    print(f"{'frames/s':<22}{best['frames_per_s']:,.0f}")
    print(f"{'deliveries/s':<22}{best['deliveries_per_s']:,.0f}")
    print(json.dumps({"frames_per_s": round(best["frames_per_s"])}))


if __name__ == "__main__":
    main()

"""LL-HLS cost and part latency: our daemon vs nginx-rtmp `hls on`, same harness, one run.

    PYTHONPATH=. .venv/bin/python bench/bench_hls.py [--seconds 20] [--publishers 1 10 30 60]
        [--servers ours nginx] [--latency-seconds 20] [--latency-load 0 30] [--wait-quiet 30]
        [--no-baseline] [--details parts.jsonl]

1. Cost. For each server (fresh process per run) and each N: N python publishers of the
   3 Mbit/s clip from ../shared/bench/rtmp_load.py (`/live/s{i}?sourceId=cam{i}`), HLS on
   (ours: LL-HLS, 2 s segments, 0.2 s parts, in memory; nginx-rtmp: 2 s MPEG-TS fragments
   on /tmp). CPU-ms per ingest Mbit over the window. So that a packager which does not
   package cannot look cheap, just after the window (publishers still on air, outside the
   CPU window) the bench reads ours' /api/v1/streams (segments per track of every source)
   and source 0's video playlist (how far its newest part lags the wall clock), and after
   the run every source's lingering playlists (EXT-X-ENDLIST, no discontinuity); for
   nginx-rtmp every s{i}.m3u8 and its fragments. `hls_ok` sums it up. Then ours once more
   at the largest N with HLS off ("hls off"), for what packaging adds.
2. Part latency (ours). One in-process publisher (the project's client-role RTMP core,
   chunk size 4096 as OBS) sends the same clip in real time and notes when each tag left; an httpx
   client long-polls `TRACK.m3u8?_HLS_msn=M&_HLS_part=P` for the part the preload hint
   names, per track (video0, audio0), and fetches each part it saw appear. The part's last
   sample (its bytes end the part) names the frame that completed it; latency = blocking
   response received − that frame sent. A response that already shows a later part means
   the part came before the request was in ("late", not counted). `--latency-load` runs
   it alone (0) and beside N rtmp_load publishers with HLS. Parts that could only end
   when a later frame came (a segment's last part ends at the next keyframe) count in
   `after_next_frame`; `*_own_frame` leaves them out. Each part's listed DURATION is also
   checked against RFC 8216bis §4.4.4.9 (≤ PART-TARGET; ≥ 85 % of it unless INDEPENDENT
   or last in its segment). `--details` keeps one JSON line per part.

Loopback: the publishers, the HTTP client and this process share the machine's 2 cores
with the server (and with other sessions: `other_busy_cores`), so latencies include
scheduling delay. Prints one JSON object per measurement, then a table.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import re
import struct
import sys
import time
from pathlib import Path

import httpx
from common import (
    NGINX_HLS_DIR,
    REPO,
    SHARED_BENCH,
    LoadRun,
    Server,
    available,
    rtmp_load,
    sleep_until,
    table,
)

sys.path.insert(0, str(REPO))
CLIP = SHARED_BENCH / "media" / "test_720p30_3mbps.flv"
TEMPLATE = "rtmp://127.0.0.1:{port}/live/s{i}?sourceId=cam{i}"
#: our default `[bundle] reconnect_grace_s`: a source's playlists end this long after its feed
RECONNECT_GRACE_S = 5.0
#: bytes at the end of a frame that identify it (the clip's frames all differ there)
TAIL_BYTES = 32
_PART = re.compile(
    r'#EXT-X-PART:DURATION=([\d.]+),URI="[^"]*part-(\d+)\.(\d+)\.m4s"(,INDEPENDENT=YES)?'
)
_HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="[^"]*part-(\d+)\.(\d+)\.m4s"')
_SEGMENT = re.compile(r"seg-(\d+)\.m4s")
_EXTINF = re.compile(r"#EXTINF:([\d.]+),")
_PART_TARGET = re.compile(r"#EXT-X-PART-INF:PART-TARGET=([\d.]+)")


def parse_playlist(text: str) -> dict:
    """What the bench needs of one of our media playlists."""
    parts = [(int(m[2]), int(m[3]), float(m[1]), bool(m[4])) for m in _PART.finditer(text)]
    hint = _HINT.search(text)
    target = _PART_TARGET.search(text)
    return {
        "parts": parts,
        "segments": [int(m) for m in _SEGMENT.findall(text)],
        "durations": [float(d) for d in _EXTINF.findall(text)],
        "hint": (int(hint[1]), int(hint[2])) if hint else None,
        "ended": "#EXT-X-ENDLIST" in text,
        "discontinuities": text.count("#EXT-X-DISCONTINUITY\n"),
        "part_target": float(target[1]) if target else None,
    }


def playlist_lag_s(text: str, now_unix_s: float) -> float | None:
    """Wall clock minus the end of the newest media in a live playlist (PDT + durations)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("#EXT-X-PROGRAM-DATE-TIME:")]
    if not starts:
        return None
    last = starts[-1]
    moment = datetime.datetime.fromisoformat(
        lines[last].split(":", 1)[1].replace("Z", "+00:00")
    ).timestamp()
    tail = "\n".join(lines[last:])
    extinf = _EXTINF.findall(tail)
    duration = float(extinf[0]) if extinf else sum(p[2] for p in parse_playlist(tail)["parts"])
    return round(now_unix_s - (moment + duration), 3)


# -- 1. cost -----------------------------------------------------------------------------


def check_ours_live(server: Server, n: int) -> dict:
    """Right after the window: every source's HLS tracks and source 0's lag (ours)."""
    base = f"http://127.0.0.1:{server.http_port}"
    with httpx.Client(timeout=5) as client:
        streams = client.get(f"{base}/api/v1/streams").json()["streams"]
        text = client.get(f"{base}/hls/live/s0/cam0/video0.m3u8").text
        now = time.time()
    segments = []
    for stream in streams:
        for source in stream["sources"]:
            tracks = {
                t["track"]: t["segments"] for t in ((source.get("hls") or {}).get("tracks") or [])
            }
            segments.append(min(tracks.get("video0", 0), tracks.get("audio0", 0)))
    parsed = parse_playlist(text)
    return {
        "sources_with_hls": sum(1 for s in segments if s > 0),
        "segments_min": min(segments, default=0),
        "lag_s": playlist_lag_s(text, now),
        "parts_s0": len(parsed["parts"]),
        "segments_s0": len(parsed["segments"]),
        "n": n,
    }


def check_ours_after(server: Server, n: int) -> dict:
    """After the run: each source's lingering playlists end cleanly and hold whole segments."""
    base = f"http://127.0.0.1:{server.http_port}"
    ended = discontinuities = 0
    durations: list[float] = []
    with httpx.Client(timeout=5) as client:
        # a source ends after the reconnect grace (5 s) that follows its feed's end
        deadline = time.monotonic() + RECONNECT_GRACE_S + 10
        while time.monotonic() < deadline:
            r = client.get(f"{base}/hls/live/s{n - 1}/cam{n - 1}/video0.m3u8")
            if r.status_code != 200 or parse_playlist(r.text)["ended"]:
                break
            time.sleep(0.5)
        for i in range(n):
            for track in ("video0", "audio0"):
                r = client.get(f"{base}/hls/live/s{i}/cam{i}/{track}.m3u8")
                if r.status_code != 200:
                    continue
                parsed = parse_playlist(r.text)
                ended += parsed["ended"]
                discontinuities += parsed["discontinuities"]
                if track == "video0":
                    durations += parsed["durations"][:-1]  # the last one was cut by the end
    return {
        "playlists_ended": ended,
        "discontinuities": discontinuities,
        "video_segment_s": [min(durations), max(durations)] if durations else None,
    }


def check_nginx(n: int) -> dict:
    """nginx-rtmp's playlists and MPEG-TS fragments on disk (while still live)."""
    playlists = fragments = 0
    segments = []
    for i in range(n):
        path = NGINX_HLS_DIR / f"s{i}.m3u8"
        if path.exists():
            playlists += 1
            segments.append(path.read_text().count("#EXTINF"))
        fragments += len(list(NGINX_HLS_DIR.glob(f"s{i}-*.ts")))
    lag = None
    if (NGINX_HLS_DIR / "s0.m3u8").exists():
        lag = round(time.time() - (NGINX_HLS_DIR / "s0.m3u8").stat().st_mtime, 3)
    return {
        "sources_with_hls": playlists,
        "segments_min": min(segments, default=0),
        "fragments": fragments,
        "playlist_age_s": lag,
    }


def cost_run(kind: str, n: int, seconds: float, wait_quiet: float) -> dict:
    with Server(kind, hls=True) as server:
        load = LoadRun(
            server,
            "-n",
            str(n),
            "--seconds",
            str(seconds),
            "--wait-quiet",
            str(wait_quiet),
            "--url-template",
            TEMPLATE,
            tag=f"-hls-n{n}",
        )
        _, end = load.window()
        live: dict = {}
        try:
            sleep_until(
                end + 0.15
            )  # the sampler's last reading is at `end`; publishers stop at end + 0.5
            live = check_ours_live(server, n) if kind == "ours" else check_nginx(n)
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            live = {"error": repr(exc)}
        r = load.result()
        after = check_ours_after(server, n) if kind == "ours" else {}
    # segments a source must list by the end of the window (it published for warmup + window):
    # 2 s each, at most our window_segments (6) / nginx's hls_playlist_length 10 s (4-5)
    expected = max(1, min(6 if kind == "ours" else 4, int((3.0 + seconds) / 2.0) - 1))
    hls_ok = live.get("sources_with_hls") == n and live.get("segments_min", 0) >= expected
    if kind == "ours":
        hls_ok = (
            hls_ok
            and (live.get("lag_s") is not None and live["lag_s"] < 1.0)
            and after.get("playlists_ended") == 2 * n
            and after.get("discontinuities") == 0
        )
    else:  # nginx rewrites the playlist at every fragment (2 s)
        hls_ok = hls_ok and live.get("playlist_age_s") is not None and live["playlist_age_s"] < 4.0
    row = {
        "server": kind,
        "test": "hls cost",
        "n": n,
        "cpu_ms_per_mbit": _ms(r.get("cpu_s_per_mbit")),
        "cpu_pct": r.get("server_cpu_pct"),
        "rss_mb": r.get("server_rss_MB_max"),
        "all_connected": r.get("all_connected"),
        "ingest_mbps": r.get("ingest_mbps"),
        "other_busy_cores": r.get("other_busy_cores"),
        "hls_ok": hls_ok,
        "segments_min": live.get("segments_min"),
        "segments_expected": expected,
        "hls_live": live,
        "hls_after": after,
        "run_dir": r.get("run_dir"),
    }
    return row


# -- 2. part latency ---------------------------------------------------------------------


def clip_tags(seconds: float) -> list:
    """The clip's tags in timestamp order, looped (without its headers) to `seconds`.

    Loops join without a gap in the video (the next loop starts one frame interval after
    the last frame); audio that would overlap the next loop's first audio frame, and the
    clip's closing AVC end-of-sequence, are left out, as from an encoder that goes on.
    """
    from tests.tools.flv_media import Tag, parse_flv

    tags = sorted(parse_flv(CLIP.read_bytes()), key=lambda t: t.ts_ms)
    tags = [t for t in tags if not (t.kind == 9 and t.body[:2] == b"\x17\x02")]

    def header(tag: Tag) -> bool:
        return tag.kind == 18 or (tag.kind in (8, 9) and len(tag.body) > 1 and tag.body[1] == 0)

    body = [t for t in tags if not header(t)]
    video = [t.ts_ms for t in body if t.kind == 9]
    loop_ms = video[-1] + sorted(b - a for a, b in zip(video, video[1:]))[len(video) // 2]
    first_audio_ms = min(t.ts_ms for t in body if t.kind == 8)
    body = [t for t in body if t.kind == 9 or t.ts_ms < loop_ms + first_audio_ms]
    out = [t for t in tags if header(t) or t in body]
    loop = 1
    while out[-1].ts_ms < seconds * 1000:
        out += [Tag(t.kind, t.ts_ms + loop * loop_ms, t.body) for t in body]
        loop += 1
    return sorted((t for t in out if t.ts_ms <= seconds * 1000), key=lambda t: t.ts_ms)  # stable


async def publish(port: int, path: str, tags: list, *, on_sent, chunk_size: int = 4096) -> None:
    """Sends `tags` in real time to rtmp://127.0.0.1:port/APP/NAME?query with the project's
    client-role core, at OBS's and rtmp_load's chunk size; `on_sent(tag, trio time)` after
    each tag is in the kernel (tests/tools/flv_media.publish_tags, with a chunk size)."""
    import trio

    from tests.tools.rtmp_client import TrioRtmpClient

    app, name = path.split("/", 1)
    client = await TrioRtmpClient.open(port)
    try:
        client.conn.set_chunk_size(chunk_size)
        await client.connect(app)
        stream_id = await client.create_stream()
        status = await client.publish(stream_id, name)
        if status is None or status.code != "NetStream.Publish.Start":
            raise RuntimeError(f"publish refused: {status}")
        started = trio.current_time()
        send = {9: client.conn.send_video, 8: client.conn.send_audio, 18: client.conn.send_data}
        for tag in tags:
            await trio.sleep_until(started + tag.ts_ms / 1000)
            send[tag.kind](stream_id, tag.ts_ms, tag.body)
            await client.flush()
            on_sent(tag, trio.current_time())
    finally:
        await client.aclose()


def trun_samples(part: bytes) -> int:
    at = part.find(b"trun")
    return struct.unpack_from(">I", part, at + 8)[0] if at >= 0 else 0


async def measure_latency(
    port: int,
    http_port: int,
    *,
    seconds: float,
    name: str = "lat",
    source: str = "x",
    tracks: tuple[str, ...] = ("video0", "audio0"),
) -> dict:
    """Publishes the clip for `seconds`; times each part's blocking playlist response.

    Returns per track: `parts` (one record per part seen appear), `late`, `boundary`
    (responses that only completed a segment), `errors`, and every part's duration and
    INDEPENDENT flag seen in any playlist (`listed`, `complete` segments, `part_target`).
    """
    import trio

    kinds = {"video0": 9, "audio0": 8}
    sent: dict[tuple[int, bytes], list[float]] = {}
    sent_order: dict[int, list[float]] = {8: [], 9: []}

    def on_sent(tag, at: float) -> None:
        if tag.kind in (8, 9):
            sent.setdefault((tag.kind, tag.body[-TAIL_BYTES:]), []).append(at)
            sent_order[tag.kind].append(at)

    results = {
        t: {
            "parts": [],
            "late": 0,
            "boundary": 0,
            "unmatched": 0,
            "errors": 0,
            "listed": {},
            "complete": set(),
            "part_target": None,
        }
        for t in tracks
    }
    base = f"http://127.0.0.1:{http_port}/hls/live/{name}/{source}"

    async def fetch_parts(track: str, client: httpx.AsyncClient, receive) -> None:
        out = results[track]
        kind = kinds[track]
        async for msn, index, responded_at in receive:
            r = await client.get(f"{base}/{track}/part-{msn}.{index}.m4s")
            if r.status_code != 200:
                out["errors"] += 1
                continue
            # the part's bytes end with its last sample, which is the end of a tag's body
            times = [t for t in sent.get((kind, r.content[-TAIL_BYTES:]), []) if t <= responded_at]
            if not times:
                out["unmatched"] += 1
                continue
            last_frame_at = times[-1]
            next_at = next((t for t in sent_order[kind] if t > last_frame_at), None)
            out["parts"].append(
                {
                    "msn": msn,
                    "part": index,
                    "frames": trun_samples(r.content),
                    "latency_ms": (responded_at - last_frame_at) * 1000,
                    # a later frame of the track went out before the part showed: the part could
                    # only end when that frame came (a keyframe, or the cut of a segment)
                    "after_next_frame": next_at is not None and next_at < responded_at,
                    "next_frame_ms": None if next_at is None else (next_at - last_frame_at) * 1000,
                }
            )

    async def poll(track: str, client: httpx.AsyncClient) -> None:
        out = results[track]
        url = f"{base}/{track}.m3u8"
        while True:
            r = await client.get(url)
            if r.status_code == 200 and parse_playlist(r.text)["hint"] is not None:
                break
            await trio.sleep(0.05)
        playlist = parse_playlist(r.text)
        send, receive = trio.open_memory_channel(1000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch_parts, track, client, receive)
            while playlist["hint"] is not None:
                msn, part = playlist["hint"]
                r = await client.get(url, params={"_HLS_msn": str(msn), "_HLS_part": str(part)})
                responded_at = trio.current_time()
                if r.status_code != 200:
                    out["errors"] += 1
                    break
                playlist = parse_playlist(r.text)
                out["part_target"] = playlist["part_target"]
                for p_msn, p_index, duration, independent in playlist["parts"]:
                    out["listed"][(p_msn, p_index)] = (duration, independent)
                out["complete"].update(playlist["segments"])
                if playlist["ended"]:
                    break  # the source's end closed the last part: not a part latency
                newest = playlist["parts"][-1][:2] if playlist["parts"] else None
                if newest is None or newest < (msn, part):
                    out["boundary"] += (
                        1  # the segment before was completed; its parts were all seen
                    )
                elif newest > (msn, part):
                    out["late"] += 1
                else:
                    send.send_nowait((msn, part, responded_at))
            await send.aclose()

    async with httpx.AsyncClient(timeout=15) as client:
        async with trio.open_nursery() as nursery:
            for track in tracks:
                nursery.start_soon(poll, track, client)
            await publish(
                port, f"live/{name}?sourceId={source}", clip_tags(seconds), on_sent=on_sent
            )
            # the feed is gone; after the reconnect grace the playlists end and the polls stop
            nursery.cancel_scope.deadline = trio.current_time() + 15.0
    return results


def part_rule_breaks(out: dict) -> dict:
    """RFC 8216bis §4.4.4.9: every part ≤ PART-TARGET; ≥ 85 % of it unless INDEPENDENT=YES
    or the last part of its segment (only parts of completed segments are judged)."""
    target = out["part_target"]
    if not target:
        return {}
    last_index: dict[int, int] = {}
    for msn, index in out["listed"]:
        last_index[msn] = max(index, last_index.get(msn, -1))
    over = under = 0
    for (msn, index), (duration, independent) in out["listed"].items():
        if msn not in out["complete"]:
            continue
        over += duration > target
        under += duration < 0.85 * target and not independent and index != last_index[msn]
    durations = [d for d, _ in out["listed"].values()]
    return {
        "part_target_s": target,
        "part_s": [min(durations), max(durations)],
        "parts_over_target": over,
        "parts_under_85pct": under,
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_runs(
    load_n: int, seconds: float, wait_quiet: float, details: Path | None
) -> list[dict]:
    import trio

    with Server("ours", hls=True) as server:
        load = None
        if load_n:
            load = LoadRun(
                server,
                "-n",
                str(load_n),
                "--seconds",
                str(seconds + 8),
                "--wait-quiet",
                str(wait_quiet),
                "--url-template",
                TEMPLATE,
                tag=f"-hls-lat{load_n}",
            )
            start, _ = load.window()
            sleep_until(start)
        measure = functools.partial(measure_latency, server.port, server.http_port, seconds=seconds)
        results = trio.run(measure)
        r = load.result() if load is not None else {}
    rows = []
    for track, out in results.items():
        parts = out["parts"]
        lat = [p["latency_ms"] for p in parts]
        own = [p["latency_ms"] for p in parts if not p["after_next_frame"]]
        frames = [p["frames"] for p in parts]
        rows.append(
            {
                "server": "ours",
                "test": "part latency",
                "track": track,
                "load_n": load_n,
                "parts": len(lat),
                "median_ms": _r(percentile(lat, 0.5)),
                "p95_ms": _r(percentile(lat, 0.95)),
                "max_ms": _r(max(lat, default=None)),
                # parts that ended with the next frame (a keyframe or a segment cut) waited
                # one frame interval more; the rest were complete with their own last frame
                "after_next_frame": len(lat) - len(own),
                "max_ms_own_frame": _r(max(own, default=None)),
                "p95_ms_own_frame": _r(percentile(own, 0.95)),
                "late": out["late"],
                "boundary": out["boundary"],
                "unmatched": out["unmatched"],
                "errors": out["errors"],
                "frames_per_part": [min(frames), max(frames)] if frames else None,
                **part_rule_breaks(out),
                "load_all_connected": r.get("all_connected"),
                "cpu_pct": r.get("server_cpu_pct"),
                "other_busy_cores": r.get("other_busy_cores"),
            }
        )
        if details is not None:
            with details.open("a") as f:
                for p in parts:
                    f.write(json.dumps({"track": track, "load_n": load_n, **p}) + "\n")
    return rows


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 3) if seconds else None


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="cost: measurement window")
    parser.add_argument("--publishers", type=int, nargs="*", default=[1, 10, 30, 60])
    parser.add_argument("--servers", nargs="+", default=["ours", "nginx"])
    parser.add_argument(
        "--latency-seconds", type=float, default=20.0, help="latency: publishing time"
    )
    parser.add_argument(
        "--latency-load",
        type=int,
        nargs="*",
        default=[0, 30],
        help="latency: background rtmp_load publishers (runs; none = skip)",
    )
    parser.add_argument("--wait-quiet", type=float, default=30.0, help="rtmp_load --wait-quiet")
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip ours with HLS off at the largest N",
    )
    parser.add_argument("--details", type=Path, help="latency: append one JSON line per part here")
    args = parser.parse_args()
    rows = []
    for kind in args.servers:
        if not available(kind):
            print(json.dumps({"server": kind, "skipped": "not installed"}), flush=True)
            continue
        for n in args.publishers:
            row = cost_run(kind, n, args.seconds, args.wait_quiet)
            print(json.dumps(row), flush=True)
            rows.append(row)
        if kind == "ours" and args.baseline and args.publishers:
            n = max(args.publishers)
            with Server("ours") as server:  # the same ingest without HLS: what packaging adds
                r = rtmp_load(
                    server,
                    "-n",
                    str(n),
                    "--seconds",
                    str(args.seconds),
                    "--wait-quiet",
                    str(args.wait_quiet),
                    "--url-template",
                    TEMPLATE,
                )
            row = {
                "server": kind,
                "test": "hls off",
                "n": n,
                "cpu_ms_per_mbit": _ms(r.get("cpu_s_per_mbit")),
                "cpu_pct": r.get("server_cpu_pct"),
                "rss_mb": r.get("server_rss_MB_max"),
                "all_connected": r.get("all_connected"),
                "ingest_mbps": r.get("ingest_mbps"),
                "other_busy_cores": r.get("other_busy_cores"),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    for load_n in args.latency_load:
        for row in latency_runs(load_n, args.latency_seconds, args.wait_quiet, args.details):
            print(json.dumps(row), flush=True)
            rows.append(row)
    print()
    print(
        table(
            rows,
            [
                ("server", "server"),
                ("test", "test"),
                ("n", "N"),
                ("track", "track"),
                ("load_n", "load N"),
                ("cpu_ms_per_mbit", "CPU-ms/Mbit"),
                ("cpu_pct", "CPU %"),
                ("rss_mb", "RSS MB"),
                ("all_connected", "all connected"),
                ("hls_ok", "HLS ok"),
                ("segments_min", "segments min"),
                ("parts", "parts"),
                ("median_ms", "median ms"),
                ("p95_ms", "p95 ms"),
                ("max_ms", "max ms"),
                ("after_next_frame", "by next frame"),
                ("p95_ms_own_frame", "p95 ms own"),
                ("late", "late"),
                ("parts_over_target", "> PART-TARGET"),
                ("other_busy_cores", "other cores"),
            ],
        )
    )


if __name__ == "__main__":
    main()

"""LL-HLS end to end: real publishers in, PyAV/ffprobe/m3u8 and plain HTTP out."""

from __future__ import annotations

import functools
import io
import shutil
import struct
import subprocess

import av
import httpx
import m3u8
import trio

from tests.tools import clients, pyav_player
from tests.tools.flv_media import encode_tags, publish_tags

FAST = {"bundle": {"reconnect_grace_s": 1.5}, "hls": {"linger_s": 2.0, "window_segments": 12}}


async def text(running, path, **params):
    async with httpx.AsyncClient(base_url=running.http, timeout=15) as client:
        response = await client.get(path, params=params)
    return response


def hls_live(running, stream, source_ids):
    async def check():
        response = await text(running, f"/hls/{stream}/index.m3u8")
        if response.status_code != 200:
            return None
        playlist = m3u8.loads(response.text)
        names = {m.name for m in playlist.media}
        return playlist if set(source_ids) <= names else None

    return check


def segments_ready(running, path, count=2):
    """ffmpeg's HLS reader only reads complete segments: wait for `count` of them."""

    async def check():
        response = await text(running, path)
        return (
            response.status_code == 200
            and sum(1 for s in m3u8.loads(response.text).segments if s.uri) >= count
        )

    return check


async def pyav_read(url, seconds):
    return await trio.to_thread.run_sync(
        functools.partial(pyav_player.play, url, seconds), abandon_on_cancel=True
    )


def ffprobe_ok(url):
    if not shutil.which("ffprobe"):
        return True
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode == 0 and '"codec_type"' in result.stdout


async def test_three_sources_are_listed_played_and_dropped_when_one_ends(start_daemon, spawn):
    running = await start_daemon(**FAST)
    stream = "live/three"
    with trio.fail_after(60):
        cam1 = await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 30))
        cam2 = (
            await spawn(clients.ffmpeg(running.url(stream, sourceId="cam2"), 30))
            if clients.have("ffmpeg")
            else await spawn(clients.pyav(running.url(stream, sourceId="cam2"), 30))
        )
        voice = await spawn(
            clients.pyav(
                running.url(stream, sourceId="voice"), 30, "--video", "none", "--audio-gaps"
            )
        )
        playlist = await running.wait_for(hls_live(running, stream, {"cam1", "cam2", "voice"}), 30)
        video = {m.name for m in playlist.media if m.type == "VIDEO"}
        audio = {m.name for m in playlist.media if m.type == "AUDIO"}
        assert video == {"cam1", "cam2"} and audio == {"cam1", "cam2", "voice"}
        assert playlist.playlists[0].stream_info.codecs.startswith("avc1.")
        base = f"{running.http}/hls/{stream}"
        for name, track in (("cam1", "video0"), ("cam2", "video0"), ("voice", "audio0")):
            await running.wait_for(
                segments_ready(running, f"/hls/{stream}/{name}/{track}.m3u8"), 15
            )
        results = {}

        async def read(name, url):
            results[name] = await pyav_read(url, 2.5)

        async with trio.open_nursery() as nursery:
            for name in ("cam1", "cam2"):
                nursery.start_soon(read, name, f"{base}/{name}/video0.m3u8")
            nursery.start_soon(read, "voice", f"{base}/voice/audio0.m3u8")
        for name in ("cam1", "cam2"):
            assert results[name].frames_decoded > 20, results[name].summary()
            assert results[name].frame_sizes == {(320, 180)}
        assert results["voice"].streams and results["voice"].error in (None, "end of stream"), (
            results["voice"].summary()
        )
        urls = [
            f"{base}/index.m3u8",
            f"{base}/cam1/video0.m3u8",
            f"{base}/voice/audio0.m3u8",
            f"{base}/cam2/index.m3u8",
        ]
        probes = await trio.to_thread.run_sync(lambda: [ffprobe_ok(u) for u in urls])
        assert all(probes), dict(zip(urls, probes))
        cam1_playlist = (await text(running, f"/hls/{stream}/cam1/video0.m3u8")).text
        assert '#EXT-X-RENDITION-REPORT:URI="../cam2/video0.m3u8"' in cam1_playlist
        assert '#EXT-X-RENDITION-REPORT:URI="../voice/audio0.m3u8"' not in cam1_playlist, (
            "same media only"
        )
        api = (await running.get(f"/api/v1/streams/{stream}")).json()
        assert api["hls"].endswith(f"/hls/{stream}/index.m3u8")
        cam = next(s for s in api["sources"] if s["sourceId"] == "cam1")
        assert cam["urls"]["hls"].endswith(f"/hls/{stream}/cam1/index.m3u8")
        assert {t["track"] for t in cam["hls"]["tracks"]} == {"video0", "audio0"}
        cam2.kill()

        async def cam2_gone():
            response = await text(running, f"/hls/{stream}/index.m3u8")
            return "cam2" not in response.text and "cam1" in response.text

        await running.wait_for(cam2_gone, 15)
        ended = await text(running, f"/hls/{stream}/cam2/video0.m3u8")
        assert ended.status_code == 200 and "#EXT-X-ENDLIST" in ended.text, (
            "an ended source's playlist ends"
        )
    metrics = (await running.get("/metrics")).text
    assert "rtmp_ingest_hls_requests_total" in metrics
    cam1.kill()
    voice.kill()


def _video_timestamps(init: bytes, segments: list[bytes]) -> list[int]:
    container = av.open(io.BytesIO(init + b"".join(segments)), format="mp4")
    out = [packet.dts for packet in container.demux(video=0) if packet.dts is not None]
    container.close()
    return out


async def test_segment_timestamps_stay_monotonic_across_a_supersede_and_a_reconnect(
    start_daemon, spawn
):
    running = await start_daemon(**FAST)
    stream = "live/cont"
    with trio.fail_after(60):
        first = await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 30))
        await running.wait_for(hls_live(running, stream, {"cam1"}), 20)
        await trio.sleep(3)
        second = await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 30))  # supersede

        async def superseded():
            return (await running.sources(stream)).get("cam1", {}).get("supersedeCount", 0) >= 1

        await running.wait_for(superseded, 15)
        await trio.sleep(3)
        video = running.daemon.hls.sources[(stream, "cam1")].tracks["video0"]
        # the reconnect gap on the timeline is the wall-clock gap the server saw (bundle
        # continuity): measure it, so a busy machine's slower reconnect is no failure
        not_yet = await _until_a_new_frame(video)
        second.kill()  # connection lost; a new encoder comes back inside the grace period
        await trio.sleep(0.3)
        third = await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 30))
        await running.wait_for(lambda: _reconnected(running, stream), 15)
        await _until_a_new_frame(video)
        gap_s = trio.current_time() - not_yet  #: at least the real gap
        await trio.sleep(4.5)
        response = await text(running, f"/hls/{stream}/cam1/video0.m3u8")
        playlist = m3u8.loads(response.text)
        assert "#EXT-X-ENDLIST" not in response.text, "the source never ended for HLS viewers"
        assert not any(s.discontinuity for s in playlist.segments), (
            "same encoder settings: no discontinuity"
        )
        init_uri = next(s.init_section.uri for s in playlist.segments if s.init_section)
        init = (await text(running, f"/hls/{stream}/cam1/{init_uri}")).content
        segments = [
            (await text(running, f"/hls/{stream}/cam1/{s.uri}")).content
            for s in playlist.segments
            if s.uri
        ]
        first.kill()
        third.kill()
    assert len(segments) >= 4
    dts = _video_timestamps(init, segments)
    steps = [b - a for a, b in zip(dts, dts[1:])]
    assert min(steps) > 0, "decode timestamps strictly increase"
    frame = 90_000 // 25
    assert max(steps) <= 90_000 * gap_s + frame + 90 * 10, (
        f"no jump over the switches: {max(steps) / 90:.0f} ms, reconnect gap {gap_s * 1000:.0f} ms"
    )


async def test_a_backup_encoder_with_a_longer_gop_loses_no_frame_for_hls_viewers(
    start_daemon, spawn
):
    """The main encoder's 1 s GOP fixes the target duration at 2 s; its backup (OBS in
    Simple mode has an 8.3 s GOP; here 5 s) supersedes it. Segments are cut between the
    backup's keyframes to keep the target, and the frames after a cut are in the next
    segment: an ffmpeg HLS reader decodes every frame, no step on the timeline."""
    running = await start_daemon(**FAST)
    stream = "live/gop"
    path = f"/hls/{stream}/cam1/video0.m3u8"
    with trio.fail_after(90):
        main = await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 40))
        await running.wait_for(segments_ready(running, path, count=1), 20)
        backup = await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 40, "--gop", "5"))

        async def superseded():
            return (await running.sources(stream)).get("cam1", {}).get("supersedeCount", 0) >= 1

        await running.wait_for(superseded, 15)

        async def cut_twice_mid_gop():
            playlist = m3u8.loads((await text(running, path)).text)
            mid = [
                s
                for s in playlist.segments
                if s.uri and s.parts and s.parts[0].independent != "YES"
            ]
            return playlist if len(mid) >= 2 else None

        playlist = await running.wait_for(cut_twice_mid_gop, 40)
        assert playlist.target_duration == 2
        assert all(round(s.duration) <= 2 for s in playlist.segments if s.uri)
        init_uri = next(s.init_section.uri for s in playlist.segments if s.init_section)
        init = (await text(running, f"/hls/{stream}/cam1/{init_uri}")).content
        uris = [s.uri for s in playlist.segments if s.uri]
        segments = [(await text(running, f"/hls/{stream}/cam1/{u}")).content for u in uris]
        reader = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                ["ffmpeg", "-hide_banner", "-v", "error", "-i", f"{running.http}{path}",
                 "-t", "4", "-f", "null", "-"],
                capture_output=True, text=True, timeout=60,
            )
        )  # fmt: skip
        main.kill()
        backup.kill()
    dts = _video_timestamps(init, segments)
    steps = [b - a for a, b in zip(dts, dts[1:])]
    #: a drop to the next keyframe would be a step of 2.5 s (5 s GOP, cut at 2.45 s); a
    #: step of a few frames at the supersede is the wall-clock gap the switch saw
    assert min(steps) > 0 and max(steps) <= 90_000 * 1.0, (
        f"no frame lost: largest steps {sorted(steps)[-3:]} ticks"
    )
    assert reader.returncode == 0, reader.stderr[-2000:]


async def _until_a_new_frame(video) -> float:
    """Waits for the next frame of a track; returns a time before it arrived."""
    seen = video.frames
    before = trio.current_time()
    with trio.fail_after(15):
        while video.frames == seen:
            before = trio.current_time()
            await trio.sleep(0.005)
    return before


async def _reconnected(running, stream):
    source = (await running.sources(stream)).get("cam1")
    return source and source["state"] == "live"


def _first_pdt(text_: str):
    return next(s.program_date_time for s in m3u8.loads(text_).segments if s.program_date_time)


async def test_program_date_times_of_two_sources_started_five_seconds_apart_differ_by_five_seconds(
    running,
):
    stream = "live/clock"
    tags = encode_tags(9.0, gop_s=1.0)
    first_sent: dict[str, float] = {}

    def sent(source):
        def note(tag, at):
            if tag.kind == 9 and tag.body[1] == 1:
                first_sent.setdefault(source, at)

        return note

    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    publish_tags, running.rtmp_port, f"{stream}?sourceId=a", tags, on_sent=sent("a")
                )
            )
            await trio.sleep(5.0)
            nursery.start_soon(
                functools.partial(
                    publish_tags, running.rtmp_port, f"{stream}?sourceId=b", tags, on_sent=sent("b")
                )
            )
            await running.wait_for(hls_live(running, stream, {"a", "b"}), 10)
            await trio.sleep(0.5)
            a = (await text(running, f"/hls/{stream}/a/video0.m3u8")).text
            b = (await text(running, f"/hls/{stream}/b/video0.m3u8")).text
            nursery.cancel_scope.cancel()
    # both first segments start at each source's first keyframe: the same media position
    first_a = m3u8.loads(a).segments[0].program_date_time
    first_b = m3u8.loads(b).segments[0].program_date_time
    offset = (first_b - first_a).total_seconds()
    started_apart = first_sent["b"] - first_sent["a"]  #: 5 s plus B's connect time
    assert abs(started_apart - 5.0) < 0.5
    assert abs(offset - started_apart) <= 0.04, (offset, started_apart)  # one frame at 25 fps


def _tfdt_and_durations(part: bytes) -> tuple[int, list[int]]:
    at = 8 + 16 + 8  #: moof, mfhd, traf header
    at += 16  #: tfhd
    base = struct.unpack_from(">Q", part, at + 12)[0]
    at += 20
    count = struct.unpack_from(">I", part, at + 12)[0]
    durations = [struct.unpack_from(">I", part, at + 20 + 16 * i)[0] for i in range(count)]
    return base, durations


async def test_a_blocking_reload_returns_within_one_part_of_its_last_frame(running):
    stream = "live/block"
    tags = encode_tags(8.0, gop_s=1.0)
    sent: dict[int, float] = {}

    def on_sent(tag, at):
        if tag.kind == 9 and tag.body[1] == 1:
            sent[tag.ts_ms] = at

    delays = []
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    publish_tags, running.rtmp_port, f"{stream}?sourceId=cam", tags, on_sent=on_sent
                )
            )
            url = f"/hls/{stream}/cam/video0.m3u8"
            await running.wait_for(segments_ready(running, url, 1), 10)
            first_ts = min(sent)
            async with httpx.AsyncClient(base_url=running.http, timeout=10) as client:
                playlist = m3u8.loads((await client.get(url)).text)
                first_segment = playlist.segments[0]
                init_first = first_segment.parts[0].uri if first_segment.parts else None
                assert init_first is not None
                base0, _ = _tfdt_and_durations(
                    (await client.get(f"/hls/{stream}/cam/{init_first}")).content
                )
                for _ in range(12):
                    hint = m3u8.loads((await client.get(url)).text).preload_hint.uri
                    msn, index = hint.rsplit("part-", 1)[1][:-4].split(".")
                    response = await client.get(url, params={"_HLS_msn": msn, "_HLS_part": index})
                    answered = trio.current_time()
                    assert response.status_code == 200
                    got = m3u8.loads(response.text)
                    part_uri = next(
                        (
                            p.uri
                            for s in got.segments
                            for p in s.parts
                            if p.uri.endswith(f"part-{msn}.{index}.m4s")
                        ),
                        None,
                    )
                    if part_uri is None:
                        continue  #: the segment ended before that part; the next segment's part 0 came
                    part = (await client.get(f"/hls/{stream}/cam/{part_uri}")).content
                    base, durations = _tfdt_and_durations(part)
                    last_ms = first_ts + round((base + sum(durations[:-1]) - base0) / 90)
                    assert last_ms in sent, (last_ms, sorted(sent)[-5:])
                    delays.append(answered - sent[last_ms])
            nursery.cancel_scope.cancel()
    assert len(delays) >= 8
    assert max(delays) <= 0.2, delays  # one part duration
    assert min(delays) >= 0


async def test_hls_errors_are_clear_4xx(running, spawn):
    assert (await text(running, "/hls/live/nothing/index.m3u8")).status_code == 404
    stream = "live/errors"
    with trio.fail_after(30):
        cam = await spawn(clients.pyav(running.url(stream, sourceId="cam"), 15))
        url = f"/hls/{stream}/cam/video0.m3u8"
        await running.wait_for(segments_ready(running, url, 1), 20)
        bad = await text(running, url, _HLS_msn="x")
        assert bad.status_code == 400 and "_HLS_msn" in bad.json()["error"]
        assert (await text(running, url, _HLS_msn="\u00b2")).status_code == 400, (
            "a superscript is no number"
        )
        far = await text(running, url, _HLS_msn="99999999999999", _HLS_part="0")
        assert far.status_code == 400
        assert (await text(running, f"/hls/{stream}/cam/video0/seg-1.m4s")).status_code == 404
        assert (await text(running, f"/hls/{stream}/cam/video0/nonsense.txt")).status_code == 404
        assert (await text(running, f"/hls/{stream}/cam/video7.m3u8")).status_code == 404
        ok = await text(running, url)
        assert ok.headers["content-type"].startswith("application/vnd.apple.mpegurl")
        assert ok.headers["cache-control"] == "no-cache"
        segment = next(s.uri for s in m3u8.loads(ok.text).segments if s.uri)
        media = await text(running, f"/hls/{stream}/cam/{segment}")
        assert media.status_code == 200 and "max-age" in media.headers["cache-control"]
        async with httpx.AsyncClient(base_url=running.http, timeout=15) as client:
            cors = await client.get(url, headers={"Origin": "https://player.example"})
        cam.kill()
    assert cors.status_code == 200
    assert cors.headers.get("access-control-allow-origin") in ("*", "https://player.example")


async def test_hls_can_also_be_written_to_disk_for_a_cdn_origin(start_daemon, tmp_path):
    origin = tmp_path / "origin"
    running = await start_daemon(
        hls={"directory": str(origin), "linger_s": 1.0, "window_segments": 3},
        bundle={"reconnect_grace_s": 0.5},
    )
    stream = "live/cdn"
    with trio.fail_after(40):
        await publish_tags(running.rtmp_port, f"{stream}?sourceId=cam", encode_tags(9.0, gop_s=1.0))
        folder = origin / "live" / "cdn"
        playlist = m3u8.loads((folder / "cam" / "video0.m3u8").read_text())
        assert "#EXT-X-PART" not in playlist.dumps(), "the disk copy is plain HLS"
        listed = [s.uri for s in playlist.segments]
        assert 1 <= len(listed) <= 3
        for uri in listed:
            assert (folder / "cam" / uri).stat().st_size > 1000, uri
        on_disk = sorted(p.name for p in (folder / "cam" / "video0").glob("seg-*.m4s"))
        assert on_disk == sorted(u.rsplit("/", 1)[1] for u in listed), (
            "old segments leave the disk too"
        )
        assert list((folder / "cam" / "video0").glob("init-*.mp4"))
        assert "cam/video0.m3u8" in (folder / "index.m3u8").read_text()

        async def removed():
            return not (folder / "cam").exists()

        await running.wait_for(removed, 15)


async def test_an_unwritable_hls_directory_costs_the_disk_copy_only(start_daemon, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    running = await start_daemon(hls={"directory": str(blocked / "hls")})
    stream = "live/diskfull"
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    publish_tags,
                    running.rtmp_port,
                    f"{stream}?sourceId=cam",
                    encode_tags(6.0, gop_s=1.0),
                )
            )
            url = f"/hls/{stream}/cam/video0.m3u8"
            await running.wait_for(segments_ready(running, url, 2), 15)
    assert running.daemon.hls.errors > 0, "the failure is counted"
    assert (await running.get("/api/v1/streams")).status_code == 200, "the server is still up"


async def test_every_preload_hint_is_answered_with_its_part_across_a_supersede(start_daemon, spawn):
    """What hls.js does: read the playlist, fetch the hinted part (it blocks until the part
    is complete), repeat. A hint naming a part that never comes cost a 404 and a freeze."""
    running = await start_daemon(**FAST)
    stream = "live/hint"
    path = f"/hls/{stream}/cam1/video0.m3u8"
    statuses: list[tuple[str, int]] = []
    with trio.fail_after(90):
        await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 40, "--size", "640x360"))
        await running.wait_for(segments_ready(running, path), 30)

        async def follow(seconds: float) -> None:
            async with httpx.AsyncClient(base_url=running.http, timeout=15) as client:
                with trio.move_on_after(seconds):
                    while True:
                        playlist = (await client.get(path)).text
                        hint = next(
                            line.split('URI="', 1)[1].rstrip('"')
                            for line in playlist.splitlines()
                            if line.startswith("#EXT-X-PRELOAD-HINT")
                        )
                        response = await client.get(f"/hls/{stream}/cam1/{hint}")
                        statuses.append((hint, response.status_code))

        await follow(3)
        await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 40, "--size", "1280x720"))

        async def superseded():
            return (await running.sources(stream)).get("cam1", {}).get("supersedeCount", 0) >= 1

        await running.wait_for(superseded, 20)
        await follow(5)
    playlist = (await text(running, path)).text
    assert playlist.count("#EXT-X-DISCONTINUITY") >= 1, "the new picture size has its own init"
    assert len(statuses) > 20
    assert [s for s in statuses if s[1] != 200] == [], "every hinted part came"

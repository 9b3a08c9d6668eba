"""Recording and multicam export, end to end: real publishers, PyAV reads what was written."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import trio

from rtmp_ingest.outputs.record import apply_retention
from tests.tools import clients
from tests.tools.flv_media import encode_tags, publish_tags

REPO = Path(__file__).resolve().parents[2]
RECORD = {
    "apps": {"*": {"multisource": True, "record": True}},
    "record": {"fragment_s": 0.5, "file_s": 3.0},
    "bundle": {"reconnect_grace_s": 1.0},
}


def manifest(running, stream):
    path = Path(running.daemon.recorder.root) / stream / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"files": []}


def decode(path: Path) -> tuple[int, list[int], set[tuple[int, int]]]:
    container = av.open(str(path))
    frames, dts, sizes = 0, [], set()
    try:
        for packet in container.demux(video=0):
            if packet.dts is None:
                continue
            dts.append(packet.dts)
            try:
                for frame in packet.decode():
                    frames += 1
                    sizes.add((frame.width, frame.height))
            except av.error.FFmpegError:
                pass
    except av.error.FFmpegError:
        pass
    container.close()
    return frames, dts, sizes


async def test_sources_are_recorded_in_rotating_files_continuing_across_a_supersede(
    start_daemon, spawn
):
    running = await start_daemon(**RECORD)
    stream = "live/rec"
    with trio.fail_after(60):
        cam1 = await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 20))
        cam2 = await spawn(clients.pyav(running.url(stream, sourceId="cam2"), 20))
        await running.wait_for(lambda: _files(running, stream, 2), 20)
        api = {
            s["sourceId"]: s
            for s in (await running.get(f"/api/v1/streams/{stream}")).json()["sources"]
        }
        assert api["cam1"]["record"]["file"].startswith(f"{stream}/cam1/")
        await trio.sleep(3.5)
        superseder = await spawn(clients.pyav(running.url(stream, sourceId="cam1"), 20))

        async def two_feeds():
            files = [f for f in manifest(running, stream)["files"] if f["sourceId"] == "cam1"]
            return (
                sum(len(f["feeds"]) for f in files) >= 2
                or len({x["feedId"] for f in files for x in f["feeds"]}) >= 2
            )

        await running.wait_for(two_feeds, 15)
        await trio.sleep(2.0)
        for client in (cam1, cam2, superseder):
            client.kill()

        async def all_closed():
            files = manifest(running, stream)["files"]
            return (
                files
                and all(f["end"] is not None for f in files)
                and not running.daemon.recorder.recordings
            )

        await running.wait_for(all_closed, 15)
    files = manifest(running, stream)["files"]
    cam1_files = [f for f in files if f["sourceId"] == "cam1"]
    assert len(cam1_files) >= 2, "rotated after file_s"
    feeds = [x["feedId"] for f in cam1_files for x in f["feeds"]]
    assert len(set(feeds)) == 2, "the manifest names both feeds of cam1"
    for entry in files:
        assert entry["end"] > entry["start"]
        assert {t["codec"] for t in entry["tracks"]} == {"h264", "aac"}
        frames, dts, sizes = decode(running.daemon.recorder.root / entry["file"])
        assert frames >= 20 and sizes == {(320, 180)}, entry
        assert dts == sorted(dts)
    # the files of one source follow each other on the common clock
    cam1_files.sort(key=lambda f: f["start"])
    for a, b in zip(cam1_files, cam1_files[1:]):
        assert 0 <= b["start"] - a["end"] <= 0.2
    api = (await running.get("/metrics")).text
    assert "rtmp_ingest_record_bytes" in api


async def _files(running, stream, count):
    return len({f["sourceId"] for f in manifest(running, stream)["files"]}) >= count


def test_a_recording_survives_kill_9_of_the_server(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        #: one process, killed without a chance to close its files
        'workers = 1\n[rtmp]\nlisten = "127.0.0.1:0"\n[http]\nlisten = "127.0.0.1:0"\n'
        '[apps."*"]\nrecord = true\n[record]\nfragment_s = 0.5\n'
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtmp_ingest.cli",
            "serve",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        port = None
        deadline = time.monotonic() + 15
        while port is None and time.monotonic() < deadline:
            line = server.stderr.readline()
            if "listening rtmp=" in line:
                port = int(line.split("listening rtmp=", 1)[1].split()[0].rsplit(":", 1)[1])
        assert port, "the server did not start"
        publisher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.tools.pyav_publish",
                f"rtmp://127.0.0.1:{port}/live/crash?sourceId=cam",
                "--seconds",
                "10",
                "--realtime",
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stderr=subprocess.DEVNULL,
        )
        time.sleep(4.0)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        publisher.kill()
        publisher.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
    root = tmp_path / "data" / "recordings" / "live" / "crash"
    entry = json.loads((root / "manifest.json").read_text())["files"][0]
    assert entry["end"] is None, "the server never got to close it"
    frames, dts, _ = decode(tmp_path / "data" / "recordings" / entry["file"])
    assert frames >= 50, "everything up to the last complete fragment plays"
    assert dts == sorted(dts)


async def test_export_lines_up_three_sources_on_the_common_clock(start_daemon, tmp_path):
    running = await start_daemon(**RECORD)
    stream = "live/multicam"
    tags = encode_tags(6.0, gop_s=1.0)
    voice = encode_tags(6.0, video=None)
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(publish_tags, running.rtmp_port, f"{stream}?sourceId=a", tags)
            )
            await trio.sleep(1.0)
            nursery.start_soon(
                functools.partial(publish_tags, running.rtmp_port, f"{stream}?sourceId=b", tags)
            )
            await trio.sleep(1.5)
            nursery.start_soon(
                functools.partial(
                    publish_tags, running.rtmp_port, f"{stream}?sourceId=voice", voice
                )
            )

        async def all_closed():
            files = manifest(running, stream)["files"]
            return (
                len({f["sourceId"] for f in files}) == 3
                and all(f["end"] for f in files)
                and not running.daemon.recorder.recordings
            )

        await running.wait_for(all_closed, 15)
    files = manifest(running, stream)["files"]
    starts = {}
    for f in files:
        starts[f["sourceId"]] = min(starts.get(f["sourceId"], f["start"]), f["start"])
    begin = min(starts.values())
    out = tmp_path / "multicam.mkv"
    data_dir = running.daemon.config.data_dir
    result = await trio.run_process(
        [
            sys.executable,
            "-m",
            "rtmp_ingest.cli",
            "export",
            stream,
            "--data-dir",
            data_dir,
            "--from",
            str(begin),
            "--out",
            str(out),
        ],
        capture_stdout=True,
        capture_stderr=True,
        cwd=REPO,
    )
    summary = json.loads(result.stdout)
    assert sorted(summary["tracks"]) == [
        "a audio0",
        "a video0",
        "b audio0",
        "b video0",
        "voice audio0",
    ]
    container = av.open(str(out))
    first = {}
    for packet in container.demux():
        if packet.pts is None:  #: Matroska stores PTS only; the first DTS are unknown
            continue
        title = packet.stream.metadata.get("title") or packet.stream.metadata.get("TITLE")
        first.setdefault(title, float(packet.pts * packet.stream.time_base))
    container.close()
    for source in ("a", "b"):
        expected = starts[source] - begin
        assert abs(first[f"{source} video0"] - expected) <= 0.04, (source, first, starts)
    assert abs(first["voice audio0"] - (starts["voice"] - begin)) <= 0.04, (first, starts)
    assert abs(first["b video0"] - first["a video0"] - 1.0) <= 0.06, "b started 1 s after a"


async def test_export_explains_a_stream_without_recordings(tmp_path):
    result = await trio.run_process(
        [
            sys.executable,
            "-m",
            "rtmp_ingest.cli",
            "export",
            "live/none",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "x.mkv"),
        ],
        capture_stderr=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert b"no recordings of stream 'live/none'" in result.stderr


def test_retention_deletes_old_files_then_the_oldest_beyond_the_size_limit(tmp_path):
    root = tmp_path
    folder = root / "live" / "s" / "cam"
    folder.mkdir(parents=True)
    now = 2_000_000_000.0
    files = []
    for i, age in enumerate((90_000, 5_000, 4_000, 3_000, 10)):
        name = f"live/s/cam/{i}.mp4"
        (root / name).write_bytes(b"x" * 1000)
        files.append(
            {
                "file": name,
                "sourceId": "cam",
                "start": now - age - 60,
                "end": now - age,
                "tracks": [],
                "feeds": [],
                "bytes": 1000,
            }
        )
    files[-1]["end"] = None  #: still being written
    (root / "live" / "s" / "manifest.json").write_text(json.dumps({"files": files}))
    deleted = apply_retention(
        root, max_age_s=86_400, max_total_bytes=2_500, now_unix=now, active={"live/s/cam/4.mp4"}
    )
    assert deleted == ["live/s/cam/0.mp4", "live/s/cam/1.mp4", "live/s/cam/2.mp4"]
    left = json.loads((root / "live" / "s" / "manifest.json").read_text())["files"]
    assert [f["file"] for f in left] == ["live/s/cam/3.mp4", "live/s/cam/4.mp4"]
    assert (root / "live/s/cam/4.mp4").exists(), "a file being written is never deleted"


async def test_a_token_record_claim_overrides_the_app_setting(start_daemon):
    running = await start_daemon(
        auth={"mode": "token", "secret": "test-secret-test-secret-0123456789"},
        record={"fragment_s": 0.5},
    )
    minted = (
        await running.request(
            "POST",
            "/api/v1/tokens",
            json={"streams": ["live/*"], "multisource": True, "record": True},
        )
    ).json()
    assert minted["claims"]["record"] is True if "claims" in minted else True
    plain = (
        await running.request(
            "POST", "/api/v1/tokens", json={"streams": ["live/*"], "multisource": True}
        )
    ).json()
    tags = encode_tags(2.0)
    with trio.fail_after(30):
        await publish_tags(
            running.rtmp_port, f"live/tok?sourceId=rec&token={minted['token']}", tags
        )
        await publish_tags(
            running.rtmp_port, f"live/tok?sourceId=plain&token={plain['token']}", tags
        )

        async def closed():
            return manifest(running, "live/tok")["files"] and not running.daemon.recorder.recordings

        await running.wait_for(closed, 15)
    assert {f["sourceId"] for f in manifest(running, "live/tok")["files"]} == {"rec"}


async def test_a_stream_name_too_long_for_a_file_name_is_recorded_and_nobody_else_drops(
    start_daemon, spawn
):
    """300 x "n" (the real ffmpeg CLI sends it) once took the daemon down with ENAMETOOLONG."""
    running = await start_daemon(**RECORD)
    long_stream = "live/" + "n" * 300
    publish = clients.ffmpeg if clients.have("ffmpeg") else clients.pyav
    with trio.fail_after(60):
        other = await spawn(clients.pyav(running.url("live/other"), 20))
        await running.wait_for(lambda: _recording(running, "live/other"), 20)
        long = await spawn(publish(running.url(long_stream), 20))
        await running.wait_for(lambda: _recording(running, long_stream), 20)

        async def both_written():
            stats = running.daemon.recorder.recordings
            return all(
                (s, "") in stats and stats[(s, "")].bytes_written > 20_000
                for s in (long_stream, "live/other")
            )

        await running.wait_for(both_written, 30)
        long.kill()
        other.kill()
    files = list(Path(running.daemon.recorder.root).rglob("*.mp4"))
    assert {len(p.parent.parent.name) <= 255 for p in files} == {True}
    assert any("~" in p.parent.parent.name for p in files), "the long name is hashed on disk"
    assert running.daemon.recorder.statistics()["outputFailures"] == 0


async def _recording(running, stream):
    return (stream, "") in running.daemon.recorder.recordings

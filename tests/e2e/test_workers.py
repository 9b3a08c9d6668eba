"""`rtmp-ingest serve --workers 2` on loopback (docs/spec.md §9): the real supervisor,
two workers on the same ports, 20 PyAV publishers over 8 streams, players, a supersede
across connections that landed on different workers, and `kill -9` of a worker.

Which worker the kernel gives a connection is its choice (SO_REUSEPORT hashes the
addresses), so the test learns where each connection landed from the workers' log
("taken over … from worker" is written by the owner of a handed-over connection) and
retries — on a fresh stream each time — until it has what it must show.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from rtmp_ingest.cluster.ownership import rendezvous_owner
from tests.e2e.conftest import REPO
from tests.tools import clients
from tests.tools.pyav_player import play

STREAMS = [f"live/w{i}" for i in range(8)]
#: 20 publishers: streams 0–3 get three sources, 4–7 two
PUBLISHERS = [(STREAMS[i], f"cam{n}") for i in range(8) for n in range(3 if i < 4 else 2)]
#: small pictures: 20 encoders and two workers share this machine's cores
ENCODER = ["--video", "h264", "--audio", "none", "--size", "160x96", "--fps", "10", "--gop", "1"]


class Workers:
    """The supervisor process, its log, and the API through any worker."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self.rtmp_port = 0
        self.rtmps_port = 0
        self.http = ""
        self.listening = trio.Event()

    async def read_log(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for data in self.process.stderr:
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                self.log.append(line)
                found = re.search(
                    r"rtmp_ingest.cluster: listening rtmp=\S+:(\d+).* http=\S+:(\d+)", line
                )
                if found:
                    self.rtmp_port = int(found.group(1))
                    self.http = f"http://127.0.0.1:{found.group(2)}"
                    rtmps = re.search(r" rtmps=\S+:(\d+)", line)
                    self.rtmps_port = int(rtmps.group(1)) if rtmps else 0
                    self.listening.set()

    def url(self, path: str, **query: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{path}" + (f"?{q}" if q else "")

    async def get(self, path: str) -> Any:
        async with httpx.AsyncClient(base_url=self.http, timeout=10) as client:
            response = await client.get(path)
        return response

    async def streams(self) -> dict[str, Any]:
        return (await self.get("/api/v1/streams")).json()

    async def sources(self, stream: str) -> dict[str, Any]:
        response = await self.get(f"/api/v1/streams/{stream}")
        if response.status_code != 200:
            return {}
        return {s["sourceId"]: s for s in response.json()["sources"]}

    def taken_over(self, since: int, stream: str) -> bool:
        """Whether a connection for `stream` was handed to its owner after log line `since`."""
        return any(
            "taken over" in line and f"stream={stream} " in line for line in self.log[since:]
        )


async def wait_for(predicate: Any, timeout_s: float) -> Any:
    with trio.fail_after(timeout_s):
        while True:
            value = await predicate()
            if value:
                return value
            await trio.sleep(0.1)


class Encoder:
    """A publisher that reconnects when it is dropped, as OBS does (here: a new process)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.starts = 0
        self.process: trio.Process | None = None
        self.stopped = False

    async def run(self) -> None:
        while not self.stopped:
            self.starts += 1
            self.process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "tests.tools.pyav_publish",
                    self.url,
                    "--seconds",
                    "900",
                    "--realtime",
                    *ENCODER,
                ],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": REPO},
            )
            await self.process.wait()
            if not self.stopped:
                await trio.sleep(0.5)  #: a real encoder's reconnect delay

    def stop(self) -> None:
        self.stopped = True
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


@pytest.fixture
async def start_workers(nursery: trio.Nursery, tmp_path: Any) -> AsyncIterator[Any]:
    started: list[trio.Process] = []

    async def start(config_toml: str = "") -> Workers:
        config = tmp_path / f"config{len(started)}.toml"
        config.write_text(config_toml)
        argv = [
            sys.executable, "-c", "from rtmp_ingest.cli import main; raise SystemExit(main())",
            "serve", "--workers", "2", "--config", str(config), "--rtmp", "127.0.0.1:0",
            "--http", "127.0.0.1:0", "--srt", "127.0.0.1:0",
            "--data-dir", str(tmp_path / f"data{len(started)}"),
        ]  # fmt: skip
        process = await trio.lowlevel.open_process(
            argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": REPO},
        )  # fmt: skip
        started.append(process)
        running = Workers(process)
        nursery.start_soon(running.read_log)
        with trio.fail_after(60):
            await running.listening.wait()
        return running

    yield start
    for process in started:
        process.send_signal(signal.SIGTERM)
    for process in started:
        with trio.move_on_after(20):
            await process.wait()
        if process.returncode is None:
            process.kill()


class MachineEvents:
    """One `GET /api/v1/events` connection through the shared port, read to its end."""

    def __init__(self, http: str) -> None:
        self.http = http
        self.events: list[tuple[str, dict[str, Any]]] = []
        #: the worker that merges (the response says which), set once the stream is open
        self.served_by: int | None = None
        self.open = trio.Event()
        self.ended = False

    async def run(self) -> None:
        timeout = httpx.Timeout(10, read=None)
        async with httpx.AsyncClient(base_url=self.http, timeout=timeout) as client:
            async with client.stream("GET", "/api/v1/events") as response:
                assert response.status_code == 200
                self.served_by = int(response.headers["x-rtmp-ingest-worker"])
                self.open.set()
                buffer = ""
                async for text in response.aiter_text():
                    buffer += text
                    *blocks, buffer = buffer.split("\n\n")
                    for block in blocks:
                        fields = dict(
                            line.split(": ", 1) for line in block.split("\n") if ": " in line
                        )
                        if "event" in fields and "data" in fields:
                            self.events.append((fields["event"], json.loads(fields["data"])))
        self.ended = True

    def named(self, name: str, **where: Any) -> list[dict[str, Any]]:
        return [
            p for n, p in self.events if n == name and all(p.get(k) == v for k, v in where.items())
        ]


def samples(text: str, name: str) -> dict[str, float]:
    """worker label → value of the machine-wide /metrics' samples called `name`."""
    return {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


@pytest.fixture
async def workers(start_workers: Any) -> Workers:
    return await start_workers()


async def all_live(workers: Workers, expected: list[tuple[str, str]]) -> Any:
    listing = await workers.streams()
    live = {
        (s["path"], src["sourceId"])
        for s in listing["streams"]
        for src in s["sources"]
        if src["state"] == "live" and src["onAir"]
    }
    return listing if set(expected) <= live else None


async def test_two_workers_serve_every_stream_from_its_owner(workers: Workers, nursery):
    #: one dashboard's event stream, open before anything publishes, through the shared port
    events = MachineEvents(workers.http)
    nursery.start_soon(events.run)
    with trio.fail_after(30):
        await events.open.wait()
    encoders = [Encoder(workers.url(path, sourceId=source)) for path, source in PUBLISHERS]
    for encoder in encoders:
        nursery.start_soon(encoder.run)

    # -- every stream on one worker, both workers in use, the API shows where -----------
    listing = await wait_for(lambda: all_live(workers, PUBLISHERS), 120)
    paths = [s["path"] for s in listing["streams"]]
    assert sorted(paths) == sorted(STREAMS), "a stream is split over two workers"
    pids = {w["id"]: w["pid"] for w in listing["workers"]}
    assert sorted(pids) == [0, 1]
    for stream in listing["streams"]:
        #: served by its rendezvous owner, all its sources there
        assert stream["worker"]["id"] == rendezvous_owner(stream["path"], [0, 1])
        assert stream["worker"]["pid"] == pids[stream["worker"]["id"]]
        assert len(stream["sources"]) == (3 if int(stream["path"][-1]) < 4 else 2)
    assert {s["worker"]["id"] for s in listing["streams"]} == {0, 1}
    single = (await workers.get(f"/api/v1/streams/{STREAMS[0]}")).json()
    assert single["worker"]["id"] == rendezvous_owner(STREAMS[0], [0, 1])
    assert any("handed over" in line for line in workers.log)

    # -- one event stream and one scrape show the whole machine ------------------------
    owner = {s["path"]: s["worker"] for s in listing["streams"]}

    async def every_source_announced() -> bool:
        return all(events.named("active", stream=p, sourceId=c) for p, c in PUBLISHERS)

    await wait_for(every_source_announced, 30)
    for path, source in PUBLISHERS:
        assert events.named("active", stream=path, sourceId=source)[0]["worker"] == owner[path]
    metrics = (await workers.get("/metrics")).text
    assert samples(metrics, "rtmp_ingest_worker_up") == {"0": 1.0, "1": 1.0}
    assert samples(metrics, "rtmp_ingest_worker_restarts_total") == {"0": 0.0, "1": 0.0}
    both = {
        family.name
        for family in text_string_to_metric_families(metrics)
        if family.name.startswith("rtmp_ingest_")
        and {s.labels.get("worker") for s in family.samples} == {"0", "1"}
    }
    assert len(both) > 5, f"few families carry both workers: {sorted(both)}"

    # -- players landing on either worker decode ---------------------------------------
    landed: set[bool] = set()
    for attempt in range(24):
        stream = STREAMS[attempt % len(STREAMS)]
        mark = len(workers.log)
        result = await trio.to_thread.run_sync(play, workers.url(stream, sourceId="cam0"), 2.0)
        assert result.frames_decoded > 0, result.error
        landed.add(workers.taken_over(mark, stream))
        if landed == {True, False}:
            break
    assert landed == {True, False}, "players never landed on both workers"
    flv = await trio.to_thread.run_sync(play, f"{workers.http}/{STREAMS[1]}.flv?sourceId=cam1", 2.0)
    assert flv.frames_decoded > 0, flv.error

    # -- a supersede across connections that landed on different workers --------------
    for attempt in range(10):
        stream = f"live/sup{attempt}"
        first = Encoder(workers.url(stream, sourceId="cam1"))
        mark = len(workers.log)
        nursery.start_soon(first.run)
        source = await wait_for(functools.partial(on_air, workers, stream), 60)
        first_feed, first_moved = source["onAir"]["id"], workers.taken_over(mark, stream)
        mark = len(workers.log)
        spare = Encoder(workers.url(stream, sourceId="cam1"))
        nursery.start_soon(spare.run)

        async def spare_on_air(stream: str = stream, first_feed: int = first_feed) -> Any:
            source = await on_air(workers, stream)
            return source if source and source["onAir"]["id"] != first_feed else None

        source = await wait_for(spare_on_air, 60)
        spare_moved = workers.taken_over(mark, stream)
        different = first_moved != spare_moved
        if different:
            assert source["supersedeCount"] == 1
            assert [f["id"] for f in source["standby"]] == [first_feed]
        first.stop()
        spare.stop()
        if different:
            break
    else:
        pytest.fail("the two feeds of a source never landed on different workers")

    # -- kill -9 of a worker: only its streams drop, it restarts, encoders reconnect ---
    listing = await wait_for(lambda: all_live(workers, PUBLISHERS), 60)
    assert events.served_by is not None
    victim = 1 - events.served_by  #: the event stream's connection is on the other one
    victim_pid = pids[victim]
    kept = {
        (s["path"], src["sourceId"]): src["onAir"]["id"]
        for s in listing["streams"]
        if s["worker"]["id"] != victim and s["path"] in STREAMS
        for src in s["sources"]
    }
    lost = {s["path"] for s in listing["streams"] if s["worker"]["id"] == victim}
    starts = {e.url: e.starts for e in encoders}
    seen_before_kill = len(events.events)
    os.kill(victim_pid, signal.SIGKILL)

    async def restarted() -> Any:
        listing = await workers.streams()
        now = {w["id"]: w.get("pid") for w in listing["workers"] if w.get("reachable")}
        return listing if now.get(victim) not in (None, victim_pid) else None

    await wait_for(restarted, 60)
    listing = await wait_for(lambda: all_live(workers, PUBLISHERS), 120)
    after = {
        (s["path"], src["sourceId"]): src["onAir"]["id"]
        for s in listing["streams"]
        if s["path"] in STREAMS
        for src in s["sources"]
        if src["onAir"]
    }
    #: the survivor's feeds never dropped: same feed ids, same encoder processes
    assert {key: after[key] for key in kept} == kept
    for encoder in encoders:
        path = encoder.url.split("/", 3)[3].split("?")[0]
        if path in lost:
            assert encoder.starts > starts[encoder.url], f"{encoder.url} did not reconnect"
        else:
            assert encoder.starts == starts[encoder.url], f"{encoder.url} was dropped"
    assert sorted(s["path"] for s in listing["streams"] if s["path"] in STREAMS) == sorted(STREAMS)
    assert lost and kept, "each worker served some of the streams"
    assert any(f"worker={victim} pid={victim_pid} died" in line for line in workers.log)

    # -- the event stream went on: the lost worker's sources ended, then came back -----
    assert not events.ended, "the event stream ended with a worker it did not run on"
    for path, source in PUBLISHERS:
        if path not in lost:
            continue
        ended = events.named("inactive", stream=path, sourceId=source, reason="worker lost")
        assert ended and ended[0]["worker"] == {"id": victim, "pid": victim_pid}, (path, source)
        assert events.named("stopped", stream=path, reason="worker lost"), path

    async def lost_ones_back() -> bool:
        """Each lost source is announced again by the worker that serves it now (the
        restarted one, or the survivor if its encoder came back first)."""
        now = {s["path"]: s["worker"] for s in (await workers.streams())["streams"]}
        since = events.events[seen_before_kill:]
        return all(
            any(
                n == "active" and e["stream"] == p and e.get("sourceId") == c
                and e["worker"] == now.get(p)
                for n, e in since
            )
            for p, c in PUBLISHERS
            if p in lost
        )  # fmt: skip

    await wait_for(lost_ones_back, 30)
    assert not [
        p for p in events.named("inactive", reason="worker lost") if p["stream"] not in lost
    ], "a source of the surviving worker was said to be lost"
    metrics = (await workers.get("/metrics")).text
    assert samples(metrics, "rtmp_ingest_worker_up") == {"0": 1.0, "1": 1.0}
    assert samples(metrics, "rtmp_ingest_worker_restarts_total")[str(victim)] == 1.0
    #: one client of the event stream: counted once, on the worker that merges for it
    served_by = str(events.served_by)
    assert samples(metrics, "rtmp_ingest_event_subscribers") == {served_by: 1.0, str(victim): 0.0}
    assert samples(metrics, "rtmp_ingest_event_internal_subscribers") == {
        served_by: 0.0,
        str(victim): 1.0,
    }
    for encoder in encoders:
        encoder.stop()


async def on_air(workers: Workers, stream: str) -> Any:
    source = (await workers.sources(stream)).get("cam1")
    return source if source and source["state"] == "live" and source["onAir"] else None


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg missing")
async def test_rtmps_reaches_the_owner_through_the_worker_that_holds_the_tls(
    start_workers: Any, nursery: trio.Nursery, tmp_path: Any
) -> None:
    """A TLS session cannot move with its socket: the worker it landed on keeps the TLS
    and relays plaintext to the owner, which serves it as RTMPS (cluster/transfer.py)."""
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    workers = await start_workers(
        f'[rtmps]\nlisten = "127.0.0.1:0"\ncert_file = "{cert_file}"\nkey_file = "{key_file}"\n'
    )
    assert workers.rtmps_port
    spawned: list[trio.Process] = []
    try:
        for attempt in range(12):
            stream = f"live/tls{attempt}"
            url = f"rtmps://127.0.0.1:{workers.rtmps_port}/{stream}?sourceId=cam1"
            spawned.append(
                await trio.lowlevel.open_process(
                    clients.ffmpeg(url, 30), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
            source = await wait_for(functools.partial(on_air, workers, stream), 30)
            assert source["onAir"]["protocol"] == "rtmps"
            if any("relaying rtmps" in line and f"stream={stream}" in line for line in workers.log):
                #: relayed, and it still flows: its bytes keep growing at the owner
                first = source["onAir"]["bytesIn"]

                async def grew(stream: str = stream, first: int = first) -> Any:
                    later = await on_air(workers, stream)
                    return later if later and later["onAir"]["bytesIn"] > first else None

                await wait_for(grew, 30)
                listing = await workers.streams()
                (entry,) = [s for s in listing["streams"] if s["path"] == stream]
                assert entry["worker"]["id"] == rendezvous_owner(stream, [0, 1])
                break
        else:
            pytest.fail("no RTMPS connection landed away from its owner")
    finally:
        for process in spawned:
            process.kill()


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg missing")
async def test_srt_is_served_by_worker_0(start_workers: Any) -> None:
    """SRT (UDP) cannot be handed over: only worker 0 listens. A stream it starts is held
    there, so RTMP for it goes there too (SRT for a stream worker 1 holds is relayed
    there: tests/e2e/test_srt_relay.py)."""
    from tests.e2e.test_srt import ffmpeg_srt, srt_url

    workers = await start_workers()
    srt_port = int(re.search(r" srt=\S+:(\d+)", next(
        line for line in workers.log if "rtmp_ingest.cluster: listening" in line
    )).group(1))  # fmt: skip
    names = (f"live/srt{i}" for i in range(100))
    started_by_srt = next(n for n in names if rendezvous_owner(n, [0, 1]) == 1)
    spawned: list[trio.Process] = []

    async def spawn(argv: list[str]) -> trio.Process:
        process = await trio.lowlevel.open_process(
            argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        spawned.append(process)
        return process

    async def serving(stream: str, source: str) -> Any:
        listing = await workers.streams()
        for entry in listing["streams"]:
            if entry["path"] == stream:
                live = {s["sourceId"] for s in entry["sources"] if s["onAir"]}
                return entry if source in live else None
        return None

    try:
        # an SRT publisher to a stream nobody holds: served by worker 0, which holds it now
        await spawn(ffmpeg_srt(srt_url(srt_port, f"{started_by_srt}?sourceId=srt"), 60))
        entry = await wait_for(functools.partial(serving, started_by_srt, "srt"), 60)
        assert entry["worker"]["id"] == 0
        # RTMP for that stream follows the holder, not the rendezvous owner (worker 1)
        await spawn(clients.ffmpeg(workers.url(started_by_srt, sourceId="cam"), 60))
        entry = await wait_for(functools.partial(serving, started_by_srt, "cam"), 60)
        assert entry["worker"]["id"] == 0
        assert {s["sourceId"] for s in entry["sources"]} == {"srt", "cam"}
    finally:
        for process in spawned:
            if process.returncode is None:
                process.kill()


async def test_kill_9_of_the_supervisor_ends_its_workers(workers: Workers):
    listing = await workers.streams()
    pids = [w["pid"] for w in listing["workers"]]
    assert len(pids) == 2
    workers.process.kill()  #: SIGKILL: the supervisor gets no chance to stop them

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as stat:  #: a zombie is gone too
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"

    async def all_gone() -> bool | None:
        return True if all(gone(pid) for pid in pids) else None

    await wait_for(all_gone, 30)

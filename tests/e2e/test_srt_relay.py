"""End to end, docs/spec.md §9: an SRT publish of a stream another process serves reaches
the owner through one RTMP relay hop (server/srt_relay.py).

- Two `serve` nodes and a real redis-server: an RTMP source (PyAV) on node A takes the
  stream; an ffmpeg SRT source of the same stream on node B is relayed to A. Both are
  live on the owner (API: the SRT source with the encoder's address and protocol `srt`),
  and a player on A decodes the SRT source.
- `serve --workers 2`: SRT is served by worker 0 only; an SRT publish of a stream worker
  1 holds is relayed to the machine's RTMP port with the run's internal credentials,
  handed to worker 1, live there (API shows its worker, and protocol `srt`), and a
  player decodes it.

Encoders are retried the way real ones reconnect: a node's view of the leases others
hold is refreshed every `renew_s`, so an SRT publish that comes before it is admitted
locally and ended once the node finds the owner; the next attempt is relayed.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from typing import Any

import pytest
import trio

from rtmp_ingest.cluster.ownership import rendezvous_owner
from rtmp_ingest.srt import lib
from tests.e2e.test_cluster import STREAM, cluster, encoder, owner, until  # noqa: F401 - fixture
from tests.e2e.test_srt import ffmpeg_srt, srt_url
from tests.e2e.test_workers import REPO, start_workers, wait_for  # noqa: F401 - fixture
from tests.tools import clients
from tests.tools.pyav_player import play

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not lib.available(), reason="libsrt not installed"),
    pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg CLI not installed"),
]


#: an ffmpeg SRT publisher that reconnects until its seconds are over
srt_encoder = functools.partial(encoder, argv=ffmpeg_srt)


@pytest.mark.parametrize(("srt_nodes", "node_names"), [(True, "AB")])
async def test_srt_on_another_node_is_relayed_to_the_owner(
    cluster,  # noqa: F811 - the fixture
    nursery,
    srt_nodes,
    node_names,
):
    redis_url, nodes = cluster
    a, b = nodes["A"], nodes["B"]
    await nursery.start(encoder, [a.url("cam1")], 90.0)
    await until(lambda: a.live("cam1"), 30, "cam1 on air at A")
    assert await owner(redis_url) == "A"
    await nursery.start(srt_encoder, [b.srt_url(f"{STREAM}?sourceId=srt1")], 90.0)
    await until(lambda: a.live("cam1", "srt1"), 60, "srt1 relayed by B to the owner A")
    assert await owner(redis_url) == "A"
    relayed = [
        line
        for line in b.log.read_text().splitlines()
        if "relay stream=live/show sourceId='srt1' protocol=srt" in line
    ]
    assert relayed and "owner=A" in relayed[-1], b.log.read_text()[-3000:]
    #: the owner sees the encoder's address and protocol, vouched for by B (not B's own
    #: socket, nor the RTMP of the relay)
    srt_remote = re.search(r"protocol=srt remote=(\S+)", relayed[-1])
    assert srt_remote is not None
    on_a = (await a.sources())["srt1"]["onAir"]
    assert on_a["remoteAddr"] == srt_remote.group(1), on_a
    assert on_a["protocol"] == "srt", on_a
    #: its log line names the encoder too, and the relay it came through
    published = re.search(
        r"publish stream=live/show sourceId='srt1' protocol=srt remote=(\S+) .* via=(\S+)",
        a.log.read_text(),
    )
    assert published is not None, a.log.read_text()[-3000:]
    assert published.group(1) == srt_remote.group(1)
    assert published.group(2) != srt_remote.group(1)
    result = await trio.to_thread.run_sync(
        functools.partial(play, a.url("srt1"), 3.0, read_timeout_s=20.0)
    )
    assert result.error is None and result.frames_decoded > 0, result.summary()


async def test_srt_for_a_stream_another_worker_holds_is_relayed_there(start_workers):  # noqa: F811
    workers = await start_workers()
    srt_port = int(re.search(r" srt=\S+:(\d+)", next(
        line for line in workers.log if "rtmp_ingest.cluster: listening" in line
    )).group(1))  # fmt: skip
    stream = next(n for n in (f"live/relay{i}" for i in range(100)) if rendezvous_owner(n, [0, 1]))
    spawned: list[trio.Process] = []

    async def spawn(argv: list[str]) -> None:
        spawned.append(
            await trio.lowlevel.open_process(
                argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )

    async def serving(*sources: str) -> Any:
        for entry in (await workers.streams())["streams"]:
            if entry["path"] == stream:
                live = {s["sourceId"] for s in entry["sources"] if s["onAir"]}
                return entry if set(sources) <= live else None
        return None

    try:
        await spawn(clients.ffmpeg(workers.url(stream, sourceId="cam"), 90))
        entry = await wait_for(functools.partial(serving, "cam"), 60)
        assert entry["worker"]["id"] == 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(srt_encoder, [srt_url(srt_port, f"{stream}?sourceId=srt")], 60.0)
            entry = await wait_for(functools.partial(serving, "cam", "srt"), 60)
            assert entry["worker"]["id"] == 1
            protocols = {s["sourceId"]: s["onAir"]["protocol"] for s in entry["sources"]}
            assert protocols == {"cam": "rtmp", "srt": "srt"}, entry  #: as the encoders used
            listing = await workers.streams()
            assert [s["path"] for s in listing["streams"]].count(stream) == 1
            assert any(
                f"relay stream={stream} sourceId='srt' protocol=srt" in line
                and "owner=worker1" in line
                for line in workers.log
            )
            result = await trio.to_thread.run_sync(
                functools.partial(
                    play, workers.url(stream, sourceId="srt"), 3.0, read_timeout_s=20.0
                )
            )
            assert result.error is None and result.frames_decoded > 0, result.summary()
            nursery.cancel_scope.cancel()
    finally:
        for process in spawned:
            if process.returncode is None:
                process.kill()

"""The supervisor's table (cluster/supervisor.py), with fake workers on its control socket.

Regression: under a burst of new streams two workers' reports made the supervisor write
to one link from two tasks at once (BusyResourceError) and it went down with every worker.
"""

from __future__ import annotations

import json

import trio

from rtmp_ingest import config as config_mod
from rtmp_ingest.cluster.ownership import rendezvous_owner
from rtmp_ingest.cluster.supervisor import Supervisor


class FakeWorker:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.tables: list[dict] = []

    async def send(self, message: dict) -> None:
        await self.stream.send_all(json.dumps(message).encode() + b"\n")

    async def read_tables(self) -> None:
        try:
            while data := await self.stream.receive_some(65536):
                self.buffer += data
                *lines, self.buffer = self.buffer.split(b"\n")
                self.tables += [json.loads(line) for line in lines]  #: every line whole JSON
        except trio.ClosedResourceError:
            pass  #: the test closed this worker


async def test_a_burst_of_holdings_from_two_workers_keeps_every_link_whole(nursery, tmp_path):
    config = config_mod.load(
        None,
        overrides={"rtmp": {"listen": "127.0.0.1:0"}, "http": {"listen": "127.0.0.1:0"}},
    )
    supervisor = Supervisor(config, count=2, config_file=None)
    try:
        await nursery.start(supervisor._serve_control)
        workers = []
        for worker_id in (0, 1):
            stream = await trio.open_unix_socket(supervisor.layout(0).control_socket)
            worker = FakeWorker(stream)
            nursery.start_soon(worker.read_tables)
            await worker.send({"hello": worker_id, "pid": 1000 + worker_id})
            await worker.send({"serving": {"rtmp": ["127.0.0.1", 1]}})
            workers.append(worker)

        async def burst(worker_id: int) -> None:
            held: list[str] = []
            for n in range(400):
                held.append(f"live/w{worker_id}-{n}")
                await workers[worker_id].send({"holds": held})

        async with trio.open_nursery() as both:
            both.start_soon(burst, 0)
            both.start_soon(burst, 1)

        def settled() -> bool:
            return all(w.tables and len(w.tables[-1]["holders"]) == 800 for w in workers)

        with trio.fail_after(20):
            while not settled():
                await trio.sleep(0.01)
        for worker in workers:
            table = worker.tables[-1]
            assert table["live"] == [0, 1]
            assert table["pids"] == {"0": 1000, "1": 1001}
            assert table["holders"]["live/w1-399"] == 1
            #: coalesced: far fewer lines than changes
            assert len(worker.tables) < 800
        # a worker that leaves: its holdings leave the table, rendezvous decides again
        await trio.aclose_forcefully(workers[1].stream)
        supervisor.live.pop(1)
        supervisor.holds.pop(1)
        supervisor._publish_table()
        with trio.fail_after(20):
            while len(workers[0].tables[-1]["holders"]) != 400:
                await trio.sleep(0.01)
        assert workers[0].tables[-1]["live"] == [0]
        assert rendezvous_owner("live/w1-0", workers[0].tables[-1]["live"]) == 0
    finally:
        supervisor.close()

"""The SRT relay's cost (docs/spec.md §9, server/srt_relay.py): CPU-ms per Mbit.

    PYTHONPATH=. .venv/bin/python bench/bench_srt_relay.py [--publishers 1,10] [--seconds 15]

N ffmpeg SRT publishers of the 3 Mbit/s clip (real time, as in bench_srt.py) into the
SRT driver running in this process, two ways:

- `local`: the driver feeds a bundle registry here (bench_srt.py's load, the baseline);
- `relayed`: every stream is served by another process — a plain `rtmp-ingest serve`
  on loopback (bench_scale.py's, one worker), the "owner" — so each SRT session opens
  a `cluster/relay.py` `RtmpRelay` to it and forwards its demuxed frames there over
  RTMP (what a cluster node or worker 0 does with an SRT publish of a stream held
  elsewhere).

CPU of this process (trio thread, reader threads, libsrt's threads) per Mbit received;
`relayed` minus `local` is the relay hop itself. The owner's CPU is not counted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from bench.bench_srt import load_ours, make_clip
from bench.common import REPO, table
from rtmp_ingest.cluster.relay import RtmpRelay
from rtmp_ingest.config import RtmpConfig
from rtmp_ingest.server.placement import RemoteOwner


class OwnerElsewhere:
    """A placement (server/srt_relay.py `SrtPlacement`) whose every stream is served by
    the owner process: SRT publishes are relayed there."""

    def __init__(self, port: int) -> None:
        self.owner = RemoteOwner(node_id="owner", rtmp_host="127.0.0.1", rtmp_port=port, http="")
        self.counters: dict[str, int] = {"relays": 0, "relay_bytes": 0}

    def remote_holder(self, stream_path: str) -> str | None:
        return "owner"

    async def owner_of(self, stream_path: str, *, relayed: bool = False) -> RemoteOwner | None:
        return self.owner

    def open_relay(
        self, owner: RemoteOwner, *, stream_path: str, query: Mapping[str, str], **_: Any
    ) -> RtmpRelay:
        return RtmpRelay(
            owner,
            stream_path=stream_path,
            query=dict(query),
            limits=RtmpConfig().limits(),
            timeout_s=5.0,
            max_buffer_bytes=8 * 1024 * 1024,
            counters=self.counters,
        )


async def load(clip: Path, publishers: int, seconds: float, owner_port: int | None) -> Any:
    placement = None if owner_port is None else OwnerElsewhere(owner_port)
    row = await load_ours(clip, publishers, seconds, placement)
    return {"mode": "local" if placement is None else "relayed", **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishers", default="1,10")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "bench"))  #: bench_scale imports `common` as a script
    from bench_scale import WorkersServer

    rows = []
    with tempfile.TemporaryDirectory() as tmp, WorkersServer(1) as owner:
        clip = make_clip(Path(tmp))
        for count in (int(n) for n in args.publishers.split(",")):
            for port in (None, owner.port):
                rows.append(trio.run(load, clip, count, args.seconds, port))
                print(rows[-1], file=sys.stderr)
    print(
        table(
            rows,
            [("mode", "mode"), ("publishers", "publishers"), ("mbit_per_s", "Mbit/s"),
             ("cpu_pct", "CPU %"), ("cpu_ms_per_mbit", "CPU-ms/Mbit")],
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()

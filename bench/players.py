"""N RTMP players on loopback, for the play benchmark: each plays one stream and discards.

    .venv/bin/python bench/players.py --port PORT -n N --seconds S [--url-template T]

Uses the sans-IO client core on trio; prints one JSON line: players that received video,
total bytes, seconds. Stops by itself after --seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rtmp_ingest.rtmp import NEED_DATA, ClientConnection
from rtmp_ingest.rtmp import events as ev


async def player(url_path: str, port: int, stats: dict, index: int) -> None:
    app, _, name = url_path.partition("/")
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = ClientConnection()
    conn.connect(app, tc_url=f"rtmp://127.0.0.1:{port}/{app}")
    conn.create_stream()
    conn.play(1, name)
    await stream.send_all(conn.data_to_send())
    while True:
        data = await stream.receive_some(65536)
        if not data:
            return
        stats["bytes"] += len(data)
        conn.receive_data(data)
        while (event := conn.next_event()) is not NEED_DATA:
            if isinstance(event, ev.VideoData):
                stats["video"].add(index)
            elif isinstance(event, ev.ConnectionClosed):
                return
        out = conn.data_to_send()
        if out:
            await stream.send_all(out)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("-n", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--url-template", default="live/s{i}?sourceId=cam{i}")
    args = parser.parse_args()
    stats: dict = {"bytes": 0, "video": set()}
    with trio.move_on_after(args.seconds):
        async with trio.open_nursery() as nursery:
            for i in range(args.n):
                nursery.start_soon(player, args.url_template.format(i=i), args.port, stats, i)
    print(
        json.dumps(
            {
                "players": args.n,
                "players_with_video": len(stats["video"]),
                "bytes": stats["bytes"],
                "seconds": args.seconds,
            }
        )
    )


if __name__ == "__main__":
    trio.run(main)

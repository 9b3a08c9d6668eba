"""A player in its own process: `python -m tests.hostile.watch PORT APP NAME SECONDS`.

Plays rtmp://127.0.0.1:PORT/APP/NAME until its stdin closes (at most SECONDS) and
prints the time.monotonic() of every video message as one JSON list. A test that
floods the daemon from its own process uses it, so the flood's CPU in the test
process cannot show up as the player's gap.
"""

from __future__ import annotations

import json
import sys
import time

import trio

from tests.hostile.tools import Watch


async def _main(port: int, app: str, name: str, seconds: float) -> list[float]:
    watch = Watch()
    arrivals: list[float] = []
    offset = time.monotonic() - trio.current_time()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            await nursery.start(watch.run, port, app, name)
            await watch.first.wait()
            print("playing", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()  # stdin closed: the test is done
    arrivals = [t + offset for t in watch.arrivals]
    return arrivals


def main(argv: list[str] | None = None) -> int:
    port, app, name, seconds = (argv if argv is not None else sys.argv[1:])[:4]
    arrivals = trio.run(_main, int(port), app, name, float(seconds))
    print(json.dumps(arrivals), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m rtmp_ingest.cluster.run_worker serve …`: how the supervisor starts a worker.

The same `rtmp-ingest serve` as a user runs; `RTMP_INGEST_WORKER` (set by the
supervisor, cluster/worker.py) makes it a worker instead of a supervisor.

A worker ends when its supervisor dies, however it dies (`kill -9` included): a
watcher thread sees the parent change and sends the worker SIGTERM, so no orphan keeps
the shared ports. (Not PR_SET_PDEATHSIG: trio starts processes from a worker thread,
and the signal would come when that thread retires, not when the supervisor dies.)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from rtmp_ingest.cli import main
from rtmp_ingest.cluster.supervisor import SUPERVISOR_PID_ENV

#: How often a worker checks that its supervisor is still its parent.
PARENT_CHECK_S = 0.5


def end_with_parent(parent_pid: int) -> None:
    """SIGTERM to this process once `parent_pid` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


if __name__ == "__main__":
    end_with_parent(int(os.environ.get(SUPERVISOR_PID_ENV, os.getppid())))
    sys.exit(main())

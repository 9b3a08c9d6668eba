"""`python -m rtmp_ingest.cluster.run_worker serve …`: how the supervisor starts a worker.

The same `rtmp-ingest serve` as a user runs; `RTMP_INGEST_WORKER` (set by the
supervisor, cluster/worker.py) makes it a worker instead of a supervisor.

A worker ends when its supervisor dies, however it dies (`kill -9` included): the
kernel sends it SIGTERM (PR_SET_PDEATHSIG), so no orphan keeps the shared ports.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from rtmp_ingest.cli import main
from rtmp_ingest.cluster.supervisor import SUPERVISOR_PID_ENV

#: prctl(2) option: the signal this process gets when its parent thread exits
PR_SET_PDEATHSIG = 1


def end_with_parent(parent_pid: int) -> None:
    """SIGTERM when the supervisor goes (Linux; elsewhere the supervisor's drain only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  #: it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    end_with_parent(int(os.environ.get(SUPERVISOR_PID_ENV, os.getppid())))
    sys.exit(main())

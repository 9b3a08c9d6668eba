"""`python -m rtmp_ingest.cluster.run_worker serve …`: how the supervisor starts a worker.

The same `rtmp-ingest serve` as a user runs; `RTMP_INGEST_WORKER` (set by the
supervisor, cluster/worker.py) makes it a worker instead of a supervisor.
"""

from __future__ import annotations

import sys

from rtmp_ingest.cli import main

if __name__ == "__main__":
    sys.exit(main())

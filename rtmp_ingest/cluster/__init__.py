"""More cores (workers) and more machines (nodes): docs/spec.md §9.

Only the name below is imported by the CLI for every command; the rest loads when a
supervisor, a worker or a cluster node starts (`token create` loads no web stack)."""

from typing import Final

#: The environment variable that makes `rtmp-ingest serve` a worker (set by the supervisor).
WORKER_ENV: Final = "RTMP_INGEST_WORKER"

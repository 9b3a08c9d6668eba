"""One worker's side of the machine: ownership, hand-offs, and the link to the supervisor.

A worker is the normal `App` (app.py) with a `WorkerAgent`. The agent

- answers the RTMP listener's `owner_of` from its `WorkerOwnership` (rendezvous over
  the live workers, the supervisor's overrides first) and hands connections over
  (`hand_over`: the descriptor for plain RTMP, a plaintext relay for RTMPS — see
  cluster/transfer.py);
- receives the connections other workers hand to it (`HandoffServer`, which starts
  them in the RTMP listener);
- keeps one line-delimited JSON connection to the supervisor: it says hello (id, pid,
  bound addresses) once it serves, reports the stream paths its registry holds when
  they change (checked every `HOLDS_CHECK_S`), and takes the table of live workers and
  overrides the supervisor sends. If the supervisor goes away the worker shuts down:
  no orphan keeps ports the next supervisor needs.

Where things live is fixed by the run directory the supervisor made (`Layout`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import trio

from rtmp_ingest.cluster.forward import Forwarder
from rtmp_ingest.cluster.handoff import Handoff, HandoffError
from rtmp_ingest.cluster.ownership import Local, Worker, WorkerOwnership
from rtmp_ingest.cluster.transfer import HandoffServer, relay, send_connection

log = logging.getLogger("rtmp_ingest.cluster")

#: How often a worker compares the stream paths it holds with what it last reported.
HOLDS_CHECK_S: Final = 0.2
#: The longest control line either side accepts (a table of many held streams).
MAX_CONTROL_LINE_BYTES: Final = 8 * 1024 * 1024
#: The environment variable that makes `rtmp-ingest serve` a worker (set by the supervisor).
WORKER_ENV: Final = "RTMP_INGEST_WORKER"


@attrs.frozen(kw_only=True)
class Layout:
    """The run directory's sockets, and who this worker is."""

    run_dir: str
    worker_id: int
    count: int
    #: proves an internal HTTP request came from a worker (never leaves the machine)
    hop_secret: str
    #: this worker serves SRT (only one does: a UDP flow cannot be handed over)
    srt: bool

    def handoff_socket(self, worker_id: int) -> str:
        return str(Path(self.run_dir) / f"w{worker_id}.handoff")

    def http_socket(self, worker_id: int) -> str:
        return str(Path(self.run_dir) / f"w{worker_id}.http")

    @property
    def control_socket(self) -> str:
        return str(Path(self.run_dir) / "control.sock")

    def to_env(self) -> str:
        return json.dumps(attrs.asdict(self))

    @classmethod
    def from_env(cls, text: str) -> Layout:
        data = json.loads(text)
        return cls(
            run_dir=str(data["run_dir"]),
            worker_id=int(data["worker_id"]),
            count=int(data["count"]),
            hop_secret=str(data["hop_secret"]),
            srt=bool(data["srt"]),
        )


class AppView(Protocol):
    """What the agent uses of the App."""

    @property
    def registry(self) -> Any: ...

    @property
    def rtmp(self) -> Any: ...

    def shutdown(self) -> None: ...


class WorkerAgent:
    """The worker's `HandoffHook` and its supervisor link (see the module docstring)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.worker_id = layout.worker_id
        self.pid = os.getpid()
        #: until the supervisor's first table: every configured worker counts as live
        self.ownership = WorkerOwnership(layout.worker_id, live=range(layout.count))
        #: worker id → pid, as the supervisor last said
        self.pids: dict[int, int] = {layout.worker_id: self.pid}
        self.handoffs_out = 0
        self.handoffs_in = 0
        self._server: HandoffServer | None = None

    # -- HandoffHook ---------------------------------------------------------------------

    def owner_of(self, stream_path: str) -> Local | Worker:
        return self.ownership.owner_of(stream_path)

    def owner_id(self, stream_path: str) -> int:
        return self.ownership.owner_id(stream_path)

    def live_workers(self) -> list[int]:
        return sorted(self.ownership.live)

    # -- HTTP (cluster/forward.py) ---------------------------------------------------------

    def http_socket(self, worker_id: int) -> str:
        return self.layout.http_socket(worker_id)

    @property
    def hop_secret(self) -> str:
        return self.layout.hop_secret

    @property
    def internal_http_socket(self) -> str:
        """Where this worker serves the other workers' forwarded requests."""
        path = self.layout.http_socket(self.worker_id)
        _unlink(path)
        return path

    def http_middleware(self, app: Any) -> Any:
        return Forwarder(app, self)

    async def hand_over(self, stream: Any, owner: Worker, handoff: Handoff) -> None:
        path = self.layout.handoff_socket(owner.worker_id)
        if isinstance(stream, trio.SocketStream):
            await send_connection(path, stream.socket.fileno(), handoff)
            self.handoffs_out += 1
            return
        #: TLS: keep it here, give the owner a plaintext end (cluster/transfer.py)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await send_connection(path, theirs.fileno(), handoff)
        except HandoffError:
            mine.close()
            raise
        finally:
            theirs.close()
        self.handoffs_out += 1
        log.info(
            "relaying rtmps remote=%s stream=%s to worker=%d",
            handoff.remote,
            handoff.stream_path,
            owner.worker_id,
        )
        await relay(stream, trio.SocketStream(trio.socket.from_stdlib_socket(mine)))

    # -- running -------------------------------------------------------------------------

    async def run(
        self,
        app: AppView,
        bound: dict[str, Any],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Receives hand-offs and talks to the supervisor until the worker ends."""

        def adopt(sock: socket.socket, handoff: Handoff) -> None:
            self.handoffs_in += 1
            app.rtmp.adopt(sock, handoff)

        server = self._server = HandoffServer(adopt)
        path = self.layout.handoff_socket(self.worker_id)
        _unlink(path)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run, path)
            control = await trio.open_unix_socket(self.layout.control_socket)
            nursery.start_soon(self._read_tables, control, app)
            await _send_line(control, {"hello": self.worker_id, "pid": self.pid, "bound": bound})
            task_status.started()
            await self._report_holds(control, app)

    async def _report_holds(self, control: trio.SocketStream, app: AppView) -> None:
        reported: list[str] | None = None
        while True:
            holds = sorted(app.registry.stream_paths())
            if holds != reported:
                await _send_line(control, {"holds": holds})
                reported = holds
            await trio.sleep(HOLDS_CHECK_S)

    async def _read_tables(self, control: trio.SocketStream, app: AppView) -> None:
        buffer = bytearray()
        try:
            while True:
                data = await control.receive_some(65536)
                if not data:
                    break
                buffer += data
                if len(buffer) > MAX_CONTROL_LINE_BYTES:
                    raise ValueError("control line too long")
                while b"\n" in buffer:
                    line, _, rest = bytes(buffer).partition(b"\n")
                    buffer = bytearray(rest)
                    self._apply(json.loads(line))
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as exc:
            log.error("supervisor link broken: %s", exc)
        log.warning("worker=%d: the supervisor is gone; shutting down", self.worker_id)
        app.shutdown()

    def _apply(self, table: dict[str, Any]) -> None:
        live = [int(w) for w in table.get("live", [])]
        overrides = {str(p): int(w) for p, w in table.get("overrides", {}).items()}
        self.pids = {int(w): int(pid) for w, pid in table.get("pids", {}).items()}
        self.pids[self.worker_id] = self.pid
        self.ownership.update(live=live, overrides=overrides)
        log.debug("worker=%d live=%s overrides=%d", self.worker_id, live, len(overrides))


async def _send_line(stream: trio.SocketStream, message: dict[str, Any]) -> None:
    await stream.send_all(json.dumps(message, separators=(",", ":")).encode() + b"\n")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

"""One worker's side of the machine: ownership, hand-offs, and the link to the supervisor.

A worker is the normal `App` (app.py) with a `WorkerAgent`. The agent

- answers the RTMP listener's `owner_of` from its `WorkerOwnership` (rendezvous over
  the live workers, the supervisor's holders first) and hands connections over
  (`hand_over`: the descriptor for plain RTMP, a plaintext relay for RTMPS — see
  cluster/transfer.py);
- receives the connections other workers hand to it (`HandoffServer`, which starts
  them in the RTMP listener);
- keeps one line-delimited JSON connection to the supervisor: it says hello (id, pid)
  and waits for the supervisor's table *before* the App binds its listeners (no
  connection is routed on a guess), says `serving` (bound addresses) once it
  listens — only then do the others count it live — reports the stream paths its
  registry holds whenever the bundle changes (and at least every `HOLDS_CHECK_S`), and
  takes every new table of live workers and holders. If the supervisor goes away the
  worker shuts down: no orphan keeps ports the next supervisor needs.

A stream this worker's registry holds is always its own (`owner_of`), whatever the
table says: the table may lag a hold by one report.

Where things live is fixed by the run directory the supervisor made (`Layout`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import trio

from rtmp_ingest.cluster.forward import Forwarder
from rtmp_ingest.cluster.handoff import Handoff, HandoffError
from rtmp_ingest.cluster.ownership import LOCAL, Local, Worker, WorkerOwnership
from rtmp_ingest.cluster.relay import check_hop
from rtmp_ingest.cluster.transfer import HandoffServer, relay, send_connection
from rtmp_ingest.server.placement import Vouched

log = logging.getLogger("rtmp_ingest.cluster")

#: How often a worker compares the stream paths it holds with what it last reported.
HOLDS_CHECK_S: Final = 0.2
#: The longest control line either side accepts (a table of many held streams).
MAX_CONTROL_LINE_BYTES: Final = 8 * 1024 * 1024
#: How long a new worker waits for the supervisor's first table before giving up.
FIRST_TABLE_TIMEOUT_S: Final = 30.0


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
    def bundle_changed(self) -> trio.Event: ...

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
        self._app: AppView | None = None
        self._control: trio.SocketStream | None = None
        #: worker id → how often the supervisor restarted it, as it last said
        self.restarts: dict[int, int] = {}
        self._send_lock = trio.StrictFIFOLock()
        self._first_table = trio.Event()
        self._table_changed = trio.Event()

    # -- HandoffHook ---------------------------------------------------------------------

    def _holds(self, stream_path: str) -> bool:
        app = self._app
        return (
            app is not None and app.registry.stream_statistics(stream_path, now_s=0.0) is not None
        )

    def owner_of(self, stream_path: str) -> Local | Worker:
        if self._holds(stream_path):
            return LOCAL
        return self.ownership.owner_of(stream_path)

    def owner_id(self, stream_path: str) -> int:
        if self._holds(stream_path):
            return self.worker_id
        return self.ownership.owner_id(stream_path)

    def held_elsewhere(self, stream_path: str) -> int | None:
        """The other worker that holds `stream_path`, or None (SRT admission asks this)."""
        if self._holds(stream_path):
            return None
        holder = self.ownership.holder_of(stream_path)
        return holder if holder != self.worker_id else None

    def inbound(
        self, stream_path: str, query: Mapping[str, str], remote: str
    ) -> tuple[dict[str, str], Vouched | None]:
        """The query without internal credentials, and the encoder's address when another
        worker's relay (an SRT publish, cluster/hops.py `WorkerRelays`) vouched for it."""
        return check_hop(
            self.layout.hop_secret.encode("utf-8"),
            query,
            stream_path=stream_path,
            now_s=time.time(),
        )

    def live_workers(self) -> list[int]:
        return sorted(self.ownership.live)

    @property
    def worker_count(self) -> int:
        """The workers the supervisor runs (live or restarting)."""
        return self.layout.count

    async def wait_table_changed(self) -> None:
        """Returns once the supervisor's next table is in."""
        await self._table_changed.wait()

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
        self, app: AppView, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Receives hand-offs and talks to the supervisor until the worker ends; started
        once the supervisor's first table is in (the App binds its listeners after that)."""
        self._app = app

        def adopt(sock: socket.socket, handoff: Handoff) -> None:
            self.handoffs_in += 1
            app.rtmp.adopt(sock, handoff)

        server = self._server = HandoffServer(adopt)
        path = self.layout.handoff_socket(self.worker_id)
        _unlink(path)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run, path)
            control = self._control = await trio.open_unix_socket(self.layout.control_socket)
            nursery.start_soon(self._read_tables, control, app)
            await self._send({"hello": self.worker_id, "pid": self.pid})
            with trio.fail_after(FIRST_TABLE_TIMEOUT_S):
                await self._first_table.wait()
            task_status.started()
            await self._report_holds(app)

    async def serving(self, bound: dict[str, Any]) -> None:
        """Tells the supervisor this worker listens (from now on it is live for all)."""
        await self._send({"serving": bound})

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._control is not None
        async with self._send_lock:
            await _send_line(self._control, message)

    async def _report_holds(self, app: AppView) -> None:
        reported: list[str] | None = None
        while True:
            holds = sorted(app.registry.stream_paths())
            if holds != reported:
                await self._send({"holds": holds})
                reported = holds
            with trio.move_on_after(HOLDS_CHECK_S):
                await app.bundle_changed.wait()

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
        holders = {str(p): int(w) for p, w in table.get("holders", {}).items()}
        self.pids = {int(w): int(pid) for w, pid in table.get("pids", {}).items()}
        self.pids[self.worker_id] = self.pid
        self.restarts = {int(w): int(n) for w, n in table.get("restarts", {}).items()}
        self.ownership.update(live=live, holders=holders)
        self._first_table.set()
        self._table_changed.set()
        self._table_changed = trio.Event()
        log.debug("worker=%d live=%s holders=%d", self.worker_id, live, len(holders))


async def _send_line(stream: trio.SocketStream, message: dict[str, Any]) -> None:
    await stream.send_all(json.dumps(message, separators=(",", ":")).encode() + b"\n")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

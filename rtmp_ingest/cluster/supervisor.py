"""`rtmp-ingest serve --workers N`: start N workers on the same ports, watch, restart.

docs/spec.md §9. The supervisor serves no client itself. It

1. makes a private run directory (unix sockets: its control socket, each worker's
   hand-off and internal HTTP sockets) and resolves every port 0 the configuration
   asks for into one real port, held by a bound (not listening) `SO_REUSEPORT`
   socket so every worker can bind it too;
2. creates the keyring once (the workers share `data_dir`; two first starts would
   race to write the secret);
3. starts each worker as `rtmp-ingest serve` with the resolved addresses and
   `RTMP_INGEST_WORKER` set (cluster/worker.py); only worker 0 serves SRT;
4. keeps the table every worker routes by — the live workers (a worker is live from
   the moment it says it serves until its process ends), their pids, and the holders
   (every stream a live worker holds: a stream stays where it is even when that is not,
   or no longer, its rendezvous owner, cluster/ownership.py) — and sends it to all
   whenever it changes;
5. restarts a worker that dies after a backoff (`RESTART_BACKOFF_S`, doubling up to
   `RESTART_BACKOFF_MAX_S`, reset after `STABLE_AFTER_S` of life): only the streams
   it owned are lost, and their encoders reconnect to a live worker;
6. on SIGTERM/SIGINT sends SIGTERM to every worker, which drains as a single server
   does, and kills what is left after `WORKER_SHUTDOWN_S`; SIGHUP is passed on.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from rtmp_ingest.cluster import WORKER_ENV
from rtmp_ingest.cluster.worker import MAX_CONTROL_LINE_BYTES, Layout
from rtmp_ingest.config import StartupError, parse_host_port

log = logging.getLogger("rtmp_ingest.cluster")

#: First wait before restarting a worker that died.
RESTART_BACKOFF_S: Final = 0.5
#: The longest wait between restarts of a worker that keeps dying.
RESTART_BACKOFF_MAX_S: Final = 30.0
#: A worker that lived this long starts again from the first backoff.
STABLE_AFTER_S: Final = 30.0
#: How long workers get to drain after SIGTERM before they are killed: the listener's
#: own bound (server/listener.py SHUTDOWN_TIMEOUT_S, 5 s) plus the recorder's close.
WORKER_SHUTDOWN_S: Final = 8.0
#: How long writing one table to a worker may take (a worker that does not read is cut
#: off; it then shuts down and is restarted).
LINK_SEND_TIMEOUT_S: Final = 10.0
#: How long a new worker may take to say hello before the start counts as failed.
WORKER_START_TIMEOUT_S: Final = 60.0


@attrs.frozen(kw_only=True)
class WorkerPlan:
    """What the supervisor needs to start workers."""

    count: int
    #: `rtmp-ingest serve` arguments every worker gets (addresses resolved)
    argv: tuple[str, ...]
    #: the addresses as clients reach them (for the log line)
    addresses: Mapping[str, str]


def _reserve(key: str, listen: str, reserved: list[socket.socket]) -> str:
    """HOST:PORT held by a bound SO_REUSEPORT socket (port 0 replaced by the free port it
    got), so the workers can all bind it; a port another program holds is a StartupError
    naming the key, as a single server says it."""
    host, port = parse_host_port(listen, key=key)
    shown = f"[{host}]" if ":" in host else host
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise StartupError(f"{key} {shown}:{port}: {exc.strerror or exc}") from None
    reserved.append(sock)
    return f"{shown}:{sock.getsockname()[1]}"


#: tells a worker its supervisor's pid (cluster/run_worker.py ends it with the supervisor)
SUPERVISOR_PID_ENV = "RTMP_INGEST_SUPERVISOR_PID"


class _Link:
    """A worker's control connection: the table last sent on it, and its sender's wake-up."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.sent: dict[str, Any] | None = None
        self.wake = trio.Event()


class Supervisor:
    """Starts, watches and restarts the workers (see the module docstring)."""

    def __init__(self, config: Any, *, count: int, config_file: str | None) -> None:
        self.config = config
        self.count = count
        self.config_file = config_file
        self._reserved: list[socket.socket] = []
        self.addresses = self._resolve_addresses()
        self.run_dir = tempfile.mkdtemp(prefix="rtmp-ingest-workers-")  #: mode 0700
        self.hop_secret = secrets.token_hex(16)
        #: worker id → its process (while it runs), its pid, and what it holds
        self.processes: dict[int, trio.Process] = {}
        self.live: dict[int, int] = {}
        self.holds: dict[int, list[str]] = {}
        self.bound: dict[int, dict[str, Any]] = {}
        self._links: dict[int, _Link] = {}
        self._table: dict[str, Any] | None = None
        self._stopping = False
        self._ready = trio.Event()
        self.restarts = 0
        #: worker id → how often it was restarted (in the table: the merged /metrics)
        self.worker_restarts: dict[int, int] = {}
        #: why the first start failed (a worker died before it served): the exit status
        self.start_failure: str | None = None
        self.exit_code = 0
        #: workers that were starting when SIGHUP came: they get it once they serve
        self._reload_owed: set[int] = set()
        self._cancel: trio.CancelScope | None = None

    def _resolve_addresses(self) -> dict[str, str]:
        config = self.config
        found = {"rtmp": _reserve("rtmp.listen", config.rtmp.listen, self._reserved)}
        if config.rtmps.listen:
            found["rtmps"] = _reserve("rtmps.listen", config.rtmps.listen, self._reserved)
        if config.http.listen:
            found["http"] = _reserve("http.listen", config.http.listen, self._reserved)
        if config.srt.enabled:
            found["srt"] = config.srt.listen  #: one worker binds it (port 0: its choice)
        return found

    def worker_argv(self) -> list[str]:
        argv = [sys.executable, "-m", "rtmp_ingest.cluster.run_worker", "serve"]
        if self.config_file:
            argv += ["--config", self.config_file]
        argv += ["--data-dir", self.config.data_dir]
        for key, value in self.addresses.items():
            argv += [f"--{key}", value]
        return argv

    def layout(self, worker_id: int) -> Layout:
        return Layout(
            run_dir=self.run_dir,
            worker_id=worker_id,
            count=self.count,
            hop_secret=self.hop_secret,
            srt=worker_id == 0,
        )

    # -- the table -------------------------------------------------------------------

    def table(self) -> dict[str, Any]:
        holders = {path: w for w, paths in self.holds.items() if w in self.live for path in paths}
        return {
            "live": sorted(self.live),
            "pids": {str(w): pid for w, pid in self.live.items()},
            "holders": holders,
            "restarts": {str(w): n for w, n in self.worker_restarts.items()},
        }

    def _publish_table(self) -> None:
        """Makes the current table the one every link's sender sends next (coalesced: a
        burst of changes — hundreds of streams starting — costs one line per worker)."""
        table = self.table()
        if table == self._table:
            return
        self._table = table
        for link in self._links.values():
            link.wake.set()

    async def _send_tables(self, link: _Link) -> None:
        """The one task that writes to a worker's link: the latest table, whole lines."""
        while True:
            table = self._table
            if table is not None and table is not link.sent:
                line = json.dumps(table, separators=(",", ":")).encode() + b"\n"
                with trio.fail_after(LINK_SEND_TIMEOUT_S):
                    await link.stream.send_all(line)
                link.sent = table
                continue
            link.wake = trio.Event()
            await link.wake.wait()

    async def _serve_link(self, stream: trio.SocketStream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await self._read_link(stream, nursery)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            log.warning("worker link closed: %s", exc)
        finally:
            await trio.aclose_forcefully(stream)

    async def _read_link(self, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        worker_id: int | None = None
        pid = 0
        buffer = bytearray()
        link: _Link | None = None
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                buffer += data
                if len(buffer) > MAX_CONTROL_LINE_BYTES:
                    break
                while b"\n" in buffer:
                    line, _, rest = bytes(buffer).partition(b"\n")
                    buffer = bytearray(rest)
                    message = json.loads(line)
                    if "hello" in message and link is None:
                        worker_id = int(message["hello"])
                        pid = int(message["pid"])
                        link = self._links[worker_id] = _Link(stream)
                        if self._table is None:
                            self._table = self.table()
                        nursery.start_soon(self._send_tables, link)
                    elif "serving" in message and worker_id is not None:
                        self.live[worker_id] = pid
                        self.bound[worker_id] = dict(message["serving"] or {})
                        log.info("worker=%d pid=%d serving", worker_id, pid)
                        if worker_id in self._reload_owed:
                            self._reload_owed.discard(worker_id)
                            self.signal_workers(signal.SIGHUP, only={worker_id})
                        if len(self.live) == self.count:
                            self._ready.set()
                    elif "holds" in message and worker_id is not None:
                        self.holds[worker_id] = [str(p) for p in message["holds"]]
                    self._publish_table()
        except ValueError as exc:
            log.warning("worker=%s sent a bad control line: %s", worker_id, exc)
        finally:
            if worker_id is not None and self._links.get(worker_id) is link:
                self._links.pop(worker_id, None)

    async def _serve_control(self, *, task_status: trio.TaskStatus[None]) -> None:
        path = self.layout(0).control_socket
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen(self.count * 2)
        listener = trio.SocketListener(sock)
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._serve_link, [listener], handler_nursery=nursery)

    # -- workers ---------------------------------------------------------------------

    async def _run_worker(self, worker_id: int) -> None:
        """Runs worker `worker_id`, restarting it whenever it dies, until shutdown."""
        backoff = RESTART_BACKOFF_S
        layout = self.layout(worker_id)
        while not self._stopping:
            env = {**os.environ, WORKER_ENV: layout.to_env(), SUPERVISOR_PID_ENV: str(os.getpid())}
            #: its own session: a terminal's Ctrl-C reaches the supervisor, which stops it
            process = await trio.lowlevel.open_process(
                self.worker_argv(), env=env, start_new_session=True
            )
            self.processes[worker_id] = process
            started = trio.current_time()
            code = await process.wait()
            self.processes.pop(worker_id, None)
            self.live.pop(worker_id, None)
            self.holds.pop(worker_id, None)
            self._publish_table()
            if self._stopping:
                return
            if not self._ready.is_set() and self._cancel is not None:
                #: a worker that cannot start at all (port taken, bad file): stop, say so
                self.start_failure = f"worker {worker_id} exited with code {code} before serving"
                self.exit_code = code if code > 0 else 1
                self._stopping = True
                self.signal_workers(signal.SIGTERM)
                self._cancel.cancel()
                return
            lived = trio.current_time() - started
            if lived >= STABLE_AFTER_S:
                backoff = RESTART_BACKOFF_S
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            log.error(
                "worker=%d pid=%d died (%s) after %.1f s; its streams are lost, "
                "restarting in %.1f s",
                worker_id,
                process.pid,
                how,
                lived,
                backoff,
            )
            self.restarts += 1
            self.worker_restarts[worker_id] = self.worker_restarts.get(worker_id, 0) + 1
            await trio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)

    def signal_workers(self, signum: int, *, only: set[int] | None = None) -> None:
        for worker_id, process in list(self.processes.items()):
            if process.returncode is None and (only is None or worker_id in only):
                try:
                    process.send_signal(signum)
                except ProcessLookupError:
                    pass

    async def stop(self) -> None:
        """SIGTERM to every worker; whatever still runs after WORKER_SHUTDOWN_S is killed."""
        self._stopping = True
        self.signal_workers(signal.SIGTERM)
        with trio.move_on_after(WORKER_SHUTDOWN_S):
            while any(p.returncode is None for p in self.processes.values()):
                await trio.sleep(0.05)
        for worker_id, process in list(self.processes.items()):
            if process.returncode is None:
                log.warning("worker=%d pid=%d did not stop in time: killed", worker_id, process.pid)
                process.kill()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        try:
            with trio.open_signal_receiver(*signals) as received:
                async with trio.open_nursery() as nursery:
                    self._cancel = nursery.cancel_scope
                    nursery.start_soon(self._on_signals, received, nursery.cancel_scope)
                    await nursery.start(self._serve_control)
                    for worker_id in range(self.count):
                        nursery.start_soon(self._run_worker, worker_id)
                    with trio.move_on_after(WORKER_START_TIMEOUT_S):
                        await self._ready.wait()
                    if not self._ready.is_set():
                        log.error("workers did not all start in %.0f s", WORKER_START_TIMEOUT_S)
                    self._log_listening()
                    task_status.started()
        finally:
            self.close()

    async def _on_signals(self, received: Any, scope: trio.CancelScope) -> None:
        async for signum in received:
            if signum == signal.SIGHUP:
                #: to workers that serve (and so handle it); one still starting may have
                #: read the file before it changed: it gets the signal once it serves
                self.signal_workers(signal.SIGHUP, only=set(self.live))
                self._reload_owed = set(self.processes) - set(self.live)
                continue
            log.info("%s received: stopping the workers", signal.Signals(signum).name)
            await self.stop()
            scope.cancel()

    def close(self) -> None:
        """Frees the reserved ports and removes the run directory (idempotent)."""
        for sock in self._reserved:
            sock.close()
        self._reserved.clear()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _log_listening(self) -> None:
        srt = next((b["srt"] for b in self.bound.values() if b.get("srt")), None)
        parts = [f"rtmp={self.addresses['rtmp']}"]
        if "rtmps" in self.addresses:
            parts.append(f"rtmps={self.addresses['rtmps']}")
        if srt:
            parts.append(f"srt={srt[0]}:{srt[1]}")
        parts.append(f"http={self.addresses['http']}" if "http" in self.addresses else "http=off")
        pids = ",".join(str(self.live[w]) for w in sorted(self.live))
        log.info("listening %s workers=%d pids=%s", " ".join(parts), self.count, pids)


def serve_workers(config: Any, *, count: int, config_file: str | None) -> int:
    """Runs the supervisor until SIGTERM/SIGINT (the `serve --workers N` path); returns the
    exit status (a worker that could not start said why on stderr; its status is passed on).

    Raises StartupError when a port is taken (before any worker starts)."""
    from rtmp_ingest.auth import Keyring, KeyringError  # noqa: PLC0415 - the supervisor only

    try:
        #: the secret is created once, before workers sharing data_dir could race to write it
        Keyring.load(Path(config.data_dir), secret=config.auth.secret)
    except KeyringError as exc:
        raise StartupError(str(exc)) from None
    supervisor = Supervisor(config, count=count, config_file=config_file)
    try:
        trio.run(supervisor.run)
    finally:
        supervisor.close()
    if supervisor.start_failure is not None:
        log.error("%s; stopped", supervisor.start_failure)
    return supervisor.exit_code

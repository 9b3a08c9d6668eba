"""The SRT ingest driver: libsrt's listener and worker threads around the TS core.

libsrt sockets are not OS descriptors, so trio cannot wait on them. Instead:

- **Admission before accept.** libsrt calls the listen callback in its own
  receive thread with the caller's stream id, before the handshake completes.
  The callback parses the stream id (pure, `srt.streamid`), then makes one
  bounded round trip into the trio thread (`ADMIT_TIMEOUT_S`) where the same
  publish policy as RTMP and WHIP runs (the injected `decide`) and the bundle
  admits the feed (`registry.request_publish`). A refusal becomes the reject
  reason the caller's srt_connect reports (1000 + the HTTP status: 1400, 1401,
  1403, 1404, 1405, 1409, 1429, 1503) and a log line that says why. An
  admitted caller gets its app's passphrase set on its socket right there.
  The round trip holds libsrt's receive thread for its duration (a few µs of
  trio work; the timeout bounds a busy loop), so nothing else is done in it.
- **Reading in worker threads.** `reader_threads` threads each own an SRT
  epoll set; a connection is added to the least loaded one when accepted. A
  worker waits in srt_epoll_uwait, drains every ready socket (non-blocking
  srt_recvmsg, up to `MAX_BATCH_BYTES` a socket a wakeup), and hands the
  batch to trio with one `trio.from_thread.run_sync` — which also bounds what
  is in flight to one batch a worker: when trio is busy the workers wait and
  libsrt buffers (its latency window) absorb it.
- **In trio**, each batch is demuxed (`ts.TsMedia`) and its frames pushed into
  the bundle synchronously, like an RTMP feed. One task per session waits
  for the end: disconnect (srt_recvmsg error / epoll error), the idle
  timeout, or `kick()` (supersede, operator, shutdown). Sockets are closed by
  their worker (`srt_close` from the thread that reads them).

SRT has no status message after the handshake: a kicked caller sees the
connection close; the reason is in the server's log.
"""

from __future__ import annotations

import collections
import ctypes
import enum
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import attrs
import trio

from rtmp_ingest.bundle import Admitted, EndReason, PublishRequest, RefusalCode, Refused
from rtmp_ingest.config import SrtConfig, parse_host_port
from rtmp_ingest.server.srt_relay import SrtPlacement
from rtmp_ingest.server.srt_session import Pending, SrtSession
from rtmp_ingest.srt import lib
from rtmp_ingest.srt.streamid import StreamId, StreamIdError
from rtmp_ingest.srt.streamid import parse as parse_stream_id

log = logging.getLogger("rtmp_ingest.srt")

#: How long the listen callback waits for trio's publish decision before rejecting with
#: 1503 (it holds libsrt's receive thread meanwhile: keep it short).
ADMIT_TIMEOUT_S = 0.5
#: An admitted caller whose handshake then fails (wrong passphrase) is never accepted:
#: its pending feed ends after this long.
PENDING_ACCEPT_S = 5.0
#: srt_epoll_uwait timeout: how soon a worker notices shutdown and close requests.
POLL_MS = 100
#: Bytes read from one socket per wakeup before the others get their turn.
MAX_BATCH_BYTES = 256 * 1024  # ~0.7 s of a 3 Mbit/s feed; 200 SRT messages
#: recvmsg buffer: SRT's largest live payload (SRTO_PAYLOADSIZE ≤ 1456) with room to spare
MESSAGE_BYTES = 1500
#: Media an SRT publish to be relayed may queue while the stream's owner is found and
#: answers (the app sets `cluster.relay_max_buffer_bytes`): ~20 s of a 3 Mbit/s feed.
RELAY_BACKLOG_BYTES = 8 * 1024 * 1024
#: srt_listen backlog (connections accepted by libsrt, not yet by us)
LISTEN_BACKLOG = 64

#: bundle refusal → HTTP status (→ SRT reject reason 1000 + status)
HTTP_STATUS_OF_REFUSAL = {
    RefusalCode.INVALID_STREAM_PATH: 400,
    RefusalCode.INVALID_SOURCE_ID: 400,
    RefusalCode.MULTISOURCE_NOT_PERMITTED: 403,
    RefusalCode.SOURCE_ID_NOT_ALLOWED: 403,
    RefusalCode.TOO_MANY_STREAMS: 429,
    RefusalCode.TOO_MANY_SOURCES: 429,
    RefusalCode.TOO_MANY_FEEDS: 429,
}


# -- the seams ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SrtPublishAttempt:
    """What a publisher asks for, in the shape of the shared publish policy's input."""

    protocol: str
    app: str
    stream: str
    source_id: str
    query: dict[str, str]
    remote_ip: str
    remote: str
    token: str
    priority: int = 0


@runtime_checkable
class Permit(Protocol):
    """The policy's yes: the bundle request to make, and whether to record the feed."""

    @property
    def request(self) -> PublishRequest: ...
    @property
    def record(self) -> bool: ...


class Refusal(Protocol):
    """The policy's no: why (for the log) and the HTTP status (→ the reject reason)."""

    @property
    def code(self) -> enum.Enum: ...
    @property
    def log_text(self) -> str: ...
    @property
    def status_text(self) -> str: ...
    @property
    def http_status(self) -> int: ...


class Decide(Protocol):
    """`auth.policy.decide`: one pure function from an attempt to a decision."""

    def __call__(self, attempt: Any, /, *, now_s: float) -> Permit | Refusal: ...


class Host(Protocol):
    """What the driver needs of the daemon."""

    @property
    def registry(self) -> Any: ...
    def feed_started(self, session: Any, /) -> None: ...
    def end_feed(self, session: Any, reason: EndReason, /) -> None: ...


# -- admission state -----------------------------------------------------------------


@attrs.define
class _Verdict:
    """The trio side's answer to one listen callback (filled in the trio thread)."""

    done: threading.Event = attrs.Factory(threading.Event)
    reject: int = 0
    abandoned: bool = False
    lock: threading.Lock = attrs.Factory(threading.Lock)


@attrs.define
class _Worker:
    epoll: lib.Epoll
    closes: queue.SimpleQueue[int] = attrs.Factory(queue.SimpleQueue)
    sockets: set[int] = attrs.Factory(set)


# -- the server -----------------------------------------------------------------------


class SrtServer:
    """The SRT listener: admission in libsrt's callback, reading in worker threads."""

    def __init__(
        self,
        host: Host,
        config: SrtConfig,
        *,
        decide: Decide,
        make_attempt: Callable[..., Any] = SrtPublishAttempt,
    ) -> None:
        self.host = host
        self.config = config
        self._decide = decide
        self._make_attempt = make_attempt
        #: a cluster node or a worker: publishes of streams served elsewhere are relayed
        self.placement: SrtPlacement | None = None
        #: media an SRT publish to be relayed may queue while the owner answers
        self.relay_backlog_bytes = RELAY_BACKLOG_BYTES
        self.sessions: dict[int, SrtSession] = {}
        self._pending: dict[int, Pending] = {}
        self.refused: collections.Counter[str] = collections.Counter()
        self.connections_total = 0
        self.bound: tuple[str, int] | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._listener = lib.SRT_INVALID_SOCK
        self._workers: list[_Worker] = []
        self._owner: dict[int, _Worker] = {}
        self._stopping = False
        self._accepting = True
        self._callback: object = None

    # -- lifecycle ------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listens until cancelled; reports the bound (host, port) through task_status."""
        host, port = parse_host_port(self.config.listen, key="srt.listen")
        lib.startup()  #: raises SrtUnavailable with the install command
        try:
            self._token = trio.lowlevel.current_trio_token()
            self._listener = self._listen(host, port)
            self.bound = lib.sockname(self._listener)
            self._workers = [_Worker(lib.Epoll()) for _ in range(self.config.reader_threads)]
            self._workers[0].epoll.add(self._listener, lib.EPOLL_IN)
            limiter = trio.CapacityLimiter(len(self._workers))
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for worker in self._workers:
                    nursery.start_soon(self._run_worker, worker, limiter)
                nursery.start_soon(self._expire_pending)
                log.info(
                    "listening srt=%s:%d latency=%dms libsrt=%s",
                    *self.bound,
                    self.config.latency_ms,
                    lib.version(),
                )
                task_status.started(self.bound)
                try:
                    await trio.sleep_forever()
                finally:
                    #: the workers' threads cannot be cancelled: they see this within POLL_MS
                    self._stopping = True
        finally:
            self._stopping = True
            for pending in self._pending.values():
                if pending.feed is not None:
                    self.host.registry.end_feed(
                        pending.feed, EndReason.SHUTDOWN, now_s=trio.current_time()
                    )
            self._pending.clear()
            lib.close(self._listener)
            for worker in self._workers:
                worker.epoll.release()
            lib.cleanup()

    def _listen(self, host: str, port: int) -> int:
        sock = lib.create_socket()
        try:
            lib.set_option(sock, lib.Opt.RCVSYN, False)
            lib.set_option(sock, lib.Opt.LATENCY, self.config.latency_ms)
            lib.bind(sock, host, port)
            self._callback = lib.set_listen_callback(sock, self._on_listen)
            lib.listen(sock, LISTEN_BACKLOG)
        except lib.SrtError as exc:
            lib.close(sock)
            raise OSError(f"srt.listen {host}:{port}: cannot listen ({exc})") from None
        return sock

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop_accepting(self) -> None:
        """New callers are rejected (1503) from now on; sessions go on (shutdown, step 1)."""
        self._accepting = False

    def kick_all(self, reason: EndReason, description: str) -> None:
        """Ends every session (shutdown)."""
        for session in list(self.sessions.values()):
            session.kick(reason, description)

    def release(self, session: SrtSession) -> None:
        """The session is over: its worker closes the socket."""
        if self.sessions.pop(session.sock, None) is None:
            return
        worker = self._owner.pop(session.sock, None)
        if worker is not None:
            worker.closes.put(session.sock)
        else:
            lib.close(session.sock)

    # -- admission (listen callback: libsrt's receive thread) ------------------------

    def _on_listen(self, sock: int, _hs_version: int, peer: tuple[str, int], text: str) -> bool:
        remote = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        token = self._token
        if self._stopping or not self._accepting or token is None:
            lib.set_reject_reason(sock, lib.REJX_DOWN)
            return False
        try:
            stream_id = parse_stream_id(text)
        except StreamIdError as exc:
            self._refused_in_callback(
                sock, remote, text, "bad-stream-id", exc.reject_reason, exc.message
            )
            return False
        verdict = _Verdict()
        try:
            token.run_sync_soon(self._admit, sock, stream_id, remote, peer[0], verdict)
        except trio.RunFinishedError:
            lib.set_reject_reason(sock, lib.REJX_DOWN)
            return False
        if not verdict.done.wait(ADMIT_TIMEOUT_S):
            with verdict.lock:
                late = verdict.done.is_set()
                verdict.abandoned = not late
            if not late:
                self._refused_in_callback(
                    sock, remote, text, "busy", lib.REJX_DOWN, "server too busy to decide in time"
                )
                return False
        if verdict.reject:
            lib.set_reject_reason(sock, verdict.reject)
            return False
        passphrase = self.config.passphrase(stream_id.app)
        if passphrase:
            try:
                lib.set_option(sock, lib.Opt.PASSPHRASE, passphrase)
            except lib.SrtError:
                lib.set_reject_reason(sock, lib.REJX_ISE)
                return False
        return True

    def _refused_in_callback(
        self, sock: int, remote: str, text: str, code: str, reject: int, why: str
    ) -> None:
        lib.set_reject_reason(sock, reject)
        log.info(
            "refused streamid=%r remote=%s reason=%s reject=%d srt: %s",
            text[:200],
            remote,
            code,
            reject,
            why,
        )
        token = self._token
        if token is not None:
            try:
                token.run_sync_soon(self._count_refusal, code)
            except trio.RunFinishedError:
                pass

    def _count_refusal(self, code: str) -> None:
        self.refused[code] += 1

    # -- admission (trio thread) -----------------------------------------------------

    def _admit(
        self, sock: int, stream_id: StreamId, remote: str, remote_ip: str, verdict: _Verdict
    ) -> None:
        """Runs the publish policy and the bundle's admission; never raises (run_sync_soon)."""
        try:
            reject, pending = self._decide_now(sock, stream_id, remote, remote_ip)
        except Exception:
            log.exception("internal error deciding an SRT publish remote=%s", remote)
            reject, pending = lib.REJX_ISE, None
        with verdict.lock:
            if verdict.abandoned:
                if pending is not None and pending.feed is not None:
                    self.host.registry.end_feed(
                        pending.feed, EndReason.DISCONNECT, now_s=trio.current_time()
                    )
                return
            if pending is not None:
                self._pending[sock] = pending
            verdict.reject = reject
            verdict.done.set()

    def _decide_now(
        self, sock: int, stream_id: StreamId, remote: str, remote_ip: str
    ) -> tuple[int, Pending | None]:
        now = trio.current_time()
        config = self.config
        if len(self.sessions) + len(self._pending) >= config.max_connections:
            return self._refuse(
                stream_id,
                remote,
                "too-many-connections",
                lib.REJX_TOO_MANY,
                f"{config.max_connections} SRT connections, the limit",
            )
        attempt = self._make_attempt(
            protocol="srt",
            app=stream_id.app,
            stream=stream_id.stream,
            source_id=stream_id.source_id,
            query=dict(stream_id.query),
            remote_ip=remote_ip,
            remote=remote,
            token=stream_id.token,
        )
        decision = self._decide(attempt, now_s=now)
        if not isinstance(decision, Permit):
            return self._refuse(
                stream_id,
                remote,
                str(decision.code.value),
                lib.REJX_BASE + decision.http_status,
                decision.log_text,
            )
        request = attrs.evolve(decision.request, priority=stream_id.priority, remote_addr=remote)
        placement = self.placement
        holder = None if placement is None else placement.remote_holder(stream_id.path)
        if holder is not None:
            #: another process serves (or may serve) the stream: accepted without a local
            #: feed, the session finds the owner and relays it there, or publishes here
            #: when the stream turns out to be this process's (server/srt_relay.py, §9)
            log.info(
                "admit stream=%s sourceId=%r remote=%s holder=%s priority=%d srt: to be placed",
                stream_id.path,
                stream_id.source_id,
                remote,
                holder,
                stream_id.priority,
            )
            return 0, Pending(
                None,
                decision.record,
                stream_id,
                remote,
                now + PENDING_ACCEPT_S,
                request=request,
                holder=holder,
            )
        result = self.host.registry.request_publish(request, now_s=now)
        if isinstance(result, Refused):
            status = HTTP_STATUS_OF_REFUSAL.get(result.code, 403)
            return self._refuse(
                stream_id, remote, result.code.value, lib.REJX_BASE + status, result.reason
            )
        assert isinstance(result, Admitted)
        log.info(
            "admit stream=%s sourceId=%r remote=%s feed=%d priority=%d state=%s srt",
            stream_id.path,
            stream_id.source_id,
            remote,
            result.feed.feed_id,
            stream_id.priority,
            result.state.value,
        )
        return 0, Pending(result.feed, decision.record, stream_id, remote, now + PENDING_ACCEPT_S)

    def _refuse(
        self, stream_id: StreamId, remote: str, code: str, reject: int, why: str
    ) -> tuple[int, None]:
        self.refused[code] += 1
        log.info(
            "refused stream=%s sourceId=%r remote=%s reason=%s reject=%d srt: %s",
            stream_id.path,
            stream_id.source_id,
            remote,
            code,
            reject,
            why,
        )
        return reject, None

    async def _expire_pending(self) -> None:
        """Ends the feeds of admitted callers whose handshake never completed."""
        while True:
            await trio.sleep(PENDING_ACCEPT_S / 5)
            now = trio.current_time()
            for sock, pending in list(self._pending.items()):
                if pending.deadline_s <= now:
                    del self._pending[sock]
                    if pending.feed is not None:
                        self.host.registry.end_feed(pending.feed, EndReason.DISCONNECT, now_s=now)
                    log.info(
                        "handshake failed stream=%s sourceId=%r remote=%s srt: admitted but "
                        "never connected (wrong passphrase?)",
                        pending.stream_id.path,
                        pending.stream_id.source_id,
                        pending.remote,
                    )

    def _open_session(self, sock: int) -> _Worker | None:
        """An accepted socket becomes a session (trio thread); None: close it."""
        pending = self._pending.pop(sock, None)
        if pending is None or self._stopping or self._nursery is None:
            return None
        session = SrtSession(self, sock, pending)
        self.sessions[sock] = session
        self.connections_total += 1
        worker = min(self._workers, key=lambda w: len(w.sockets))
        self._owner[sock] = worker
        self._nursery.start_soon(session.run)
        if session.feed is None:
            return worker  #: to be relayed: the session logs where it went
        self.host.feed_started(session)
        log.info(
            "publish stream=%s sourceId=%r remote=%s feed=%d srt",
            session.stream_path,
            session.source_id,
            session.remote,
            session.feed.feed_id,
        )
        return worker

    # -- reading (worker threads) ----------------------------------------------------

    async def _run_worker(self, worker: _Worker, limiter: trio.CapacityLimiter) -> None:
        try:
            await trio.to_thread.run_sync(self._worker_loop, worker, limiter=limiter)
        finally:
            self._stopping = True

    def _worker_loop(self, worker: _Worker) -> None:
        token = self._token
        assert token is not None
        buffer = lib.receive_buffer(MESSAGE_BYTES)
        epoll = worker.epoll
        listener = self._listener
        try:
            while not self._stopping:
                self._apply_closes(worker)
                ready = epoll.wait(POLL_MS)
                batch: list[tuple[int, bytes, bool]] = []
                for sock, events in ready:
                    if sock == listener:
                        self._accept(token)
                        continue
                    chunks, ended = self._drain(sock, buffer, events)
                    if ended:
                        epoll.remove(sock)
                    if chunks or ended:
                        batch.append((sock, b"".join(chunks), ended))
                if batch:
                    trio.from_thread.run_sync(self._deliver, batch, trio_token=token)
        except trio.RunFinishedError:
            pass
        finally:
            self._apply_closes(worker)
            for sock in list(worker.sockets):
                epoll.remove(sock)
                lib.close(sock)
            worker.sockets.clear()

    @staticmethod
    def _drain(sock: int, buffer: Any, events: int) -> tuple[list[bytes], bool]:
        chunks: list[bytes] = []
        total = 0
        string_at = ctypes.string_at
        while total < MAX_BATCH_BYTES:
            try:
                size = lib.recvmsg(sock, buffer)
            except lib.SrtError:
                return chunks, True
            if size is None:
                break
            if size == 0:
                return chunks, True
            chunks.append(string_at(buffer, size))
            total += size
        ended = bool(events & lib.EPOLL_ERR) and not chunks
        return chunks, ended

    def _accept(self, token: trio.lowlevel.TrioToken) -> None:
        while True:
            try:
                sock = lib.accept(self._listener)
            except lib.SrtError as exc:
                log.warning("srt accept failed: %s", exc)
                return
            if sock is None:
                return
            try:
                lib.set_option(sock, lib.Opt.RCVSYN, False)
            except lib.SrtError:
                lib.close(sock)
                continue
            worker = trio.from_thread.run_sync(self._open_session, sock, trio_token=token)
            if worker is None:
                lib.close(sock)
                continue
            worker.sockets.add(sock)
            try:
                worker.epoll.add(sock, lib.EPOLL_IN | lib.EPOLL_ERR)
            except lib.SrtError:
                trio.from_thread.run_sync(self._lost, sock, trio_token=token)

    def _lost(self, sock: int) -> None:
        session = self.sessions.get(sock)
        if session is not None:
            session.end(EndReason.DISCONNECT)

    @staticmethod
    def _apply_closes(worker: _Worker) -> None:
        while True:
            try:
                sock = worker.closes.get_nowait()
            except queue.Empty:
                return
            worker.epoll.remove(sock)
            worker.sockets.discard(sock)
            lib.close(sock)

    def _deliver(self, batch: list[tuple[int, bytes, bool]]) -> None:
        """A worker's batch, in the trio thread: demux, push, notice ends."""
        now = trio.current_time()
        sessions = self.sessions
        for sock, data, ended in batch:
            session = sessions.get(sock)
            if session is None:
                continue
            try:
                if data:
                    session.receive(data, now)
            except Exception:
                log.exception(
                    "internal error on SRT connection remote=%s stream=%s; connection closed",
                    session.remote,
                    session.stream_path,
                )
                ended = True
            if ended:
                session.end(EndReason.DISCONNECT)

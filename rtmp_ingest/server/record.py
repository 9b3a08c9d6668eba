"""The recorder: one writing task per recorded source, and the retention sweep.

A source is recorded when the feed that brings it on air may be recorded:
the app's `record` setting, or the publish token's `record` claim, which
overrides it. The task reads the source from the bundle like any reader (a
recorder that falls behind skips to a keyframe, ingest never waits) and hands
frames to `SourceRecording` (outputs/record.py); it follows the source across
supersedes and reconnects (the manifest notes each new feed) and closes the
file when the source goes inactive or the server stops. Every
`RETENTION_INTERVAL_S`, and after a file closes, `apply_retention` runs in a
worker thread.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from rtmp_ingest.bundle import Active, Inactive, StartMode, Superseded
from rtmp_ingest.outputs.record import (
    Manifest,
    RecordSettings,
    SourceRecording,
    apply_ops,
    apply_retention,
)

if TYPE_CHECKING:
    from rtmp_ingest.app import App as Daemon

log = logging.getLogger("rtmp_ingest.record")

#: seconds between retention sweeps
RETENTION_INTERVAL_S = 60.0

Key = tuple[str, str]


class RecorderService:
    def __init__(self, daemon: Daemon) -> None:
        config = daemon.config.record
        self.daemon = daemon
        self.root = Path(config.directory) if config.directory else daemon.data_dir / "recordings"
        self.settings = RecordSettings(file_s=config.file_s, fragment_s=config.fragment_s)
        self.max_age_s = config.max_age_s
        self.max_total_bytes = config.max_total_bytes
        self.recordings: dict[Key, SourceRecording] = {}
        self.manifests: dict[str, Manifest] = {}
        self._stop: dict[Key, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._sweep = trio.Event()
        self.files_deleted = 0
        self.bytes_written_ended = 0
        self.errors = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                with trio.move_on_after(RETENTION_INTERVAL_S):
                    await self._sweep.wait()
                self._sweep = trio.Event()
                await self._retention()

    async def _retention(self) -> None:
        if not self.root.exists() or not (self.max_age_s or self.max_total_bytes):
            return
        active = {r.current_file for r in self.recordings.values() if r.current_file}
        live = frozenset(self.manifests)
        try:
            deleted = await trio.to_thread.run_sync(
                lambda: apply_retention(
                    self.root,
                    max_age_s=self.max_age_s,
                    max_total_bytes=self.max_total_bytes,
                    now_unix=time.time(),
                    active=active,
                    live_streams=live,
                )
            )
        except OSError as exc:
            log.warning("record: retention sweep failed: %s", exc)
            return
        for name in deleted:
            log.info("record retention deleted file=%s", name)
        self.files_deleted += len(deleted)
        gone = set(deleted)
        for manifest in self.manifests.values():
            if any(e["file"] in gone for e in manifest.files):
                manifest.files[:] = [e for e in manifest.files if e["file"] not in gone]
                manifest.save()

    # -- bundle events ----------------------------------------------------------------------

    def on_event(self, event: object) -> None:
        if self._nursery is None:
            return
        if isinstance(event, Active):
            key = (event.stream_path, event.source_id)
            session = self.daemon.publishers.get(event.feed_id)
            wanted = bool(session is not None and session.record)
            recording = self.recordings.get(key)
            if recording is not None and self._stop[key].is_set():
                recording = None  #: still closing its file: the new feed gets a new recording
            if recording is None and wanted:
                manifest = self.manifests.get(event.stream_path)
                if manifest is None:
                    manifest = self.manifests[event.stream_path] = Manifest(
                        self.root, event.stream_path
                    )
                recording = SourceRecording(
                    self.root,
                    event.stream_path,
                    event.source_id,
                    self.settings,
                    event.timeline_origin_wall_s,
                    manifest,
                )
                self.recordings[key] = recording
                self._stop[key] = trio.Event()
                self._nursery.start_soon(self._record, key, recording)
            elif recording is not None and not wanted:
                self._stop[key].set()
                return
            if recording is not None:
                recording.feed_changed(
                    event.feed_id, session.remote if session else "-", time.time()
                )
        elif isinstance(event, Superseded):
            recording = self.recordings.get((event.stream_path, event.source_id))
            if recording is not None:
                session = self.daemon.publishers.get(event.by_feed_id)
                recording.feed_changed(
                    event.by_feed_id, session.remote if session else "-", time.time()
                )
        elif isinstance(event, Inactive):
            stop = self._stop.get((event.stream_path, event.source_id))
            if stop is not None:
                stop.set()

    async def _record(self, key: Key, recording: SourceRecording) -> None:
        reader = self.daemon.registry.subscribe(key[0], key[1], start=StartMode.GOP)
        stop = self._stop[key]
        failed = False
        files: dict[Path, object] = {}  #: open file objects, used only by the worker thread

        def report(error: BaseException | None) -> None:
            nonlocal failed
            if error is None:
                return
            self.errors += 1
            if not failed:
                failed = True
                log.error(
                    "record: cannot write stream=%s sourceId=%r: %s (recording goes on "
                    "where it can)",
                    *key,
                    error,
                )

        async def write() -> None:
            ops = recording.take_ops()
            if ops:
                report(await trio.to_thread.run_sync(apply_ops, ops, files))

        try:
            while not stop.is_set():
                wake = trio.Event()
                reader.set_wakeup(wake.set)
                frames = reader.drain_nowait()
                for out in frames:
                    try:
                        recording.push(out)
                    except Exception:
                        self.errors += 1
                        if not failed:
                            failed = True
                            log.exception(
                                "record: error stream=%s sourceId=%r (frame skipped)", *key
                            )
                await write()
                if not frames:
                    async with trio.open_nursery() as waiter:
                        waiter.start_soon(_wait_then_cancel, wake, waiter.cancel_scope)
                        waiter.start_soon(_wait_then_cancel, stop, waiter.cancel_scope)
        finally:
            reader.close()
            try:
                recording.close_file()
                # the last writes of the file, here and now (this may run during cancellation)
                report(apply_ops(recording.take_ops(), files))
            except Exception as exc:  # noqa: BLE001 - never out of the recorder
                report(exc)
            self.bytes_written_ended += recording.bytes_written
            if self.recordings.get(key) is recording:
                del self.recordings[key]
                del self._stop[key]
            self._sweep.set()

    def close_all(self) -> None:
        """Ends every recording (shutdown): the files are closed and the manifests final."""
        for stop in self._stop.values():
            stop.set()

    def statistics(self) -> dict[str, int]:
        live = list(self.recordings.values())
        return {
            "recording": len(live),
            "bytesWritten": self.bytes_written_ended + sum(r.bytes_written for r in live),
            "filesDeleted": self.files_deleted,
            "errors": self.errors,
        }


async def _wait_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()

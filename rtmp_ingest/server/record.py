"""The recorder: one writing task per recorded source, and the retention sweep.

A source is recorded when the feed that brings it on air may be recorded:
the app's `record` setting, or the publish token's `record` claim, which
overrides it. The task reads the source from the bundle like any reader (a
recorder that falls behind skips to a keyframe, ingest never waits) and hands
frames to `SourceRecording` (outputs/record.py); it follows the source across
supersedes and reconnects (the manifest notes each new feed) and closes the
file when the source goes inactive or the server stops. Every file operation,
manifest writes included, runs in a worker thread (`apply_ops`). Every
`RETENTION_INTERVAL_S`, and after a file closes, `apply_retention` runs in a
worker thread too.

Whatever goes wrong while handling one source's event or frames (a name the
file system refuses, a bug) stops the recording of that source only: logged
once, counted (`outputFailures`, and the metrics sink), never raised into the
event pump; the source is recorded again from its next `active` after it went
inactive.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import trio

from rtmp_ingest.bundle import Active, Inactive, StartMode, Superseded
from rtmp_ingest.config import RecordConfig
from rtmp_ingest.outputs.record import (
    FileOp,
    Manifest,
    OpsResult,
    RecordSettings,
    SourceRecording,
    apply_ops,
    apply_retention,
)
from rtmp_ingest.outputs.seams import Feeds, OutputCounters, OutputMetrics, SourceSubscriber

log = logging.getLogger("rtmp_ingest.record")

#: seconds between retention sweeps
RETENTION_INTERVAL_S = 60.0

Key = tuple[str, str]


class RecorderService:
    def __init__(
        self,
        *,
        config: RecordConfig,
        registry: SourceSubscriber,
        feeds: Feeds,
        data_dir: Path,
        metrics: OutputMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.feeds = feeds
        self.metrics: OutputMetrics = metrics if metrics is not None else OutputCounters()
        self.root = Path(config.directory) if config.directory else data_dir / "recordings"
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
        #: sources whose recording stopped on an error, until they go inactive
        self.failed: set[Key] = set()
        self.output_failures = 0

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
        snapshots = []
        for manifest in self.manifests.values():
            if any(e["file"] in gone for e in manifest.files):
                manifest.files[:] = [e for e in manifest.files if e["file"] not in gone]
                snapshots.append(manifest.snapshot())
        if snapshots:
            result = await trio.to_thread.run_sync(apply_ops, snapshots, {})
            if result.error is not None:
                self.errors += 1

    # -- bundle events ----------------------------------------------------------------------

    def on_event(self, event: object) -> None:
        """A bundle event; never raises (an error stops that source's recording only)."""
        if self._nursery is None:
            return
        key = (getattr(event, "stream_path", ""), getattr(event, "source_id", ""))
        try:
            self._on_event(event)
        except Exception as exc:  # noqa: BLE001 - one stream's output, never the event pump
            self._fail(key, exc)

    def _fail(self, key: Key, exc: BaseException) -> None:
        """Stops the recording of one source after an error: logged once, counted."""
        self.errors += 1
        if key not in self.failed:
            self.failed.add(key)
            self.output_failures += 1
            self.metrics.output_failed("record")
            log.error(
                "record: stopped for stream=%s sourceId=%r: %s: %s",
                *key,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        stop = self._stop.get(key)
        if stop is not None:
            stop.set()

    def _on_event(self, event: object) -> None:
        assert self._nursery is not None
        if isinstance(event, Active):
            key = (event.stream_path, event.source_id)
            if key in self.failed:
                return
            feed = self.feeds.get(event.feed_id)
            wanted = bool(feed is not None and feed.record)
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
                self._nursery.start_soon(self._record_safely, key, recording)
            elif recording is not None and not wanted:
                self._stop[key].set()
                return
            if recording is not None:
                recording.feed_changed(event.feed_id, feed.remote if feed else "-", time.time())
        elif isinstance(event, Superseded):
            recording = self.recordings.get((event.stream_path, event.source_id))
            if recording is not None:
                feed = self.feeds.get(event.by_feed_id)
                recording.feed_changed(event.by_feed_id, feed.remote if feed else "-", time.time())
        elif isinstance(event, Inactive):
            key = (event.stream_path, event.source_id)
            self.failed.discard(key)
            stop = self._stop.get(key)
            if stop is not None:
                stop.set()

    async def _record_safely(self, key: Key, recording: SourceRecording) -> None:
        try:
            await self._record(key, recording)
        except Exception as exc:  # noqa: BLE001 - one stream's output, never the service
            self._fail(key, exc)
            if self.recordings.get(key) is recording:
                del self.recordings[key]
                del self._stop[key]

    async def _record(self, key: Key, recording: SourceRecording) -> None:
        reader = self.registry.subscribe(key[0], key[1], start=StartMode.GOP)
        stop = self._stop[key]
        failed = False
        files: dict[Path, Any] = {}  #: open file objects, used only by the worker thread

        def confirm(ops: list[FileOp], result: OpsResult) -> None:
            recording.confirm(ops, result)
            report(result.error)

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
                confirm(ops, await trio.to_thread.run_sync(apply_ops, ops, files))

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
                ops = recording.take_ops()
                confirm(ops, apply_ops(ops, files))
                if ops := recording.take_ops():  #: a manifest corrected after a failed write
                    confirm(ops, apply_ops(ops, files))
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
            "outputFailures": self.output_failures,
        }


async def _wait_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()

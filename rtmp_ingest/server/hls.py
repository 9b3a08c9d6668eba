"""The HLS service: one packaging task per live source, and waits for blocking requests.

On a source's `active` event a task subscribes to it in the bundle (from the
cached GOP, so the first segment starts at a keyframe); the reader's wakeup
hands each new frame to a `SourceHls` (outputs/hls.py) at once, inside the
publisher's push: packaging is in-memory work of a few microseconds, and a
task switch per frame would cost more than the packaging (measured: HLS at 60
publishers went from 1.5 to 1.2 CPU-ms/Mbit). The task itself only writes
the disk copy and ends the source. On `inactive` the playlists end
(`EXT-X-ENDLIST`), the source leaves the multivariant playlist at once and its
last segments stay fetchable for `linger_s`.

Blocking playlist reloads and preload-hint part requests wait on
`wait_change(key)`, which every new part or segment of that source sets.
With `hls.directory` set, complete segments, init segments and (non-LL)
playlists are also written to disk for a CDN origin; a file whose write failed
is tried again `DISK_RETRY_DELAY_S` later (or with the next segment), up to
`DISK_WRITE_ATTEMPTS` times in all.

HLS has no sessions: each request is a sighting of a viewer of its stream
(`viewer_seen`, into `Feeds.viewers`), which keeps a cluster node's on-demand pull of
that stream (docs/spec.md §9) going; a request for a stream whose pull is only starting
waits for it (`wait_any_change`, api/hls.py) rather than getting a 404.

Whatever goes wrong while handling one source's event (a bug, a file system
that refuses a name) stops that source's HLS output only: logged once,
counted (`output_failures` and the metrics sink), never raised into the event
pump or the service's nursery.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import threading
from pathlib import Path

import trio

from rtmp_ingest.bundle import Active, Inactive, StartMode
from rtmp_ingest.config import HlsConfig
from rtmp_ingest.outputs.hls import HlsSettings
from rtmp_ingest.outputs.hls_source import SourceHls
from rtmp_ingest.outputs.multivariant import multivariant
from rtmp_ingest.outputs.names import disk_component, disk_path, disk_source_segment
from rtmp_ingest.outputs.seams import OutputCounters, OutputMetrics, SourceSubscriber
from rtmp_ingest.server.feeds import Viewers

log = logging.getLogger("rtmp_ingest.hls")

Key = tuple[str, str]

#: An HLS client counts as watching its stream for this many target durations after each
#: request: a live client reloads its playlist about once a target duration (RFC 8216
#: §6.3.4), fetching parts in between; past this it left (or stalled)
VIEWER_WINDOW_TARGETS = 3

#: tries of one disk-copy file before it is given up (a full disk that frees up in time
#: gets the file; one that stays full costs the CDN copy of that file only)
DISK_WRITE_ATTEMPTS = 3
#: seconds before a failed disk-copy write is tried again (if no new segment came first)
DISK_RETRY_DELAY_S = 0.5


class HlsService:
    def __init__(
        self,
        *,
        config: HlsConfig,
        registry: SourceSubscriber,
        metrics: OutputMetrics | None = None,
        viewers: Viewers | None = None,
    ) -> None:
        self.registry = registry
        #: where HLS requests count as viewers (the daemon's `Feeds.viewers`)
        self.viewers = viewers if viewers is not None else Viewers()
        #: set (and replaced) at any source's new part, segment, start or end
        self._any_change = trio.Event()
        self.metrics: OutputMetrics = metrics if metrics is not None else OutputCounters()
        self.enabled = config.enabled
        self.settings = HlsSettings(
            segment_s=config.segment_s,
            part_s=config.part_s,
            window_segments=config.window_segments,
            max_segment_bytes=config.max_segment_bytes,
            max_part_bytes=config.max_part_bytes,
            max_window_bytes=config.max_window_bytes,
        )
        self.linger_s = config.linger_s
        self.directory = Path(config.directory) if config.directory else None
        self.sources: dict[Key, SourceHls] = {}
        self._changed: dict[Key, trio.Event] = {}
        self._wake: dict[Key, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self.requests = {"playlist": 0, "segment": 0, "part": 0, "init": 0, "blocked": 0}
        self.bytes_out = 0
        self.errors = 0
        self._frames_unused_gone = 0  #: `frames_unused` of the sources no longer listed
        self._disk_failed = False
        #: segment files already on disk, per source (so each is joined and written once)
        self._written: dict[Key, set[Path]] = {}
        #: failed writes of files not on disk yet, per source: path -> attempts so far
        self._attempts: dict[Key, dict[Path, int]] = {}
        self.disk_files_given_up = 0
        #: sources whose HLS output stopped on an error, until they go inactive
        self.failed: set[Key] = set()
        self.output_failures = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- bundle events -------------------------------------------------------------------

    def on_event(self, event: object) -> None:
        """A bundle event; never raises (an error stops that source's HLS output only)."""
        if not self.enabled or self._nursery is None:
            return
        key = (getattr(event, "stream_path", ""), getattr(event, "source_id", ""))
        try:
            self._on_event(event)
        except Exception as exc:  # noqa: BLE001 - one stream's output, never the event pump
            self._fail(key, exc)

    def _fail(self, key: Key, exc: BaseException, output: str = "hls") -> None:
        """Stops the HLS output of one source after an error: logged once, counted."""
        self.errors += 1
        if key not in self.failed:
            self.failed.add(key)
            self.output_failures += 1
            self.metrics.output_failed(output)
            log.error(
                "hls: stopped for stream=%s sourceId=%r: %s: %s",
                *key,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        source = self.sources.get(key)
        if source is not None and not source.ended:
            source.ended = True
            if (wake := self._wake.get(key)) is not None:
                wake.set()

    def _on_event(self, event: object) -> None:
        assert self._nursery is not None
        if isinstance(event, Active):
            key = (event.stream_path, event.source_id)
            if key in self.failed:
                return
            source = self.sources.get(key)
            if source is None or source.ended:
                if source is not None:  #: back within linger: the ended one is replaced
                    self._frames_unused_gone += source.frames_unused()
                source = SourceHls(
                    event.stream_path,
                    event.source_id,
                    self.settings,
                    event.timeline_origin_wall_s,
                    lambda: self._notify(key),
                )
                self.sources[key] = source
                self._nursery.start_soon(self._package_safely, key, source)
        elif isinstance(event, Inactive):
            key = (event.stream_path, event.source_id)
            self.failed.discard(key)
            source = self.sources.get(key)
            if source is not None and not source.ended:
                source.ended = True
                if (wake := self._wake.get(key)) is not None:
                    wake.set()

    def _notify(self, key: Key) -> None:
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()
        if self._any_change.statistics().tasks_waiting:
            self._any_change.set()
            self._any_change = trio.Event()

    def viewer_seen(self, stream_path: str) -> bool:
        """An HLS request for `stream_path` (a viewer was here now); True if a source of
        it is on its way (a cluster pull), so a request finding nothing may wait."""
        window_s = VIEWER_WINDOW_TARGETS * math.ceil(self.settings.segment_s)
        return self.viewers.seen(stream_path, window_s=window_s)

    async def wait_any_change(self) -> None:
        """Returns at the next new part, segment, start or end of any source."""
        await self._any_change.wait()

    async def wait_change(self, key: Key) -> None:
        """Returns at the next new part, segment or end of the source."""
        event = self._changed.get(key)
        if event is None:
            event = self._changed[key] = trio.Event()
        await event.wait()

    def _forget(self, key: Key, source: SourceHls) -> None:
        del self.sources[key]
        self._written.pop(key, None)
        self._attempts.pop(key, None)
        self._frames_unused_gone += source.frames_unused()

    def frames_unused(self) -> int:
        """Frames the packager could not use (skipped or cut), gone sources included."""
        return self._frames_unused_gone + sum(s.frames_unused() for s in self.sources.values())

    async def _package_safely(self, key: Key, source: SourceHls) -> None:
        try:
            await self._package(key, source)
        except Exception as exc:  # noqa: BLE001 - one stream's output, never the service
            self._fail(key, exc)
            source.end()
            self._notify(key)
            if self.sources.get(key) is source:
                self._forget(key, source)

    async def _package(self, key: Key, source: SourceHls) -> None:
        reader = self.registry.subscribe(key[0], key[1], start=StartMode.GOP)
        log.info("hls start stream=%s sourceId=%r", *key)
        failed = False
        persisted: tuple[int, ...] = ()
        wake = self._wake[key] = trio.Event()

        def package_now() -> None:
            """The reader's wakeup: packages new frames at once, inside the publisher's push
            (pure in-memory work, ~5 µs a frame; no task switch per frame). Only the disk copy
            and the end of the source need this task."""
            nonlocal failed
            for out in reader.drain_nowait():
                try:
                    source.push(out)
                except Exception:
                    self.errors += 1
                    if not failed:
                        failed = True
                        log.exception(
                            "hls: packaging error stream=%s sourceId=%r (frame skipped)", *key
                        )
            if self.directory is not None and _complete_segments(source) != persisted:
                current = self._wake.get(key)
                if current is not None:
                    current.set()

        try:
            reader.set_wakeup(package_now)
            while not source.ended:
                retry = bool(self._attempts.get(key))  #: a failed disk write waits for a retry
                with trio.move_on_after(DISK_RETRY_DELAY_S if retry else math.inf):
                    await wake.wait()
                wake = self._wake[key] = trio.Event()
                if self.directory is not None:
                    signature = _complete_segments(source)
                    if signature != persisted or retry:
                        persisted = signature
                        await self._persist_safely(source)
        finally:
            reader.close()
            if self._wake.get(key) is wake:
                del self._wake[key]
            source.end()
            self._notify(key)
        if self.directory is not None:
            await self._persist_safely(source)
        log.info("hls end stream=%s sourceId=%r", *key)
        await trio.sleep(self.linger_s)
        if self.sources.get(key) is source:
            self._forget(key, source)
            if self.directory is not None:
                try:
                    await trio.to_thread.run_sync(_remove_tree, self._source_dir(source))
                except OSError as exc:
                    log.warning("hls: cannot remove %s: %s", self._source_dir(source), exc)

    # -- lookups for the HTTP routes ---------------------------------------------------------

    def stream_sources(self, stream_path: str) -> list[SourceHls]:
        return sorted(
            (s for (path, _), s in self.sources.items() if path == stream_path),
            key=lambda s: s.source_id,
        )

    def has_stream(self, stream_path: str) -> bool:
        return any(
            path == stream_path and not s.ended and s.live_tracks()
            for (path, _), s in self.sources.items()
        )

    def multivariant(self, stream_path: str) -> str | None:
        sources = [s for s in self.stream_sources(stream_path) if not s.ended]
        if not any(s.live_tracks() for s in sources):
            return None
        default = "" if any(s.source_id == "" for s in sources) else None
        return multivariant(sources, default)

    # -- disk (CDN origin) -----------------------------------------------------------------

    def _source_dir(self, source: SourceHls) -> Path:
        assert self.directory is not None
        return (
            self.directory / disk_path(source.stream_path) / disk_source_segment(source.source_id)
        )

    async def _persist_safely(self, source: SourceHls) -> None:
        """A full or broken disk costs the CDN copy, never the server or in-memory HLS."""
        try:
            await self._persist(source)
        except OSError as exc:
            self._disk_error(exc)

    def _disk_error(self, exc: OSError) -> None:
        self.errors += 1
        if not self._disk_failed:
            self._disk_failed = True
            log.error("hls: cannot write to %s: %s (in-memory HLS goes on)", self.directory, exc)

    async def _persist(self, source: SourceHls) -> None:
        """Writes what is new since the last call (complete segments, inits, playlists), and
        tries again what failed last time (up to DISK_WRITE_ATTEMPTS in all)."""
        assert self.directory is not None
        key = (source.stream_path, source.source_id)
        base = self._source_dir(source)
        written = self._written.setdefault(key, set())
        attempts = self._attempts.setdefault(key, {})
        writes: list[tuple[Path, bytes]] = []
        keep: set[Path] = set()
        for track in source.tracks.values():
            if track.spec is None or not track.ready:
                continue
            folder = base / disk_component(track.name)
            for init_id, data in track.inits.items():
                path = folder / f"init-{init_id}.mp4"
                keep.add(path)
                if path not in written:
                    writes.append((path, data))
            for segment in track.segments:
                path = folder / f"seg-{segment.msn}.m4s"
                keep.add(path)
                joined = segment.data  #: None while it is being made
                if joined is not None and path not in written:
                    writes.append((path, joined))
            writes.append(
                (
                    base / f"{disk_component(track.name)}.m3u8",
                    track.playlist(low_latency=False).encode(),
                )
            )
        sources = [s for s in self.stream_sources(source.stream_path) if not s.ended]
        default = "" if any(s.source_id == "" for s in sources) else None
        writes.append(
            (
                self.directory / disk_path(source.stream_path) / "index.m3u8",
                multivariant(sources, default).encode(),
            )
        )
        written.intersection_update(keep)
        done, error = await trio.to_thread.run_sync(_write_all, writes, base, keep)
        for path, _ in writes:
            if path in done:
                if path.suffix in (".m4s", ".mp4"):
                    written.add(path)
                attempts.pop(path, None)
                continue
            tries = attempts[path] = attempts.get(path, 0) + 1
            if tries >= DISK_WRITE_ATTEMPTS:
                del attempts[path]  #: given up (a playlist is written anew with the next segment)
                if path.suffix in (".m4s", ".mp4"):
                    written.add(path)  #: never tried again
                    self.disk_files_given_up += 1
        for path in list(attempts):
            if path not in keep and path.suffix in (".m4s", ".mp4"):
                del attempts[path]  #: left the window meanwhile
        if error is not None:
            self._disk_error(error)


def _complete_segments(source: SourceHls) -> tuple[int, ...]:
    return tuple(t.segments[-1].msn if t.segments else -1 for t in source.tracks.values())


_TEMPORARY = itertools.count()


def _write_all(
    writes: list[tuple[Path, bytes]], base: Path, keep: set[Path]
) -> tuple[set[Path], OSError | None]:
    """Writes what is not on disk yet (playlists always), each through its own temporary
    name, so sources of one stream persisting at once never trip over each other. Every
    file is tried; returns the ones now on disk and the first error. A failed write leaves
    no temporary file behind."""
    done: set[Path] = set()
    first: OSError | None = None
    for path, data in writes:
        temporary = path.with_name(
            f"{path.name}.{os.getpid()}.{threading.get_ident()}.{next(_TEMPORARY)}.tmp"
        )
        try:
            if path.suffix in (".m4s", ".mp4") and path.exists():
                done.add(path)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data)
            os.replace(temporary, path)
            done.add(path)
        except OSError as exc:
            first = first or exc
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
    try:
        if base.exists():
            for path in base.glob("*/*.m4s"):
                if path not in keep:
                    path.unlink(missing_ok=True)
    except OSError as exc:
        first = first or exc
    return done, first


def _remove_tree(base: Path) -> None:
    if not base.exists():
        return
    for path in sorted(base.rglob("*"), reverse=True):
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink(missing_ok=True)
    base.rmdir()

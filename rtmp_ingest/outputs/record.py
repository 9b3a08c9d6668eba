"""Recording: each source of a stream to fragmented MP4 files, with a manifest per stream.

`SourceRecording` takes a source's frames from the bundle (one output
timeline, so it continues across supersedes and reconnects) and writes them
to `<root>/<stream path>/<source>/<UTC start>.mp4`: an init segment, then one
self-contained `moof`+`mdat` fragment per `fragment_s` of media, so a file is
playable up to its last complete fragment even after a `kill -9`. A new file
starts at the first keyframe after `file_s`, and when a track's codec or
parameters change or a track appears (a file's tracks are fixed by its init).

`Manifest` is `<root>/<stream path>/manifest.json`: every file of the stream
with its start and end on the stream's common clock (Unix seconds: the
source's timeline origin plus the media time, the clock EXT-X-PROGRAM-DATE-TIME
uses), its tracks and the feeds that produced it. A snapshot of it is queued
whenever a file opens, closes or a new feed takes over the source, and the
writer thread writes it atomically (never over a newer one). Only bytes that
reached the disk count (`confirm`), in `bytes_written` and in the manifest.
`apply_retention` deletes files past `max_age_s` and the oldest beyond
`max_total_bytes`. `rtmp-ingest export` (outputs/export.py) reads all of it.

File writes are not made here: they queue up as `FileOp`s (`take_ops`), which
the driver carries out in a worker thread, so a slow disk never holds up the
event loop (and with it ingest). `apply_ops` runs them in order.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from rtmp_ingest.bundle import Media, OutputFrame, TrackInfo
from rtmp_ingest.outputs import fmp4
from rtmp_ingest.outputs.names import disk_path, disk_source_segment
from rtmp_ingest.outputs.samples import audio_frame_samples, coded_payload, config_key, track_spec

log = logging.getLogger("rtmp_ingest.record")

MANIFEST = "manifest.json"


@attrs.frozen
class FileOp:
    """open (data = init segment), write, or close one recording file; or write a
    manifest snapshot (`manifest` set, data = its JSON)."""

    kind: str  #: "open" | "write" | "close" | "manifest"
    path: Path
    data: bytes = b""
    manifest: Manifest | None = attrs.field(default=None, eq=False, repr=False)
    version: int = 0  #: of a manifest snapshot: an older one never overwrites a newer one


@attrs.define
class OpsResult:
    """What `apply_ops` did: the media bytes that reached the files, the ops that failed
    (in order, each with the bytes of it that reached its file) and the first error."""

    bytes_written: int = 0
    failed: list[tuple[FileOp, int]] = attrs.Factory(list)
    error: OSError | None = None


def _write_fully(handle: Any, data: bytes) -> int:
    """Writes all of `data` to an unbuffered file; on an error, the exception carries the
    bytes that did reach the file in `written` (a disk that fills up mid-write)."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(view):
            n = handle.write(view[done:])
            if not n:
                raise OSError(errno.ENOSPC, "no progress writing")
            done += n
    except OSError as exc:
        exc.written = done  # type: ignore[attr-defined]
        raise
    return done


def _open_new(path: Path) -> Any:
    return open(path, "wb", buffering=0)


def apply_ops(
    ops: list[FileOp], files: dict[Path, Any], *, opener: Callable[[Path], Any] = _open_new
) -> OpsResult:
    """Carries out file operations in order (in a worker thread); `files` holds the open ones
    (None for a file that could not be opened: its writes are skipped). Every operation is
    tried, so one failure (disk full) never leaves a later file unopened; the result counts
    only bytes that reached a file. `opener` opens a new file unbuffered (tests pass a fake
    disk)."""
    result = OpsResult()
    for op in ops:
        try:
            if op.kind == "open":
                files[op.path] = None
                op.path.parent.mkdir(parents=True, exist_ok=True)
                handle = files[op.path] = opener(op.path)
                result.bytes_written += _write_fully(handle, op.data)
            elif op.kind == "write":
                handle = files.get(op.path)
                if handle is None:
                    result.failed.append(
                        (op, 0)
                    )  #: its file never opened: nothing reached the disk
                    continue
                result.bytes_written += _write_fully(handle, op.data)
            elif op.kind == "manifest":
                assert op.manifest is not None
                op.manifest.write_snapshot(op)
            else:
                handle = files.pop(op.path, None)
                if handle is not None:
                    handle.close()
        except OSError as exc:
            written = getattr(exc, "written", 0)
            result.bytes_written += written
            result.failed.append((op, written))
            result.error = result.error or exc
    return result


@attrs.frozen(kw_only=True)
class RecordSettings:
    file_s: float = 600.0
    fragment_s: float = 1.0


def iso(unix_s: float | None) -> str | None:
    if unix_s is None:
        return None
    moment = datetime.datetime.fromtimestamp(unix_s, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Manifest:
    """The manifest of one stream's recordings (shared by its sources).

    The event loop changes `files` and takes a `snapshot()` (a FileOp); the writer thread
    writes it (`write_snapshot`), atomically, and never over a newer snapshot: the sources
    of a stream write from their own threads."""

    def __init__(self, root: Path, stream_path: str, *, folder: Path | None = None) -> None:
        self.folder = folder if folder is not None else root / disk_path(stream_path)
        self.path = self.folder / MANIFEST
        self.stream_path = stream_path
        self.save_errors = 0
        self.files: list[dict[str, Any]] = []
        self._version = 0
        self._written_version = 0
        self._lock = threading.Lock()
        if self.path.exists():
            try:
                self.files = json.loads(self.path.read_text("utf-8")).get("files", [])
            except (OSError, ValueError):
                log.warning("record: unreadable manifest %s; starting a new one", self.path)
                self.files = []

    def snapshot(self) -> FileOp:
        """The manifest as it is now, as a file operation for the writer thread."""
        body = {
            "stream": self.stream_path,
            "clock": "unix seconds (UTC), common to the stream's sources",
            "files": self.files,
        }
        self._version += 1
        data = json.dumps(body, indent=1).encode("utf-8")
        return FileOp("manifest", self.path, data, manifest=self, version=self._version)

    def write_snapshot(self, op: FileOp) -> None:
        """Writes a snapshot atomically (in a worker thread); raises OSError when the disk
        refuses (counted, logged once), leaving no temporary file behind."""
        with self._lock:
            if op.version <= self._written_version:
                return  #: a newer snapshot is on disk already
            temporary = self.path.with_name(f"{MANIFEST}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                temporary.write_bytes(op.data)
                os.replace(temporary, self.path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    temporary.unlink(missing_ok=True)
                if not self.save_errors:
                    log.error("record: cannot write %s: %s", self.path, exc)
                self.save_errors += 1
                raise
            self._written_version = op.version

    def save(self) -> bool:
        """Writes the manifest now (for code already off the event loop: retention, tools);
        False (logged once, counted) when the disk refuses."""
        try:
            self.write_snapshot(self.snapshot())
        except OSError:
            return False
        return True


@attrs.define
class _Track:
    number: int
    spec: fmp4.TrackSpec
    key: bytes
    samples: list[tuple[int, int, bytes, bool]] = attrs.Factory(
        list
    )  #: (dts ms, cts ms, data, key)
    last_duration: int = 0


class SourceRecording:
    """Writes one source's frames to rotating fMP4 files."""

    def __init__(
        self,
        root: Path,
        stream_path: str,
        source_id: str,
        settings: RecordSettings,
        origin_wall_s: float,
        manifest: Manifest,
    ) -> None:
        self.folder = root / disk_path(stream_path) / disk_source_segment(source_id)
        self.root = root
        self.stream_path = stream_path
        self.source_id = source_id
        self.settings = settings
        self.origin_wall_s = origin_wall_s
        self.manifest = manifest
        self.configs: dict[str, bytes] = {}
        self.codecs: dict[str, tuple[Media, str]] = {}
        self.info: dict[str, TrackInfo] = {}
        self.has_video = False
        self.feeds: list[dict[str, Any]] = []
        #: media bytes that reached the disk (`confirm`), not merely queued
        self.bytes_written = 0
        self.files_written = 0
        self.frames_dropped = 0
        self._file: Path | None = None
        self._ops: list[FileOp] = []
        #: manifest entries of the files written, until their last operation is confirmed
        self._entries: dict[Path, dict[str, Any]] = {}
        self._entry: dict[str, Any] | None = None
        self._tracks: dict[str, _Track] = {}
        self._file_start_ms = 0
        self._fragment_start_ms: int | None = None
        self._last_ms = 0
        self._sequence = 1
        self._rotate = False

    # -- input -----------------------------------------------------------------------------

    def feed_changed(self, feed_id: int, remote_addr: str, at_unix_s: float) -> None:
        if self.feeds and self.feeds[-1]["feedId"] == feed_id:
            return  #: one switch can supersede several standbys: recorded once
        feed = {"feedId": feed_id, "remoteAddr": remote_addr, "from": round(at_unix_s, 3)}
        self.feeds.append(feed)
        if self._entry is not None:
            self._entry["feeds"].append(feed)
            self._save_manifest()

    def push(self, out: OutputFrame) -> None:
        frame = out.frame
        if frame.media is Media.DATA:
            return
        if frame.track_info is not None:
            self.info[frame.track_id] = frame.track_info
        payload = coded_payload(frame)
        if payload is None:
            return
        track_id = frame.track_id
        if frame.config:
            if frame.media is Media.VIDEO:
                self.has_video = True
            old = self._tracks.get(track_id)
            self.configs[track_id] = payload
            self.codecs[track_id] = (frame.media, frame.codec)
            if old is not None and config_key(frame.codec, payload) != old.key:
                self._rotate = True
            elif old is None and self._file is not None:
                self._rotate = (
                    True  #: a track that joined late starts a new file at the next keyframe
                )
            return
        if not payload:
            return
        if frame.media is Media.VIDEO:
            self.has_video = True
        self.codecs.setdefault(track_id, (frame.media, frame.codec))
        dts = out.dts_ms
        boundary = frame.keyframe if frame.media is Media.VIDEO else not self.has_video
        if self._file is None:
            if not boundary:
                self.frames_dropped += 1
                return
            self._open(frame, dts)
        elif boundary and (
            self._rotate
            or track_id not in self._tracks
            or dts - self._file_start_ms >= self.settings.file_s * 1000
        ):
            self.close_file()
            self._open(frame, dts)
        track = self._tracks.get(track_id)
        if track is None:
            self.frames_dropped += 1  #: a track that appeared mid-file waits for the next file
            return
        if self._fragment_start_ms is None:
            self._fragment_start_ms = dts
        track.samples.append((dts, frame.cts_ms, payload, frame.keyframe))
        self._last_ms = max(self._last_ms, dts)
        if dts - self._fragment_start_ms >= self.settings.fragment_s * 1000:
            self._flush()

    # -- files -----------------------------------------------------------------------------

    def _open(self, first: Any, dts_ms: int) -> None:
        tracks: dict[str, _Track] = {}
        for track_id, (media, codec) in sorted(self.codecs.items()):
            config = self.configs.get(track_id, b"")
            spec = track_spec(len(tracks) + 1, media, codec, config, self.info.get(track_id))
            if spec is not None:
                tracks[track_id] = _Track(len(tracks) + 1, spec, config_key(codec, config))
        if first.track_id not in tracks:
            self.frames_dropped += 1  #: MP4 cannot carry it
            return
        start_unix = self.origin_wall_s + dts_ms / 1000
        name = (
            datetime.datetime.fromtimestamp(start_unix, datetime.UTC).strftime("%Y%m%dT%H%M%S.%f")[
                :-3
            ]
            + "Z.mp4"
        )
        path = self.folder / name
        init = fmp4.init_segment([t.spec for t in tracks.values()])
        self._file = path
        self._ops.append(FileOp("open", path, init))
        self._tracks = tracks
        self._file_start_ms = dts_ms
        self._fragment_start_ms = None
        self._last_ms = dts_ms
        self._rotate = False
        self.files_written += 1
        self._entry = {
            "file": str(path.relative_to(self.root)),
            "sourceId": self.source_id,
            "start": round(start_unix, 3),
            "startIso": iso(start_unix),
            "end": None,
            "endIso": None,
            "bytes": len(init),
            "tracks": [
                {
                    "trackId": tid,
                    "mp4TrackId": t.number,
                    "media": t.spec.media,
                    "codec": t.spec.codec,
                    "width": t.spec.width or None,
                    "height": t.spec.height or None,
                    "sampleRate": t.spec.sample_rate or None,
                    "channels": t.spec.channels if t.spec.media == "audio" else None,
                }
                for tid, t in tracks.items()
            ],
            "feeds": list(self.feeds[-1:]),
        }
        self._entries[path] = self._entry
        self.manifest.files.append(self._entry)
        self._save_manifest()
        log.info(
            "record start stream=%s sourceId=%r file=%s", self.stream_path, self.source_id, path
        )

    def _flush(self) -> None:
        if self._file is None:
            return
        runs = []
        for track in self._tracks.values():
            if not track.samples:
                continue
            scale = track.spec.timescale
            rows = track.samples
            ticks = [(dts - self._file_start_ms) * scale // 1000 for dts, _, _, _ in rows]
            samples = []
            for i, (_, cts, data, key) in enumerate(rows):
                if i + 1 < len(rows):
                    duration = ticks[i + 1] - ticks[i]
                else:
                    duration = (
                        (
                            audio_frame_samples(track.spec.codec, data, scale)
                            if track.spec.media == "audio"
                            else None
                        )
                        or track.last_duration
                        or scale // 30
                    )
                track.last_duration = duration if i + 1 < len(rows) else track.last_duration
                samples.append(fmp4.Sample(data, max(duration, 0), key, cts * scale // 1000))
            if len(rows) > 1:
                track.last_duration = ticks[-1] - ticks[-2]
            runs.append((track.number, max(ticks[0], 0), samples))
            track.samples = []
        self._fragment_start_ms = None
        if not runs:
            return
        data = fmp4.fragment(self._sequence, runs)
        self._sequence += 1
        self._ops.append(FileOp("write", self._file, data))
        if self._entry is not None:
            self._entry["bytes"] += len(data)

    def close_file(self) -> None:
        if self._file is None:
            return
        self._flush()
        self._ops.append(FileOp("close", self._file))
        self._file = None
        self._tracks = {}
        if self._entry is not None:
            end = self.origin_wall_s + self._last_ms / 1000
            self._entry["end"] = round(end, 3)
            self._entry["endIso"] = iso(end)
            self._save_manifest()
            log.info(
                "record end stream=%s sourceId=%r file=%s bytes=%d",
                self.stream_path,
                self.source_id,
                self._entry["file"],
                self._entry["bytes"],
            )
        self._entry = None

    def _save_manifest(self) -> None:
        self._ops.append(self.manifest.snapshot())

    def take_ops(self) -> list[FileOp]:
        """The file operations queued since the last call, in order."""
        ops, self._ops = self._ops, []
        return ops

    def confirm(self, ops: list[FileOp], result: OpsResult) -> None:
        """What the writer did with `ops` (from `take_ops`): only bytes that reached the disk
        count, in `bytes_written` and in the manifest (rewritten when a write failed)."""
        self.bytes_written += result.bytes_written
        corrected = False
        for op, written in result.failed:
            entry = self._entries.get(op.path)
            if entry is not None and op.kind in ("open", "write"):
                entry["bytes"] = max(0, entry["bytes"] - (len(op.data) - written))
                corrected = True
        for op in ops:
            if op.kind == "close":
                self._entries.pop(op.path, None)
        if corrected:
            self._save_manifest()

    @property
    def current_file(self) -> str | None:
        return self._entry["file"] if self._entry is not None else None


def apply_retention(
    root: Path,
    *,
    max_age_s: float,
    max_total_bytes: int,
    now_unix: float,
    active: set[str],
    live_streams: frozenset[str] = frozenset(),
) -> list[str]:
    """Deletes recordings past the limits (never a file being written); returns what it deleted.

    Manifests of `live_streams` are not rewritten here: their owner (the recorder, on the
    event loop) drops the deleted entries and saves, so a manifest has one writer."""
    manifests = []
    for path in root.rglob(MANIFEST):
        try:
            stream = json.loads(path.read_text("utf-8")).get("stream", "")
        except (OSError, ValueError):
            continue
        manifests.append(Manifest(root, stream, folder=path.parent))
    closed: list[tuple[float, Manifest, dict[str, Any]]] = []
    total = 0
    for manifest in manifests:
        for entry in manifest.files:
            path = root / entry["file"]
            size = path.stat().st_size if path.exists() else 0
            total += size
            if entry["file"] in active:
                continue
            end = entry.get("end") or (path.stat().st_mtime if path.exists() else entry["start"])
            closed.append((end, manifest, entry))
    closed.sort(key=lambda item: item[0])
    doomed: list[tuple[Manifest, dict[str, Any]]] = []
    for end, manifest, entry in closed:
        path = root / entry["file"]
        size = path.stat().st_size if path.exists() else 0
        too_old = max_age_s > 0 and now_unix - end > max_age_s
        too_big = max_total_bytes > 0 and total > max_total_bytes
        if too_old or too_big:
            doomed.append((manifest, entry))
            total -= size
    deleted = []
    for manifest, entry in doomed:
        (root / entry["file"]).unlink(missing_ok=True)
        manifest.files.remove(entry)
        deleted.append(entry["file"])
    for manifest in {id(m): m for m, _ in doomed}.values():
        if manifest.stream_path not in live_streams:
            manifest.save()
    return deleted

"""Multicam export: every source's recordings of a time range, aligned, in one Matroska file.

`export()` reads a stream's manifest (outputs/record.py), opens every
recording that overlaps the range with PyAV, and remuxes their packets (no
re-encoding) into one file with a track per source track, named after the
source. Every packet is placed on the stream's common clock: the file's start
(manifest) plus the packet's time in the file, minus the range start; so the
tracks of sources that started at different moments line up as they happened.
Video tracks start at their first keyframe inside the range. A source whose
codec parameters change between files gets one more track from there on
(Matroska tracks cannot change parameters). A file cut short by a crash is
read up to its last complete fragment.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs
import av

from rtmp_ingest.outputs.names import disk_path
from rtmp_ingest.outputs.record import MANIFEST

log = logging.getLogger("rtmp_ingest.export")

MS = Fraction(1, 1000)


class ExportError(Exception):
    """Why an export cannot be made, worded for the operator."""


@attrs.frozen
class ExportResult:
    path: Path
    tracks: tuple[str, ...]
    packets: int
    start_unix: float
    end_unix: float
    files_read: int
    first_ms: dict[str, int]  #: per output track: time of its first packet in the output


def load_manifest(root: Path, stream_path: str) -> list[dict[str, Any]]:
    path = root / disk_path(stream_path) / MANIFEST
    try:
        return json.loads(path.read_text("utf-8"))["files"]
    except FileNotFoundError:
        raise ExportError(f"no recordings of stream {stream_path!r} under {root}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(f"unreadable manifest {path}: {exc}") from None


def _packets(
    root: Path, entries: list[dict[str, Any]], stats: dict[str, int]
) -> Iterator[tuple[float, int, Any, Any, dict[str, Any]]]:
    """(unix time of DTS, tiebreak, packet, input stream, manifest entry) of one source, in order."""
    counter = 0
    for entry in entries:
        path = root / entry["file"]
        try:
            container = av.open(str(path), format="mp4")
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("export: skipping %s: %s", path, exc)
            continue
        stats["files"] += 1
        try:
            demuxer = container.demux()
            while True:
                try:
                    packet = next(demuxer)
                except StopIteration:
                    break
                except av.error.FFmpegError:
                    break  #: a crash-truncated last fragment
                if packet.dts is None or packet.size == 0 or packet.stream.time_base is None:
                    continue
                counter += 1
                yield (
                    entry["start"] + float(packet.dts * packet.stream.time_base),
                    counter,
                    packet,
                    packet.stream,
                    entry,
                )
        finally:
            container.close()


def export(
    root: Path,
    stream_path: str,
    out_path: Path,
    *,
    start_unix: float | None = None,
    end_unix: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> ExportResult:
    entries = load_manifest(root, stream_path)
    files = [e for e in entries if (root / e["file"]).exists()]
    if not files:
        raise ExportError(f"stream {stream_path!r} has no recording files left")
    first_start = min(e["start"] for e in files)
    start = first_start if start_unix is None else start_unix
    end = end_unix if end_unix is not None else max((e["end"] or float("inf")) for e in files)
    if end <= start:
        raise ExportError("the end of the range is not after its start")
    chosen = [e for e in files if e["start"] < end and (e["end"] is None or e["end"] > start)]
    if not chosen:
        raise ExportError(f"no recording of {stream_path!r} overlaps the range")
    by_source: dict[str, list[dict[str, Any]]] = {}
    for entry in sorted(chosen, key=lambda e: e["start"]):
        by_source.setdefault(entry["sourceId"], []).append(entry)
    stats = {"files": 0}
    merged = heapq.merge(
        *(_packets(root, e, stats) for e in by_source.values()), key=lambda item: (item[0], item[1])
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    output = av.open(str(out_path), "w", format="matroska")
    outputs: dict[tuple[Any, ...], Any] = {}
    names: list[str] = []
    # every track exists before the first packet (libavformat writes the header then)
    for entries_of_source in by_source.values():
        for entry in entries_of_source:
            try:
                probe = av.open(str(root / entry["file"]), format="mp4")
            except (av.error.FFmpegError, OSError):
                continue
            with probe:
                for stream in probe.streams:
                    key = _track_key(entry, stream)
                    if key in outputs:
                        continue
                    ostream = output.add_stream_from_template(stream)
                    ostream.time_base = MS
                    label = _label(entry, stream, sum(1 for k in outputs if k[:2] == key[:2]))
                    ostream.metadata["title"] = label
                    outputs[key] = ostream
                    names.append(label)
    started: set[tuple[Any, ...]] = set()
    first_ms: dict[str, int] = {}
    last_dts: dict[tuple[Any, ...], int] = {}
    packets = 0
    span = (min(end, max((e["end"] or end) for e in chosen)) - start) or 1.0
    try:
        for at, _, packet, stream, entry in merged:
            if at >= end:
                continue
            if at < start:
                continue
            key = _track_key(entry, stream)
            found = outputs.get(key)
            if found is None:
                continue  #: its file could not be opened for the header scan
            ostream = found
            if key not in started:
                if stream.type == "video" and not packet.is_keyframe:
                    continue
                started.add(key)
                first_ms[ostream.metadata.get("title", str(key))] = round((at - start) * 1000)
            offset = (
                float((packet.pts - packet.dts) * stream.time_base)
                if packet.pts is not None
                else 0.0
            )
            dts = round((at - start) * 1000)
            if dts <= last_dts.get(key, -1):
                dts = last_dts[key] + 1
            last_dts[key] = dts
            packet.stream = ostream
            packet.time_base = MS
            packet.dts = dts
            packet.pts = dts + round(offset * 1000)
            output.mux(packet)
            packets += 1
            if progress is not None and packets % 200 == 0:
                progress(min(1.0, (at - start) / span))
    finally:
        output.close()
    if progress is not None:
        progress(1.0)
    if not packets:
        out_path.unlink(missing_ok=True)
        raise ExportError("the range holds no media")
    return ExportResult(out_path, tuple(names), packets, start, end, stats["files"], first_ms)


def _track_key(entry: dict[str, Any], stream: Any) -> tuple[Any, ...]:
    context = stream.codec_context
    track = next(
        (t["trackId"] for t in entry["tracks"] if t["mp4TrackId"] == stream.index + 1),
        f"{stream.type}{stream.index}",
    )
    if stream.type == "video":
        # a new SPS (profile, size) needs a new Matroska track; same settings share one
        return (
            entry["sourceId"],
            track,
            context.name,
            context.width,
            context.height,
            bytes(context.extradata or b""),
        )
    # audio: encoders rewrite side details (FLAC's MD5, frame sizes) in their configuration
    return (
        entry["sourceId"],
        track,
        context.name,
        context.sample_rate,
        getattr(context, "channels", 0),
    )


def _label(entry: dict[str, Any], stream: Any, earlier: int) -> str:
    source = entry["sourceId"] or "default"
    track = next(
        (t["trackId"] for t in entry["tracks"] if t["mp4TrackId"] == stream.index + 1), stream.type
    )
    return f"{source} {track}" + (f" ({earlier + 1})" if earlier else "")

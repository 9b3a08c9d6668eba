"""Recording files written by SourceRecording, read back with PyAV."""

from __future__ import annotations

import errno
import json

import av
import pytest

from rtmp_ingest.bundle import Media
from rtmp_ingest.outputs.names import MAX_FILE_NAME_BYTES, disk_path, disk_source_segment
from rtmp_ingest.outputs.record import FileOp, Manifest, RecordSettings, SourceRecording, apply_ops
from tests.outputs.helpers import frames_of, output_frames
from tests.tools.flv_media import encode_tags


def record(tmp_path, outs, **settings):
    manifest = Manifest(tmp_path, "live/s")
    recording = SourceRecording(
        tmp_path, "live/s", "cam", RecordSettings(**settings), 1_800_000_000.0, manifest
    )
    files: dict = {}
    for out in outs:
        recording.push(out)
        assert apply_ops(recording.take_ops(), files).error is None
    recording.close_file()
    apply_ops(recording.take_ops(), files)
    return manifest


def test_an_audio_track_that_joins_late_gets_into_the_next_file_at_once(tmp_path):
    outs = output_frames(frames_of(encode_tags(6.0, gop_s=1.0)))
    config = next(o for o in outs if o.frame.media is Media.AUDIO and o.frame.config)
    late = [o for o in outs if not (o.frame.media is Media.AUDIO and o.dts_ms < 500)]
    at = next(i for i, o in enumerate(late) if o.frame.media is Media.AUDIO)
    late.insert(at, config)  #: the encoder's audio starts half a second after its video
    manifest = record(tmp_path, late, file_s=600.0, fragment_s=0.5)
    files = manifest.files
    assert len(files) == 2, "the file without audio ends at the next keyframe"
    assert [t["trackId"] for t in files[0]["tracks"]] == ["video0"]
    assert sorted(t["trackId"] for t in files[1]["tracks"]) == ["audio0", "video0"]
    assert files[1]["start"] - files[0]["start"] <= 1.05
    with av.open(str(tmp_path / files[1]["file"])) as container:
        kinds = sorted(s.type for s in container.streams)
        packets = sum(1 for p in container.demux(audio=0) if p.dts is not None)
    assert kinds == ["audio", "video"] and packets > 150


def test_a_failed_write_does_not_stop_the_next_file_from_opening(tmp_path):
    files: dict = {}
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("x")
    result = apply_ops(
        [
            FileOp("open", blocked / "a.mp4", b"init"),
            FileOp("write", blocked / "a.mp4", b"data"),
            FileOp("close", blocked / "a.mp4"),
            FileOp("open", tmp_path / "b.mp4", b"init"),
        ],
        files,
    )
    assert isinstance(result.error, OSError)
    assert result.bytes_written == 4, "only b.mp4's init reached a file"
    assert (
        apply_ops(
            [FileOp("write", tmp_path / "b.mp4", b"+more"), FileOp("close", tmp_path / "b.mp4")],
            files,
        ).error
        is None
    )
    assert (tmp_path / "b.mp4").read_bytes() == b"init+more"


def test_a_manifest_that_cannot_be_written_is_reported_not_raised(tmp_path):
    (tmp_path / "live").write_text("a file where the stream folder should be")
    manifest = Manifest(tmp_path, "live/s")
    assert manifest.save() is False and manifest.save_errors == 1


class FullDisk:
    """An unbuffered file on a disk with `room` bytes left: short writes, then ENOSPC."""

    def __init__(self, room: list[int]) -> None:
        self.room = room
        self.data = bytearray()

    def write(self, data) -> int:
        if not self.room[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(len(data), self.room[0], 1000)
        self.room[0] -= n
        self.data += bytes(data[:n])
        return n

    def close(self) -> None:
        pass


def test_on_a_full_disk_only_bytes_that_reached_the_disk_count_and_no_temporary_is_left(
    tmp_path,
):
    outs = output_frames(frames_of(encode_tags(4.0, gop_s=1.0)))
    manifest = Manifest(tmp_path, "live/s")
    recording = SourceRecording(
        tmp_path, "live/s", "cam", RecordSettings(file_s=600.0, fragment_s=0.5), 1.8e9, manifest
    )
    room = [60_000]
    opened: list[FullDisk] = []

    def opener(path):
        opened.append(FullDisk(room))
        return opened[-1]

    files: dict = {}
    queued = 0
    errors = []
    for out in outs:
        recording.push(out)
        ops = recording.take_ops()
        queued += sum(len(op.data) for op in ops if op.kind in ("open", "write"))
        result = apply_ops(ops, files, opener=opener)
        recording.confirm(ops, result)
        errors.append(result.error)
    recording.close_file()
    ops = recording.take_ops()
    recording.confirm(ops, apply_ops(ops, files, opener=opener))
    apply_ops(recording.take_ops(), files, opener=opener)  #: the corrected manifest
    on_disk = sum(len(f.data) for f in opened)
    assert queued > on_disk == 60_000, "the disk filled up"
    assert any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in errors)
    assert recording.bytes_written == on_disk, "bytesWritten counts what reached the disk"
    saved = json.loads((tmp_path / disk_path("live/s") / "manifest.json").read_text())
    assert saved["files"][0]["bytes"] == on_disk
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_manifest_write_on_a_full_disk_leaves_no_temporary_behind(tmp_path, monkeypatch):
    manifest = Manifest(tmp_path, "live/s")
    manifest.files.append({"file": "x"})
    real = type(tmp_path).write_bytes

    def full(self, data):
        real(self, data[: len(data) // 2])  #: half of it, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(tmp_path), "write_bytes", full)
    result = apply_ops([manifest.snapshot()], {})
    assert isinstance(result.error, OSError) and manifest.save_errors == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [], "no temporary manifest"


def test_an_older_manifest_snapshot_never_overwrites_a_newer_one(tmp_path):
    manifest = Manifest(tmp_path, "live/s")
    manifest.files.append({"file": "a"})
    old = manifest.snapshot()
    manifest.files.append({"file": "b"})
    new = manifest.snapshot()
    apply_ops([new, old], {})  #: the sources of a stream write from their own threads
    saved = json.loads(manifest.path.read_text())
    assert [f["file"] for f in saved["files"]] == ["a", "b"]


@pytest.mark.parametrize(
    "name",
    ["n" * 300, "é" * 200, "%" * 100, "a/" * 10 + "x" * 256, "short"],
)
def test_every_name_component_on_disk_fits_a_file_name_and_long_ones_hash_stably(name):
    for component in disk_path(f"live/{name}").split("/") + [disk_source_segment(name)]:
        assert 0 < len(component.encode()) <= MAX_FILE_NAME_BYTES - 45
    assert disk_source_segment(name) == disk_source_segment(name)
    if len(name) < 100:
        assert disk_source_segment(name) == name, "short names stay readable"
    else:
        assert disk_source_segment(name) != disk_source_segment(name + "x")


def test_a_300_byte_stream_name_is_recorded_under_a_hashed_folder(tmp_path):
    stream = "live/" + "n" * 300
    outs = output_frames(frames_of(encode_tags(2.0, gop_s=1.0)))
    manifest = Manifest(tmp_path, stream)
    recording = SourceRecording(
        tmp_path, stream, "c" * 300, RecordSettings(file_s=600.0, fragment_s=0.5), 1.8e9, manifest
    )
    files: dict = {}
    for out in outs:
        recording.push(out)
        assert apply_ops(recording.take_ops(), files).error is None
    recording.close_file()
    assert apply_ops(recording.take_ops(), files).error is None
    saved = json.loads(manifest.path.read_text())
    assert saved["stream"] == stream and (tmp_path / saved["files"][0]["file"]).stat().st_size

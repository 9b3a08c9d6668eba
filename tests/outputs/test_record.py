"""Recording files written by SourceRecording, read back with PyAV."""

from __future__ import annotations

import av

from rtmp_ingest.bundle import Media
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
        assert apply_ops(recording.take_ops(), files) is None
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
    error = apply_ops(
        [
            FileOp("open", blocked / "a.mp4", b"init"),
            FileOp("write", blocked / "a.mp4", b"data"),
            FileOp("close", blocked / "a.mp4"),
            FileOp("open", tmp_path / "b.mp4", b"init"),
        ],
        files,
    )
    assert isinstance(error, OSError)
    assert (
        apply_ops(
            [FileOp("write", tmp_path / "b.mp4", b"+more"), FileOp("close", tmp_path / "b.mp4")],
            files,
        )
        is None
    )
    assert (tmp_path / "b.mp4").read_bytes() == b"init+more"


def test_a_manifest_that_cannot_be_written_is_reported_not_raised(tmp_path):
    (tmp_path / "live").write_text("a file where the stream folder should be")
    manifest = Manifest(tmp_path, "live/s")
    assert manifest.save() is False and manifest.save_errors == 1

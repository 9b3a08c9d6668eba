"""The HLS and recording services on fakes of what they use: a subscriber, feeds, a disk.

What a user notices: one stream's output failing never stops the others (or the server),
a disk that refused a write gets the file later."""

from __future__ import annotations

import errno
from pathlib import Path

import attrs
import pytest
import trio

from rtmp_ingest.bundle import Active, Inactive, OutputFrame
from rtmp_ingest.config import HlsConfig, RecordConfig
from rtmp_ingest.outputs.seams import OutputCounters
from rtmp_ingest.server.hls import HlsService
from rtmp_ingest.server.record import RecorderService
from tests.outputs.helpers import encoded


class FakeReader:
    def __init__(self) -> None:
        self.queue: list[OutputFrame] = []
        self.wakeup = None
        self.closed = False

    def push(self, out: OutputFrame) -> None:
        self.queue.append(out)
        if self.wakeup is not None:
            self.wakeup()

    def drain_nowait(self) -> list[OutputFrame]:
        frames, self.queue = self.queue, []
        return frames

    def set_wakeup(self, wakeup) -> None:
        self.wakeup = wakeup
        if wakeup is not None and self.queue:
            wakeup()

    def close(self) -> None:
        self.closed = True


class FakeBundle:
    """Subscribes by (stream, source); `broken` streams raise as a bug would."""

    def __init__(self, broken: frozenset[str] = frozenset()) -> None:
        self.readers: dict[tuple[str, str | None], FakeReader] = {}
        self.broken = broken

    def subscribe(self, stream_path, source_id=None, *, max_frames=None, start=None):
        if stream_path in self.broken:
            raise RuntimeError("a bug while subscribing")
        reader = self.readers[(stream_path, source_id)] = FakeReader()
        return reader


@attrs.frozen
class Feed:
    record: bool = True
    remote: str = "127.0.0.1:5000"


def active(stream: str, source_id: str = "cam") -> Active:
    return Active(
        stream_path=stream,
        source_id=source_id,
        feed_id=1,
        tracks=(),
        timeline_origin_wall_s=1_800_000_000.0,
    )


async def feed_all(reader: FakeReader, outs: list[OutputFrame]) -> None:
    for out in outs:
        reader.push(out)
        await trio.lowlevel.checkpoint()
    await trio.testing.wait_all_tasks_blocked()


async def test_one_stream_whose_output_fails_stops_only_that_streams_recording(tmp_path):
    bundle = FakeBundle(broken=frozenset({"live/bad"}))
    metrics = OutputCounters()
    service = RecorderService(
        config=RecordConfig(fragment_s=0.5),
        registry=bundle,
        feeds={1: Feed()},
        data_dir=tmp_path,
        metrics=metrics,
    )
    long_name = "live/" + "n" * 300  #: the real ffmpeg CLI sends this; ENAMETOOLONG before
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        service.on_event(active("live/bad"))
        service.on_event(active("live/bad"))  #: logged and counted once
        service.on_event(active(long_name))
        await trio.testing.wait_all_tasks_blocked()
        await feed_all(bundle.readers[(long_name, "cam")], encoded(3.0))
        assert metrics.failures == {"record": 1}
        assert service.statistics()["outputFailures"] == 1
        service.on_event(Inactive(stream_path=long_name, source_id="cam"))
        service.on_event(Inactive(stream_path="live/bad", source_id="cam"))
        with trio.fail_after(10):
            while service.recordings:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    files = [p for p in (tmp_path / "recordings").rglob("*.mp4")]
    assert len(files) == 1 and files[0].stat().st_size > 2_000
    assert all(len(part.encode()) <= 255 for part in files[0].parts)
    assert service.statistics()["bytesWritten"] == files[0].stat().st_size
    assert not list(tmp_path.rglob("*.tmp"))


async def test_an_hls_event_that_fails_stops_only_that_sources_hls(tmp_path):
    bundle = FakeBundle(broken=frozenset({"live/bad"}))
    metrics = OutputCounters()
    service = HlsService(config=HlsConfig(linger_s=0.0), registry=bundle, metrics=metrics)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        service.on_event(active("live/bad"))
        service.on_event(active("live/good"))
        await trio.testing.wait_all_tasks_blocked()
        await feed_all(bundle.readers[("live/good", "cam")], encoded(5.0))
        assert metrics.failures == {"hls": 1}
        assert ("live/bad", "cam") not in service.sources
        good = service.sources[("live/good", "cam")]
        assert good.tracks["video0"].segments, "the other stream's HLS goes on"
        nursery.cancel_scope.cancel()


async def test_an_hls_disk_copy_whose_write_failed_is_written_later(tmp_path, monkeypatch):
    real = Path.write_bytes
    refusals = {"left": 4}
    refused: list[Path] = []

    def flaky(self, data):
        if self.suffix == ".tmp" and ".m4s." in self.name and refusals["left"]:
            refusals["left"] -= 1
            real(self, data[:10])  #: a partial temporary, then the disk is full
            refused.append(self)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", flaky)
    bundle = FakeBundle()
    service = HlsService(
        config=HlsConfig(directory=str(tmp_path / "hls"), linger_s=0.0, window_segments=20),
        registry=bundle,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        service.on_event(active("live/disk"))
        await trio.testing.wait_all_tasks_blocked()
        await feed_all(bundle.readers[("live/disk", "cam")], encoded(9.0))
        source = service.sources[("live/disk", "cam")]
        folder = tmp_path / "hls" / "live" / "disk" / "cam"
        listed = {
            f"{track.name}/seg-{segment.msn}.m4s"
            for track in source.tracks.values()
            for segment in track.segments
        }
        with trio.move_on_after(10):  #: the writes run in a worker thread
            while not listed <= (
                on_disk := {p.relative_to(folder).as_posix() for p in folder.rglob("*.m4s")}
            ):
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    assert len(refused) == 4
    assert len(listed) >= 6
    assert listed <= on_disk, f"refused writes were tried again: missing {listed - on_disk}"
    assert service.errors >= 1 and service.disk_files_given_up == 0
    assert not list(tmp_path.rglob("*.tmp")), "a failed write leaves no temporary behind"


@pytest.mark.parametrize("back_within_linger", [False, True])
async def test_frames_hls_could_not_use_stay_counted_when_their_source_leaves(back_within_linger):
    """rtmp_ingest_hls_errors is a counter: a source leaving the list takes nothing off,
    whether it leaves after its linger or is replaced by its publisher's return."""
    bundle = FakeBundle()
    service = HlsService(
        config=HlsConfig(linger_s=60.0 if back_within_linger else 0.0), registry=bundle
    )
    outs = encoded(3.0, audio=None)
    first_key = next(i for i, o in enumerate(outs) if o.frame.keyframe and not o.frame.config)
    # frames before a keyframe cannot start a video segment: cut, and counted
    lead = outs[first_key + 1 : first_key + 4]
    config = [o for o in outs if o.frame.config]
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        service.on_event(active("live/s"))
        await trio.testing.wait_all_tasks_blocked()
        reader = bundle.readers[("live/s", "cam")]
        await feed_all(reader, config + lead + outs[first_key:])
        assert service.frames_unused() == 3
        service.on_event(Inactive(stream_path="live/s", source_id="cam"))
        if back_within_linger:
            await trio.testing.wait_all_tasks_blocked()
            service.on_event(active("live/s"))  #: back while the ended one lingers
            await trio.testing.wait_all_tasks_blocked()
        else:
            with trio.fail_after(10):
                while service.sources:
                    await trio.sleep(0.01)
        assert service.frames_unused() == 3
        nursery.cancel_scope.cancel()

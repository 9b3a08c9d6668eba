"""Issue 16 defect 9 (full disk): recordings on a 4 MiB tmpfs that a 6 MB/s feed fills.

The daemon keeps running and the feed stays on air; `rtmp_ingest_record_bytes_total`
counts no more than the disk took, and no temporary manifest is left behind. Needs
root to mount the tmpfs (the test skips elsewhere).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import trio

from tests.hostile.test_http import fast_feed, metric
from tests.hostile.test_memory import MiB

pytestmark = pytest.mark.e2e


@pytest.fixture
def tiny_disk(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.decode(errors='replace')}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


async def test_a_full_disk_is_counted_honestly_and_leaves_no_temporary_files(
    serve, nursery, tiny_disk
):
    served = await serve(
        apps={"*": {"multisource": True, "record": True}},
        record={"directory": str(tiny_disk), "fragment_s": 0.2, "file_s": 1.0},
        hls={"enabled": False},
    )
    stop = await fast_feed(served, nursery, "fill")
    with trio.fail_after(10):
        while await served.live_feed_id("live/fill", "") is None:
            await trio.sleep(0.05)
    with trio.fail_after(20):  # the disk fills up
        while disk_bytes(tiny_disk) < 3 * MiB:
            await trio.sleep(0.1)
    await trio.sleep(2.0)  # it keeps writing into a full disk for a while
    assert served.alive()
    assert await served.live_feed_id("live/fill", "") is not None
    stop.set()
    with trio.fail_after(15):
        while await served.live_feed_id("live/fill", "") is not None:
            await trio.sleep(0.1)
    await trio.sleep(1.0)  # the recorder closes its files
    written = metric((await served.get("/metrics")).text, "rtmp_ingest_record_bytes_total")
    on_disk = disk_bytes(tiny_disk)
    assert written <= on_disk + 64 * 1024, f"counted {written:.0f} bytes, the disk holds {on_disk}"
    leftovers = [p.name for p in tiny_disk.rglob("*.tmp")]
    assert not leftovers, leftovers
    assert "Traceback" not in served.log()
    assert served.alive()

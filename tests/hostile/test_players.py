"""Issue 16 defects 4 (a player that does not read) and 5 (RTMP players through a reconnect).

The daemon runs in this test's trio loop (`start_daemon`): these tests need its
player set, not its RSS.
"""

from __future__ import annotations

import socket

import pytest
import trio

from rtmp_ingest.rtmp import events as ev
from tests.hostile import tools
from tests.hostile.test_http import fast_feed
from tests.hostile.test_memory import MAX_PLAYER_GAP_S
from tests.hostile.tools import Watch
from tests.tools.rtmp_client import TrioRtmpClient

pytestmark = pytest.mark.e2e


async def test_rtmp_player_stays_through_a_reconnect_inside_grace(start_daemon, nursery):
    """16.5: the encoder drops and comes back 2.5 s later (idle timeout 1 s, grace 6 s):
    the RTMP player is not ended and plays the new feed."""
    running = await start_daemon(rtmp={"idle_timeout_s": 1.0}, bundle={"reconnect_grace_s": 6.0})
    first = trio.Event()
    await nursery.start(
        lambda task_status: tools.publish_loop(
            running.rtmp_port, "live", "show", stop=first, task_status=task_status
        )
    )
    watch = Watch()
    await nursery.start(watch.run, running.rtmp_port, "live", "show")
    with trio.fail_after(15):
        await watch.first.wait()
    first.set()  # the encoder's connection ends (no unpublish): the source waits in grace
    await trio.sleep(2.5)  # longer than rtmp.idle_timeout_s, well inside the grace
    assert watch.closed_at is None, "the RTMP player was ended while its source was in grace"
    back = trio.current_time()
    second = trio.Event()
    await nursery.start(
        lambda task_status: tools.publish_loop(
            running.rtmp_port, "live", "show", stop=second, task_status=task_status
        )
    )
    with trio.fail_after(15):
        while watch.frames_between(back, trio.current_time()) < 25:
            assert watch.closed_at is None, "the RTMP player was ended after the reconnect"
            await trio.sleep(0.05)
    second.set()


async def test_a_player_that_stops_reading_is_dropped_after_write_timeout(start_daemon, nursery):
    """16.4: an RTMP player with a tiny receive buffer stops reading a 6 MB/s feed: it is
    dropped after rtmp.write_timeout_s; another player of the feed plays on."""
    running = await start_daemon(rtmp={"write_timeout_s": 1.0}, hls={"enabled": False})
    stop = await fast_feed(running, nursery, "fast")
    watch = Watch()
    await nursery.start(watch.run, running.rtmp_port, "live", "fast")
    with trio.fail_after(15):
        await watch.first.wait()
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", running.rtmp_port))
    paused = TrioRtmpClient(trio.SocketStream(sock))
    await paused.connect("live")
    sid = await paused.create_stream()
    await paused.play(sid, "fast")
    assert await paused.wait_for(lambda e: isinstance(e, ev.VideoData), timeout_s=10)
    assert len(running.daemon.players) == 2
    stopped = trio.current_time()  # from here on it reads nothing
    with trio.fail_after(1.0 + 8.0):
        while len(running.daemon.players) > 1:
            await trio.sleep(0.05)
    assert watch.closed_at is None
    assert watch.longest_gap_s(stopped, trio.current_time()) < MAX_PLAYER_GAP_S
    await paused.aclose()
    stop.set()

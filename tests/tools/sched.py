"""Keep test processes under the normal scheduler.

SVT-AV1 (libsvtav1, FFmpeg's and PyAV's AV1 encoder here) run as root puts the threads
it creates — and the thread that opened it — under SCHED_FIFO at priority 99. In a test
process every child started afterwards (a `serve`, ffmpeg, Chromium) inherits that, and
a busy real-time thread starves the rest of a 2-core machine (CI runs as root). After an
AV1 encoder opens, and after every test, each thread of the process goes back to
SCHED_OTHER.
"""

from __future__ import annotations

import os


def normal_scheduling() -> int:
    """Every thread of this process to SCHED_OTHER; returns how many were not."""
    moved = 0
    try:
        tids = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return 0
    for tid in tids:
        try:
            if os.sched_getscheduler(tid) != os.SCHED_OTHER:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                moved += 1
        except OSError:  #: the thread ended meanwhile
            continue
    return moved

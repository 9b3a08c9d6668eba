# Theory of operation
# -------------------
# Fan-out from a source to its readers (outputs, players) through one bounded
# queue per reader.  The source calls into this module synchronously for every
# frame it puts on its output timeline; nothing here can block or raise into
# ingest, and the cost per frame is O(readers) appends (docs/spec.md §3, docs/style.md §10).
#
# The common case is inlined by the source: queue not full, reader not gating
# → `deque.append`.  Everything else lands in `Reader._offer_slow` or
# `Reader._overflow`:
#
# * Lag, source with video: the frame that finds the queue full is dropped and
#   the reader enters *skip* mode for that source: every frame of the source is
#   dropped (counted) until the source's next sync frame (a keyframe of its
#   primary video track) finds room.  If configuration or metadata frames were
#   dropped meanwhile, the source's current ones are queued before that
#   keyframe, so the reader never misses a codec change.  Other video layers of
#   the source are then *gated*: each resumes at its own next keyframe.
# * Lag, audio-only source: drop-oldest — the oldest queued frame is discarded
#   if it is a coded audio frame of the same source, otherwise the new frame is.
# * A new reader starts from the GOP cache (configuration frames, the last
#   metadata frame, frames since the last keyframe) or, with StartMode.LIVE or
#   when the cache is unusable or larger than the queue, from the configuration
#   frames with every video track gated until its next keyframe.
#
# The wakeup hook is called when a reader's queue turns non-empty; a driver
# sets a trio.Event there.  An exception from it is counted and the hook is
# dropped: a broken reader must not break ingest.
#
# A reader sees its sources through `SourceView`, the few things the lag policy
# and a start need.  The source's hot path in turn appends to `_queue` itself
# when `_slow` is False and the queue has room (`_max_frames`), calling
# `_wake`, `_offer_slow` and `_overflow` otherwise: the one measured shortcut
# into this class (see source.py).
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection
from typing import Protocol

from rtmp_ingest.bundle.events import ReaderStatistics
from rtmp_ingest.bundle.records import READER_QUEUE_BYTES, Media, OutputFrame


class SourceView(Protocol):
    """What a reader needs of a source it reads."""

    @property
    def source_id(self) -> str: ...

    @property
    def audio_only(self) -> bool:
        """No primary video track on air: every coded frame is a place to start."""
        ...

    def side_frames(self) -> list[OutputFrame]:
        """The current configuration frames and the last metadata frame."""
        ...

    def gop_cache(self) -> tuple[list[OutputFrame], Collection[str]] | None:
        """Frames since the last keyframe, and the video layers still without one."""
        ...

    def video_track_ids(self) -> list[str]: ...


_VIDEO = Media.VIDEO
_AUDIO = Media.AUDIO


class Reader:
    """A bounded queue of output frames for one stream or one source of it.

    Obtained from `Registry.subscribe`; the registry fills it, the driver
    empties it with `get_nowait`/`drain_nowait` when the wakeup hook fires.
    """

    __slots__ = (
        "_closed",
        "_delivered",
        "_dropped",
        "_gate",
        "_max_bytes",
        "_max_frames",
        "_missed_config",
        "_on_close",
        "_queue",
        "_queued_bytes",
        "_skipping",
        "_skips",
        "_slow",
        "_wakeup",
        "_wakeup_errors",
        "source_id",
        "stream_path",
    )

    def __init__(
        self,
        stream_path: str,
        source_id: str | None,
        *,
        max_frames: int,
        on_close: Callable[[Reader], None],
        max_bytes: int = READER_QUEUE_BYTES,
    ) -> None:
        self.stream_path = stream_path
        #: None: every source of the stream; frames carry their source id.
        self.source_id = source_id
        self._queue: deque[OutputFrame] = deque()
        self._max_frames = max_frames
        #: payload bytes queued; a reader over `_max_bytes` overflows like a full queue (a
        #: stalled player pins at most that much of the feed, not 512 frames of 4K video)
        self._max_bytes = max_bytes
        self._queued_bytes = 0
        self._wakeup: Callable[[], None] | None = None
        self._slow = False  # True while _skipping or _gate is non-empty
        self._skipping: set[str] = set()  # source ids waiting for their next sync frame
        self._gate: set[tuple[str, str]] = set()  # (source id, video track) awaiting a keyframe
        self._missed_config: set[str] = set()
        self._delivered = 0
        self._dropped = 0
        self._skips = 0
        self._wakeup_errors = 0
        self._closed = False
        self._on_close = on_close

    # -- driver side -------------------------------------------------------

    def get_nowait(self) -> OutputFrame | None:
        """The oldest queued frame, or None when the queue is empty."""
        if not self._queue:
            return None
        self._delivered += 1
        out = self._queue.popleft()
        self._queued_bytes = max(0, self._queued_bytes - len(out.frame.payload))
        return out

    def drain_nowait(self) -> list[OutputFrame]:
        """Every queued frame, oldest first (possibly none)."""
        queue = self._queue
        frames = list(queue)
        queue.clear()
        self._queued_bytes = 0
        self._delivered += len(frames)
        return frames

    def set_wakeup(self, wakeup: Callable[[], None] | None) -> None:
        """Call `wakeup()` whenever the queue turns non-empty (now, if it already is).

        It runs inside the registry's call (the publisher's push). It may signal
        (e.g. set a trio.Event) or drain this reader at once (`drain_nowait`), but
        must not call anything else of the registry; an exception is counted and
        removes the hook.
        """
        self._wakeup = wakeup
        if wakeup is not None and self._queue:
            self._wake()

    def close(self) -> None:
        """Detach from the registry and forget queued frames; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._queued_bytes = 0
        self._wakeup = None
        self._on_close(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> ReaderStatistics:
        return ReaderStatistics(
            stream_path=self.stream_path,
            source_id=self.source_id,
            delivered=self._delivered,
            dropped=self._dropped,
            skips=self._skips,
            queued=len(self._queue),
            max_frames=self._max_frames,
            closed=self._closed,
        )

    # -- bundle side ---------------------------------------------------------

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is None:
            return
        try:
            wakeup()
        except Exception:  # noqa: BLE001 - a reader's wakeup must never break the writer
            self._wakeup_errors += 1
            self._wakeup = None

    def offer(self, out: OutputFrame, sync: bool, source: SourceView) -> None:
        """Take one frame of `source` (the general path; `sync`: a place to start)."""
        if self._slow:
            self._offer_slow(out, sync, source)
        else:
            self._push(out, source)

    def _push(self, out: OutputFrame, source: SourceView) -> None:
        """Queue `out` or apply the lag policy (the general path)."""
        queue = self._queue
        if len(queue) < self._max_frames and self._queued_bytes < self._max_bytes:
            queue.append(out)
            self._queued_bytes += len(out.frame.payload)
            if len(queue) == 1:
                self._wake()
        else:
            self._overflow(out, source)

    def _overflow(self, out: OutputFrame, source: SourceView) -> None:
        """The queue is full: lose a frame, counted (see the module comment)."""
        self._dropped += 1
        frame = out.frame
        sid = out.source_id
        if source.audio_only and frame.media is _AUDIO and not frame.config:
            oldest = self._queue[0]
            if oldest.source_id == sid and oldest.frame.media is _AUDIO and not oldest.frame.config:
                self._queue.popleft()
                self._queue.append(out)
                self._queued_bytes += len(frame.payload) - len(oldest.frame.payload)
            return
        self._skips += 1
        self._skipping.add(sid)
        if frame.config or frame.media is Media.DATA:
            self._missed_config.add(sid)
        self._slow = True

    def _offer_slow(self, out: OutputFrame, sync: bool, source: SourceView) -> None:
        """Deliver while skipping or gating some track."""
        sid = out.source_id
        frame = out.frame
        if sid in self._skipping:
            if (
                not sync
                or len(self._queue) >= self._max_frames
                or self._queued_bytes >= self._max_bytes
            ):
                self._dropped += 1
                if frame.config or frame.media is Media.DATA:
                    self._missed_config.add(sid)
                return
            self._skipping.discard(sid)
            if sid in self._missed_config:
                self._missed_config.discard(sid)
                for config in source.side_frames():
                    self._push(config, source)
            for track_id in source.video_track_ids():
                if track_id != frame.track_id:
                    self._gate.add((sid, track_id))
            self._slow = bool(self._skipping or self._gate)
        elif self._gate and frame.media is _VIDEO and not frame.config:
            key = (sid, frame.track_id)
            if key in self._gate:
                if not frame.keyframe:
                    self._dropped += 1
                    return
                self._gate.discard(key)
                self._slow = bool(self._skipping or self._gate)
        self._push(out, source)

    def start(self, source: SourceView, *, from_gop: bool) -> None:
        """Queue what a new reader of a live `source` needs to start at once (registry side)."""
        sid = source.source_id
        side = source.side_frames()
        cache = source.gop_cache() if from_gop else None
        gated: Collection[str]
        #: the start may exceed `_max_bytes` (an instant start needs the whole GOP); later
        #: frames overflow until the driver has taken it
        if cache is not None and len(side) + len(cache[0]) <= self._max_frames:
            start = [*side, *cache[0]]
            gated = cache[1]
        else:
            start = side[: self._max_frames]
            gated = source.video_track_ids()
        self._queue.extend(start)
        self._queued_bytes += sum(len(o.frame.payload) for o in start)
        for track_id in gated:
            self._gate.add((sid, track_id))
        self._slow = bool(self._skipping or self._gate)
        if self._queue:
            self._wake()

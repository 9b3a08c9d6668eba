# Theory of operation
# -------------------
# A feed is one publishing session (docs/spec.md §3): the handle a driver gets on
# admission and passes back with every frame.  It is a mutable object owned by
# its source; drivers read only its public attributes and `state`.
#
# Per feed the bundle keeps what a switch needs (the latest configuration frame
# per track, the last metadata frame, which video track's keyframes are sync
# frames, the timestamp offset onto the source's timeline) and what the control
# API shows (docs/spec.md §4: bytes, frames, keyframes, bitrate, tracks, uptime).
# Bitrate is measured without per-frame clock arithmetic: once a second (of
# `now_s`) the feed records its byte count, and the bitrate is the growth since
# the oldest record inside the window.
#
# A feed is its source's record: `source.py` is the one module that reads and
# writes its underscored fields (the per-frame counters live here so the hot
# path touches one object).  Everybody else uses the public attributes,
# `state`, `end_reason` and `statistics()`.
# `rank`, `superseded` and `demoted` order it among the feeds of its source
# (ranking.py).
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from rtmp_ingest.bundle.events import FeedStatistics
from rtmp_ingest.bundle.ranking import Rank, newcomer
from rtmp_ingest.bundle.records import (
    BITRATE_WINDOW_S,
    PREROLL_AUDIO_FRAMES,
    EndReason,
    FeedState,
    Frame,
    Media,
    TrackDescription,
)

if TYPE_CHECKING:
    from rtmp_ingest.bundle.source import Source


class Feed:
    """Handle of one publishing session; pass it to `push_frame` and `end_feed`."""

    __slots__ = (
        "_audio_frames",
        "_bytes",
        "_configs",
        "_dropped",
        "_end_reason",
        "_frames",
        "_gating_track",
        "_keyframes",
        "_marks",
        "_metadata",
        "_next_mark_s",
        "_offset_ms",
        "_preroll",
        "_state",
        "_switch_in_ms",
        "_tracks",
        "_video_frames",
        "client",
        "demoted",
        "feed_id",
        "priority",
        "query",
        "rank",
        "remote_addr",
        "source",
        "source_id",
        "started_at_s",
        "stream_path",
        "superseded",
    )

    def __init__(
        self,
        *,
        feed_id: int,
        stream_path: str,
        source_id: str,
        priority: int,
        remote_addr: str,
        query: tuple[tuple[str, str], ...],
        now_s: float,
        source: Source,
    ) -> None:
        self.feed_id = feed_id
        self.stream_path = stream_path
        self.source_id = source_id
        self.priority = priority
        self.remote_addr = remote_addr
        self.query = query
        self.started_at_s = now_s
        #: the source this feed contends for (the registry routes frames through it)
        self.source = source
        #: the publishing client's host: `remote_addr` without its port
        self.client = client_host(remote_addr)
        #: its place among the feeds of its source (ranking.py); set by the source
        self.rank: Rank = newcomer(priority, feed_id)
        #: it lost the source to an equal that superseded it (and has not been on air since)
        self.superseded = False
        #: it is ranked below a successor as the reconnect of a superseded encoder
        self.demoted = False
        self._state = FeedState.PENDING
        self._end_reason: EndReason | None = None
        self._offset_ms = 0
        self._switch_in_ms = 0  # feed DTS of its sync frame (or of its last re-anchor)
        self._tracks: dict[str, TrackDescription] = {}
        self._configs: dict[str, Frame] = {}  # latest configuration frame per track
        self._metadata: Frame | None = None
        self._gating_track: str | None = None  # first video track: its keyframes are sync
        self._bytes = 0
        self._frames = 0
        self._video_frames = 0
        self._audio_frames = 0
        self._keyframes = 0
        # audio sent while off air, to fill the timeline up to the sync frame at a switch
        self._preroll: deque[Frame] = deque(maxlen=PREROLL_AUDIO_FRAMES)
        self._dropped = 0
        # (second, bytes_in at its start) once a second the feed sends: bitrate window.
        self._marks: deque[tuple[float, int]] = deque([(now_s, 0)], maxlen=BITRATE_WINDOW_S + 1)
        self._next_mark_s = now_s + 1.0

    @property
    def state(self) -> FeedState:
        return self._state

    @property
    def end_reason(self) -> EndReason | None:
        return self._end_reason

    def _mark(self, now_s: float) -> None:
        self._marks.append((now_s, self._bytes))
        self._next_mark_s = now_s + 1.0

    def _uncount_config(self, frame: Frame) -> None:
        """A configuration record was counted as a coded frame by the hot path: take it back."""
        if frame.media is Media.VIDEO:
            self._video_frames -= 1
            if frame.keyframe:
                self._keyframes -= 1
        elif frame.media is Media.AUDIO:
            self._audio_frames -= 1

    def _note_track(self, frame: Frame) -> bool:
        """Record the track `frame` belongs to; True if its description changed."""
        track_id = frame.track_id
        known = self._tracks.get(track_id)
        info = frame.track_info if frame.track_info is not None else (known.info if known else None)
        if known is not None and known.codec == frame.codec and known.info == info:
            return False
        self._tracks[track_id] = TrackDescription(track_id, frame.media, frame.codec, info)
        if frame.media is Media.VIDEO and self._gating_track is None:
            self._gating_track = track_id
        return True

    def statistics(self, *, now_s: float) -> FeedStatistics:
        since_s, since_bytes = self._marks[-1]  # silent for the whole window
        for mark_s, mark_bytes in self._marks:
            if mark_s >= now_s - BITRATE_WINDOW_S:
                since_s, since_bytes = mark_s, mark_bytes
                break
        span_s = now_s - since_s
        bitrate_kbps = (self._bytes - since_bytes) * 8 / 1000 / span_s if span_s > 0 else 0.0
        return FeedStatistics(
            feed_id=self.feed_id,
            stream_path=self.stream_path,
            source_id=self.source_id,
            priority=self.priority,
            state=self._state,
            remote_addr=self.remote_addr,
            started_at_s=self.started_at_s,
            uptime_s=max(0.0, now_s - self.started_at_s),
            bytes_in=self._bytes,
            frames_in=self._frames,
            video_frames_in=self._video_frames,
            audio_frames_in=self._audio_frames,
            keyframes_in=self._keyframes,
            frames_dropped=self._dropped,
            bitrate_kbps=bitrate_kbps,
            tracks=tuple(self._tracks.values()),
            end_reason=self._end_reason,
        )


def client_host(remote_addr: str) -> str:
    """`remote_addr` without its port: `"[::1]:5000"` → `"::1"`, `"a.b:1"` → `"a.b"`."""
    if remote_addr.startswith("["):
        end = remote_addr.find("]")
        return remote_addr[1:end] if end > 0 else remote_addr
    if remote_addr.count(":") == 1:
        return remote_addr.rsplit(":", 1)[0]
    return remote_addr  # no port, or a bare IPv6 address

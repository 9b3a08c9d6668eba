# Theory of operation
# -------------------
# A source (SPEC.md §3) is one `sourceId` of a stream: the feeds contending for
# it, the one on air, and its single output timeline.  All per-frame work of
# the bundle happens in `Source.push`; the registry only finds the source.
#
# Feeds.  Every feed has a rank (priority, feed_id); feed ids grow, so among
# equal priorities the newest ranks highest.  A feed that is not on air goes on
# air at its next *sync frame* — a keyframe of its first video track, or any
# coded audio frame while it has shown no video — if it outranks the feed on
# air or nothing is on air (SPEC.md §3.3, §3.4).  At that instant every other
# feed of equal priority (older, by rank) is superseded and leaves the source;
# a lower-priority feed that was on air becomes standby.  Until then the
# newcomer's coded frames are dropped and its configuration frames kept, so
# viewers see nothing of it, and if it ends first nothing changes for them.
#
# Timeline (SPEC.md §3.5).  Output DTS = feed DTS + the feed's offset; one
# offset per feed keeps its tracks in sync.  On a switch the offset is chosen
# so the sync frame lands at  last + max(frame duration, wall-clock gap)  where
# `last` is the highest DTS the source delivered and the gap is measured since
# that delivery.  A coded frame of the on-air feed is then checked:
#   * above  last + max(frame duration, wall gap) + max_jitter_ms  → re-anchor:
#     the offset moves so the frame lands at  last + max(frame duration, gap);
#   * below its track's last DTS by more than max_jitter_ms → re-anchor likewise;
#   * below its track's last DTS by less → clamped to it (non-decreasing DTS).
# The first frame of each track after a switch must not be older than the sync
# frame (older frames belong before the switch and are dropped), and a video
# track starts at a keyframe.  Configuration and metadata frames are stamped
# with `last`; they are not media samples and take no part in the ordering.
# The frame duration is an exponential average of the primary video track's
# (or, audio-only, the first audio track's) DTS steps up to 1 s.
#
# `OutputFrame.discontinuity` marks where a track (re)starts: its first
# configuration and coded frame on a timeline, and the configuration frame that
# changes its codec or parameters (a switch to an encoder with other settings,
# or a mid-stream reconfiguration) together with the next coded frame.
from __future__ import annotations

from typing import TYPE_CHECKING

from rtmp_ingest.bundle.events import (
    Active,
    Inactive,
    Reconnecting,
    SourceStatistics,
    Superseded,
    Updated,
)
from rtmp_ingest.bundle.feed import Feed
from rtmp_ingest.bundle.records import (
    DEFAULT_AUDIO_FRAME_MS,
    DEFAULT_VIDEO_FRAME_MS,
    MAX_FRAME_DURATION_MS,
    EndReason,
    FeedState,
    Frame,
    Media,
    OutputFrame,
    SourceState,
    TrackDescription,
)

if TYPE_CHECKING:
    from rtmp_ingest.bundle.fanout import Reader
    from rtmp_ingest.bundle.registry import Registry

_VIDEO = Media.VIDEO
_AUDIO = Media.AUDIO
_DATA = Media.DATA
_ON_AIR = FeedState.ON_AIR
_ENDED = FeedState.ENDED
_NO_DTS = -(2**62)
_FRAME_MS_GAIN = 0.125  # weight of one new DTS step in the frame-duration average


def _outranks(feed: Feed, other: Feed) -> bool:
    """SPEC.md §3.4: higher priority first; among equals the newest (highest id)."""
    return (feed.priority, feed.feed_id) > (other.priority, other.feed_id)


class _TrackLine:
    """One track of a source's output timeline."""

    __slots__ = ("codec", "config", "disc_pending", "feed", "last_dts", "media", "track_id")

    def __init__(self, track_id: str, media: Media, codec: str) -> None:
        self.track_id = track_id
        self.media = media
        self.codec = codec
        self.last_dts = _NO_DTS  # below any DTS: a new track may start anywhere
        self.config: OutputFrame | None = None  # latest configuration delivered
        self.feed: Feed | None = None  # the on-air feed this track has started in
        self.disc_pending = True  # flag the next coded frame: the track (re)starts


class Source:
    """One source of a stream: contending feeds, the feed on air, the output timeline."""

    __slots__ = (
        "_active",
        "_cache_bytes",
        "_cache_frames",
        "_cache_skip",
        "_deadline_s",
        "_emit",
        "_feeds",
        "_frame_ms",
        "_frames_out",
        "_gating_line",
        "_last_dts",
        "_last_now_s",
        "_lines",
        "_max_cache_bytes",
        "_max_jitter_ms",
        "_metadata",
        "_on_air",
        "_origin_wall_s",
        "_registry",
        "_reported_tracks",
        "_supersedes",
        "_targets",
        "_timing_line",
        "created_at_s",
        "source_id",
        "stream_path",
    )

    def __init__(self, registry: Registry, stream_path: str, source_id: str, now_s: float) -> None:
        self.stream_path = stream_path
        self.source_id = source_id
        self.created_at_s = now_s
        self._registry = registry
        self._emit = registry._emit
        self._max_jitter_ms = registry.config.max_jitter_ms
        self._max_cache_bytes = registry.config.max_gop_cache_bytes
        self._feeds: list[Feed] = []
        self._on_air: Feed | None = None
        self._active = False  # Active emitted, Inactive not yet
        self._deadline_s: float | None = None  # reconnect grace running until then
        self._supersedes = 0
        self._frames_out = 0
        self._targets: tuple[Reader, ...] = ()
        self._reset_timeline()

    def _reset_timeline(self) -> None:
        self._lines: dict[str, _TrackLine] = {}
        self._gating_line: _TrackLine | None = None  # primary video track: keyframes are sync
        self._timing_line: _TrackLine | None = None  # measures the frame duration
        self._last_dts: int = 0  # highest DTS delivered (0 before the first frame)
        self._last_now_s = 0.0  # when it was delivered
        self._frame_ms = DEFAULT_VIDEO_FRAME_MS
        self._origin_wall_s: float | None = None
        self._metadata: OutputFrame | None = None
        self._cache_frames: list[OutputFrame] | None = None  # None: unusable, start live
        self._cache_bytes = 0
        self._cache_skip: set[str] = set()  # video layers without a keyframe in the cache
        self._reported_tracks: tuple[TrackDescription, ...] = ()

    # -- the hot path -----------------------------------------------------------

    def push(self, feed: Feed, frame: Frame, now_s: float) -> None:
        """Take one frame of `feed`; see the module comment for what happens to it."""
        size = len(frame.payload)
        feed._bytes += size
        feed._frames += 1
        if frame.keyframe:
            feed._keyframes += 1
        if now_s >= feed._next_mark_s:
            feed._mark(now_s)
        if feed is not self._on_air and not self._push_off_air(feed, frame, now_s):
            return
        if frame.config or frame.media is _DATA:
            self._push_side(feed, frame)
            return
        line = self._lines.get(frame.track_id)
        if line is None or line.feed is not feed or line.codec != frame.codec:
            line = self._start_track(feed, frame, line)
            if line is None:
                return
        last = self._last_dts
        dts = frame.dts_ms + feed._offset_ms
        if dts > last + self._frame_ms + self._max_jitter_ms:
            if dts > last + (now_s - self._last_now_s) * 1000.0 + self._max_jitter_ms:
                dts = self._reanchor(feed, frame, now_s)
        elif dts < line.last_dts:
            if dts < line.last_dts - self._max_jitter_ms:
                dts = self._reanchor(feed, frame, now_s)
            else:
                dts = line.last_dts
        if line is self._timing_line:
            step = dts - line.last_dts
            if 0 < step <= MAX_FRAME_DURATION_MS:
                self._frame_ms += (step - self._frame_ms) * _FRAME_MS_GAIN
        line.last_dts = dts
        if dts > last:
            self._last_dts = dts
        self._last_now_s = now_s
        disc = line.disc_pending
        if disc:
            line.disc_pending = False
        out = OutputFrame(self.source_id, frame, dts, disc)
        self._frames_out += 1
        gating = self._gating_line
        if line is gating and frame.keyframe:
            sync = True  # a new GOP: the cache restarts here
            self._cache_frames = [out]
            self._cache_bytes = size
            if len(self._lines) > 1:
                self._cache_skip = set(self._video_track_ids()) - {line.track_id}
        else:
            sync = gating is None  # audio-only: every frame is a place to start
            cache = self._cache_frames
            if cache is None:
                pass
            elif self._cache_skip:
                self._cache_add(out, frame)
            else:
                cache.append(out)
                self._cache_bytes += size
                if self._cache_bytes > self._max_cache_bytes:
                    self._cache_frames = None  # readers start live until the next keyframe
                    self._cache_bytes = 0
        for reader in self._targets:
            queue = reader._queue
            if reader._slow:
                reader._offer_slow(out, sync, self)
            elif not queue:
                queue.append(out)
                if reader._wakeup is not None:
                    reader._wake()
            elif len(queue) < reader._max_frames:
                queue.append(out)
            else:
                reader._overflow(out, self)

    def _cache_add(self, out: OutputFrame, frame: Frame) -> None:
        skip = self._cache_skip
        if skip and frame.track_id in skip:
            if not frame.keyframe:
                return
            skip.discard(frame.track_id)
        self._cache_frames.append(out)  # type: ignore[union-attr]
        self._cache_bytes += len(frame.payload)
        if self._cache_bytes > self._max_cache_bytes:
            self._cache_frames = None  # readers start live until the next keyframe
            self._cache_bytes = 0

    def _deliver(self, out: OutputFrame, sync: bool) -> None:
        """Fan `out` out to the readers (the general path, for rare frames)."""
        self._frames_out += 1
        for reader in self._targets:
            if reader._slow:
                reader._offer_slow(out, sync, self)
            else:
                reader._push(out, self)

    # -- rarer paths of push ------------------------------------------------------

    def _start_track(self, feed: Feed, frame: Frame, line: _TrackLine | None) -> _TrackLine | None:
        """First coded frame of a track in the on-air feed, or a codec change in it."""
        if feed._note_track(frame):
            self._report_tracks()
        if line is not None and line.feed is feed:
            line.codec = frame.codec  # mid-feed codec change without configuration frame
            line.disc_pending = True
            return line
        media = frame.media
        if frame.dts_ms < feed._switch_in_ms or (media is _VIDEO and not frame.keyframe):
            feed._dropped += 1  # before the switch instant, or a video track between keyframes
            return None
        if line is None:
            line = self._lines[frame.track_id] = _TrackLine(frame.track_id, media, frame.codec)
        elif line.codec != frame.codec:
            line.codec = frame.codec
            line.disc_pending = True
        line.feed = feed
        if media is _VIDEO and self._gating_line is None and feed._gating_track == frame.track_id:
            self._gating_line = line  # the feed went on air with audio; video starts now
            self._timing_line = line
            self._cache_frames = []
        elif self._timing_line is None:
            self._timing_line = line
            if media is _AUDIO:
                self._frame_ms = DEFAULT_AUDIO_FRAME_MS
        return line

    def _reanchor(self, feed: Feed, frame: Frame, now_s: float) -> int:
        """The publisher's clock jumped: restart the feed's offset from `frame`."""
        gap_ms = (now_s - self._last_now_s) * 1000.0
        dts = self._last_dts + int(max(self._frame_ms, gap_ms))
        feed._offset_ms = dts - frame.dts_ms
        feed._switch_in_ms = frame.dts_ms
        return dts

    def _push_side(self, feed: Feed, frame: Frame) -> None:
        """A configuration or metadata frame of the feed on air."""
        if frame.media is _DATA:
            feed._metadata = frame
            self._metadata = out = OutputFrame(self.source_id, frame, self._last_dts, False)
            self._deliver(out, False)
            return
        feed._configs[frame.track_id] = frame
        if feed._note_track(frame):
            self._report_tracks()
        line = self._lines.get(frame.track_id)
        fresh = line is None
        if line is None:
            line = self._lines[frame.track_id] = _TrackLine(
                frame.track_id, frame.media, frame.codec
            )
        previous = line.config
        changed = (
            fresh
            or line.codec != frame.codec
            or (previous is not None and previous.frame.payload != frame.payload)
        )
        line.codec = frame.codec
        line.config = out = OutputFrame(self.source_id, frame, self._last_dts, changed)
        if changed:
            line.disc_pending = True
        self._deliver(out, False)

    def _push_off_air(self, feed: Feed, frame: Frame, now_s: float) -> bool:
        """A frame of a feed not on air; True if it put the feed on air (deliver it)."""
        if feed._state is _ENDED:
            feed._dropped += 1
            return False
        feed._note_track(frame)
        media = frame.media
        if frame.config:
            feed._configs[frame.track_id] = frame
            return False
        if media is _DATA:
            feed._metadata = frame
            return False
        if media is _VIDEO:
            ready = frame.keyframe and frame.track_id == feed._gating_track
        else:
            ready = feed._gating_track is None  # audio puts on air only a feed without video
        on_air = self._on_air
        if ready and (on_air is None or _outranks(feed, on_air)):
            self._switch(feed, frame, now_s)
            return True
        feed._dropped += 1
        return False

    # -- switching and ending -------------------------------------------------------

    def _switch(self, new: Feed, sync_frame: Frame, now_s: float) -> None:
        """Put `new` on air from `sync_frame` on (SPEC.md §3.3–§3.6); `push` delivers it."""
        registry = self._registry
        registry._expire_due(now_s)  # a grace period that ran out closes the old timeline
        old = self._on_air
        #: SPEC.md §3.4 — among equals the newest wins: older equals are superseded.
        losers = [f for f in self._feeds if f.priority == new.priority and f.feed_id < new.feed_id]
        for loser in losers:
            loser._state = _ENDED
            loser._end_reason = EndReason.SUPERSEDED
            self._feeds.remove(loser)
            registry._forget_feed(loser)
        self._on_air = new
        self._restate()
        #: SPEC.md §3.5 — the sync frame follows the last delivered frame by one
        #: frame duration, or by the wall-clock gap when the source was silent.
        if self._origin_wall_s is None:
            out_dts = 0
            self._origin_wall_s = registry.wall_origin_s + now_s
            self._last_dts = 0
        else:
            gap_ms = (now_s - self._last_now_s) * 1000.0
            out_dts = self._last_dts + int(max(self._frame_ms, gap_ms))
        new._offset_ms = out_dts - sync_frame.dts_ms
        new._switch_in_ms = sync_frame.dts_ms
        if self._deadline_s is not None:
            self._deadline_s = None
            registry._cancel_deadline(self)
        self._install(new, out_dts, resend=old is None)
        if old is None or not self._active:
            self._active = True
            self._reported_tracks = tuple(new._tracks.values())
            self._emit(
                Active(
                    stream_path=self.stream_path,
                    source_id=self.source_id,
                    feed_id=new.feed_id,
                    tracks=self._reported_tracks,
                    timeline_origin_wall_s=self._origin_wall_s,
                )
            )
        for loser in losers:
            self._supersedes += 1
            self._emit(
                Superseded(
                    stream_path=self.stream_path,
                    source_id=self.source_id,
                    feed_id=loser.feed_id,
                    by_feed_id=new.feed_id,
                )
            )
        self._report_tracks()

    def _install(self, new: Feed, out_dts: int, *, resend: bool) -> None:
        """Re-point the track lines at `new`; deliver its configurations.

        On a handover between live feeds only changed configurations are sent;
        after a silence (`resend`) all are, for readers that joined meanwhile.
        """
        sid = self.source_id
        for line in self._lines.values():
            if line.track_id not in new._configs:
                line.config = None
        for track_id, frame in new._configs.items():
            line = self._lines.get(track_id)
            fresh = line is None
            if line is None:
                line = self._lines[track_id] = _TrackLine(track_id, frame.media, frame.codec)
            previous = line.config
            changed = (
                fresh
                or line.codec != frame.codec
                or (previous is not None and previous.frame.payload != frame.payload)
            )
            line.codec = frame.codec
            line.config = out = OutputFrame(sid, frame, out_dts, changed)
            if changed:
                line.disc_pending = True
            if changed or previous is None or resend:
                self._deliver(out, False)
        self._metadata = None
        if new._metadata is not None:
            self._metadata = out = OutputFrame(sid, new._metadata, out_dts, False)
            self._deliver(out, False)
        gating = new._gating_track
        if gating is not None:
            line = self._lines.get(gating)
            if line is None:
                line = self._lines[gating] = _TrackLine(gating, _VIDEO, new._tracks[gating].codec)
            self._gating_line = self._timing_line = line
            self._cache_frames = []
        else:
            self._gating_line = self._timing_line = None
            self._cache_frames = None
        self._cache_bytes = 0
        self._cache_skip = set()

    def end_feed(self, feed: Feed, reason: EndReason, now_s: float) -> None:
        """`feed` is gone (SPEC.md §3.6); a no-op if it already ended."""
        if feed._state is _ENDED:
            return
        feed._state = _ENDED
        feed._end_reason = reason
        self._feeds.remove(feed)
        if feed is self._on_air:
            self._on_air = None
            self._cache_frames = None
            self._deadline_s = now_s + self._registry.config.reconnect_grace_s
            self._emit(
                Reconnecting(
                    stream_path=self.stream_path,
                    source_id=self.source_id,
                    feed_id=feed.feed_id,
                    reason=reason,
                    deadline_s=self._deadline_s,
                )
            )
            self._registry._schedule_deadline(self)
        self._restate()

    def expire(self) -> None:
        """The grace period ran out: the timeline closes (SPEC.md §3.6)."""
        self._deadline_s = None
        self._active = False
        self._emit(Inactive(stream_path=self.stream_path, source_id=self.source_id))
        self._reset_timeline()

    def add_feed(self, feed: Feed) -> None:
        self._feeds.append(feed)
        self._restate()

    def _restate(self) -> None:
        on_air = self._on_air
        for feed in self._feeds:
            if feed is on_air:
                feed._state = _ON_AIR
            elif on_air is None or _outranks(feed, on_air):
                feed._state = FeedState.PENDING
            else:
                feed._state = FeedState.STANDBY

    def _report_tracks(self) -> None:
        on_air = self._on_air
        if on_air is None or not self._active:
            return
        tracks = tuple(on_air._tracks.values())
        if tracks != self._reported_tracks:
            self._reported_tracks = tracks
            self._emit(
                Updated(
                    stream_path=self.stream_path,
                    source_id=self.source_id,
                    feed_id=on_air.feed_id,
                    tracks=tracks,
                )
            )

    # -- helpers for readers and the registry ------------------------------------------

    @property
    def is_empty(self) -> bool:
        """No feed and no timeline to keep: the registry may drop the source."""
        return not self._feeds and self._deadline_s is None

    @property
    def state(self) -> SourceState:
        if self._on_air is not None:
            return SourceState.LIVE
        if self._deadline_s is not None:
            return SourceState.RECONNECTING
        return SourceState.PENDING

    def _current_side_frames(self) -> list[OutputFrame]:
        """Configuration frames and the last metadata frame of the feed on air."""
        if self._on_air is None:
            return []
        side = [line.config for line in self._lines.values() if line.config is not None]
        if self._metadata is not None:
            side.append(self._metadata)
        return side

    def _video_track_ids(self) -> list[str]:
        return [line.track_id for line in self._lines.values() if line.media is _VIDEO]

    def statistics(self, *, now_s: float) -> SourceStatistics:
        cached = self._cache_frames
        return SourceStatistics(
            stream_path=self.stream_path,
            source_id=self.source_id,
            state=self.state,
            on_air_feed_id=None if self._on_air is None else self._on_air.feed_id,
            feeds=tuple(feed.statistics(now_s=now_s) for feed in self._feeds),
            tracks=self._reported_tracks if self._active else (),
            supersede_count=self._supersedes,
            frames_out=self._frames_out,
            last_dts_ms=self._last_dts if self._origin_wall_s is not None else None,
            frame_duration_ms=self._frame_ms,
            timeline_origin_wall_s=self._origin_wall_s,
            gop_cache_frames=0 if cached is None else len(cached),
            gop_cache_bytes=self._cache_bytes,
            reconnect_deadline_s=self._deadline_s,
            readers=sum(1 for reader in self._targets if reader.source_id is not None),
        )

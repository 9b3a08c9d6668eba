# Theory of operation
# -------------------
# A source (docs/spec.md §3) is one `sourceId` of a stream: the feeds contending for
# it, the one on air, and its single output timeline.  All per-frame work of
# the bundle happens in `Source.push`; the registry only finds the source.
#
# A source knows nothing of the registry: it is built with its settings (the
# `BundleConfig`) and an `emit` callback, and reports every change as an event
# (`Active`, `Updated`, `Superseded`, `Reconnecting`, `Inactive`).  The registry
# derives its deadlines and its feed index from those events.
#
# Feeds.  Every feed has a rank (see feed.py): priority first, then its order;
# among equal priorities the newest ranks highest.  A feed that is not on air
# goes on air at its next *sync frame* — a keyframe of its first video track,
# or any coded audio frame while it has shown no video — if it outranks the
# feed on air, or, with nothing on air, if no connected feed of its priority
# outranks it (docs/spec.md §3.3, §3.4: a standby takes over only once every feed
# above it has ended, so there is never a double switch).  At that instant
# every other feed of equal priority ranked below it is *superseded*:
#   * `superseded = "standby"` (the default): it stays connected as a standby
#     below its successor, and goes on air again only if every feed above it
#     ends; its driver is told nothing (`Superseded.disconnect` is False);
#   * `superseded = "disconnect"`: it ends (EndReason.SUPERSEDED) and its driver
#     closes the publisher (`Superseded.disconnect` is True).
# A lower-priority feed that was on air becomes standby.  Until a newcomer goes
# on air its coded frames are dropped and its configuration frames kept, so
# viewers see nothing of it, and if it ends first nothing changes for them.
#
# Reconnects of a superseded encoder rank below the feed that superseded it
# (ranking.py), so an auto-reconnecting encoder never ping-pongs with its spare.
#
# Timeline (docs/spec.md §3.5).  Output DTS = feed DTS + the offset of the track's
# line (one offset per feed, so its tracks keep their sync, plus a small
# per-track audio skew set at a switch, below).  On a switch the offset is
# chosen so the sync frame lands one frame duration, or the wall-clock gap
# when the source was silent, after the last frame of its track, and its
# presentation time at least one frame duration after the highest PTS shown
# on that track (B-frames: the last frame out is not the last one shown).  A
# coded frame of the on-air feed is then checked:
#   * above  last + max(frame duration, wall gap) + max_jitter_ms  → re-anchor:
#     the offset moves so the frame lands at  last + max(frame duration, gap);
#   * below its track's last DTS by more than max_jitter_ms → re-anchor likewise;
#   * below its track's last DTS by less → clamped to it (non-decreasing DTS).
# The first frame of each video track after a switch must not be older than
# the sync frame and must be a keyframe.  Audio at a switch: the audio the new
# feed sent while waiting (kept in its preroll) and the audio that follows
# fill the time up to its sync frame; its first frame is the first one that
# does not overlap the last audio out by more than half a frame, and is moved
# to follow that audio by exactly one audio frame when that moves it by at
# most `max_audio_rebase_ms` (else the gap is real: DTX or silence).
# Configuration and metadata frames are stamped with the switch's (or the
# latest) DTS; they are not media samples and take no part in the ordering.
# The frame duration is an exponential average of the primary video track's
# (or, audio-only, the first audio track's) DTS steps up to 1 s.
#
# `OutputFrame.discontinuity` marks where a track (re)starts: its first
# configuration and coded frame on a timeline, and the configuration frame that
# changes its codec or parameters (a switch to an encoder with other settings,
# or a mid-stream reconfiguration) together with the next coded frame.
#
# Fan-out: `push` appends to the readers' queues itself (`Reader._queue`,
# `_slow`, `_max_frames`, `_wakeup`, see fanout.py).  This is the one shortcut
# across a class boundary, kept because it is the per-reader, per-frame cost
# that bench/bench_bundle.py measures; everything else goes through methods.
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rtmp_ingest.bundle.events import (
    Active,
    Event,
    Inactive,
    Reconnecting,
    SourceStatistics,
    Superseded,
    Updated,
)
from rtmp_ingest.bundle.feed import Feed
from rtmp_ingest.bundle.ranking import Lineages
from rtmp_ingest.bundle.records import (
    DEFAULT_AUDIO_FRAME_MS,
    DEFAULT_VIDEO_FRAME_MS,
    MAX_FRAME_DURATION_MS,
    BundleConfig,
    EndReason,
    FeedState,
    Frame,
    Media,
    OutputFrame,
    SourceState,
    TimelineResume,
    TrackDescription,
)

if TYPE_CHECKING:
    from rtmp_ingest.bundle.fanout import Reader

_VIDEO = Media.VIDEO
_AUDIO = Media.AUDIO
_DATA = Media.DATA
_ON_AIR = FeedState.ON_AIR
_ENDED = FeedState.ENDED
_NO_DTS = -(2**62)
_FRAME_MS_GAIN = 0.125  # weight of one new DTS step in the frame-duration average


class _TrackLine:
    """One track of a source's output timeline."""

    __slots__ = (
        "audio_target",
        "codec",
        "config",
        "disc_pending",
        "feed",
        "last_dts",
        "max_pts",
        "media",
        "offset_ms",
        "skew_ms",
        "track_id",
    )

    def __init__(self, track_id: str, media: Media, codec: str) -> None:
        self.track_id = track_id
        self.media = media
        self.codec = codec
        self.last_dts = _NO_DTS  # below any DTS: a new track may start anywhere
        self.max_pts = _NO_DTS  # highest PTS delivered (kept on the timing line)
        self.config: OutputFrame | None = None  # latest configuration delivered
        self.feed: Feed | None = None  # the on-air feed this track has started in
        self.offset_ms = 0  # feed DTS → output DTS: the feed's offset + skew_ms
        self.skew_ms = 0  # audio moved at a switch to follow the last audio out
        self.audio_target: float | None = None  # where the next feed's audio should start
        self.disc_pending = True  # flag the next coded frame: the track (re)starts


class Source:
    """One source of a stream: contending feeds, the feed on air, the output timeline."""

    __slots__ = (
        "_active",
        "_cache_bytes",
        "_cache_frames",
        "_cache_skip",
        "_config",
        "_deadline_s",
        "_emit",
        "_feeds",
        "_frame_ms",
        "_frames_out",
        "_gating_line",
        "_last_dts",
        "_last_now_s",
        "_lineage",
        "_lines",
        "_max_cache_bytes",
        "_max_jitter_ms",
        "_metadata",
        "_on_air",
        "_origin_wall_s",
        "_reported_tracks",
        "_resume",
        "_supersedes",
        "_targets",
        "_timing_line",
        "_wall_origin_s",
        "created_at_s",
        "source_id",
        "stream_path",
    )

    def __init__(
        self,
        stream_path: str,
        source_id: str,
        now_s: float,
        *,
        config: BundleConfig,
        emit: Callable[[Event], None],
        wall_origin_s: float = 0.0,
    ) -> None:
        self.stream_path = stream_path
        self.source_id = source_id
        self.created_at_s = now_s
        self._config = config
        self._emit = emit
        self._wall_origin_s = wall_origin_s
        self._max_jitter_ms = config.max_jitter_ms
        self._max_cache_bytes = config.max_gop_cache_bytes
        self._feeds: list[Feed] = []
        self._on_air: Feed | None = None
        self._active = False  # Active emitted, Inactive not yet
        self._deadline_s: float | None = None  # reconnect grace running until then
        self._supersedes = 0
        self._frames_out = 0
        self._targets: tuple[Reader, ...] = ()
        self._lineage = Lineages(window_s=config.superseded_reconnect_s)
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
        self._resume: TimelineResume | None = None
        self._lineage.clear()

    # -- the hot path -----------------------------------------------------------

    def push(self, feed: Feed, frame: Frame, now_s: float) -> None:
        """Take one frame of `feed`; see the module comment for what happens to it."""
        size = len(frame.payload)
        feed._bytes += size
        feed._frames += 1
        media = frame.media
        if media is _VIDEO:  # configuration records are taken back on their own path
            feed._video_frames += 1
            if frame.keyframe:
                feed._keyframes += 1
        elif media is _AUDIO:
            feed._audio_frames += 1
        if now_s >= feed._next_mark_s:
            feed._mark(now_s)
        if feed is not self._on_air and not self._push_off_air(feed, frame, now_s):
            return
        if frame.config or media is _DATA:
            self._push_side(feed, frame)
            return
        line = self._lines.get(frame.track_id)
        if line is None or line.feed is not feed or line.codec != frame.codec:
            line = self._start_track(feed, frame, line)
            if line is None:
                return
        last = self._last_dts
        dts = frame.dts_ms + line.offset_ms
        if dts > last + self._frame_ms + self._max_jitter_ms:
            if dts > last + (now_s - self._last_now_s) * 1000.0 + self._max_jitter_ms:
                dts = self._reanchor(feed, frame, now_s) + line.skew_ms
        elif dts < line.last_dts:
            if dts < line.last_dts - self._max_jitter_ms:
                dts = self._reanchor(feed, frame, now_s) + line.skew_ms
            else:
                dts = line.last_dts
        if line is self._timing_line:
            step = dts - line.last_dts
            if 0 < step <= MAX_FRAME_DURATION_MS:
                self._frame_ms += (step - self._frame_ms) * _FRAME_MS_GAIN
            pts = dts + frame.cts_ms
            if pts > line.max_pts:
                line.max_pts = pts
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
                self._cache_skip = set(self.video_track_ids()) - {line.track_id}
        else:
            sync = gating is None  # audio-only: every frame is a place to start
            cache = self._cache_frames
            if cache is None:
                pass
            elif self._cache_skip:
                self._cache_add(cache, out, frame)
            else:
                cache.append(out)
                self._cache_bytes += size
                if self._cache_bytes > self._max_cache_bytes:
                    self._cache_frames = None  # readers start live until the next keyframe
                    self._cache_bytes = 0
        # The measured fan-out shortcut (module comment): the reader's append, inlined.
        for reader in self._targets:
            queue = reader._queue
            if reader._slow:
                reader._offer_slow(out, sync, self)
            elif not queue:
                queue.append(out)
                reader._queued_bytes = size
                if reader._wakeup is not None:
                    reader._wake()
            elif len(queue) < reader._max_frames and reader._queued_bytes < reader._max_bytes:
                queue.append(out)
                reader._queued_bytes += size
            else:
                reader._overflow(out, self)

    def _cache_add(self, cache: list[OutputFrame], out: OutputFrame, frame: Frame) -> None:
        skip = self._cache_skip
        if skip and frame.track_id in skip:
            if not frame.keyframe:
                return
            skip.discard(frame.track_id)
        cache.append(out)
        self._cache_bytes += len(frame.payload)
        if self._cache_bytes > self._max_cache_bytes:
            self._cache_frames = None  # readers start live until the next keyframe
            self._cache_bytes = 0

    def _deliver(self, out: OutputFrame, sync: bool) -> None:
        """Fan `out` out to the readers (the general path, for rare frames)."""
        self._frames_out += 1
        for reader in self._targets:
            reader.offer(out, sync, self)

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
        if media is _AUDIO and line is not None and line.audio_target is not None:
            if not self._rebase_audio(feed, line, frame):
                feed._dropped += 1  # overlaps the audio out before the switch
                return None
        elif frame.dts_ms < feed._switch_in_ms or (media is _VIDEO and not frame.keyframe):
            feed._dropped += 1  # before the switch instant, or a video track between keyframes
            return None
        else:
            if line is not None:
                line.skew_ms = 0
        if line is None:
            line = self._lines[frame.track_id] = _TrackLine(frame.track_id, media, frame.codec)
        elif line.codec != frame.codec:
            line.codec = frame.codec
            line.disc_pending = True
        line.feed = feed
        line.offset_ms = feed._offset_ms + line.skew_ms
        if media is _VIDEO and self._gating_line is None and feed._gating_track == frame.track_id:
            self._gating_line = line  # the feed went on air with audio; video starts now
            self._timing_line = line
            self._cache_frames = []
        elif self._timing_line is None:
            self._timing_line = line
            if media is _AUDIO:
                self._frame_ms = DEFAULT_AUDIO_FRAME_MS
        return line

    def _rebase_audio(self, feed: Feed, line: _TrackLine, frame: Frame) -> bool:
        """The first audio of `feed` on a line with audio before the switch (module comment).

        False if `frame` overlaps the audio out before the switch by more than
        half a frame; otherwise sets the line's skew and clears its target.
        """
        target = line.audio_target
        assert target is not None
        natural = frame.dts_ms + feed._offset_ms
        if natural < target - DEFAULT_AUDIO_FRAME_MS / 2:
            return False
        skew = round(target - natural)
        line.skew_ms = skew if -skew <= self._config.max_audio_rebase_ms else 0
        line.audio_target = None
        return True

    def _reanchor(self, feed: Feed, frame: Frame, now_s: float) -> int:
        """The publisher's clock jumped: restart the feed's offset from `frame`.

        Returns the frame's DTS before its line's skew.
        """
        gap_ms = (now_s - self._last_now_s) * 1000.0
        dts = self._last_dts + int(max(self._frame_ms, gap_ms))
        feed._offset_ms = dts - frame.dts_ms
        feed._switch_in_ms = frame.dts_ms
        for line in self._lines.values():
            if line.feed is feed:
                line.offset_ms = feed._offset_ms + line.skew_ms
        return dts

    def _push_side(self, feed: Feed, frame: Frame) -> None:
        """A configuration or metadata frame of the feed on air."""
        if frame.media is _DATA:
            feed._metadata = frame
            self._metadata = out = OutputFrame(self.source_id, frame, self._last_dts, False)
            self._deliver(out, False)
            return
        feed._configs[frame.track_id] = frame
        feed._uncount_config(frame)
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
            if frame.config:
                feed._uncount_config(frame)
            return False
        feed._note_track(frame)
        media = frame.media
        if frame.config:
            feed._configs[frame.track_id] = frame
            feed._uncount_config(frame)
            return False
        if media is _DATA:
            feed._metadata = frame
            return False
        if media is _VIDEO:
            ready = frame.keyframe and frame.track_id == feed._gating_track
        else:
            ready = feed._gating_track is None  # audio puts on air only a feed without video
            if not ready:
                feed._preroll.append(frame)
        if ready and self._may_go_on_air(feed):
            self._switch(feed, frame, now_s)
            return True
        feed._dropped += 1
        return False

    def _may_go_on_air(self, feed: Feed) -> bool:
        """docs/spec.md §3.3, §3.4: it outranks the feed on air, or no equal above it is connected."""
        on_air = self._on_air
        if on_air is not None:
            return feed.rank > on_air.rank
        rank = feed.rank
        priority = feed.priority
        return not any(f.priority == priority and f.rank > rank for f in self._feeds)

    # -- switching and ending -------------------------------------------------------

    def _switch(self, new: Feed, sync_frame: Frame, now_s: float) -> None:
        """Put `new` on air from `sync_frame` on (docs/spec.md §3.3–§3.6); `push` delivers it."""
        if self._deadline_s is not None and now_s >= self._deadline_s:
            self.expire(now_s)  # the grace period ran out before the registry's tick
        old = self._on_air
        disconnect = self._config.superseded == "disconnect"
        #: docs/spec.md §3.3, §3.4 — among equals the newest wins: lower equals are superseded.
        losers = [
            f
            for f in self._feeds
            if f is not new
            and f.priority == new.priority
            and f.rank < new.rank
            and not f.superseded
        ]
        self._lineage.went_on_air(new)
        for loser in losers:  # (after: it may have superseded a feed of its own host)
            self._lineage.superseded(loser, new)
            if disconnect:
                self._end(loser, EndReason.SUPERSEDED, now_s)
        self._on_air = new
        self._restate()
        out_dts = self._switch_dts(sync_frame, now_s)
        new._offset_ms = out_dts - sync_frame.dts_ms
        new._switch_in_ms = sync_frame.dts_ms
        self._deadline_s = None
        self._install(new, out_dts, resend=old is None)
        self._preroll_audio(new, sync_frame)
        if old is None or not self._active:
            self._active = True
            self._reported_tracks = tuple(new._tracks.values())
            assert self._origin_wall_s is not None
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
                    disconnect=disconnect,
                )
            )
        self._report_tracks()

    def _switch_dts(self, sync_frame: Frame, now_s: float) -> int:
        """docs/spec.md §3.5 — where the sync frame lands on the output timeline."""
        if self._origin_wall_s is None:
            resume, self._resume = self._resume, None
            if resume is not None:  #: docs/spec.md §9: carry on another owner's timeline
                self._origin_wall_s = resume.origin_wall_s
                gap_ms = (self._wall_origin_s + now_s - resume.at_wall_s) * 1000.0
                self._last_dts = resume.last_dts_ms + round(max(self._frame_ms, gap_ms))
                return self._last_dts
            self._origin_wall_s = self._wall_origin_s + now_s
            self._last_dts = 0
            return 0
        gap_ms = (now_s - self._last_now_s) * 1000.0
        step = max(self._frame_ms, gap_ms)
        line = self._lines.get(sync_frame.track_id)
        if line is None or line.last_dts == _NO_DTS:
            return self._last_dts + round(step)  # a track new to this timeline
        out = line.last_dts + step
        if line.max_pts != _NO_DTS:
            # B-frames: its PTS must follow the highest PTS shown, not the last frame's.
            out = max(out, line.max_pts + self._frame_ms - sync_frame.cts_ms)
        return round(out)

    def _install(self, new: Feed, out_dts: int, *, resend: bool) -> None:
        """Re-point the track lines at `new`; deliver its configurations.

        On a handover between live feeds only changed configurations are sent;
        after a silence (`resend`) all are, for readers that joined meanwhile.
        """
        sid = self.source_id
        for line in self._lines.values():
            line.feed = None  # every track restarts in `new` (its offset, its keyframe)
            if line.track_id not in new._configs:
                line.config = None
        for track_id, frame in new._configs.items():
            known = self._lines.get(track_id)
            fresh = known is None
            line = known or _TrackLine(track_id, frame.media, frame.codec)
            self._lines[track_id] = line
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
        for line in self._lines.values():
            if line.media is _AUDIO and line.last_dts != _NO_DTS:
                line.audio_target = line.last_dts + DEFAULT_AUDIO_FRAME_MS
            else:
                line.audio_target = None
        gating = new._gating_track
        if gating is not None:
            gating_line = self._lines.get(gating)
            if gating_line is None:
                gating_line = _TrackLine(gating, _VIDEO, new._tracks[gating].codec)
                self._lines[gating] = gating_line
            self._gating_line = self._timing_line = gating_line
            self._cache_frames = []
        else:
            self._gating_line = self._timing_line = None
            self._cache_frames = None
        self._cache_bytes = 0
        self._cache_skip = set()

    def _preroll_audio(self, new: Feed, sync_frame: Frame) -> None:
        """Deliver the audio `new` sent while waiting that fills the time up to the switch."""
        preroll = new._preroll
        if not preroll:
            return
        frames = list(preroll)
        preroll.clear()
        if sync_frame.media is not _VIDEO:
            return
        floor = self._last_dts - new._offset_ms  # feed DTS of the last frame out
        ceiling = sync_frame.dts_ms + self._max_jitter_ms  # audio sent ahead of its video
        for frame in frames:
            if frame.dts_ms <= floor or frame.dts_ms > ceiling:
                continue  # overlaps what is out already, or no audio of this switch
            line = self._lines.get(frame.track_id)
            if line is None or line.feed is not new:
                if line is None or line.audio_target is None:
                    continue  # a track without audio before the switch starts with the feed
                if self._start_track(new, frame, line) is None:
                    new._dropped -= 1  # counted once, when it arrived
                    continue
            dts = frame.dts_ms + line.offset_ms
            if dts <= line.last_dts:
                continue
            new._dropped -= 1  # counted when it arrived off air; shown after all
            line.last_dts = dts
            if dts > self._last_dts:
                self._last_dts = dts
            disc = line.disc_pending
            line.disc_pending = False
            self._deliver(OutputFrame(self.source_id, frame, dts, disc), False)

    def add_feed(self, feed: Feed, now_s: float) -> None:
        """Admit `feed`; a superseded encoder's reconnect ranks below its successor."""
        self._lineage.admit(feed, self._feeds, now_s)
        self._feeds.append(feed)
        self._restate()

    def end_feed(self, feed: Feed, reason: EndReason, now_s: float) -> None:
        """`feed` is gone (docs/spec.md §3.6); a no-op if it already ended."""
        if feed._state is _ENDED:
            return
        self._end(feed, reason, now_s)
        if feed is self._on_air:
            self._on_air = None
            self._cache_frames = None
            self._deadline_s = now_s + self._config.reconnect_grace_s
            self._emit(
                Reconnecting(
                    stream_path=self.stream_path,
                    source_id=self.source_id,
                    feed_id=feed.feed_id,
                    reason=reason,
                    deadline_s=self._deadline_s,
                )
            )
        self._restate()

    def _end(self, feed: Feed, reason: EndReason, now_s: float) -> None:
        feed._state = _ENDED
        feed._end_reason = reason
        feed._preroll.clear()
        self._feeds.remove(feed)
        self._lineage.left(feed, now_s)

    def expire(self, now_s: float) -> None:
        """The grace period ran out: the timeline closes (docs/spec.md §3.6)."""
        self._deadline_s = None
        self._active = False
        self._emit(Inactive(stream_path=self.stream_path, source_id=self.source_id))
        self._reset_timeline()

    def _restate(self) -> None:
        on_air = self._on_air
        for feed in self._feeds:
            if feed is on_air:
                feed._state = _ON_AIR
            elif on_air is None or feed.rank > on_air.rank:
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

    # -- what the registry and the readers see -----------------------------------------

    def set_readers(self, readers: tuple[Reader, ...]) -> None:
        """The readers this source fans out to (the registry keeps the subscriptions)."""
        self._targets = readers

    def resume_from(self, resume: TimelineResume) -> bool:
        """The next timeline starts after `resume` (docs/spec.md §9); False (and nothing
        changes) while a timeline runs: it carries on as it is."""
        if self._origin_wall_s is not None:
            return False
        self._resume = resume
        return True

    def set_wall_origin(self, wall_origin_s: float) -> None:
        """Wall-clock seconds of `now_s` 0, for the next timeline's origin."""
        self._wall_origin_s = wall_origin_s

    @property
    def is_empty(self) -> bool:
        """No feed and no timeline to keep: the registry may drop the source."""
        return not self._feeds and self._deadline_s is None

    @property
    def feed_count(self) -> int:
        """Feeds contending for the source: on air, pending and standby."""
        return len(self._feeds)

    @property
    def live(self) -> bool:
        """A feed is on air."""
        return self._on_air is not None

    @property
    def state(self) -> SourceState:
        if self._on_air is not None:
            return SourceState.LIVE
        if self._deadline_s is not None:
            return SourceState.RECONNECTING
        return SourceState.PENDING

    @property
    def audio_only(self) -> bool:
        """No primary video track on air: every coded frame is a place to start."""
        return self._gating_line is None

    def side_frames(self) -> list[OutputFrame]:
        """Configuration frames and the last metadata frame of the feed on air."""
        if self._on_air is None:
            return []
        side = [line.config for line in self._lines.values() if line.config is not None]
        if self._metadata is not None:
            side.append(self._metadata)
        return side

    def gop_cache(self) -> tuple[list[OutputFrame], set[str]] | None:
        """Frames since the last keyframe, and the video layers still without one; or None."""
        if self._cache_frames is None:
            return None
        return self._cache_frames, self._cache_skip

    def video_track_ids(self) -> list[str]:
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

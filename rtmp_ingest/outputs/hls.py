"""Low-Latency HLS (fMP4/CMAF) packaging of one track: segments, parts, playlists.

Synchronous and free of I/O: the trio driver (`server/hls.py`) feeds a source's
`SourceHls` (outputs/hls_source.py) its frames from the bundle, which hands each
track's to its `TrackHls`, and serves what they hold.

Each track of a source (video layers, audio renditions) has its own media
playlist (`TrackHls`): its own fMP4 init segment, segments cut at keyframes
once `segment_s` has passed (audio: at any frame), and parts closed as soon as
the frame that fills `part_s` has arrived, so a part is fetchable the moment
its last frame is in. Tracks never wait for one another, so audio gaps (DTX)
cannot stall video. A codec or parameter change (a supersede by an encoder
with other settings) starts a new segment with a new init segment and
`EXT-X-DISCONTINUITY`. Every segment carries `EXT-X-PROGRAM-DATE-TIME` from
the source's timeline origin on the wall clock, which is common to the sources
of a stream (bundle continuity), so players can line sources up.

Media time (fMP4 `tfdt`) is given by the source (outputs/hls_source.py), near
zero at its first frame. After a parameter change the new init's samples carry
the parameter sets in band (`avc3`/`hev1`): the first keyframe has them, for
players that keep the first init (ffmpeg's HLS reader).

The window keeps `window_segments` complete segments (and parts for the last
`PARTS_KEPT_SEGMENTS`); a playlist never names a segment or part the track no
longer holds. Memory is bounded in bytes too: a segment is cut at
`max_segment_bytes`, a part at `max_part_bytes`, and old segments leave once the
window holds `max_window_bytes`, so a publisher whose timestamps never advance
cannot grow a segment forever. The preload hint names the part that will come
next (`hinted_part`). `version` grows with every new part, so the driver can wake
blocked playlist and preload-hint requests.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections import deque
from collections.abc import Callable
from urllib.parse import quote

import attrs

from rtmp_ingest.bundle import Frame, Media, TrackInfo
from rtmp_ingest.outputs import fmp4
from rtmp_ingest.outputs.samples import (
    audio_frame_samples,
    codec_string,
    config_key,
    parameter_sets,
    track_spec,
)

log = logging.getLogger("rtmp_ingest.outputs")

#: segments (before the current one) whose parts stay listed and fetchable
PARTS_KEPT_SEGMENTS = 3
#: segments kept fetchable after they leave the playlist (a player that just read it may
#: still ask for them: RFC 8216 6.2.2)
RETIRED_SEGMENTS = 2
#: PART-TARGET is `part_s` plus this share, so that whole frames of common rates fit it:
#: six frames at 30 fps with millisecond timestamps last 200.4 ms, a part MUST NOT
#: exceed PART-TARGET (RFC 8216bis 4.4.4.9)
PART_TARGET_SLACK = 0.02


@attrs.frozen(kw_only=True)
class HlsSettings:
    segment_s: float = 2.0
    part_s: float = 0.2
    window_segments: int = 6
    #: a blocked playlist or part request gives up after this many target durations
    block_timeout_targets: float = 3.0
    #: memory bounds per track (a publisher whose timestamps never advance must not grow
    #: a segment forever): a segment is cut at this size (the next one goes on from the
    #: next frame), a part too, and the window keeps at most `max_window_bytes`
    max_segment_bytes: int = 32 * 1024**2
    max_part_bytes: int = 4 * 1024**2
    max_window_bytes: int = 96 * 1024**2

    @property
    def part_target_s(self) -> float:
        """The advertised PART-TARGET: no part is longer."""
        return round(self.part_s * (1 + PART_TARGET_SLACK), 3)


@attrs.frozen
class Part:
    index: int
    data: bytes
    duration_s: float
    independent: bool


@attrs.define(eq=False)
class Segment:
    msn: int
    init_id: int
    discontinuity: bool
    start_ticks: int
    program_date_time: float  #: unix seconds of its first frame
    parts: list[Part] = attrs.Factory(list)
    duration_s: float = 0.0
    complete: bool = False
    parts_dropped: bool = False  #: no longer listed or served as parts (still the segment's bytes)
    size: int = 0

    @property
    def data(self) -> bytes | None:
        """The whole segment (its parts back to back), None while it is being made.

        Joined on request, not kept: a segment is held once, as its parts. (Joining every
        segment when it completes cost ~10 % of the daemon's CPU at 60 sources: 750 KB
        fresh allocations, page faults and copies every 2 s per source.)"""
        if not self.complete:
            return None
        return b"".join(p.data for p in self.parts)


def _pdt(unix_s: float) -> str:
    moment = datetime.datetime.fromtimestamp(unix_s, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class TrackHls:
    """One media playlist: a track (video layer or audio rendition) of one source."""

    def __init__(
        self,
        name: str,
        media: Media,
        settings: HlsSettings,
        origin_wall_s: float,
        on_change: Callable[[], None],
    ) -> None:
        self.name = name
        self.media = media
        self.settings = settings
        self.origin_wall_s = origin_wall_s
        self._on_change = on_change
        self.spec: fmp4.TrackSpec | None = None
        self.codec = ""
        self.codecs_attr = ""  #: RFC 6381 name of the current init
        self.inits: dict[int, bytes] = {}
        self.segments: deque[Segment] = deque()
        #: segments that left the playlist but stay fetchable a while (RFC 8216 6.2.2)
        self.retired: deque[Segment] = deque()
        self.current: Segment | None = None
        #: media sequence numbers (and init ids) start at the timeline's origin in tenths of a
        #: second, so a later timeline of the same source never reuses a URL
        self.next_msn = max(0, int(origin_wall_s * 10))
        self.init_id = self.next_msn - 1
        #: fixed once known, never changed afterwards (RFC 8216 6.2.1, 8216bis 4.4.4.9)
        self.part_target_s: float | None = None
        self.fixed_target_duration: int | None = None
        self.discontinuity_sequence = 0
        self.fragment_sequence = 1
        self.version = 0
        self.ended = False
        self.bytes_out = 0
        self.bytes_total = 0  #: media bytes packaged (for BANDWIDTH)
        self.seconds_total = 0.0
        self.peak_bps = 0.0
        self.max_segment_s = 0.0
        self.frames = 0
        # the part being filled
        self._samples: list[fmp4.Sample] = []
        self._sample_dts: list[int] = []
        self._part_start: int | None = None
        self._part_independent = False
        self._last_dts: int | None = None
        self._nominal = 0  #: ticks of one frame, from the last frame-to-frame steps
        self._pending_config = b""
        self._config = b""
        self._new_init = True
        self._discontinuity_next = False
        self._part_limit = 0
        self._part_bytes = 0  #: bytes of the samples of the part being filled
        #: in-band parameter sets for the first keyframe after a parameter change
        self._inband = b""
        self._last_key_dts: int | None = None
        self._gop_ticks = 0  #: distance of the last two keyframes
        #: coded frames no segment got: video before the track's (or a new init's) first
        #: keyframe, any before a configuration the track can be packaged with
        self.frames_cut = 0
        #: why the track cannot be packaged was logged (again once it could be)
        self._refusal_logged = False
        #: the current segment started between keyframes (after a cut): it ends at the next
        self._segment_mid_gop = False

    # -- input -------------------------------------------------------------------------

    def configure(self, config: bytes) -> None:
        """A configuration record arrived; a different one starts a new init at the next frame."""
        if config_key(self.codec, config) != config_key(self.codec, self._config):
            self._pending_config = config
            self._new_init = True

    def push(
        self, frame: Frame, payload: bytes, dts_ms: int, info: TrackInfo | None, discontinuity: bool
    ) -> None:
        if self.ended:
            return
        if self._new_init or (
            discontinuity and self.spec is not None and frame.codec != self.codec
        ):
            if not self._start_init(frame, info):
                self.frames_cut += 1
                return
        spec = self.spec
        assert spec is not None
        scale = spec.timescale
        video = self.media is Media.VIDEO
        if video:
            dts = dts_ms * 90
            cts = frame.cts_ms * 90
            keyframe = frame.keyframe
        else:
            dts = self._audio_ticks(dts_ms, frame.codec, payload, scale)
            cts = 0
            keyframe = True
        last = self._last_dts
        if last is not None and dts <= last:
            dts = last + 1  #: never backwards (the bundle guarantees it; rounding might not)
        if video and last is not None:
            step = dts - last
            if not self._nominal:
                self._nominal = step
            elif step <= 2 * self._nominal:  #: a gap (skipped frames, a switch) is no frame
                self._nominal = (self._nominal * 7 + step) // 8
        limit = self._part_limit or round(self.settings.part_target_s * scale)
        if self._samples and self._part_start is not None:
            # the previous sample lasts until this one, but never past the part's limit
            # (after a gap the next part's decode time says where media resumes)
            previous = self._samples[-1]
            room = self._sample_end_ticks(limit) - self._sample_dts[-1]
            self._samples[-1] = fmp4.Sample(
                previous.data,
                max(1, min(dts - self._sample_dts[-1], room)),
                previous.keyframe,
                previous.cts,
            )
        current = self.current
        too_big = (
            current is not None
            and current.size + self._part_bytes + len(payload) > self.settings.max_segment_bytes
        )
        if (
            current is None
            or (keyframe and self._keyframe_starts_segment(dts))
            or self._too_long(dts, nominal_guess=self._nominal)
            or too_big
        ):
            self._close_segment()
            if video and not keyframe and current is None:
                self.frames_cut += 1
                return  #: a video track (or its new init) starts at a keyframe
            #: cut between keyframes (see `_too_long`): the next segment goes on from this
            #: frame, its first part not INDEPENDENT, so no frame is lost to viewers; it
            #: ends at the next keyframe, so segments start at keyframes again at once
            self._open_segment(dts, dts_ms)
            self._segment_mid_gop = video and not keyframe
        if video and keyframe:
            if self._last_key_dts is not None and dts > self._last_key_dts:
                self._gop_ticks = dts - self._last_key_dts
            self._last_key_dts = dts
            if self._inband:
                payload = self._inband + payload  #: ISO/IEC 14496-15 avc3/hev1: in band
                self._inband = b""
        nominal = self._nominal_ticks(frame.codec, payload, scale)
        if self.part_target_s is None and self._frame_duration_known(frame.codec, payload, scale):
            self._fix_part_target(nominal, scale)
            limit = self._part_limit
        if self._part_start is None:
            self._part_start = dts
            self._part_independent = keyframe
        elif self._samples and (
            (keyframe and video and dts - self._part_start >= 0.85 * limit)
            or dts + nominal - self._part_start > limit
            or self._part_bytes + len(payload) > self.settings.max_part_bytes
        ):
            # a keyframe inside a segment starts its own (independent) part unless that would
            # leave the part before it under 85 % of the target; a frame that does not fit
            # (it came late) starts the next one
            self._close_part()
            self._part_start = dts
            self._part_independent = keyframe
        duration = max(1, min(nominal, self._sample_end_ticks(limit) - dts))
        self._samples.append(fmp4.Sample(payload, duration, keyframe, cts))
        self._part_bytes += len(payload)
        self._sample_dts.append(dts)
        self._last_dts = dts
        self.frames += 1
        if dts + duration - self._part_start + nominal > limit:
            self._close_part()  #: another frame would not fit: the part is complete now
        elif not video and self._new_segment_due(dts + duration):
            self._close_segment()  #: audio: the next frame starts a segment, this one is complete

    def _nominal_ticks(self, codec: str, payload: bytes, scale: int) -> int:
        if self.media is Media.VIDEO:
            return self._nominal or scale // 30
        return audio_frame_samples(codec, payload, scale) or self._nominal or scale // 50

    def _audio_ticks(self, dts_ms: int, codec: str, payload: bytes, scale: int) -> int:
        """Sample-exact audio time: the next frame follows the last one unless the stream jumped."""
        from_ms = dts_ms * scale // 1000
        last = self._last_dts
        if last is None:
            return from_ms
        previous = self._samples[-1].duration if self._samples else self._nominal
        expected = last + (previous or (scale // 50))
        tolerance = scale // 100 + (previous or 0) // 2
        if abs(from_ms - expected) <= tolerance:
            self._nominal = previous
            return expected
        return from_ms

    def _frame_duration_known(self, codec: str, payload: bytes, scale: int) -> bool:
        if self.media is Media.AUDIO and audio_frame_samples(codec, payload, scale):
            return True
        return self._nominal > 0  #: from the first frame-to-frame step

    def _fix_part_target(self, nominal: int, scale: int) -> None:
        """PART-TARGET from the frame duration: the whole frames nearest `part_s` (at least
        one), plus 1 ms a frame for millisecond timestamps (30 fps arrives as steps of 33
        and 34 ms); fixed for the playlist's life."""
        frames = max(1, round(self.settings.part_s * scale / max(nominal, 1)))
        target = (frames * nominal) / scale + frames * 0.001 + 0.0005
        self.part_target_s = math.ceil(target * 1000) / 1000
        self._part_limit = round(self.part_target_s * scale)

    def _sample_end_ticks(self, part_limit: int) -> int:
        """Where the sample being written may end at the latest: the part's limit, and the
        segment's cut that keeps EXTINF within the target (`_segment_end_ticks`)."""
        assert self._part_start is not None
        end = self._part_start + part_limit
        cut = self._segment_end_ticks()
        return end if cut is None else min(end, cut)

    def _keyframe_starts_segment(self, dts: int) -> bool:
        """A keyframe at `dts` starts a new segment: the current one is due, or began
        between keyframes, or would be cut before the next keyframe."""
        return self._segment_mid_gop or self._new_segment_due(dts) or self._next_key_overruns(dts)

    def _segment_end_ticks(self) -> int | None:
        """Where the current segment must end at the latest (see `_too_long`)."""
        current = self.current
        if current is None or self.fixed_target_duration is None or self.spec is None:
            return None
        return current.start_ticks + round(
            (self.fixed_target_duration + 0.45) * self.spec.timescale
        )

    def _too_long(self, dts: int, nominal_guess: int) -> bool:
        """Once the target duration is fixed, a segment is cut (even between keyframes:
        an encoder with a longer GOP superseded one whose GOP fixed it) rather than let its
        EXTINF round above it (RFC 8216 4.3.3.1). The next segment starts mid-GOP; the
        playlists never claim EXT-X-INDEPENDENT-SEGMENTS for video, and its parts say
        which are INDEPENDENT."""
        end = self._segment_end_ticks()
        return end is not None and dts + (nominal_guess or 0) > end

    def _next_key_overruns(self, dts: int) -> bool:
        """A keyframe at `dts` starts the segment before it is due when the next one, by
        the GOP cadence, would come past the cut of `_too_long`: a reconnect or a switch
        shifts where keyframes fall, and a segment that starts at a keyframe is one a
        player can join at."""
        gop = self._gop_ticks
        if not gop or self.media is Media.AUDIO:
            return False
        if self.fixed_target_duration is None or self.spec is None:
            return False
        if gop + (self._nominal or 0) > self.fixed_target_duration * self.spec.timescale:
            return False  #: a GOP longer than the target: cut where `_too_long` says
        #: the cut would come at the frame before the next keyframe
        return self._too_long(dts + gop - self._nominal, nominal_guess=self._nominal)

    def _new_segment_due(self, dts: int) -> bool:
        current = self.current
        if current is None or self.spec is None:
            return True
        return dts - current.start_ticks >= self.settings.segment_s * self.spec.timescale * 0.999

    def _start_init(self, frame: Frame, info: TrackInfo | None) -> bool:
        config = self._pending_config or self._config
        spec = track_spec(1, frame.media, frame.codec, config, info)
        if spec is None:
            if self.spec is None and not self.ended and not self._refusal_logged:
                self._refusal_logged = True  #: once, not once a frame
                log.info(
                    "hls: track %s codec %s cannot be packaged as fMP4%s; skipped",
                    self.name,
                    frame.codec,
                    "" if config else " (no configuration record yet)",
                )
            return False
        try:
            init = fmp4.init_segment([spec])
        except ValueError as exc:
            if not self._refusal_logged:
                self._refusal_logged = True
                log.info("hls: track %s: %s; skipped", self.name, exc)
            return False
        self._refusal_logged = False
        first = self.spec is None
        self._close_segment()
        #: after a parameter change players that keep the first init's parameter sets
        #: (ffmpeg's HLS reader, VLC) still decode: the first keyframe carries the new ones
        self._inband = b"" if first else parameter_sets(frame.codec, config)
        if self._inband:
            spec = attrs.evolve(spec, inband_parameter_sets=True)
            init = fmp4.init_segment([spec])
        self.spec = spec
        self.codec = frame.codec
        self.codecs_attr = codec_string(frame.codec, config)
        self._config = config
        self._pending_config = b""
        self._new_init = False
        self.init_id += 1
        self.inits[self.init_id] = init
        if self.part_target_s is not None:
            self._part_limit = round(self.part_target_s * spec.timescale)
        self._last_dts = None
        self._nominal = 0
        self._discontinuity_next = not first
        return True

    # -- parts and segments --------------------------------------------------------------

    def _open_segment(self, dts: int, dts_ms: int) -> None:
        discontinuity = getattr(self, "_discontinuity_next", False)
        self._discontinuity_next = False
        self.current = Segment(
            msn=self.next_msn,
            init_id=self.init_id,
            discontinuity=discontinuity,
            start_ticks=dts,
            program_date_time=self.origin_wall_s + dts_ms / 1000,
        )
        self.next_msn += 1
        self._part_start = None

    def _close_part(self) -> None:
        current = self.current
        if current is None or not self._samples or self.spec is None or self._part_start is None:
            return
        data = fmp4.fragment(self.fragment_sequence, [(1, self._part_start, self._samples)])
        self.fragment_sequence += 1
        end_ticks = self._sample_dts[-1] + self._samples[-1].duration
        duration = (end_ticks - self._part_start) / self.spec.timescale
        current.parts.append(Part(len(current.parts), data, duration, self._part_independent))
        current.size += len(data)
        current.duration_s += duration
        self.bytes_total += len(data)
        self.seconds_total += duration
        self._samples = []
        self._part_bytes = 0
        self._sample_dts = []
        self._part_start = None
        self._part_independent = False
        self.version += 1
        self._on_change()

    def _close_segment(self) -> None:
        current = self.current
        if current is None:
            return
        self._close_part()
        self.current = None
        if not current.parts:
            self.next_msn -= 1 if self.next_msn - 1 == current.msn else 0
            return
        current.complete = True
        self.max_segment_s = max(self.max_segment_s, current.duration_s)
        if self.fixed_target_duration is None:
            self.fixed_target_duration = max(
                1, int(max(self.settings.segment_s, current.duration_s) + 0.5)
            )
        if current.duration_s > 0:
            self.peak_bps = max(self.peak_bps, current.size * 8 / current.duration_s)
        self.segments.append(current)
        self._trim_window()
        for segment in list(self.segments)[:-PARTS_KEPT_SEGMENTS]:
            segment.parts_dropped = True
        self.version += 1
        self._on_change()

    def _trim_window(self) -> None:
        """At most `window_segments` listed, and at most `max_window_bytes` held in listed and
        retired segments (the newest segment stays, whatever its size)."""
        limit = self.settings.max_window_bytes
        while len(self.segments) > self.settings.window_segments or (
            self.stored_bytes() > limit and (self.retired or len(self.segments) > 1)
        ):
            if len(self.segments) <= self.settings.window_segments:
                if self.retired:
                    self.retired.popleft()  #: over the byte bound: the retired go first
                    continue
            gone = self.segments.popleft()
            if gone.discontinuity:
                self.discontinuity_sequence += 1
            self.retired.append(gone)
            while len(self.retired) > RETIRED_SEGMENTS:
                self.retired.popleft()
        oldest = (self.retired or self.segments)[0].init_id if self.retired or self.segments else 0
        for init_id in list(self.inits):
            if init_id < oldest:
                del self.inits[init_id]

    def stored_bytes(self) -> int:
        """Bytes of the complete segments held (listed and retired)."""
        return sum(s.size for s in self.segments) + sum(s.size for s in self.retired)

    def held_bytes(self) -> int:
        """Every media byte this track holds: segments, the one being made, its open part,
        init segments."""
        current = self.current.size if self.current is not None else 0
        return (
            self.stored_bytes()
            + current
            + self._part_bytes
            + sum(len(i) for i in self.inits.values())
        )

    def end(self) -> None:
        """The source is gone: close what is open; the playlist gets EXT-X-ENDLIST. What no
        playlist lists any more (retired segments) is let go at once."""
        if self.ended:
            return
        self._close_segment()
        self.retired.clear()
        self.ended = True
        self.version += 1
        self._on_change()

    # -- what is served ------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the playlist can be served: its target duration and part target are fixed
        (after its first complete segment), so they never change once a player saw them."""
        return self.fixed_target_duration is not None and self.part_target_s is not None

    @property
    def target_duration(self) -> int:
        #: EXTINF durations rounded to the nearest integer must not exceed it (RFC 8216 4.4.3.1)
        if self.fixed_target_duration is not None:
            return self.fixed_target_duration
        return max(1, int(max(self.settings.segment_s, self.max_segment_s) + 0.5))

    def last_position(self) -> tuple[int, int]:
        """(msn, part index) of the newest part in the playlist; (-1, -1) when there is none."""
        current = self.current
        if current is not None and current.parts:
            return current.msn, len(current.parts) - 1
        if self.segments:
            last = self.segments[-1]
            return last.msn, len(last.parts) - 1
        return -1, -1

    def has(self, msn: int, part: int | None) -> bool:
        """Whether the playlist already shows segment `msn` complete (`part` None), or its
        part `part`, or anything later (the _HLS_msn/_HLS_part rule)."""
        if self.ended or (self.segments and self.segments[-1].msn >= msn):
            return True
        current = self.current
        if part is None or current is None or not current.parts:
            return False
        return (current.msn, len(current.parts) - 1) >= (msn, part)

    def segment(self, msn: int) -> Segment | None:
        for segment in self.segments:
            if segment.msn == msn:
                return segment
        for segment in self.retired:
            if segment.msn == msn:
                return segment
        return None

    def part(self, msn: int, index: int) -> bytes | None:
        current = self.current
        if current is not None and current.msn == msn:
            return current.parts[index].data if index < len(current.parts) else None
        segment = next((s for s in self.segments if s.msn == msn), None)  #: listed parts only
        if segment is None or segment.parts_dropped or index >= len(segment.parts):
            return None
        return segment.parts[index].data

    def hinted_part(self) -> tuple[int, int]:
        """The part the preload hint names: the one that will really come next.

        While a part is being filled, it. At a part boundary the next frame either goes on
        in this segment or starts the next one (a keyframe once the segment is due, a cut
        at the byte bound): the hint names the next segment's first part when that is what
        the next frame will most likely start (the keyframe cadence says so). A hint of
        this segment's next part when the next segment started instead is answered at
        once (`part_pending` is false for it), never by a wait that ends in a 404 a block
        timeout later; a hint of the next segment's first part while this one went on
        waits for that part, which comes (at the latest when the segment is cut)."""
        current = self.current
        if current is None or self._new_init:
            return self.next_msn, 0
        if self._samples or not self._segment_may_end_next():
            return current.msn, len(current.parts)
        return self.next_msn, 0

    def _segment_may_end_next(self) -> bool:
        current = self.current
        if current is None or self._last_dts is None or self.spec is None:
            return True
        step = self._nominal or self.spec.timescale // 30
        next_dts = self._last_dts + step
        if self._too_long(next_dts, nominal_guess=step):
            return True
        if self.media is Media.AUDIO or not self._gop_ticks or self._last_key_dts is None:
            return self._new_segment_due(next_dts)
        #: video: only if the next frame is the next keyframe of the GOP cadence
        if next_dts - self._last_key_dts < self._gop_ticks - step // 2:
            return False
        return self._keyframe_starts_segment(next_dts)

    def part_pending(self, msn: int, index: int) -> bool:
        """Whether the part is the one being filled (what the preload hint names)."""
        if self.ended:
            return False
        current = self.current
        if current is not None and current.msn == msn:
            return index == len(current.parts)
        return msn == self.next_msn and index == 0

    def playlist(self, *, low_latency: bool = True) -> str:
        settings = self.settings
        lines = ["#EXTM3U", "#EXT-X-VERSION:9", f"#EXT-X-TARGETDURATION:{self.target_duration}"]
        if low_latency:
            target = self.part_target_s or settings.part_target_s
            lines.append(
                f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={target * 3:.3f}"
            )
            lines.append(f"#EXT-X-PART-INF:PART-TARGET={target:.3f}")
        segments = list(self.segments)
        current = self.current if low_latency else None
        first = segments[0] if segments else current
        first_msn = first.msn if first is not None else self.next_msn
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first_msn}")
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}")
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS" if self.media is Media.AUDIO else "")
        name = quote(self.name)
        map_id = None
        shown = segments + ([current] if current is not None and current.parts else [])
        for segment in shown:
            if segment.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if segment.init_id != map_id:
                map_id = segment.init_id
                lines.append(f'#EXT-X-MAP:URI="{name}/init-{map_id}.mp4"')
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(segment.program_date_time)}")
            if low_latency and not segment.parts_dropped:
                for part in segment.parts:
                    extra = ",INDEPENDENT=YES" if part.independent else ""
                    lines.append(
                        f"#EXT-X-PART:DURATION={part.duration_s:.5f},"
                        f'URI="{name}/part-{segment.msn}.{part.index}.m4s"{extra}'
                    )
            if segment.complete:
                lines.append(f"#EXTINF:{segment.duration_s:.5f},")
                lines.append(f"{name}/seg-{segment.msn}.m4s")
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        elif low_latency and self.spec is not None:
            msn, index = self.hinted_part()
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{name}/part-{msn}.{index}.m4s"')
        return "\n".join(line for line in lines if line) + "\n"

    def bandwidth(self) -> int:
        """Peak segment bit rate (average while no segment is complete)."""
        if self.peak_bps:
            return int(self.peak_bps)
        if self.seconds_total > 0:
            return int(self.bytes_total * 8 / self.seconds_total)
        return 0

"""One source's LL-HLS output: a `TrackHls` (outputs/hls.py) per video layer and audio track.

Synchronous and free of I/O, like the tracks. The source routes the bundle's frames to
their track (configuration records start or change its init segment; frames mp4 cannot
carry are counted, never packaged) and fixes its media time: fMP4 `tfdt` starts near
zero (`MEDIA_TIME_LEAD_MS`) at the first frame of the source's playlists, whatever the
age of the stream's timeline, so players that start their clock at zero do not wait for
it; the wall clock stays in PROGRAM-DATE-TIME, from the source's timeline origin, which
the sources of a stream share.
"""

from __future__ import annotations

from collections.abc import Callable

from rtmp_ingest.bundle import Media, OutputFrame, TrackInfo
from rtmp_ingest.outputs.hls import HlsSettings, TrackHls
from rtmp_ingest.outputs.samples import coded_payload

#: a source's media time (fMP4 tfdt) at the first frame of its playlists: near zero, so
#: players that start their clock at 0 (GStreamer hlsdemux) play at once; the lead keeps a
#: frame of another track from just before that first one at its own time
MEDIA_TIME_LEAD_MS = 500


class SourceHls:
    """The HLS output of one source: a TrackHls per video layer and audio track."""

    def __init__(
        self,
        stream_path: str,
        source_id: str,
        settings: HlsSettings,
        origin_wall_s: float,
        on_change: Callable[[], None],
    ) -> None:
        self.stream_path = stream_path
        self.source_id = source_id
        self.settings = settings
        self.origin_wall_s = origin_wall_s
        self._on_change = on_change
        self.tracks: dict[str, TrackHls] = {}
        self.info: dict[str, TrackInfo] = {}
        self.frames_skipped = 0
        self.ended = False
        #: output DTS (ms) at media time MEDIA_TIME_LEAD_MS: fixed by the first frame
        self.origin_ms: int | None = None

    def push(self, out: OutputFrame) -> None:
        frame = out.frame
        media = frame.media
        if media is Media.DATA:
            return
        if frame.track_info is not None:
            self.info[frame.track_id] = frame.track_info
        origin = self.origin_ms
        if origin is None:
            origin = self.origin_ms = out.dts_ms - MEDIA_TIME_LEAD_MS
        track = self.tracks.get(frame.track_id)
        if track is None:
            # media time counts from this source's playlist origin, not the timeline's (whose
            # start may be long ago); PROGRAM-DATE-TIME stays on the stream's common clock
            track = self.tracks[frame.track_id] = TrackHls(
                frame.track_id,
                media,
                self.settings,
                self.origin_wall_s + origin / 1000,
                self._on_change,
            )
        payload = coded_payload(frame)
        if payload is None:
            if not frame.config:  #: config frames without a record (channel layouts) are no loss
                self.frames_skipped += 1
            return
        if frame.config:
            track.configure(payload)
            return
        if not payload:
            return  #: an empty coded frame (an encoder's end-of-stream marker) is no sample
        track.push(
            frame,
            payload,
            max(0, out.dts_ms - origin),
            self.info.get(frame.track_id),
            out.discontinuity,
        )

    def end(self) -> None:
        self.ended = True
        for track in self.tracks.values():
            track.end()

    def frames_unused(self) -> int:
        """Frames that reached no playlist: without an mp4 sample entry, or cut (TrackHls)."""
        return self.frames_skipped + sum(t.frames_cut for t in self.tracks.values())

    def held_bytes(self) -> int:
        """Media bytes the source's playlists hold (the memory HLS costs it)."""
        return sum(t.held_bytes() for t in self.tracks.values())

    def live_tracks(self) -> list[TrackHls]:
        return [
            t
            for t in self.tracks.values()
            if t.spec is not None and t.ready and (t.segments or t.current)
        ]

"""RTP time → one millisecond timeline per WHIP session, lip-synced by RTCP SR (sans-IO).

Each track's RTP timestamps (90 kHz video, 48 kHz Opus) are unwrapped and
counted from the track's first packet. Where that first packet lands on the
session's timeline is first guessed from its arrival time (tracks that start
together start together). RTCP sender reports (RFC 3550 §6.4.1) then give
each track's NTP↔RTP mapping, i.e. the capture clock shared by audio and
video: the first report fixes the timeline's NTP anchor without moving the
track it came with, and every report moves its track's offset to where the
NTP clock says it belongs. The offset slews (at most `SLEW_FRACTION` of the
media time that passes), so a correction never makes a track's timestamps go
backwards or jump; a report that disagrees by more than
`MAX_SYNC_CORRECTION_MS` is ignored (a sender whose clock jumped).

DTX gaps need nothing: the RTP clock keeps running through the silence, so
audio resumes at its true time.
"""

from __future__ import annotations

#: How fast a lip-sync correction is applied: 10 % of elapsed media time (a 100 ms
#: correction takes a second, each frame interval shrinks or grows by at most 10 %).
SLEW_FRACTION = 0.1
#: A sender report that moves a track by more than this is not believed.
MAX_SYNC_CORRECTION_MS = 5000.0
NTP_FRACTION = float(1 << 32)


def ntp_seconds(ntp_timestamp: int) -> float:
    """A 64-bit NTP timestamp (32.32 fixed point) in seconds."""
    return (ntp_timestamp >> 32) + (ntp_timestamp & 0xFFFFFFFF) / NTP_FRACTION


class TrackClock:
    """One track's RTP clock on its session's timeline."""

    __slots__ = (
        "_ext",
        "_last32",
        "_last_media_ms",
        "_last_out",
        "_offset_ms",
        "_origin",
        "_session",
        "_target_ms",
        "rate",
        "sync_corrections",
    )

    def __init__(self, session: SessionClock, rate: int) -> None:
        self._session = session
        self.rate = rate
        self._ext: int | None = None
        self._last32 = 0
        self._origin = 0
        self._offset_ms = 0.0
        self._target_ms = 0.0
        self._last_media_ms = 0.0
        self._last_out: int | None = None
        self.sync_corrections = 0

    def _extend(self, timestamp: int, *, keep: bool) -> int:
        assert self._ext is not None
        delta = (timestamp - self._last32) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        ext = self._ext + delta
        if keep:
            self._ext, self._last32 = ext, timestamp
        return ext

    def time_ms(self, timestamp: int, *, arrival_ms: float) -> int:
        """The timeline time of a frame with this 32-bit RTP timestamp (never decreasing)."""
        timestamp &= 0xFFFFFFFF
        if self._ext is None:
            self._ext = self._origin = timestamp
            self._last32 = timestamp
            self._offset_ms = self._target_ms = self._session.since_origin_ms(arrival_ms)
        ext = self._extend(timestamp, keep=True)
        media_ms = (ext - self._origin) * 1000.0 / self.rate
        elapsed = media_ms - self._last_media_ms
        if elapsed > 0:
            if self._offset_ms != self._target_ms:
                step = elapsed * SLEW_FRACTION
                gap = self._target_ms - self._offset_ms
                self._offset_ms += max(-step, min(step, gap))
            self._last_media_ms = media_ms
        out = round(self._offset_ms + media_ms)
        if self._last_out is not None and out < self._last_out:
            out = self._last_out
        self._last_out = out
        return out

    def sender_report(self, ntp_s: float, timestamp: int) -> None:
        """An RTCP SR of this track: its NTP time `ntp_s` is RTP time `timestamp`."""
        if self._ext is None:
            return  #: no packet yet: nothing to place
        ext = self._extend(timestamp & 0xFFFFFFFF, keep=False)
        media_ms = (ext - self._origin) * 1000.0 / self.rate
        session = self._session
        if session.anchor is None:
            session.anchor = (ntp_s, self._offset_ms + media_ms)
        anchor_ntp, anchor_ms = session.anchor
        target = anchor_ms + (ntp_s - anchor_ntp) * 1000.0 - media_ms
        if abs(target - self._offset_ms) > MAX_SYNC_CORRECTION_MS:
            return
        if target != self._target_ms:
            self.sync_corrections += 1
        self._target_ms = target


class SessionClock:
    """The timeline of one WHIP session, shared by its tracks."""

    def __init__(self) -> None:
        self._origin_ms: float | None = None
        #: (NTP seconds, timeline ms) fixed by the first sender report
        self.anchor: tuple[float, float] | None = None

    def since_origin_ms(self, arrival_ms: float) -> float:
        if self._origin_ms is None:
            self._origin_ms = arrival_ms
        return arrival_ms - self._origin_ms

    def track(self, rate: int) -> TrackClock:
        return TrackClock(self, rate)

"""RTP timestamps → session timeline: wraps, monotonic output, lip sync from RTCP SRs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.webrtc.clock import SessionClock, ntp_seconds


def test_wrap_and_rate() -> None:
    track = SessionClock().track(90000)
    start = 0xFFFFFFFF - 4500
    assert track.time_ms(start, arrival_ms=1000.0) == 0
    assert track.time_ms((start + 9000) & 0xFFFFFFFF, arrival_ms=1100.0) == 100


def test_sender_reports_pull_audio_onto_the_video_clock() -> None:
    """Audio arrives 80 ms late against video; the SRs say they were captured together."""
    session = SessionClock()
    video, audio = session.track(90000), session.track(48000)
    v0, a0 = 1_000_000, 5_000
    assert video.time_ms(v0, arrival_ms=0.0) == 0
    assert audio.time_ms(a0, arrival_ms=80.0) == 80
    ntp = 3_900_000_000.0
    video.sender_report(ntp, v0)
    audio.sender_report(ntp, a0)  #: same capture instant as video's first frame
    last_audio = 80
    for step in range(1, 200):
        stamp = audio.time_ms(a0 + step * 960, arrival_ms=80.0 + step * 20)
        assert stamp >= last_audio, "never backwards"
        assert stamp - last_audio <= 23, "a correction never jumps"
        last_audio = stamp
    assert abs(last_audio - 199 * 20) <= 1, "converged onto the NTP-aligned time"
    assert video.time_ms(v0 + 90000, arrival_ms=1000.0) == 1000


def test_an_absurd_report_is_ignored() -> None:
    session = SessionClock()
    video = session.track(90000)
    video.time_ms(0, arrival_ms=0.0)
    video.sender_report(100.0, 0)
    other = session.track(48000)
    other.time_ms(0, arrival_ms=0.0)
    other.sender_report(100.0 + 3600, 0)  #: an hour off
    assert other.time_ms(48000, arrival_ms=1000.0) == 1000


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-3000, 6000), st.booleans(), st.floats(-2.0, 2.0)), max_size=80)
)
def test_output_never_decreases(steps: list[tuple[int, bool, float]]) -> None:
    session = SessionClock()
    track = session.track(48000)
    rtp = 123
    last = None
    for delta, report, skew in steps:
        rtp = (rtp + delta) & 0xFFFFFFFF
        if report:
            track.sender_report(1000.0 + skew, rtp)
        stamp = track.time_ms(rtp, arrival_ms=0.0)
        assert last is None or stamp >= last
        last = stamp


def test_ntp_seconds() -> None:
    assert ntp_seconds((5 << 32) | (1 << 31)) == 5.5

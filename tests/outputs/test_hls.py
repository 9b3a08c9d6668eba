"""LL-HLS packaging of a source: what a player sees in the playlists and files."""

from __future__ import annotations

import datetime
import io

import attrs
import av
import m3u8
import pytest

from rtmp_ingest.bundle import Media, OutputFrame
from rtmp_ingest.outputs.hls import HlsSettings, TrackHls
from rtmp_ingest.outputs.hls_source import MEDIA_TIME_LEAD_MS, SourceHls
from rtmp_ingest.outputs.multivariant import multivariant
from tests.outputs.helpers import encoded, frames_of, output_frames
from tests.tools.flv_media import encode_tags

ORIGIN = 1_800_000_000.0  #: the source's timeline origin on the wall clock


def package(
    outs: list[OutputFrame],
    *,
    settings: HlsSettings | None = None,
    source_id: str = "cam1",
    origin: float = ORIGIN,
) -> SourceHls:
    changes = []
    source = SourceHls(
        "live/s", source_id, settings or HlsSettings(), origin, lambda: changes.append(1)
    )
    for out in outs:
        source.push(out)
    return source


def parse(text: str) -> m3u8.M3U8:
    playlist = m3u8.loads(text)
    return playlist


def decode_track(track: TrackHls) -> list[tuple[int, int]]:
    """(dts, pts) in ms of every packet of init + complete segments, as PyAV reads them."""
    data = track.inits[track.segments[0].init_id] + b"".join(s.data for s in track.segments)
    container = av.open(io.BytesIO(data), format="mp4")
    out = []
    for packet in container.demux():
        if packet.dts is None:
            continue
        base = packet.stream.time_base
        out.append((round(float(packet.dts * base) * 1000), round(float(packet.pts * base) * 1000)))
        for _ in packet.stream.codec_context.decode(packet):
            pass
    container.close()
    return out


def test_segments_start_at_keyframes_after_the_target_and_parts_stay_under_the_part_target():
    source = package(encoded(9.0, gop_s=1.0))
    video = source.tracks["video0"]
    playlist = parse(video.playlist())
    assert playlist.target_duration == 2
    assert playlist.server_control.can_block_reload == "YES"
    assert playlist.part_inf.part_target == pytest.approx(0.206), (
        "5 frames at 25 fps + 1 ms a frame + 0.5 ms"
    )
    complete = [s for s in playlist.segments if s.uri]
    assert len(complete) >= 3
    for segment in complete:
        assert segment.duration == pytest.approx(2.0, abs=0.001)
    for segment in playlist.segments:
        for part in segment.parts:
            assert part.duration <= playlist.part_inf.part_target
        if segment.parts:
            assert segment.parts[0].independent == "YES", (
                "every segment starts with a keyframe part"
            )
    assert playlist.preload_hint.hint_type == "PART"


def test_a_player_reads_init_plus_segments_with_the_timestamps_the_bundle_gave():
    outs = encoded(7.0, bframes=2)
    source = package(outs)
    video = source.tracks["video0"]
    got = decode_track(video)
    shift = MEDIA_TIME_LEAD_MS - outs[0].dts_ms  #: media time counts from the first frame
    sent = [
        (o.dts_ms + shift, o.dts_ms + o.frame.cts_ms + shift)
        for o in outs
        if o.frame.media is Media.VIDEO and not o.frame.config
    ]
    assert got == sent[: len(got)]
    assert len(got) > 100
    audio = decode_track(source.tracks["audio0"])
    dts = [d for d, _ in audio]
    assert dts == sorted(dts) and len(dts) > 200


def test_parts_concatenate_to_their_segment_and_every_listed_uri_is_fetchable():
    source = package(encoded(9.0))
    video = source.tracks["video0"]
    playlist = parse(video.playlist())
    for segment in video.segments:
        if not segment.parts_dropped:
            assert b"".join(p.data for p in segment.parts) == segment.data
    for segment in playlist.segments:
        for part in segment.parts:
            msn, index = part.uri.rsplit("/part-", 1)[1][:-4].split(".")
            assert video.part(int(msn), int(index)), part.uri
        if segment.uri:
            assert video.segment(int(segment.uri.rsplit("-", 1)[1][:-4])).data
    assert video.init_id in video.inits


def test_the_sliding_window_forgets_old_segments_and_never_lists_them():
    settings = HlsSettings(window_segments=3)
    source = package(encoded(16.0), settings=settings)
    video = source.tracks["video0"]
    playlist = parse(video.playlist())
    complete = [s for s in playlist.segments if s.uri]
    assert len(complete) == 3
    first_msn = playlist.media_sequence
    assert video.segment(first_msn - 1).data, "a segment that just left stays fetchable a while"
    assert video.segment(first_msn - 3) is None
    assert video.part(first_msn - 1, 0) is None
    listed_parts = [p for s in playlist.segments for p in s.parts]
    # parts are listed for the last few segments only, and those are fetchable
    assert 0 < len(listed_parts) <= 4 * 10 + 10


def test_blocking_reload_positions_and_the_preload_hint():
    source = package(encoded(5.0))
    video = source.tracks["video0"]
    msn, part = video.last_position()
    assert video.has(msn, part)
    assert not video.has(msn, part + 1)
    assert video.part_pending(msn, part + 1), "the hinted part is the one being made"
    assert not video.part_pending(msn, part + 3)
    assert video.has(msn - 1, None), "a complete earlier segment"
    assert not video.has(msn, None)
    hint = parse(video.playlist()).preload_hint.uri
    assert hint.endswith(f"part-{msn}.{part + 1}.m4s")
    video.end()
    assert video.has(msn + 5, 0), "an ended playlist answers at once"
    assert video.playlist().rstrip().endswith("#EXT-X-ENDLIST")
    assert "PRELOAD-HINT" not in video.playlist()


def test_a_codec_change_starts_a_new_init_with_a_discontinuity():
    first = frames_of(encode_tags(4.0, gop_s=1.0, audio=None))
    second = frames_of(encode_tags(4.0, gop_s=1.0, audio=None, size=(160, 90)), offset_ms=4000)
    outs = output_frames(first + second)
    source = package(outs)
    video = source.tracks["video0"]
    text = video.playlist()
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    first_init = min(video.inits)
    assert f'#EXT-X-MAP:URI="video0/init-{first_init}.mp4"' in text
    assert f'#EXT-X-MAP:URI="video0/init-{first_init + 1}.mp4"' in text
    assert video.spec.width == 160
    playlist = parse(text)
    assert [s.discontinuity for s in playlist.segments].count(True) == 1


def test_the_discontinuity_sequence_counts_discontinuities_that_left_the_window():
    settings = HlsSettings(window_segments=2)
    first = frames_of(encode_tags(4.0, audio=None))
    second = frames_of(encode_tags(8.0, audio=None, size=(160, 90)), offset_ms=4000)
    source = package(output_frames(first + second), settings=settings)
    playlist = parse(source.tracks["video0"].playlist())
    assert playlist.discontinuity_sequence == 1
    assert not any(s.discontinuity for s in playlist.segments)
    track = source.tracks["video0"]
    assert f"init-{track.init_id - 1}.mp4" not in track.playlist(), "the old init left the playlist"


def test_audio_gaps_never_stall_segments_and_video_never_waits_for_audio():
    outs = encoded(9.0, audio_gaps=((2.0, 5.0),))
    source = package(outs)
    audio = source.tracks["audio0"]
    video = source.tracks["video0"]
    last_video_ms = max(o.dts_ms for o in outs if o.frame.media is Media.VIDEO)
    # video is packaged right up to its last frame, whatever audio did
    assert (
        video.current.start_ticks + sum(p.duration_s for p in video.current.parts) * 90_000
        >= (last_video_ms - 250) * 90
    )
    playlist = parse(audio.playlist())
    times = [s.program_date_time for s in playlist.segments if s.uri]
    assert times == sorted(times)
    assert any(b - a > datetime.timedelta(seconds=2.5) for a, b in zip(times, times[1:])), (
        "the gap shows as a jump on the program clock, nothing is padded"
    )


def test_program_date_time_is_the_timeline_origin_plus_the_frame_time():
    outs = encoded(5.0)
    first_video_ms = next(
        o.dts_ms for o in outs if o.frame.media is Media.VIDEO and not o.frame.config
    )
    source = package(outs, origin=ORIGIN)
    playlist = parse(source.tracks["video0"].playlist())
    first = playlist.segments[0].program_date_time.timestamp()
    assert first == pytest.approx(ORIGIN + first_video_ms / 1000, abs=0.001)
    assert playlist.segments[1].program_date_time.timestamp() == pytest.approx(
        first + 2.0, abs=0.001
    )


def test_a_source_that_mp4_cannot_carry_is_skipped_without_harm():
    outs = encoded(2.0)
    odd = [
        attrs.evolve(o, frame=attrs.evolve(o.frame, codec="vp6"))
        if o.frame.media is Media.VIDEO
        else o
        for o in outs
    ]
    source = package(odd)
    assert source.tracks["video0"].spec is None
    assert source.tracks["audio0"].segments, "audio is packaged all the same"
    assert [t.name for t in source.live_tracks()] == ["audio0"]


def test_the_multivariant_playlist_lists_every_source_as_a_rendition():
    default = package(encoded(5.0), source_id="")
    cam1 = package(encoded(5.0, size=(160, 90)), source_id="cam 1")
    voice = package(output_frames(frames_of(encode_tags(5.0, video=None))), source_id="voice")
    text = multivariant([default, cam1, voice], "")
    playlist = parse(text)
    video = [m for m in playlist.media if m.type == "VIDEO"]
    audio = [m for m in playlist.media if m.type == "AUDIO"]
    assert {m.name for m in video} == {"(default)", "cam 1"}
    assert {m.name for m in audio} == {"(default)", "cam 1", "voice"}
    assert [m.name for m in video if m.default == "YES"] == ["(default)"]
    assert [m.name for m in audio if m.default == "YES"] == ["(default)"]
    assert {m.uri for m in audio} == {"_/audio0.m3u8", "cam%201/audio0.m3u8", "voice/audio0.m3u8"}
    (variant,) = playlist.playlists
    assert variant.stream_info.resolution == (320, 180)
    assert variant.stream_info.bandwidth > 100_000
    assert (
        variant.stream_info.codecs.startswith("avc1.") and "mp4a.40.2" in variant.stream_info.codecs
    )
    assert variant.uri == "_/video0.m3u8"
    cam1.end()
    assert "cam 1" not in multivariant([default, cam1, voice], "")


def test_an_audio_only_stream_gets_an_audio_variant():
    voice = package(output_frames(frames_of(encode_tags(5.0, video=None))), source_id="")
    playlist = parse(multivariant([voice], ""))
    (variant,) = playlist.playlists
    assert variant.uri == "_/audio0.m3u8"
    assert variant.stream_info.codecs == "mp4a.40.2"


def test_a_source_playlist_uses_uris_relative_to_the_source():
    cam = package(encoded(5.0), source_id="cam1")
    playlist = parse(multivariant([cam], "cam1", prefix=False))
    assert playlist.playlists[0].uri == "video0.m3u8"
    assert {m.uri for m in playlist.media} == {"video0.m3u8", "audio0.m3u8"}


@pytest.mark.parametrize("fps", [12, 24, 25, 30, 50, 60])
def test_parts_never_exceed_part_target_and_fill_it_with_whole_frames(fps):
    source = package(encoded(6.0, fps=fps, audio=None))
    playlist = parse(source.tracks["video0"].playlist())
    target = playlist.part_inf.part_target
    for segment in playlist.segments:
        parts = list(segment.parts)
        for index, part in enumerate(parts):
            assert part.duration <= target, (fps, part.duration)
            if index < len(parts) - 1 or segment.uri:
                # all but a segment's last part carry at least 85 % of the target
                assert part.duration >= 0.85 * target or index == len(parts) - 1, (
                    fps,
                    part.duration,
                )
        if segment.uri and fps % 5 == 0:
            assert len(parts) == 10, (fps, [p.duration for p in parts])


def test_a_late_frame_starts_a_new_part_instead_of_stretching_one():
    outs = encoded(4.0, audio=None)
    late = [attrs.evolve(o, dts_ms=o.dts_ms + (150 if o.dts_ms >= 1500 else 0)) for o in outs]
    source = package(late)
    playlist = parse(source.tracks["video0"].playlist())
    for segment in playlist.segments:
        for part in segment.parts:
            assert part.duration <= playlist.part_inf.part_target


def test_multitrack_layers_become_variants_of_one_rendition_group_each():
    high = frames_of(encode_tags(5.0, audio=None, size=(640, 360)))
    low = [
        attrs.evolve(f, track_id="video1")
        for f in frames_of(encode_tags(5.0, size=(320, 180)))
        if f.track_id == "video0"
    ]
    audio = [f for f in frames_of(encode_tags(5.0)) if f.track_id == "audio0"]
    merged = sorted(high + low + audio, key=lambda f: f.dts_ms)
    source = package(output_frames(merged), source_id="")
    playlist = parse(multivariant([source], ""))
    variants = {p.uri: p.stream_info for p in playlist.playlists}
    assert set(variants) == {"_/video0.m3u8", "_/video1.m3u8"}
    assert variants["_/video0.m3u8"].resolution == (640, 360)
    assert variants["_/video1.m3u8"].resolution == (320, 180)
    assert variants["_/video0.m3u8"].bandwidth > variants["_/video1.m3u8"].bandwidth
    assert {m.group_id for m in playlist.media if m.type == "VIDEO"} == {"video0", "video1"}
    assert all(v.audio == "audio" for v in variants.values())


def test_rendition_reports_point_at_the_other_renditions_newest_parts():
    from rtmp_ingest.outputs.multivariant import rendition_reports

    cam1 = package(encoded(5.0), source_id="cam1")
    cam2 = package(encoded(5.0, size=(160, 90)), source_id="")
    text = cam1.tracks["video0"].playlist() + rendition_reports(
        [cam1, cam2], cam1, cam1.tracks["video0"]
    )
    playlist = parse(text)
    (report,) = playlist.rendition_reports
    msn, part = cam2.tracks["video0"].last_position()
    assert report.uri == "../_/video0.m3u8"
    assert (report.last_msn, report.last_part) == (msn, part)
    audio = rendition_reports([cam1, cam2], cam1, cam1.tracks["audio0"])
    assert audio.count("RENDITION-REPORT") == 1 and 'URI="../_/audio0.m3u8"' in audio


def test_a_gop_longer_than_the_segment_target_fixes_the_target_duration_once():
    source = package(encoded(16.0, gop_s=5.0, audio=None))
    video = source.tracks["video0"]
    playlist = parse(video.playlist())
    assert playlist.target_duration == 5, (
        "from the first segment, before any player saw the playlist"
    )
    assert all(round(s.duration) <= playlist.target_duration for s in playlist.segments if s.uri)


def test_a_playlist_is_only_offered_once_its_targets_are_fixed():
    outs = encoded(3.0, audio=None)
    source = package(outs[:20])
    assert not source.tracks["video0"].ready and source.live_tracks() == []
    for out in outs[20:]:
        source.push(out)
    assert source.tracks["video0"].ready


@pytest.mark.parametrize(
    "source_id, expected",
    [
        ("", "_"),
        ("_", "%5F"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        (".hidden", "%2Ehidden"),
        ("a/b", "a%2Fb"),
        ("cam 1", "cam%201"),
    ],
)
def test_source_path_components_never_collide_or_climb(source_id, expected):
    from rtmp_ingest.outputs.names import disk_path, source_segment

    assert source_segment(source_id) == expected
    assert disk_path("live/..") == "live/%2E%2E"
    assert disk_path("live/show") == "live/show"


def test_a_keyframe_cadence_moved_by_a_reconnect_loses_no_frames():
    """A reconnect gap shifts where keyframes fall: a keyframe whose next one (by the GOP
    cadence) would overrun the target duration starts the segment early, instead of the
    segment being cut mid-GOP and every frame up to the next keyframe dropped."""
    before = encoded(3.5, gop_s=1.0, audio=None)
    last = max(o.dts_ms for o in before)
    after = [
        attrs.evolve(o, dts_ms=o.dts_ms + last + 430, discontinuity=False)
        for o in encoded(7.0, gop_s=1.0, audio=None)
    ]
    outs = before + after
    source = package(outs)
    video = source.tracks["video0"]
    got = decode_track(video)
    shift = MEDIA_TIME_LEAD_MS - outs[0].dts_ms
    sent = [
        (o.dts_ms + shift, o.dts_ms + o.frame.cts_ms + shift) for o in outs if not o.frame.config
    ]
    assert len(got) > len(before) + 100, "the segments after the gap are complete"
    assert got == sent[: len(got)], "every frame reaches the playlist, in order"
    playlist = parse(video.playlist())
    assert all(round(s.duration) <= playlist.target_duration for s in playlist.segments if s.uri)
    assert video.frames_cut == 0


def test_a_backup_encoder_with_a_longer_gop_loses_no_frames_and_keeps_the_target():
    """OBS in Simple mode (an 8.3 s GOP) superseding an encoder whose 2 s GOP fixed the
    target duration: segments are cut between keyframes to keep EXTINF within the target,
    and the segment after such a cut goes on from the next frame (its first part not
    INDEPENDENT) instead of dropping everything up to the next keyframe."""
    before = encoded(4.5, gop_s=2.0, audio=None)
    last = max(o.dts_ms for o in before)
    after = [
        attrs.evolve(o, dts_ms=o.dts_ms + last + 40, discontinuity=False)
        for o in encoded(12.0, gop_s=5.0, audio=None)
    ]
    #: the backup skips 7 frames near a cut (an encoder under load): the frame before the
    #: gap is not stretched past the cut either
    skipped = {i for i, o in enumerate(after) if 4_300 <= o.frame.dts_ms < 4_580}
    after = [o for i, o in enumerate(after) if i not in skipped or o.frame.config]
    outs = before + after
    source = package(outs, settings=HlsSettings(window_segments=20))
    video = source.tracks["video0"]
    got = decode_track(video)  #: PyAV decodes init + every complete segment, in order
    shift = MEDIA_TIME_LEAD_MS - outs[0].dts_ms
    sent = [
        (o.dts_ms + shift, o.dts_ms + o.frame.cts_ms + shift) for o in outs if not o.frame.config
    ]
    assert len(got) > len(before) + 200
    assert got == sent[: len(got)], "every frame reaches the playlist, in order"
    playlist = parse(video.playlist())
    assert playlist.target_duration == 2
    complete = [s for s in playlist.segments if s.uri]
    assert max(s.duration for s in complete) <= 2.45, "EXTINF rounds to the target at most"
    assert any(s.parts and s.parts[0].independent != "YES" for s in playlist.segments), (
        "a segment that starts mid-GOP says so on its first part"
    )
    #: a segment that starts mid-GOP ends at the next keyframe: joining points stay
    keys = {(o.dts_ms + shift) * 90 for o in outs if o.frame.keyframe and not o.frame.config}
    mid = [s for s in video.segments if s.start_ticks not in keys]
    assert len(mid) >= 3
    for segment in mid:
        end = segment.start_ticks + segment.duration_s * 90_000
        assert not [k for k in keys if segment.start_ticks < k < end - 1], segment.msn
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in video.playlist()
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in multivariant([source], "cam1")
    assert video.frames_cut == 0


def test_frames_before_a_configuration_record_are_counted_and_logged_once(caplog):
    """A publisher whose sequence header comes late (or never): one log line, not one a
    frame, and the frames no segment got are counted; the track starts once it comes."""
    outs = encoded(4.0, audio=None)
    config = [o for o in outs if o.frame.config]
    media = [o for o in outs if not o.frame.config]
    second_key = [i for i, o in enumerate(media) if o.frame.keyframe][1]
    with caplog.at_level("INFO", logger="rtmp_ingest.outputs"):
        source = package(media[:second_key] + config + media[second_key:])
    refusals = [r for r in caplog.records if "cannot be packaged" in r.getMessage()]
    assert len(refusals) == 1 and "no configuration record yet" in refusals[0].getMessage()
    assert source.frames_unused() == second_key
    assert source.tracks["video0"].segments, "packaged from the configuration on"

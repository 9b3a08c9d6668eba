"""FLV tags for RTMP/HTTP-FLV players: parameter sets in band after a parameter change."""

from __future__ import annotations

from rtmp_ingest.bundle import Media
from rtmp_ingest.outputs.flv import PlayerTrack
from rtmp_ingest.outputs.samples import coded_payload, parameter_sets
from tests.outputs.helpers import frames_of, output_frames
from tests.tools.flv_media import encode_tags


def test_the_first_keyframe_after_a_parameter_change_carries_sps_and_pps_in_band():
    first = output_frames(frames_of(encode_tags(2.0, size=(640, 360), audio=None)))
    end = max(o.dts_ms for o in first) + 40
    second = output_frames(frames_of(encode_tags(2.0, size=(1280, 720), audio=None), offset_ms=end))
    track = PlayerTrack()
    sent = [(out, track.convert(out)) for out in first + second]
    configs = [o.frame.payload[5:] for o, _ in sent if o.frame.config]
    assert len(configs) == 2 and configs[0] != configs[1]
    keyframes = [body for o, (_, _, body) in sent if o.frame.keyframe and not o.frame.config]
    new_sets = parameter_sets("h264", configs[1])
    old_sets = parameter_sets("h264", configs[0])
    assert new_sets and new_sets in keyframes[len(keyframes) // 2], "first keyframe after it"
    assert sum(new_sets in k for k in keyframes) == 1, "once, not in every keyframe"
    assert not any(old_sets in k for k in keyframes), "nothing added before a change"
    changed = next(k for k in keyframes if new_sets in k)
    original = next(o.frame.payload for o, (_, _, body) in sent if body is changed)
    assert changed == original[:5] + new_sets + original[5:], "legacy AVC: NALUs prepended"


def test_an_enhanced_rtmp_hevc_keyframe_gets_vps_sps_pps_in_band():
    first = output_frames(frames_of(encode_tags(1.0, video="hevc", size=(320, 180), audio=None)))
    end = max(o.dts_ms for o in first) + 40
    second = output_frames(
        frames_of(encode_tags(1.0, video="hevc", size=(640, 360), audio=None), offset_ms=end)
    )
    track = PlayerTrack()
    bodies = [(o, track.convert(o)) for o in first + second]
    config = [o for o, _ in bodies if o.frame.config and o.frame.media is Media.VIDEO][-1]
    record = coded_payload(config.frame)
    assert record is not None
    sets = parameter_sets("hevc", record)
    assert len(sets) > 20, "VPS, SPS and PPS"
    keyframes = [b for o, (_, _, b) in bodies if o.frame.keyframe and not o.frame.config]
    assert sum(sets in k for k in keyframes) == 1

"""The WHEP payload settings are operator settings: checked by config, sent to the process."""

import pytest

from rtmp_ingest import config as config_mod
from rtmp_ingest.server.webrtc_link import WebrtcService


@pytest.mark.parametrize("size", [config_mod.MIN_RTP_PAYLOAD_BYTES - 1, 1500])
def test_a_payload_size_no_packet_can_carry_is_a_config_error(size):
    with pytest.raises(config_mod.ConfigError, match="whep_max_payload_bytes"):
        config_mod.load(None, overrides={"webrtc": {"whep_max_payload_bytes": size}})


def test_the_webrtc_process_is_told_the_payload_settings():
    config = config_mod.load(
        None, overrides={"webrtc": {"whep_max_payload_bytes": 1000, "whep_vp9_flexible": False}}
    )
    service = WebrtcService(host=None, config=config.webrtc, authorize=None)  # type: ignore[arg-type]
    sent = service._configure_message()
    assert sent["whep_max_payload_bytes"] == 1000
    assert sent["whep_vp9_flexible"] is False


def test_viewers_keyframe_requests_are_in_the_metrics_by_outcome():
    from rtmp_ingest.api.metrics import _whep_metrics

    stats = {
        "viewers": 3,
        "viewers_total": 5,
        "refused": {},
        "transcoders": 1,
        "transcode_cpu_s": 0.5,
        "link_frames_dropped": 0,
        "queue_frames_dropped": 0,
        "queue_skips": 0,
        "plis_forwarded": 2,
        "plis_coalesced": 7,
    }
    family = next(f for f in _whep_metrics(stats) if f.name == "rtmp_ingest_whep_keyframe_requests")
    assert {s.labels["outcome"]: s.value for s in family.samples} == {
        "forwarded": 2,
        "coalesced": 7,
    }

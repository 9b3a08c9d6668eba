"""Codec names and what the configuration records say about a track.

Codec ids: FLV 10.1 §E.4.2.1 (SoundFormat) and §E.4.3.1 (CodecID); FourCCs:
Enhanced RTMP v2. Configuration records: ISO/IEC 14496-3 §1.6.2.1
(AudioSpecificConfig), ISO/IEC 14496-15 §5.3.3.1 (AVCDecoderConfigurationRecord)
and §8.3.3.1 (HEVC), AV1-ISOBMFF §2.3 (av1C), VP-ISOBMFF (vpcC), RFC 7845 §5.1
(OpusHead), FLAC STREAMINFO. `describe_config` reads the parameters the API
shows (profile, level, sample rate, channels) without decoding anything;
picture size comes from the SPS/sequence header in outputs (PyAV) or from
onMetaData.
"""

from __future__ import annotations

LEGACY_VIDEO = {2: "h263", 3: "screen", 4: "vp6", 5: "vp6a", 6: "screen2", 7: "h264"}
LEGACY_VIDEO_IDS = {name: cid for cid, name in LEGACY_VIDEO.items() if name != "h264"}
LEGACY_AUDIO = {
    0: "pcm",
    1: "adpcm",
    2: "mp3",
    3: "pcm_le",
    4: "nellymoser16",
    5: "nellymoser8",
    6: "nellymoser",
    7: "g711a",
    8: "g711u",
    10: "aac",
    11: "speex",
    14: "mp3_8k",
    15: "device",
}
VIDEO_FOURCC = {
    "avc1": "h264",
    "hvc1": "hevc",
    "vvc1": "vvc",
    "av01": "av1",
    "vp09": "vp9",
    "vp08": "vp8",
}
VIDEO_FOURCC_OF = {name: fourcc for fourcc, name in VIDEO_FOURCC.items()}
AUDIO_FOURCC = {
    "mp4a": "aac",
    "Opus": "opus",
    "fLaC": "flac",
    ".mp3": "mp3",
    "ac-3": "ac3",
    "ec-3": "eac3",
}
AUDIO_FOURCC_OF = {name: fourcc for fourcc, name in AUDIO_FOURCC.items()}
#: codecs whose CodedFrames carry an SI24 composition time offset
CTS_CODECS = frozenset({"h264", "hevc", "vvc"})

#: AudioSpecificConfig samplingFrequencyIndex (ISO/IEC 14496-3 Table 1.18).
AAC_SAMPLE_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)
AAC_OBJECT_TYPES = {1: "Main", 2: "LC", 3: "SSR", 4: "LTP", 5: "HE-AAC", 29: "HE-AACv2"}
AVC_PROFILES = {
    66: "Baseline",
    77: "Main",
    88: "Extended",
    100: "High",
    110: "High 10",
    122: "High 4:2:2",
    244: "High 4:4:4 Predictive",
}
HEVC_PROFILES = {1: "Main", 2: "Main 10", 3: "Main Still Picture", 4: "Range Extensions"}
AV1_PROFILES = {0: "Main", 1: "High", 2: "Professional"}
#: legacy FLV SoundRate flags (the real rate of AAC is in its AudioSpecificConfig)
LEGACY_RATES = (5512, 11025, 22050, 44100)


def _bits(data: bytes) -> int:
    return int.from_bytes(data, "big")


def describe_config(codec: str, data: bytes) -> dict[str, object]:
    """Parameters from a SequenceStart payload; {} when the record is short or unknown."""
    try:
        if codec == "aac":
            return _aac(data)
        if codec == "h264" and len(data) >= 4 and data[0] == 1:
            profile = AVC_PROFILES.get(data[1], str(data[1]))
            return {"profile": profile, "level": round(data[3] / 10, 1)}
        if codec == "hevc" and len(data) >= 13:
            profile_idc = data[1] & 0x1F
            return {
                "profile": HEVC_PROFILES.get(profile_idc, str(profile_idc)),
                "level": round(data[12] / 30, 1),
            }
        if codec == "av1" and len(data) >= 4 and data[0] & 0x7F == 1:
            seq_profile = data[1] >> 5
            return {
                "profile": AV1_PROFILES.get(seq_profile, str(seq_profile)),
                "level": data[1] & 0x1F,
            }
        if codec == "vp9" and len(data) >= 6:
            #: vpcC's version 1 and three zero flag bytes may precede the record (a level is never 0)
            offset = 4 if data[0] == 1 and data[1:4] == b"\x00\x00\x00" else 0
            if len(data) < offset + 2:
                return {}
            return {"profile": str(data[offset]), "level": round(data[offset + 1] / 10, 1)}
        if codec == "opus" and len(data) >= 19 and data[:8] == b"OpusHead":
            return {"channels": data[9], "sample_rate": 48000}
        if codec == "flac":
            info = flac_streaminfo(data)
            if len(info) < 18:  #: rate, channels and sample size end at byte 18
                return {}
            packed = _bits(info[10:18])
            return {"sample_rate": packed >> 44, "channels": ((packed >> 41) & 0x7) + 1}
    except (IndexError, ValueError):
        return {}
    return {}


def flac_streaminfo(data: bytes) -> bytes:
    """The 34-byte STREAMINFO of a FLAC configuration: raw (what FFmpeg's FLV muxer sends),
    behind its metadata block header, or behind the "fLaC" marker and that header."""
    if data[:4] == b"fLaC":
        return data[8:42]
    if len(data) >= 4 and data[0] & 0x7F == 0 and data[1:4] == b"\x00\x00\x22" and len(data) != 34:
        return data[4:38]  #: METADATA_BLOCK_HEADER (STREAMINFO, 34 bytes) first
    return data[:34]


def _aac(asc: bytes) -> dict[str, object]:
    if len(asc) < 2:
        return {}
    bits = _bits(asc[:6].ljust(6, b"\x00"))
    available = len(asc) * 8
    object_type = bits >> 43
    pos = 43
    if object_type == 31:
        object_type = 32 + ((bits >> 37) & 0x3F)
        pos = 37
    index = (bits >> (pos - 4)) & 0xF
    pos -= 4
    if index == 15:
        rate = (bits >> (pos - 24)) & 0xFFFFFF
        pos -= 24
    else:
        rate = AAC_SAMPLE_RATES[index] if index < len(AAC_SAMPLE_RATES) else 0
    if 48 - (pos - 4) > available:
        return {}  #: the record ends before the channel configuration
    channels = (bits >> (pos - 4)) & 0xF
    info: dict[str, object] = {"profile": AAC_OBJECT_TYPES.get(object_type, str(object_type))}
    if rate:
        info["sample_rate"] = rate
    if channels:
        info["channels"] = channels
    return info


def legacy_audio_info(header: int) -> dict[str, object]:
    """Sample rate and channels from a legacy audio tag's first byte."""
    return {"sample_rate": LEGACY_RATES[(header >> 2) & 0x3], "channels": 2 if header & 1 else 1}

"""`codecs.describe_config` and `legacy_audio_info`: what a sequence header says about a track.

Records are built here from their specifications (ISO/IEC 14496-3 §1.6.2.1 AudioSpecificConfig,
ISO/IEC 14496-15 avcC/hvcC, AV1-ISOBMFF av1C, VP-ISOBMFF vpcC, RFC 7845 OpusHead, FLAC
STREAMINFO). Real encoder records are checked in test_tags.py (PyAV encodes). The rule for
short or garbage records: `{}` or the values of the record, never an exception, never a value
read from bytes that are not there.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtmp_ingest.flv import codecs
from rtmp_ingest.flv.codecs import describe_config, legacy_audio_info

PROPERTY = settings(max_examples=300, deadline=None)
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bits(*fields: tuple[int, int], trailing: str = "") -> bytes:
    """Big-endian bit fields [(value, width)], then `trailing` ("0"/"1" bits), zero-padded."""
    text = "".join(format(value, f"0{width}b") for value, width in fields) + trailing
    text += "0" * (-len(text) % 8)
    return int(text, 2).to_bytes(len(text) // 8, "big") if text else b""


def asc(
    object_type: int,
    rate_index: int,
    channels: int,
    *,
    explicit_rate: int | None = None,
    trailing: str = "",
) -> bytes:
    """AudioSpecificConfig: audioObjectType (escape 31 + 6 bits for 32..95),
    samplingFrequencyIndex (15: 24-bit rate follows), channelConfiguration."""
    fields = [(object_type, 5)] if object_type < 31 else [(31, 5), (object_type - 32, 6)]
    fields.append((rate_index, 4))
    if rate_index == 15:
        fields.append((explicit_rate, 24))
    fields.append((channels, 4))
    return bits(*fields, trailing=trailing)


def streaminfo(sample_rate: int, channels: int, bits_per_sample: int = 16) -> bytes:
    """FLAC STREAMINFO (34 bytes): block sizes, frame sizes, then rate(20) channels-1(3) bps-1(5)
    total samples(36), then the MD5."""
    head = bits((4608, 16), (4608, 16), (0, 24), (0, 24))
    packed = bits((sample_rate, 20), (channels - 1, 3), (bits_per_sample - 1, 5), (0, 36))
    return head + packed + bytes(16)


def avcc(profile_idc: int, level_idc: int) -> bytes:
    sps = bytes((0x67, profile_idc, 0, level_idc, 0xAC, 0xD9))
    pps = bytes((0x68, 0xEB, 0xE3, 0xCB))
    return (
        bytes((1, profile_idc, 0, level_idc, 0xFF, 0xE1))
        + len(sps).to_bytes(2, "big")
        + sps
        + b"\x01"
        + len(pps).to_bytes(2, "big")
        + pps
    )


def hvcc(profile_idc: int, level_idc: int, *, tier: int = 0, space: int = 0) -> bytes:
    return (
        bytes((1, space << 6 | tier << 5 | profile_idc))
        + b"\x60\x00\x00\x00"
        + b"\x90\x00\x00\x00\x00\x00"
        + bytes((level_idc,))
        + b"\xf0\x00\xfc\xfd\xf8\xf8\x00\x00\x0f\x00"
    )


def av1c(profile: int, level_idx: int) -> bytes:
    return bytes((0x81, profile << 5 | level_idx, 0x0C, 0x00))


def vpcc(profile: int, level: int, *, full_box: bool) -> bytes:
    record = bytes((profile, level, 8 << 4 | 1 << 1, 1, 1, 1, 0, 0))
    return (b"\x01\x00\x00\x00" + record) if full_box else record


def opus_head(channels: int) -> bytes:
    return (
        b"OpusHead"
        + bytes((1, channels))
        + (312).to_bytes(2, "little")
        + (44100).to_bytes(4, "little")
        + b"\x00\x00"
        + bytes((0 if channels <= 2 else 1,))
        + (bytes((channels, 1)) + bytes(range(channels)) if channels > 2 else b"")
    )


# -- AAC AudioSpecificConfig -----------------------------------------------------------------

aac_object_types = st.integers(0, 30) | st.integers(32, 95)
trailing_bits = st.text(alphabet="01", max_size=40)


@PROPERTY
@given(
    object_type=aac_object_types,
    rate_index=st.integers(0, 12),
    channels=st.integers(0, 15),
    trailing=trailing_bits,
)
def test_aac_config_gives_profile_rate_and_channels(
    object_type, rate_index, channels, trailing
) -> None:
    """Direct and escaped (31 + 6 bits) object types; whatever follows (GASpecificConfig, SBR
    signalling) does not change the answer."""
    info = describe_config("aac", asc(object_type, rate_index, channels, trailing=trailing))
    expected = {
        "profile": codecs.AAC_OBJECT_TYPES.get(object_type, str(object_type)),
        "sample_rate": codecs.AAC_SAMPLE_RATES[rate_index],
    }
    if channels:
        expected["channels"] = channels
    assert info == expected


@PROPERTY
@given(
    object_type=st.integers(0, 30),
    rate=st.integers(1, (1 << 24) - 1),
    channels=st.integers(1, 15),
    trailing=trailing_bits,
)
def test_aac_config_with_an_explicit_24_bit_sample_rate(
    object_type, rate, channels, trailing
) -> None:
    """samplingFrequencyIndex 15: the rate itself follows in 24 bits."""
    record = asc(object_type, 15, channels, explicit_rate=rate, trailing=trailing)
    info = describe_config("aac", record)
    assert info == {
        "profile": codecs.AAC_OBJECT_TYPES.get(object_type, str(object_type)),
        "sample_rate": rate,
        "channels": channels,
    }


@pytest.mark.parametrize(
    "record, expected",
    [
        (b"\x12\x10", {"profile": "LC", "sample_rate": 44100, "channels": 2}),
        (b"\x11\x90", {"profile": "LC", "sample_rate": 48000, "channels": 2}),
        (b"\x11\x88", {"profile": "LC", "sample_rate": 48000, "channels": 1}),
        (asc(2, 6, 3), {"profile": "LC", "sample_rate": 24000, "channels": 3}),
        #: explicit SBR: core rate, then extensionSamplingFrequencyIndex and the core object type
        (
            asc(5, 6, 2, trailing="001100010"),
            {"profile": "HE-AAC", "sample_rate": 24000, "channels": 2},
        ),
        (
            asc(29, 7, 1, trailing="010000010"),
            {"profile": "HE-AACv2", "sample_rate": 22050, "channels": 1},
        ),
        (b"\x12\x00", {"profile": "LC", "sample_rate": 44100}),  # channels in a PCE: not counted
    ],
    ids=[
        "lc-44k1-stereo",
        "lc-48k-stereo",
        "lc-48k-mono",
        "lc-24k-3ch",
        "he-aac",
        "he-aac-v2",
        "pce",
    ],
)
def test_aac_configs_encoders_send(record: bytes, expected: dict) -> None:
    assert describe_config("aac", record) == expected


def test_aac_escape_object_type_usac() -> None:
    """audioObjectType 31 + audioObjectTypeExt 10 = 42 (USAC), 48 kHz, stereo."""
    record = asc(42, 3, 2)
    assert record[0] >> 3 == 31
    assert describe_config("aac", record) == {"profile": "42", "sample_rate": 48000, "channels": 2}


@pytest.mark.parametrize("rate_index", [13, 14])
def test_aac_reserved_rate_index_gives_no_sample_rate(rate_index: int) -> None:
    assert describe_config("aac", asc(2, rate_index, 2)) == {"profile": "LC", "channels": 2}


def test_aac_escape_object_type_with_explicit_sample_rate() -> None:
    record = asc(42, 15, 2, explicit_rate=37800)
    assert len(record) == 6
    assert describe_config("aac", record) == {"profile": "42", "sample_rate": 37800, "channels": 2}


@pytest.mark.parametrize(
    "record",
    [b"", b"\x12", asc(2, 15, 2, explicit_rate=44100)[:4]],
    ids=["empty", "one-byte", "explicit-rate-cut"],
)
def test_aac_config_too_short_gives_nothing(record: bytes) -> None:
    assert describe_config("aac", record) == {}


# -- video and the other audio records -----------------------------------------------------


@pytest.mark.parametrize(
    "codec, record, expected",
    [
        ("h264", avcc(66, 30), {"profile": "Baseline", "level": 3.0}),
        ("h264", avcc(100, 31), {"profile": "High", "level": 3.1}),
        ("h264", avcc(77, 40), {"profile": "Main", "level": 4.0}),
        ("h264", avcc(144, 51), {"profile": "144", "level": 5.1}),
        ("hevc", hvcc(1, 93), {"profile": "Main", "level": 3.1}),
        ("hevc", hvcc(2, 123, tier=1), {"profile": "Main 10", "level": 4.1}),
        ("hevc", hvcc(4, 150, space=1), {"profile": "Range Extensions", "level": 5.0}),
        ("av1", av1c(0, 8), {"profile": "Main", "level": 8}),
        ("av1", av1c(1, 13), {"profile": "High", "level": 13}),
        ("av1", av1c(2, 31), {"profile": "Professional", "level": 31}),
        ("vp9", vpcc(0, 31, full_box=True), {"profile": "0", "level": 3.1}),
        ("vp9", vpcc(2, 40, full_box=True), {"profile": "2", "level": 4.0}),
        ("vp9", vpcc(0, 31, full_box=False), {"profile": "0", "level": 3.1}),
        ("vp9", vpcc(3, 62, full_box=False), {"profile": "3", "level": 6.2}),
        ("opus", opus_head(2), {"sample_rate": 48000, "channels": 2}),
        ("opus", opus_head(6), {"sample_rate": 48000, "channels": 6}),
        ("flac", streaminfo(44100, 2), {"sample_rate": 44100, "channels": 2}),
        (
            "flac",
            b"\x80\x00\x00\x22" + streaminfo(96000, 6, 24),
            {"sample_rate": 96000, "channels": 6},
        ),
        (
            "flac",
            b"fLaC\x80\x00\x00\x22" + streaminfo(48000, 1),
            {"sample_rate": 48000, "channels": 1},
        ),
        (
            "flac",
            b"fLaC\x00\x00\x00\x22" + streaminfo(8000, 8) + b"\x84\x00\x00\x08vendor\x00\x00",
            {"sample_rate": 8000, "channels": 8},
        ),
    ],
    ids=[
        "avc-baseline",
        "avc-high",
        "avc-main",
        "avc-unnamed-profile",
        "hevc-main",
        "hevc-main10-high-tier",
        "hevc-rext",
        "av1-main",
        "av1-high",
        "av1-professional",
        "vpcc-box-p0",
        "vpcc-box-p2",
        "vpcc-bare-p0",
        "vpcc-bare-p3",
        "opus-stereo",
        "opus-5.1",
        "flac-ffmpeg-raw-streaminfo",
        "flac-block-header",
        "flac-marker",
        "flac-marker-more-blocks",
    ],
)
def test_configuration_records_give_profile_level_rate_channels(
    codec: str, record: bytes, expected: dict
) -> None:
    assert describe_config(codec, record) == expected


def test_bare_vp9_record_of_profile_1_is_not_mistaken_for_a_versioned_box() -> None:
    assert describe_config("vp9", vpcc(1, 31, full_box=False)) == {"profile": "1", "level": 3.1}


@pytest.mark.parametrize(
    "codec, record",
    [
        ("opus", b"OpusHeaX" + bytes(11)),
        ("av1", b"\x82\x00\x0c\x00"),
        ("h264", b"\x00\x64\x00\x1f"),
        ("vp8", b"\x01\x00\x00\x00\x00\x0a"),
        ("mp3", b"\xff\xfb\x90\x64"),
        ("nonsense", b"\x01" * 40),
    ],
    ids=[
        "opus-bad-magic",
        "av1-bad-version",
        "avc-bad-version",
        "vp8-no-parser",
        "mp3-no-config",
        "unknown-codec",
    ],
)
def test_records_of_the_wrong_kind_give_nothing(codec: str, record: bytes) -> None:
    assert describe_config(codec, record) == {}


# -- short and garbage records ---------------------------------------------------------------

ALL_CODECS = sorted(
    set(codecs.VIDEO_FOURCC.values())
    | set(codecs.AUDIO_FOURCC.values())
    | set(codecs.LEGACY_AUDIO.values())
    | set(codecs.LEGACY_VIDEO.values())
)
ALL_CODECS += ["", "x"]


@FUZZ
@given(st.sampled_from(ALL_CODECS), st.binary(max_size=80))
def test_any_bytes_give_a_dict_never_an_exception(codec: str, record: bytes) -> None:
    info = describe_config(codec, record)
    assert isinstance(info, dict)
    for key, value in info.items():
        assert key in ("profile", "level", "sample_rate", "channels")
        assert isinstance(value, str if key == "profile" else (int, float))


@FUZZ
@given(st.sampled_from(["aac", "flac", "opus"]), st.binary(max_size=60))
def test_audio_parameters_from_garbage_stay_in_their_field_ranges(
    codec: str, record: bytes
) -> None:
    info = describe_config(codec, record)
    assert 0 <= info.get("channels", 1) <= 255
    assert 0 <= info.get("sample_rate", 1) < 1 << 24


RECORDS = [
    pytest.param("aac", asc(2, 4, 2, trailing="000"), id="aac"),
    pytest.param("aac", asc(2, 15, 6, explicit_rate=44100), id="aac-explicit-rate"),
    pytest.param("aac", asc(42, 3, 2), id="aac-escape"),
    pytest.param("h264", avcc(100, 31), id="avcC"),
    pytest.param("hevc", hvcc(2, 123), id="hvcC"),
    pytest.param("av1", av1c(1, 13), id="av1C"),
    pytest.param("vp9", vpcc(2, 40, full_box=True), id="vpcC-box"),
    pytest.param("vp9", vpcc(0, 40, full_box=False), id="vpcC-bare"),
    pytest.param("opus", opus_head(6), id="OpusHead"),
    pytest.param("flac", b"fLaC\x80\x00\x00\x22" + streaminfo(48000, 2)[:18], id="flac-marker"),
    pytest.param("flac", streaminfo(48000, 2), id="flac-raw-streaminfo"),
]


@pytest.mark.parametrize("codec, record", RECORDS)
def test_a_record_cut_short_reports_nothing_rather_than_wrong_values(
    codec: str, record: bytes
) -> None:
    full = describe_config(codec, record)
    assert full, "the whole record is understood"
    for length in range(len(record)):
        info = describe_config(codec, record[:length])
        wrong = {key: value for key, value in info.items() if full.get(key) != value}
        assert not wrong, f"{length}-byte prefix reports {wrong}, the record says {full}"


def test_flac_streaminfo_is_found_in_each_form_ffmpeg_and_others_send() -> None:
    info = streaminfo(44100, 2)
    assert codecs.flac_streaminfo(info) == info
    assert codecs.flac_streaminfo(b"\x80\x00\x00\x22" + info) == info
    assert codecs.flac_streaminfo(b"fLaC\x80\x00\x00\x22" + info + b"more") == info


# -- legacy audio header byte ---------------------------------------------------------------


@pytest.mark.parametrize(
    "header, expected",
    [
        (
            0x2F,
            {"sample_rate": 44100, "channels": 2},
        ),  # MP3 44 kHz 16-bit stereo, what FFmpeg sends
        (0x2E, {"sample_rate": 44100, "channels": 1}),
        (0x22, {"sample_rate": 5512, "channels": 1}),
        (0x37, {"sample_rate": 11025, "channels": 2}),
        (0xB2, {"sample_rate": 5512, "channels": 1}),
        (0x6B, {"sample_rate": 22050, "channels": 2}),
    ],
)
def test_legacy_audio_header_gives_rate_and_channels(header: int, expected: dict) -> None:
    assert legacy_audio_info(header) == expected


@given(st.integers(0, 255))
def test_every_legacy_audio_header_byte_has_a_rate_and_channels(header: int) -> None:
    info = legacy_audio_info(header)
    assert info["sample_rate"] in codecs.LEGACY_RATES and info["channels"] in (1, 2)

"""Stream id spellings real SRT encoders send, round trips, and the garbage rule."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmp_ingest.srt.streamid import (
    REJECT_BAD_MODE,
    REJECT_BAD_REQUEST,
    StreamId,
    StreamIdError,
    parse,
)


@pytest.mark.parametrize(
    "text",
    [
        "live/show?sourceId=cam1&token=T0K&priority=3",
        "#!::r=live/show,m=publish,sourceId=cam1,token=T0K,priority=3",
        "%23!::r=live/show,m=publish,sourceId=cam1,token=T0K,priority=3",  # ffmpeg 5.1
        "%23%21%3A%3Ar%3Dlive%2Fshow%2Cm%3Dpublish%2CsourceId%3Dcam1%2Ctoken%3DT0K%2Cpriority%3D3",
        "/live/show?sourceId=cam1&token=T0K&priority=3",
        "#!::r=live/show?sourceId=cam1,m=publish,token=T0K,priority=3",
        "#!::m=publish,r=live/show,priority=3,sourceId=cam1,token=T0K",
    ],
)
def test_spellings_of_one_publish(text: str) -> None:
    parsed = parse(text)
    assert (parsed.path, parsed.source_id, parsed.token, parsed.priority) == (
        "live/show",
        "cam1",
        "T0K",
        3,
    )


def test_default_source_and_kept_keys() -> None:
    parsed = parse("#!::r=live/show,m=publish,u=alice,t=stream")
    assert parsed == StreamId("live", "show", query=(("u", "alice"), ("t", "stream")))
    assert parse("live/a/b").path == "live/a/b"


@pytest.mark.parametrize(
    ("text", "reason", "words"),
    [
        ("#!::r=live/show,m=request", REJECT_BAD_MODE, "only publishes"),
        ("#!::r=live/show", REJECT_BAD_MODE, "request (the default)"),
        ("#!::r=live/show,m=bidirectional", REJECT_BAD_MODE, "only publishes"),
        ("", REJECT_BAD_REQUEST, "no stream id"),
        ("live", REJECT_BAD_REQUEST, "APP/STREAM"),
        ("live/", REJECT_BAD_REQUEST, "APP/STREAM"),
        ("#!::m=publish", REJECT_BAD_REQUEST, "no r="),
        ("#!::r=live/s,m=publish,oops", REJECT_BAD_REQUEST, "KEY=VALUE"),
        ("live/s?priority=high", REJECT_BAD_REQUEST, "integer"),
        ("live/s?sourceId=%ff", REJECT_BAD_REQUEST, "UTF-8"),
        ("x" * 600, REJECT_BAD_REQUEST, "512"),
    ],
)
def test_refusals_say_why(text: str, reason: int, words: str) -> None:
    with pytest.raises(StreamIdError) as info:
        parse(text)
    assert info.value.reject_reason == reason
    assert words in info.value.message


names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
    lambda s: s.strip("/") == s and "/" not in s
)
values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(
    app=names.filter(lambda s: not s.startswith("#!")),
    stream=names,
    source=values,
    token=values,
    priority=st.integers(-99, 99),
)
def test_url_form_round_trip(app: str, stream: str, source: str, token: str, priority: int) -> None:
    query = urllib.parse.urlencode({"sourceId": source, "token": token, "priority": priority})
    text = f"{urllib.parse.quote(app, safe='')}/{urllib.parse.quote(stream, safe='')}?{query}"
    parsed = parse(text)
    assert (parsed.app, parsed.stream) == (
        urllib.parse.quote(app, safe=""),
        urllib.parse.quote(stream, safe=""),
    )
    assert (parsed.source_id, parsed.token, parsed.priority) == (source, token, priority)


plain = st.text(st.sampled_from("abcXYZ019-_.~:@"), min_size=1, max_size=10)


@given(app=plain, stream=plain, source=plain, token=plain, encode=st.booleans())
def test_access_control_round_trip(
    app: str, stream: str, source: str, token: str, encode: bool
) -> None:
    text = f"#!::r={app}/{stream},m=publish,sourceId={source},token={token}"
    if encode:
        text = urllib.parse.quote(text, safe="")
    parsed = parse(text)
    assert (parsed.path, parsed.source_id, parsed.token) == (f"{app}/{stream}", source, token)


@given(st.text(max_size=600) | st.binary(max_size=600).map(lambda b: b.decode("latin-1")))
def test_garbage_gives_a_stream_id_or_a_refusal(text: str) -> None:
    try:
        parsed = parse(text)
    except StreamIdError as exc:
        assert exc.message and exc.reject_reason in (REJECT_BAD_REQUEST, REJECT_BAD_MODE)
    else:
        assert parsed.app and parsed.stream


@given(st.binary(max_size=600))
def test_undecodable_bytes_as_the_callback_passes_them(raw: bytes) -> None:
    text = raw.decode("utf-8", "surrogateescape")
    try:
        parse(text)
    except StreamIdError:
        pass

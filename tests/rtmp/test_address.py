"""Address parsing: every client/URL shape of docs/clients.md §1 → stream path, sourceId, token."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp_ingest.rtmp.address import parse_address

H = "rtmp://127.0.0.1:1935"

# (client/variant, app, tcUrl, publish name, path, sourceId, token)
STANDARD = [
    (
        client,
        "live",
        f"{H}/live",
        "mystream?sourceId=cam1&token=abc",
        "live/mystream",
        "cam1",
        "abc",
    )
    for client in ("ffmpeg", "gst rtmp2sink", "gst rtmpsink", "OBS (Server + Key)", "PyAV")
]
VARIANTS = [
    (
        "ffmpeg %-escapes verbatim",
        "live",
        f"{H}/live",
        "mystream?sourceId=cam%201&token=a%2Fb%26c+d",
        "live/mystream",
        "cam 1",
        "a/b&c d",
    ),
    (
        "rtmp2sink %-escapes verbatim",
        "live",
        f"{H}/live",
        "mystream?sourceId=cam%201&token=a%2Fb%26c+d",
        "live/mystream",
        "cam 1",
        "a/b&c d",
    ),
    (
        "PyAV %-escapes verbatim",
        "live",
        f"{H}/live",
        "mystream?sourceId=cam%201&token=a%2Fb%26c+d",
        "live/mystream",
        "cam 1",
        "a/b&c d",
    ),
    # librtmp %-decoded the name: "&" inside the token now splits the query
    (
        "rtmpsink %-decoded",
        "live",
        f"{H}/live",
        "mystream?sourceId=cam 1&token=a/b&c+d",
        "live/mystream",
        "cam 1",
        "a/b",
    ),
    (
        "OBS %-decoded",
        "live",
        f"{H}/live",
        "mystream?sourceId=cam 1&token=a/b&c+d",
        "live/mystream",
        "cam 1",
        "a/b",
    ),
    (
        "ffmpeg, PyAV: / in the query",
        "live/mystream?sourceId=cam1&redir=",
        f"{H}/live/mystream?sourceId=cam1&redir=",
        "x/y",
        "live/mystream",
        "cam1",
        None,
    ),
    (
        "rtmp2sink, rtmpsink: / in the query",
        "live/mystream?sourceId=cam1&redir=/x",
        f"{H}/live/mystream?sourceId=cam1&redir=/x",
        "y",
        "live/mystream",
        "cam1",
        None,
    ),
    (
        "OBS split by publish_obs.sh",
        "live",
        f"{H}/live",
        "mystream?sourceId=cam1&redir=/x/y",
        "live/mystream",
        "cam1",
        None,
    ),
    (
        "OBS query typed into Server",
        "live?sourceId=cam1&token=abc",
        "rtmp://h/live?sourceId=cam1&token=abc",
        "mystream",
        "live/mystream",
        "cam1",
        "abc",
    ),
    (
        "OBS whole URL in Server, empty key",
        "live/mystream?sourceId=cam1&token=abc",
        f"{H}/live/mystream?sourceId=cam1&token=abc",
        "",
        "live/mystream",
        "cam1",
        "abc",
    ),
    (
        "ffmpeg, PyAV: no port in URL (port added)",
        "live",
        "rtmp://127.0.0.1:1935/live",
        "mystream?sourceId=cam1&token=abc",
        "live/mystream",
        "cam1",
        "abc",
    ),
    (
        "rtmp2sink, rtmpsink: no port in URL",
        "live",
        "rtmp://127.0.0.1/live",
        "mystream?sourceId=cam1&token=abc",
        "live/mystream",
        "cam1",
        "abc",
    ),
]


@pytest.mark.parametrize(
    "client,app,tc_url,name,path,source_id,token",
    STANDARD + VARIANTS,
    ids=[row[0] for row in STANDARD + VARIANTS],
)
def test_findings_table_rows_give_path_source_id_and_token(
    client, app, tc_url, name, path, source_id, token
):
    address = parse_address(app=app, tc_url=tc_url, name=name)
    assert address.path == path
    assert (address.app, address.stream) == tuple(path.split("/", 1))
    assert address.param("sourceId") == source_id
    assert address.param("token") == token


def test_redirect_query_keeps_the_slashes_of_its_value():
    ffmpeg = parse_address(
        app="live/mystream?sourceId=cam1&redir=",
        tc_url=f"{H}/live/mystream?sourceId=cam1&redir=",
        name="x/y",
    )
    gst = parse_address(
        app="live/mystream?sourceId=cam1&redir=/x",
        tc_url=f"{H}/live/mystream?sourceId=cam1&redir=/x",
        name="y",
    )
    obs = parse_address(app="live", tc_url=f"{H}/live", name="mystream?sourceId=cam1&redir=/x/y")
    assert ffmpeg.param("redir") == gst.param("redir") == obs.param("redir") == "/x/y"


def test_stream_name_query_wins_over_app_and_tc_url_query():
    address = parse_address(
        app="live?sourceId=app", tc_url=f"{H}/live?sourceId=tc&token=t", name="s?sourceId=name"
    )
    assert address.param("sourceId") == "name"
    assert address.param("token") == "t"


def test_first_duplicate_key_of_one_query_counts():
    assert parse_address(app="live", tc_url=None, name="s?a=1&a=2").param("a") == "1"


def test_path_never_starts_or_ends_with_a_slash():
    address = parse_address(app="/live/", tc_url=None, name="/s//x/")
    assert address.path == "live/s/x"


def test_bad_tc_url_is_ignored():
    address = parse_address(app="live", tc_url="rtmp://[::1/live?x=1", name="s")
    assert address.path == "live/s"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.one_of(st.none(), st.text(max_size=40)), st.text(max_size=40))
def test_any_strings_parse_without_raising(app, tc_url, name):
    address = parse_address(app=app, tc_url=tc_url, name=name)
    assert not address.path.startswith("/") and not address.path.endswith("/")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in address.query.items())


url_ish = st.text(alphabet="live/mystream?&=%+:[]#x0123456789ABCDEFé", max_size=40)


@settings(max_examples=300, deadline=None)
@given(url_ish, st.one_of(st.none(), url_ish.map(lambda s: "rtmp://" + s)), url_ish)
def test_url_like_strings_parse_without_raising(app, tc_url, name):
    parse_address(app=app, tc_url=tc_url, name=name)

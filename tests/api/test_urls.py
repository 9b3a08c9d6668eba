"""Viewer URLs name the stream they are for, even after a browser normalises them."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import hypothesis.strategies as st
from hypothesis import given

from rtmp_ingest.api.urls import (
    DOT_SEGMENT_PROBLEM,
    is_dot_segment,
    source_urls,
    stream_hls_url,
    url_problem,
)
from tests.api.fake import live_stream

PORTS = {"http_port": 8080, "rtmp_port": 1935}


def normalised_away(path: str) -> bool:
    """Whether WHATWG URL parsing would drop or climb with a segment of the URL `path`
    (`.`, `..` and their spellings with `%2e` in either case)."""
    return any(part.lower().replace("%2e", ".") in (".", "..") for part in path.split("/"))


def test_urls_of_an_ordinary_source():
    assert source_urls("live/show", "cam 1", host="example.net", **PORTS) == {
        "rtmp": "rtmp://example.net:1935/live/show?sourceId=cam%201",
        "flv": "http://example.net:8080/live/show.flv?sourceId=cam%201",
        "hls": "http://example.net:8080/hls/live/show/cam%201/index.m3u8",
    }
    assert source_urls("live/show", "", host="", **PORTS) == {
        "rtmp": "rtmp://:1935/live/show",
        "flv": "/live/show.flv",
        "hls": "/hls/live/show/_/index.m3u8",
    }
    assert (
        source_urls("live/show", "", host="::1", **PORTS)["flv"]
        == "http://[::1]:8080/live/show.flv"
    )
    assert (
        stream_hls_url("live/show", host="h", http_port=80)
        == "http://h:80/hls/live/show/index.m3u8"
    )


def test_a_stream_path_with_a_dot_segment_gets_no_urls():
    for path in ("live/..", "live/.", "live/../other", "./live/x"):
        assert url_problem(path) == DOT_SEGMENT_PROBLEM, path
        assert source_urls(path, "cam", host="h", **PORTS) == {
            "rtmp": None,
            "flv": None,
            "hls": None,
        }
        assert stream_hls_url(path, host="h", http_port=80) is None
    for safe in ("live/...", "live/.hidden", "live/%2e%2E", "live/.%2e"):
        assert url_problem(safe) is None, safe  #: `%` is encoded, so these stay names
        assert not normalised_away(urlsplit(source_urls(safe, "", host="h", **PORTS)["flv"]).path)


def test_a_dot_source_id_gets_no_hls_url_but_keeps_its_query_urls():
    urls = source_urls("live/show", "..", host="h", **PORTS)
    assert urls["hls"] is None
    assert source_urls("live/show", ".", host="h", **PORTS)["hls"] is None
    assert source_urls("live/show", "%2e", host="h", **PORTS)["hls"] == (
        "http://h:8080/hls/live/show/%252e/index.m3u8"
    )
    assert urls["flv"] == "http://h:8080/live/show.flv?sourceId=.."


@given(
    st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=4).map("/".join),
    st.text(max_size=8),
)
def test_every_url_given_survives_normalisation_and_names_its_stream(stream_path, source_id):
    urls = source_urls(stream_path, source_id, host="h", **PORTS)
    for kind, url in urls.items():
        if url is None:
            assert url_problem(stream_path) or (kind == "hls" and is_dot_segment(source_id))
            continue
        path = urlsplit(url).path
        assert not normalised_away(path), url
        if kind == "flv":
            assert unquote(path[1:].removesuffix(".flv")) == stream_path
        if kind == "hls":
            assert unquote(path).startswith(f"/hls/{stream_path}/")


async def test_the_api_shows_null_urls_and_why_for_a_dot_segment_stream(client, server):
    live_stream(server, "live/..")
    response = await client.get("/api/v1/streams")
    stream = response.json()["streams"][0]
    assert stream["hls"] is None
    for source in stream["sources"]:
        assert source["urls"] == {"rtmp": None, "flv": None, "hls": None}
        assert source["urlProblem"] == DOT_SEGMENT_PROBLEM


async def test_the_api_builds_urls_on_the_host_the_caller_used(client, server):
    live_stream(server)
    source = (await client.get("/api/v1/streams/live/show/sources/cam1")).json()
    assert source["urls"]["hls"] == "http://api.test:8080/hls/live/show/cam1/index.m3u8"
    assert source["urls"]["rtmp"] == "rtmp://api.test:1935/live/show?sourceId=cam1"
    assert "urlProblem" not in source

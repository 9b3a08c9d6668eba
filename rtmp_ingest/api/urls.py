"""Viewer URLs of streams and sources (RTMP play, HTTP-FLV, LL-HLS), as the API shows them.

A URL must name the stream it is given for even after a browser or an HTTP
library normalises it: WHATWG URL parsing removes `.` and `..` path segments,
and their percent-encoded spellings (`%2e`, `.%2E`, `%2e%2e` …) too, so no
encoding makes such a segment safe. A stream path with a dot segment (a
`live/*` token lets an encoder publish `live/..`) therefore gets no URLs
(`None`, and `url_problem` says why), and a sourceId that is a dot segment
gets no HLS URL (its other URLs carry it in the query, where it is inert).
The publish side should refuse such names outright (docs/spec.md §2); these
rules keep the API safe whatever it is given.
"""

from __future__ import annotations

from urllib.parse import quote

from rtmp_ingest.outputs.names import source_segment

#: What the API says instead of URLs for a stream path with a dot segment.
DOT_SEGMENT_PROBLEM = "the stream path has a '.' or '..' segment, which URLs cannot carry"


def is_dot_segment(name: str) -> bool:
    """Whether a stream path component or sourceId becomes a segment that URL normalisation
    removes or climbs with. Only `.` and `..` do: `%` itself is encoded (a name `%2e`
    becomes `%252e`), and other dotted names are not dot segments."""
    return name in (".", "..")


def url_problem(stream_path: str) -> str | None:
    """Why `stream_path` cannot have viewer URLs, or None when it can."""
    if any(is_dot_segment(part) for part in stream_path.split("/")):
        return DOT_SEGMENT_PROBLEM
    return None


def _authority(scheme: str, host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def source_urls(
    stream_path: str, source_id: str, *, host: str, http_port: int, rtmp_port: int
) -> dict[str, str | None]:
    """Where viewers get one source: absolute on `host` (the API request's), else relative.

    Keys: `rtmp`, `flv`, `hls`; a value is None where no URL can name the source safely.
    """
    if url_problem(stream_path) is not None:
        return {"rtmp": None, "flv": None, "hls": None}
    query = f"?sourceId={quote(source_id, safe='')}" if source_id else ""
    name = quote(stream_path)
    hls: str | None = None
    if not is_dot_segment(source_id):
        hls = f"/hls/{name}/{source_segment(source_id)}/index.m3u8"
    if not host:
        return {
            "rtmp": f"rtmp://:{rtmp_port}/{name}{query}",
            "flv": f"/{name}.flv{query}",
            "hls": hls,
        }
    http = _authority("http", host, http_port)
    return {
        "rtmp": f"{_authority('rtmp', host, rtmp_port)}/{name}{query}",
        "flv": f"{http}/{name}.flv{query}",
        "hls": f"{http}{hls}" if hls is not None else None,
    }


def stream_hls_url(stream_path: str, *, host: str, http_port: int) -> str | None:
    """The stream's multivariant playlist (every live source); None for a dot-segment path."""
    if url_problem(stream_path) is not None:
        return None
    path = f"/hls/{quote(stream_path)}/index.m3u8"
    return f"{_authority('http', host, http_port)}{path}" if host else path

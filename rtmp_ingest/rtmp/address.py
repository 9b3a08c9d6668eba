"""Publishing/playing addresses: (connect's app and tcUrl, publish name) → path + query.

What real clients send for `rtmp://host/live/mystream?sourceId=cam1` (see
docs/clients.md §1):

- every client with a standard URL: app `live`, name `mystream?sourceId=cam1`;
- OBS with the query typed into the Server field: app `live?sourceId=cam1`, name `mystream`;
- OBS with the whole URL in Server and an empty key: app `live/mystream?sourceId=cam1`, name ``;
- a `/` inside the query moves the split point: ffmpeg/PyAV send app
  `live/mystream?sourceId=cam1&redir=` and name `x/y`; GStreamer splits at the last `/`;
- librtmp clients (OBS, rtmpsink) percent-decode the name before sending; ffmpeg,
  GStreamer rtmp2 and PyAV send it verbatim.

So: when the name carries the query, or the app has no query, the path is
app + "/" + name before `?`. When the app carries a query and the name does not,
either the app holds the whole stream path (it contains a `/` before its `?`:
the name is the tail of the URL, glued back on with `/`), or the app is just the
application (the name is the stream). The query parts are merged with the
stream name's query winning (docs/spec.md §2), then parsed like any URL query
(`%XX` and `+` decoded). Values are data: nothing here touches a file system.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import attrs


@attrs.frozen
class StreamAddress:
    """Where a publish or play goes: the stream path and the query parameters."""

    #: "APP/STREAM", e.g. "live/keynote" (never starts or ends with "/")
    path: str
    #: first value of each query key (later duplicates ignored), decoded
    query: dict[str, str]
    #: the application, first segment of the path
    app: str
    #: the stream name within the app (the rest of the path)
    stream: str

    def param(self, key: str, default: str | None = None) -> str | None:
        return self.query.get(key, default)


def _split_query(text: str) -> tuple[str, str | None]:
    head, sep, tail = text.partition("?")
    return head, (tail if sep else None)


def _parse_query(*parts: str | None) -> dict[str, str]:
    """Merges query strings; a later part wins for a key it repeats."""
    merged: dict[str, str] = {}
    for part in parts:
        if not part:
            continue
        seen: set[str] = set()
        for key, value in parse_qsl(part, keep_blank_values=True):
            if key not in seen:  #: first occurrence within one query string counts
                seen.add(key)
                merged[key] = value
    return merged


def _clean_path(*segments: str) -> str:
    parts = [p for segment in segments for p in segment.split("/") if p]
    return "/".join(parts)


def parse_address(*, app: str, tc_url: str | None, name: str) -> StreamAddress:
    """Builds the address of a publish/play request from what the client sent."""
    app_path, app_query = _split_query(app or "")
    name_path, name_query = _split_query(name or "")
    tc_query: str | None = None
    if tc_url:
        try:
            tc_query = urlsplit(tc_url).query or None
        except ValueError:
            tc_query = None
    if app_query is not None and name_query is None:
        if "/" in app_path.strip("/"):
            #: the app holds the stream path; the name is the URL's tail after a "/" in the query
            query = app_query + ("/" + name if name else "")
            path = _clean_path(app_path)
            return _address(path, _parse_query(tc_query if tc_query != app_query else None, query))
        return _address(_clean_path(app_path, name_path), _parse_query(tc_query, app_query))
    return _address(
        _clean_path(app_path, name_path),
        _parse_query(tc_query, app_query, name_query),
    )


def _address(path: str, query: dict[str, str]) -> StreamAddress:
    app, _, stream = path.partition("/")
    return StreamAddress(path=path, query=query, app=app, stream=stream)

"""SRT stream ids → what the publisher asks for (docs/spec.md §8). Pure, no libsrt.

An SRT caller names what it wants in its stream id (SRTO_STREAMID, at most 512
bytes), which the listener reads in its listen callback, before the connection
is accepted. Three spellings are taken:

- the URL form, like an RTMP publishing URL without the host:
  `APP/STREAM?sourceId=cam1&token=T&priority=N`;
- the SRT Access Control form (SRT AccessControl.md, "Standard Keys"):
  `#!::r=APP/STREAM,m=publish,sourceId=cam1,token=T,priority=N`, where `r` is the
  resource and `m` the mode; `u`, `h`, `s`, `t` and any other key are kept in the
  query like unknown URL query keys;
- either of them percent-encoded as a whole, as ffmpeg 5.1 sends
  `srt://HOST:PORT?streamid=%23!::r=...` (it does not decode its URL options):
  a stream id starting with `%23!` / `%23%21` (or with no `?`, `,` or `=` but escapes)
  is percent-decoded once first.

The mode follows the SRT convention: `m=publish` publishes; `m=request` (and an
access-control stream id without `m`, which means request) asks to play, which
this server does not offer over SRT: refused with a sentence saying so. The URL
form always publishes. Anything malformed raises `StreamIdError` with the
sentence for the operator's log and the reject reason for the caller.
"""

from __future__ import annotations

import urllib.parse

import attrs

#: SRT's own limit on SRTO_STREAMID (srt.h, "512 characters")
MAX_STREAM_ID_BYTES = 512
#: access_control.h reject reasons used for malformed requests
REJECT_BAD_REQUEST = 1400
REJECT_BAD_MODE = 1405
ACCESS_CONTROL_PREFIX = "#!::"


class StreamIdError(ValueError):
    """A stream id that names no publishable stream; `reject_reason` is for the caller."""

    def __init__(self, message: str, *, reject_reason: int = REJECT_BAD_REQUEST) -> None:
        super().__init__(message)
        self.message = message
        self.reject_reason = reject_reason


@attrs.frozen
class StreamId:
    """A parsed publish stream id."""

    app: str
    stream: str
    source_id: str = ""
    token: str = ""
    priority: int = 0
    #: every key/value the stream id carried, sourceId/token/priority included, in order
    query: tuple[tuple[str, str], ...] = ()

    @property
    def path(self) -> str:
        return f"{self.app}/{self.stream}"


def _decode_whole(text: str) -> str:
    if text[:4].upper() == "%23!" or text[:6].upper() == "%23%21":
        return urllib.parse.unquote(text, errors="strict")
    if "%" in text and not any(c in text for c in "?,="):
        return urllib.parse.unquote(text, errors="strict")
    return text


def _split_resource(resource: str) -> tuple[str, str]:
    path = resource.strip("/")
    app, slash, stream = path.partition("/")
    if not slash or not app or not stream:
        raise StreamIdError(
            f"stream id names no APP/STREAM ({resource!r}); use "
            "streamid=APP/STREAM?sourceId=ID or #!::r=APP/STREAM,m=publish"
        )
    return app, stream


def _pairs_of_query(query: str) -> list[tuple[str, str]]:
    try:
        return urllib.parse.parse_qsl(query, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise StreamIdError(f"stream id query is not valid UTF-8: {exc}") from None


def _access_control(body: str) -> tuple[str, list[tuple[str, str]], str | None]:
    """(resource, other pairs, mode) of `r=...,m=...,k=v` (values may not hold commas)."""
    pairs: list[tuple[str, str]] = []
    resource: str | None = None
    mode: str | None = None
    for item in body.split(","):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise StreamIdError(f"stream id item {item[:40]!r} is not KEY=VALUE")
        if key == "r":
            resource = value
        elif key == "m":
            mode = value
        else:
            pairs.append((key, value))
    if resource is None:
        raise StreamIdError("stream id has no r=APP/STREAM resource")
    return resource, pairs, mode


def parse(text: str) -> StreamId:
    """Parses a publish stream id; StreamIdError if it is malformed or not a publish."""
    if not text:
        raise StreamIdError(
            "no stream id: set streamid=APP/STREAM?sourceId=ID (or #!::r=APP/STREAM,m=publish)"
        )
    if len(text.encode("utf-8", "surrogateescape")) > MAX_STREAM_ID_BYTES:
        raise StreamIdError(f"stream id longer than {MAX_STREAM_ID_BYTES} bytes")
    try:
        text.encode("utf-8")
        text = _decode_whole(text)
    except UnicodeError:
        raise StreamIdError("stream id is not valid UTF-8") from None
    if text.startswith(ACCESS_CONTROL_PREFIX):
        resource, pairs, mode = _access_control(text[len(ACCESS_CONTROL_PREFIX) :])
        if mode != "publish":
            shown = "request (the default)" if mode is None else repr(mode)
            raise StreamIdError(
                f"stream id asks for mode {shown}: this server takes only publishes over "
                "SRT (no SRT play); use m=publish, and play over HLS or RTMP",
                reject_reason=REJECT_BAD_MODE,
            )
        resource, _, resource_query = resource.partition("?")
        pairs = _pairs_of_query(resource_query) + pairs
    else:
        resource, _, query = text.partition("?")
        pairs = _pairs_of_query(query)
    app, stream = _split_resource(resource)
    values: dict[str, str] = {}
    for key, value in pairs:
        values[key] = value  #: the last one wins, like the RTMP address parser
    priority_text = values.get("priority", "") or "0"
    try:
        priority = int(priority_text)
    except ValueError:
        raise StreamIdError(f"priority must be an integer, got {priority_text[:20]!r}") from None
    return StreamId(
        app=app,
        stream=stream,
        source_id=values.get("sourceId", ""),
        token=values.get("token", ""),
        priority=priority,
        query=tuple(pairs),
    )

"""Token requests over HTTP: the strict JSON reader and what the API adds to auth's claims.

Claims are validated by `rtmp_ingest.auth.tokens.claims_from_json` and minted by the
keyring (which refuses a token longer than the server accepts); this module reads
the body first, so nothing a client sends reaches them as anything but plain JSON:
no NaN or Infinity, bounded nesting, bounded numbers of arrays. Every problem is a
`ValueError` worded for the client (the API answers 400 with it).
"""

from __future__ import annotations

import json
from typing import Any

#: Nesting depth of a request body: token requests are flat objects of lists.
MAX_JSON_DEPTH = 8
#: Arrays and objects in one body (counted before decoding, so a bomb is never parsed).
MAX_JSON_CONTAINERS = 2048
#: Longest token every encoder tested can send: libavformat (the ffmpeg CLI, PyAV) fails
#: to publish once its RTMP URL passes about 1 KiB (a 1030-byte token did, 731 did not).
#: The server accepts up to auth.tokens.MAX_TOKEN_BYTES; longer than this gets a warning.
MAX_PORTABLE_TOKEN_BYTES = 900


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number here (send a finite number)")


def _depth(value: Any) -> int:
    """Nesting depth of decoded JSON, iteratively (no recursion limit to hit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_json_body(data: bytes) -> Any:
    """A request body as JSON; ValueError (worded for the client) for anything else."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("body must be UTF-8 JSON") from None
    if text.count("[") + text.count("{") > MAX_JSON_CONTAINERS:
        raise ValueError("body has too many JSON arrays or objects for a token request")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, an integer of too many digits
        raise ValueError(f"body must be JSON: {exc}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"body is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def token_warning(token: str) -> str | None:
    """What to tell the operator about a token some encoders cannot send, or None."""
    if len(token) <= MAX_PORTABLE_TOKEN_BYTES:
        return None
    return (
        f"this token is {len(token)} bytes: ffmpeg/libavformat-based encoders cannot send an "
        f"RTMP URL with a token over about {MAX_PORTABLE_TOKEN_BYTES} bytes; name fewer streams"
    )

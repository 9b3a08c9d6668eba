"""Token requests: a JSON body (API) or CLI options → validated token claims (docs/spec.md §5).

No web stack here (`rtmp-ingest token create` imports this module). Every bad
value is a `ValueError` whose text names the field, so the API answers 400 with
it: non-numbers, NaN and infinities, times outside what a token may carry,
lists and strings longer than a token the server accepts could hold.
`parse_json_body` is the strict JSON reader for request bodies (no NaN or
Infinity, bounded nesting).
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from typing import Any

from rtmp_ingest import tokens

#: Longest token lifetime the API mints.
MAX_TOKEN_TTL_S = 10 * 365 * 86400
#: Entries in `streams`, `sourceIds` or `networks`: more could not fit in a token the
#: server accepts (tokens.MAX_TOKEN_BYTES) anyway.
MAX_LIST_ITEMS = 64
#: Characters of one stream pattern or sourceId (an RTMP stream path is far shorter).
MAX_NAME_CHARS = 512
#: Characters of the label.
MAX_LABEL_CHARS = 128
#: Longest token every encoder tested can send: libavformat (the ffmpeg CLI, PyAV) fails
#: to publish once its RTMP URL passes about 1 KiB (a 1030-byte token did, 731 did not).
#: The server accepts up to tokens.MAX_TOKEN_BYTES; longer than this is minted with a warning.
MAX_PORTABLE_TOKEN_BYTES = 900
#: Nesting depth of a request body: token requests are flat objects of lists.
MAX_JSON_DEPTH = 8


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
    # a nesting bomb is refused before the decoder recurses into it
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH * MAX_LIST_ITEMS * 4:
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


def _string_list(body: dict[str, Any], key: str, *, required: bool = False) -> list[str] | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ValueError(f"{key!r} is required")
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key!r} must be a list of strings")
    if len(value) > MAX_LIST_ITEMS:
        raise ValueError(f"{key!r} has {len(value)} entries; at most {MAX_LIST_ITEMS}")
    for item in value:
        if len(item) > MAX_NAME_CHARS:
            raise ValueError(f"{key!r}: an entry is longer than {MAX_NAME_CHARS} characters")
    return value


def _seconds(value: Any, key: str) -> float:
    """A finite JSON number (not a bool) as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key!r} must be a number of seconds")
    try:
        seconds = float(value)
    except OverflowError:
        raise ValueError(f"{key!r} is out of range") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{key!r} must be finite")
    return seconds


def claims_from_request(body: dict[str, Any], *, now: float | None = None) -> tokens.TokenClaims:
    """Token claims from an API request body (or CLI options), validated."""
    now = time.time() if now is None else now
    streams = _string_list(body, "streams", required=True) or []
    if not streams:
        raise ValueError("'streams' must name at least one stream or pattern")
    ttl = body.get("ttl")
    expires_at: float | None = None
    if ttl is not None:
        ttl_s = tokens.parse_duration_s(ttl) if isinstance(ttl, str) else _seconds(ttl, "ttl")
        if not (math.isfinite(ttl_s) and 1 <= ttl_s <= MAX_TOKEN_TTL_S):
            raise ValueError(f"'ttl' must be between 1 s and {MAX_TOKEN_TTL_S} s")
        expires_at = now + ttl_s
    elif body.get("expiresAt") is not None:
        expires_at = _seconds(body["expiresAt"], "expiresAt")
        if not now < expires_at <= now + MAX_TOKEN_TTL_S:
            raise ValueError(
                "'expiresAt' must be a Unix time in seconds, in the future and at most "
                f"{MAX_TOKEN_TTL_S} s ahead"
            )
    multisource = body.get("multisource", False)
    if not isinstance(multisource, bool):
        raise ValueError("'multisource' must be true or false")
    record = body.get("record")
    if record is not None and not isinstance(record, bool):
        raise ValueError("'record' must be true, false or null (the app's setting)")
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > MAX_LABEL_CHARS:
        raise ValueError(f"'label' must be a string of at most {MAX_LABEL_CHARS} characters")
    networks = _string_list(body, "networks")
    for network in networks or ():
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"'networks': {network!r} is not an address or CIDR network") from None
    fields: dict[str, Any] = {  # one dict: mypy misreads TokenClaims' tuple converters
        "token_id": tokens.new_token_id(),
        "streams": streams,
        "multisource": multisource,
        "source_ids": _string_list(body, "sourceIds"),
        "networks": networks,
        "expires_at": expires_at,
        "issued_at": now,
        "label": label,
        "record": record,
    }
    return tokens.TokenClaims(**fields)


def mint_checked(claims: tokens.TokenClaims, secret: bytes) -> str:
    """The signed token; ValueError when it would be longer than the server accepts."""
    token = tokens.mint(claims, secret)
    if len(token) > tokens.MAX_TOKEN_BYTES:
        raise ValueError(
            f"these claims make a {len(token)}-byte token; the server accepts at most "
            f"{tokens.MAX_TOKEN_BYTES} bytes: name fewer or shorter streams, sourceIds, networks"
        )
    return token


def token_warning(token: str) -> str | None:
    """What to tell the operator about a token some encoders cannot send, or None."""
    if len(token) <= MAX_PORTABLE_TOKEN_BYTES:
        return None
    return (
        f"this token is {len(token)} bytes: ffmpeg/libavformat-based encoders cannot send an "
        f"RTMP URL with a token over about {MAX_PORTABLE_TOKEN_BYTES} bytes; name fewer streams"
    )

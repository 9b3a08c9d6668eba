"""The Python values AMF0 and AMF3 decode to, beyond the builtins.

Both codecs share them (an AMF0 body may switch to AMF3 for one value), so they
live here and both `amf0` and `amf3` import this module, not each other both
ways. `amf0` re-exports every name for its callers.
"""

from __future__ import annotations

from typing import Any

import attrs


class _Undefined:
    """The AMF `undefined` value (distinct from null)."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


class EcmaArray(dict[str, Any]):
    """An AMF0 ECMA array (associative array): a dict that encodes as marker 0x08."""


class XmlDocument(str):
    """An AMF XML document: a str that encodes as AMF0 marker 0x0F (AMF3 0x0B)."""


@attrs.frozen
class Reference:
    """An AMF0 reference to the n-th complex value of the same message (kept unresolved)."""

    index: int


@attrs.frozen
class Date:
    """An AMF date: milliseconds since the epoch and a (reserved) time zone in minutes."""

    timestamp_ms: float
    timezone_min: int = 0


@attrs.frozen
class TypedObject:
    """An AMF0 typed object: a class name and its properties."""

    class_name: str
    properties: dict[str, Any]

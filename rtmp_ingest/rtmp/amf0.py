"""AMF0 values: decode and encode (AMF0 File Format Specification, 2006).

Python mapping: number ↔ float (ints encode as numbers), boolean ↔ bool,
string/long string ↔ str (the encoder picks long string past 65 535 UTF-8 bytes),
object ↔ dict, ECMA array ↔ `EcmaArray`, strict array ↔ list, null ↔ None,
undefined ↔ `UNDEFINED`, reference ↔ `Reference`, date ↔ `Date`,
XML document ↔ `XmlDocument`, typed object ↔ `TypedObject`, and the AVM+ switch
(0x11) ↔ the AMF3 value it carries (see amf3.py); bytes and `amf3.Amf3Array`, which
only AMF3 can express, encode through that switch.

The decoder never trusts a length or a count: it checks every read against the
data left, bounds nesting depth and element counts (`Limits`), and raises
`RemoteProtocolError` on anything malformed. ECMA arrays are read up to their
end marker, whatever count they claim (encoders get the count wrong).
"""

from __future__ import annotations

import math
import struct
from typing import Any, TypeGuard

from . import amf3
from .amf_values import UNDEFINED, Date, EcmaArray, Reference, TypedObject, XmlDocument
from .errors import RemoteProtocolError
from .limits import MAX_AMF_DEPTH, MAX_AMF_ITEMS, MAX_AMF_NODES

__all__ = [
    "UNDEFINED",
    "Date",
    "Decoder",
    "EcmaArray",
    "Reference",
    "TypedObject",
    "XmlDocument",
    "decode_all",
    "encode",
    "is_number",
]

#: AMF0 type markers (AMF0 spec §2.1).
NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS = 0x11

_DOUBLE = struct.Struct(">d")
_DATE = struct.Struct(">dh")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def _error(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"AMF0: {message}")


class Decoder:
    """Decodes consecutive AMF0 values from one message body.

    Work is bounded by `max_nodes`: every value and every property key decoded counts
    one, and the decoder stops with a protocol error at the limit instead of reading on
    through a message of many tiny items.
    """

    __slots__ = (
        "_data",
        "_depth",
        "_end",
        "_max_depth",
        "_max_items",
        "_max_nodes",
        "_nodes",
        "_pos",
    )

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        *,
        max_depth: int = MAX_AMF_DEPTH,
        max_items: int = MAX_AMF_ITEMS,
        max_nodes: int = MAX_AMF_NODES,
    ) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._end = len(self._data)
        self._max_depth = max_depth
        self._max_items = max_items
        self._max_nodes = max_nodes
        self._nodes = 0
        self._depth = 0

    @property
    def position(self) -> int:
        return self._pos

    @property
    def nodes(self) -> int:
        """Values and keys decoded so far (what `max_nodes` bounds)."""
        return self._nodes

    def at_end(self) -> bool:
        return self._pos >= self._end

    def remaining(self) -> bytes:
        return self._data[self._pos :]

    def _take(self, n: int) -> int:
        """Reserves `n` bytes and returns their start offset."""
        start = self._pos
        if n < 0 or start + n > self._end:
            raise _error(
                f"truncated value: need {n} bytes at offset {start}, have {self._end - start}"
            )
        self._pos = start + n
        return start

    def _count(self, n: int) -> None:
        self._nodes += n
        if self._nodes > self._max_nodes:
            raise _error(f"more than max_amf_nodes={self._max_nodes} values in one message")

    def _u8(self) -> int:
        return self._data[self._take(1)]

    def _u16(self) -> int:
        value: int = _U16.unpack_from(self._data, self._take(2))[0]
        return value

    def _u32(self) -> int:
        value: int = _U32.unpack_from(self._data, self._take(4))[0]
        return value

    def _utf8(self, n: int) -> str:
        start = self._take(n)
        return self._data[start : start + n].decode("utf-8", "replace")

    def read_short_string(self) -> str:
        return self._utf8(self._u16())

    def decode(self) -> Any:
        """Reads one value (marker included)."""
        self._nodes += 1
        if self._nodes > self._max_nodes:
            raise _error(f"more than max_amf_nodes={self._max_nodes} values in one message")
        marker = self._u8()
        if marker == NUMBER:
            return _DOUBLE.unpack_from(self._data, self._take(8))[0]
        if marker == STRING:
            return self._utf8(self._u16())
        if marker == BOOLEAN:
            return self._u8() != 0
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == OBJECT:
            return self._nested_properties({}, lenient_end=False)
        if marker == ECMA_ARRAY:
            self._u32()  #: the count is advisory; encoders get it wrong, read to the end marker
            return self._nested_properties(EcmaArray(), lenient_end=True)
        if marker == STRICT_ARRAY:
            return self._nested_array(self._u32())
        if marker == LONG_STRING:
            return self._utf8(self._u32())
        if marker == XML_DOCUMENT:
            return XmlDocument(self._utf8(self._u32()))
        if marker == DATE:
            timestamp_ms, timezone_min = _DATE.unpack_from(self._data, self._take(10))
            return Date(timestamp_ms, timezone_min)
        if marker == REFERENCE:
            return Reference(self._u16())
        if marker == TYPED_OBJECT:
            class_name = self.read_short_string()
            return TypedObject(class_name, self._nested_properties({}, lenient_end=False))
        if marker == AVMPLUS:
            decoder = amf3.Decoder(
                self._data[self._pos :],
                max_depth=self._max_depth - self._depth,
                max_items=self._max_items,
                max_nodes=self._max_nodes - self._nodes,
            )
            value = decoder.decode()
            self._pos += decoder.position
            self._nodes += decoder.nodes
            return value
        if marker == OBJECT_END:
            raise _error(f"object end marker outside an object at offset {self._pos - 1}")
        raise _error(f"unsupported type marker 0x{marker:02x} at offset {self._pos - 1}")

    def decode_all(self) -> list[Any]:
        """Reads values until the data ends."""
        values = []
        while self._pos < self._end:
            values.append(self.decode())
        return values

    def _enter(self) -> None:
        self._depth += 1
        if self._depth > self._max_depth:
            raise _error(f"nesting deeper than max_amf_depth={self._max_depth}")

    def _nested_properties(self, into: dict[str, Any], *, lenient_end: bool) -> dict[str, Any]:
        self._enter()
        try:
            return self._properties(into, lenient_end=lenient_end)
        finally:
            self._depth -= 1

    def _nested_array(self, count: int) -> list[Any]:
        self._enter()
        try:
            return self._strict_array(count)
        finally:
            self._depth -= 1

    def _properties(self, into: dict[str, Any], *, lenient_end: bool) -> dict[str, Any]:
        data = self._data
        while True:
            if lenient_end and self._pos >= self._end:
                return into  #: some encoders end the data without the ECMA end marker
            key = self.read_short_string()
            if key == "" and self._pos < self._end and data[self._pos] == OBJECT_END:
                self._pos += 1
                return into
            if len(into) >= self._max_items:
                raise _error(f"more than max_amf_items={self._max_items} properties")
            self._count(1)  #: the key
            into[key] = self.decode()

    def _strict_array(self, count: int) -> list[Any]:
        if count > self._max_items:
            raise _error(f"strict array of {count} items exceeds max_amf_items={self._max_items}")
        if count > self._end - self._pos:  #: every item takes at least one byte
            raise _error(
                f"strict array claims {count} items, only {self._end - self._pos} bytes left"
            )
        if self._nodes + count > self._max_nodes:  #: every item is at least one value
            raise _error(f"strict array of {count} items exceeds max_amf_nodes={self._max_nodes}")
        return [self.decode() for _ in range(count)]


def decode_all(data: bytes | bytearray | memoryview, **limits: int) -> list[Any]:
    """Decodes every AMF0 value in `data`."""
    return Decoder(data, **limits).decode_all()


def _encode_str_body(out: bytearray, raw: bytes) -> None:
    if len(raw) > 0xFFFF:
        raise ValueError("AMF0 short string longer than 65535 bytes")
    out += _U16.pack(len(raw))
    out += raw


def _encode_properties(out: bytearray, props: dict[str, Any]) -> None:
    for key, value in props.items():
        _encode_str_body(out, str(key).encode("utf-8"))
        _encode_into(out, value)
    out += b"\x00\x00\x09"


def _encode_into(out: bytearray, value: Any) -> None:
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out += bytes((BOOLEAN, 1 if value else 0))
    elif isinstance(value, (int, float)):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, XmlDocument):
        raw = value.encode("utf-8")
        out.append(XML_DOCUMENT)
        out += _U32.pack(len(raw))
        out += raw
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
            out += raw
        else:
            out.append(STRING)
            _encode_str_body(out, raw)
    elif isinstance(value, EcmaArray):
        out.append(ECMA_ARRAY)
        out += _U32.pack(len(value))
        _encode_properties(out, value)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _encode_properties(out, value)
    elif isinstance(value, (list, tuple)):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_into(out, item)
    elif isinstance(value, Reference):
        out.append(REFERENCE)
        out += _U16.pack(value.index)
    elif isinstance(value, Date):
        out.append(DATE)
        out += _DATE.pack(value.timestamp_ms, value.timezone_min)
    elif isinstance(value, TypedObject):
        out.append(TYPED_OBJECT)
        _encode_str_body(out, value.class_name.encode("utf-8"))
        _encode_properties(out, value.properties)
    elif isinstance(value, (bytes, bytearray, amf3.Amf3Array)):
        #: values only AMF3 has (ByteArray, arrays with an associative part): the AVM+ switch
        out.append(AVMPLUS)
        out += amf3.encode(value)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def encode(*values: Any) -> bytes:
    """Encodes values one after another, as a command or data message body."""
    out = bytearray()
    for value in values:
        _encode_into(out, value)
    return bytes(out)


def is_number(value: object) -> TypeGuard[float]:
    """True for an AMF number that is finite (transaction ids, stream ids)."""
    return isinstance(value, float) and math.isfinite(value)

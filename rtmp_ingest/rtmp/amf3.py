"""AMF3 values, as they appear inside AMF0 through the AVM+ switch (marker 0x11).

RTMP command messages of type 17 are an 0x00 byte and an AMF0 body; a value in
that body may switch to AMF3 for one value. Encoders send plain values there
(strings, numbers, anonymous objects, arrays), so this module covers the AMF3
types that carry data: undefined, null, booleans, integer, double, string,
XML, date, array (dense and associative), object (sealed and dynamic traits,
not externalizable), and ByteArray. Vectors and Dictionary are refused with a
protocol error. String, object and trait references are resolved (AMF3 §2.2);
an object reference to an object still being read is refused (no cycles).

Python mapping: integer and double ↔ int/float (ints outside 29 bits encode as
doubles), array ↔ list (dense only) or `Amf3Array` (with associative part),
object ↔ dict, ByteArray ↔ bytes, XML ↔ `amf0.XmlDocument`, date ↔ `amf0.Date`.
"""

from __future__ import annotations

import struct
from typing import Any

import attrs

from .amf_values import UNDEFINED, Date, XmlDocument
from .errors import RemoteProtocolError
from .limits import MAX_AMF_DEPTH, MAX_AMF_ITEMS, MAX_AMF_NODES

#: AMF3 type markers (AMF3 spec §3.1).
UNDEFINED_MARKER = 0x00
NULL = 0x01
FALSE = 0x02
TRUE = 0x03
INTEGER = 0x04
DOUBLE = 0x05
STRING = 0x06
XML_DOC = 0x07
DATE = 0x08
ARRAY = 0x09
OBJECT = 0x0A
XML = 0x0B
BYTE_ARRAY = 0x0C

_DOUBLE = struct.Struct(">d")
_INT29_MIN = -(1 << 28)
_INT29_MAX = (1 << 28) - 1


@attrs.frozen
class Amf3Array:
    """An AMF3 array with an associative part (dense items after it)."""

    associative: dict[str, Any]
    dense: list[Any]


def _error(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"AMF3: {message}")


_IN_PROGRESS = object()
#: A reference to a string, XML or ByteArray counts one node per this many bytes it
#: repeats, so references cannot multiply the text a message expands to.
REF_BYTES_PER_NODE = 64


class Decoder:
    """Decodes AMF3 values; each AMF0 switch starts fresh reference tables.

    Work is bounded by `max_nodes` as in AMF0, and a reference counts as what it
    repeats: an object reference as the nodes of that object, a string/XML/ByteArray
    reference as one node per `REF_BYTES_PER_NODE` bytes. A tree of references that
    would expand to more than `max_nodes` values is refused, not built.
    """

    __slots__ = (
        "_data",
        "_depth",
        "_end",
        "_max_depth",
        "_max_items",
        "_max_nodes",
        "_nodes",
        "_object_costs",
        "_objects",
        "_pos",
        "_strings",
        "_traits",
    )

    def __init__(
        self,
        data: bytes,
        *,
        max_depth: int = MAX_AMF_DEPTH,
        max_items: int = MAX_AMF_ITEMS,
        max_nodes: int = MAX_AMF_NODES,
    ) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data)
        self._strings: list[str] = []
        self._objects: list[Any] = []
        self._object_costs: list[int] = []  #: nodes each object counted when it was read
        self._traits: list[tuple[str, bool, list[str]]] = []
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
        """Nodes counted so far (what `max_nodes` bounds)."""
        return self._nodes

    def _count(self, n: int) -> None:
        self._nodes += n
        if self._nodes > self._max_nodes:
            raise _error(f"more than max_amf_nodes={self._max_nodes} values in one message")

    def _take(self, n: int) -> int:
        start = self._pos
        if start + n > self._end:
            raise _error(f"truncated value: need {n} bytes at offset {start}")
        self._pos = start + n
        return start

    def _u29(self) -> int:
        """Reads a variable-length unsigned 29-bit integer (AMF3 §1.3.1)."""
        value = 0
        for i in range(4):
            byte = self._data[self._take(1)]
            if i == 3:
                return (value << 8) | byte
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                return value
        raise AssertionError("unreachable")  # pragma: no cover

    def _string(self) -> str:
        header = self._u29()
        if not header & 1:
            text: str = self._ref(self._strings, header >> 1, "string")
            self._count(len(text) // REF_BYTES_PER_NODE)
            return text
        n = header >> 1
        start = self._take(n)
        text = self._data[start : start + n].decode("utf-8", "replace")
        if text:
            self._strings.append(text)  #: the empty string is never a reference target
        return text

    @staticmethod
    def _ref(table: list[Any], index: int, what: str) -> Any:
        if index >= len(table):
            raise _error(f"{what} reference {index} out of range ({len(table)} known)")
        value = table[index]
        if value is _IN_PROGRESS:
            raise _error(f"{what} reference {index} points into itself")
        return value

    def decode(self) -> Any:
        self._count(1)
        marker = self._data[self._take(1)]
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == NULL:
            return None
        if marker == FALSE:
            return False
        if marker == TRUE:
            return True
        if marker == INTEGER:
            value = self._u29()
            return value - (1 << 29) if value & (1 << 28) else value
        if marker == DOUBLE:
            return _DOUBLE.unpack_from(self._data, self._take(8))[0]
        if marker == STRING:
            return self._string()
        if marker in (XML_DOC, XML, BYTE_ARRAY, DATE, ARRAY, OBJECT):
            header = self._u29()
            if not header & 1:
                index = header >> 1
                value = self._ref(self._objects, index, "object")
                self._count(self._object_costs[index])
                return value
            return self._complex(marker, header >> 1)
        raise _error(f"unsupported type marker 0x{marker:02x} at offset {self._pos - 1}")

    def _complex(self, marker: int, header: int) -> Any:
        if marker in (XML_DOC, XML, BYTE_ARRAY):
            start = self._take(header)
            raw = self._data[start : start + header]
            value: Any = (
                raw if marker == BYTE_ARRAY else XmlDocument(raw.decode("utf-8", "replace"))
            )
            self._objects.append(value)
            self._object_costs.append(header // REF_BYTES_PER_NODE)
            return value
        if marker == DATE:
            value = Date(_DOUBLE.unpack_from(self._data, self._take(8))[0], 0)
            self._objects.append(value)
            self._object_costs.append(0)
            return value
        self._depth += 1
        if self._depth > self._max_depth:
            raise _error(f"nesting deeper than max_amf_depth={self._max_depth}")
        slot = len(self._objects)
        self._objects.append(_IN_PROGRESS)
        self._object_costs.append(0)
        before = self._nodes
        try:
            value = self._array(header) if marker == ARRAY else self._object(header)
        finally:
            self._depth -= 1
        self._objects[slot] = value
        self._object_costs[slot] = self._nodes - before
        return value

    def _check_count(self, count: int) -> None:
        if count > self._max_items or count > self._end - self._pos:
            raise _error(f"{count} items exceed max_amf_items or the data left")
        if self._nodes + count > self._max_nodes:
            raise _error(f"{count} items exceed max_amf_nodes={self._max_nodes}")

    def _array(self, dense_count: int) -> Any:
        associative: dict[str, Any] = {}
        while True:
            key = self._string()
            if key == "":
                break
            if len(associative) >= self._max_items:
                raise _error(f"more than max_amf_items={self._max_items} array keys")
            self._count(1)  #: the key
            associative[key] = self.decode()
        self._check_count(dense_count)
        dense = [self.decode() for _ in range(dense_count)]
        return Amf3Array(associative, dense) if associative else dense

    def _object(self, header: int) -> dict[str, Any]:
        if not header & 1:
            class_name, dynamic, names = self._ref(self._traits, header >> 1, "traits")
            #: reused member names repeat their text as much as a string reference does
            self._count(sum(map(len, names)) // REF_BYTES_PER_NODE)
        else:
            if header & 2:
                raise _error("externalizable objects are not supported")
            dynamic = bool(header & 4)
            count = header >> 3
            class_name = self._string()
            self._check_count(count)
            names = [self._string() for _ in range(count)]
            self._traits.append((class_name, dynamic, names))
        self._count(len(names))  #: the sealed member keys
        obj: dict[str, Any] = {name: self.decode() for name in names}
        if dynamic:
            while True:
                key = self._string()
                if key == "":
                    break
                if len(obj) >= self._max_items:
                    raise _error(f"more than max_amf_items={self._max_items} properties")
                self._count(1)  #: the key
                obj[key] = self.decode()
        return obj


def _u29(value: int) -> bytes:
    value &= 0x1FFFFFFF
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes(((value >> 7) | 0x80, value & 0x7F))
    if value < 0x200000:
        return bytes(((value >> 14) | 0x80, ((value >> 7) & 0x7F) | 0x80, value & 0x7F))
    return bytes(
        (
            (value >> 22) | 0x80,
            ((value >> 15) & 0x7F) | 0x80,
            ((value >> 8) & 0x7F) | 0x80,
            value & 0xFF,
        )
    )


def _string(out: bytearray, text: str) -> None:
    raw = text.encode("utf-8")
    out += _u29((len(raw) << 1) | 1)
    out += raw


def _encode_into(out: bytearray, value: Any) -> None:
    if value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif value is None:
        out.append(NULL)
    elif value is True:
        out.append(TRUE)
    elif value is False:
        out.append(FALSE)
    elif isinstance(value, int) and _INT29_MIN <= value <= _INT29_MAX:
        out.append(INTEGER)
        out += _u29(value)
    elif isinstance(value, (int, float)):
        out.append(DOUBLE)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, XmlDocument):
        raw = value.encode("utf-8")
        out.append(XML)
        out += _u29((len(raw) << 1) | 1)
        out += raw
    elif isinstance(value, str):
        out.append(STRING)
        _string(out, value)
    elif isinstance(value, (bytes, bytearray)):
        out.append(BYTE_ARRAY)
        out += _u29((len(value) << 1) | 1)
        out += value
    elif isinstance(value, Date):
        out.append(DATE)
        out += b"\x01"
        out += _DOUBLE.pack(value.timestamp_ms)
    elif isinstance(value, (list, tuple, Amf3Array)):
        associative, dense = (
            (value.associative, value.dense) if isinstance(value, Amf3Array) else ({}, value)
        )
        out.append(ARRAY)
        out += _u29((len(dense) << 1) | 1)
        for key, item in associative.items():
            _string(out, key)
            _encode_into(out, item)
        out += b"\x01"
        for item in dense:
            _encode_into(out, item)
    elif isinstance(value, dict):
        out.append(OBJECT)
        out += b"\x0b\x01"  #: inline traits, dynamic, no sealed members; anonymous class
        for key, item in value.items():
            _string(out, str(key))
            _encode_into(out, item)
        out += b"\x01"
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMF3")


def encode(value: Any) -> bytes:
    """Encodes one AMF3 value (no references are emitted)."""
    out = bytearray()
    _encode_into(out, value)
    return bytes(out)

"""RTMP message bodies: protocol control, user control, commands, aggregates.

Type ids (RTMP 1.0 §5.4, §6.2, §7.1): 1 SetChunkSize, 2 Abort, 3 Acknowledgement,
4 UserControl, 5 WindowAcknowledgementSize, 6 SetPeerBandwidth, 8 audio, 9 video,
15 AMF3 data, 17 AMF3 command, 18 AMF0 data, 19/16 shared objects, 20 AMF0
command, 22 aggregate. Parsers take a body and return values or raise
`RemoteProtocolError`; builders return bodies.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from . import amf0
from .errors import RemoteProtocolError
from .limits import MAX_AMF_NODES

SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

#: User control event types (RTMP 1.0 §7.1.7).
STREAM_BEGIN = 0
STREAM_EOF = 1
STREAM_DRY = 2
SET_BUFFER_LENGTH = 3
STREAM_IS_RECORDED = 4
PING_REQUEST = 6
PING_RESPONSE = 7

#: SetPeerBandwidth limit types (RTMP 1.0 §5.4.5).
LIMIT_HARD = 0
LIMIT_SOFT = 1
LIMIT_DYNAMIC = 2

_U32 = struct.Struct(">I")
_U16_U32 = struct.Struct(">HI")
_U16_U32_U32 = struct.Struct(">HII")
_U32_U8 = struct.Struct(">IB")


def parse_u32(body: bytes, what: str) -> int:
    if len(body) < 4:
        raise RemoteProtocolError(f"{what} message shorter than 4 bytes")
    value: int = _U32.unpack_from(body)[0]
    return value


def parse_peer_bandwidth(body: bytes) -> tuple[int, int]:
    if len(body) < 5:
        raise RemoteProtocolError("SetPeerBandwidth message shorter than 5 bytes")
    return _U32_U8.unpack_from(body)


def parse_user_control(body: bytes) -> tuple[int, int, int]:
    """Returns (event type, first value, second value or 0)."""
    if len(body) < 6:
        raise RemoteProtocolError("user control message shorter than 6 bytes")
    if len(body) >= 10:
        return _U16_U32_U32.unpack_from(body)
    event, value = _U16_U32.unpack_from(body)
    return event, value, 0


def u32_body(value: int) -> bytes:
    return _U32.pack(value & 0xFFFFFFFF)


def peer_bandwidth_body(window: int, limit_type: int) -> bytes:
    return _U32_U8.pack(window, limit_type)


def user_control_body(event: int, value: int, extra: int | None = None) -> bytes:
    if extra is None:
        return _U16_U32.pack(event, value & 0xFFFFFFFF)
    return _U16_U32_U32.pack(event, value & 0xFFFFFFFF, extra & 0xFFFFFFFF)


def parse_command(
    type_id: int, body: bytes, *, max_depth: int, max_items: int, max_nodes: int = MAX_AMF_NODES
) -> tuple[str, float, list[Any]]:
    """Decodes a command message into (name, transaction id, remaining values)."""
    if type_id == COMMAND_AMF3 and body[:1] == b"\x00":
        body = body[1:]  #: type 17: a format byte 0, then AMF0 (with AVM+ switches)
    values = amf0.Decoder(
        body, max_depth=max_depth, max_items=max_items, max_nodes=max_nodes
    ).decode_all()
    if not values or not isinstance(values[0], str):
        raise RemoteProtocolError("command message without a command name")
    name = values[0]
    txid = values[1] if len(values) > 1 else 0.0
    if isinstance(txid, bool) or not isinstance(txid, (int, float)):
        raise RemoteProtocolError(f"command {name!r} with a non-numeric transaction id")
    return name, float(txid), values[2:]


def command_body(name: str, transaction_id: float, *values: Any) -> bytes:
    return amf0.encode(name, float(transaction_id), *values)


def parse_data(
    type_id: int, body: bytes, *, max_depth: int, max_items: int, max_nodes: int = MAX_AMF_NODES
) -> list[Any]:
    """Decodes a data message (type 18, or 15 with its leading format byte)."""
    if type_id == DATA_AMF3 and body[:1] == b"\x00":
        body = body[1:]
    return amf0.Decoder(
        body, max_depth=max_depth, max_items=max_items, max_nodes=max_nodes
    ).decode_all()


#: FLV tag header inside an aggregate: type, 24-bit size, 24-bit time + 8-bit extension,
#: 24-bit stream id (FLV 10.1 §E.4.1).
_TAG_HEADER_BYTES = 11
_BACK_POINTER_BYTES = 4


def split_aggregate(body: bytes, timestamp: int) -> Iterator[tuple[int, int, bytes]]:
    """Yields (type id, timestamp, body) of each sub-message of an aggregate (RTMP 1.0 §7.1.6).

    Sub-message times are relative to the first one, which maps to the aggregate's time.
    """
    pos = 0
    end = len(body)
    first: int | None = None
    while pos < end:
        if pos + _TAG_HEADER_BYTES > end:
            raise RemoteProtocolError("aggregate message: truncated sub-message header")
        type_id = body[pos]
        size = int.from_bytes(body[pos + 1 : pos + 4], "big")
        sub_time = int.from_bytes(body[pos + 4 : pos + 7], "big") | (body[pos + 7] << 24)
        start = pos + _TAG_HEADER_BYTES
        if start + size > end:
            raise RemoteProtocolError("aggregate message: sub-message longer than the aggregate")
        if first is None:
            first = sub_time
        yield type_id, (timestamp + sub_time - first) & 0xFFFFFFFF, body[start : start + size]
        pos = start + size + _BACK_POINTER_BYTES
        if pos > end:
            raise RemoteProtocolError("aggregate message: truncated back pointer")


def aggregate_body(items: list[tuple[int, int, bytes]]) -> bytes:
    """Builds an aggregate body from (type id, timestamp, body) items."""
    out = bytearray()
    for type_id, timestamp, sub in items:
        out.append(type_id)
        out += len(sub).to_bytes(3, "big")
        out += (timestamp & 0xFFFFFF).to_bytes(3, "big")
        out.append((timestamp >> 24) & 0xFF)
        out += b"\x00\x00\x00"
        out += sub
        out += _U32.pack(len(sub) + _TAG_HEADER_BYTES)
    return bytes(out)

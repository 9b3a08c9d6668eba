"""Events the connection state machines return from `next_event()`.

Frozen, slotted records without behaviour. Media events carry the message
stream id, the timestamp unwrapped to 64 bits (`timestamp_ms` keeps growing past
2^32 ms, 49.7 days) and the message body untouched.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import attrs

from .address import StreamAddress


class Sentinel(enum.Enum):
    """What `next_event()` returns when it has no event (h11's NEED_DATA and PAUSED)."""

    #: nothing until more bytes arrive
    NEED_DATA = "NEED_DATA"
    #: a decision (accept_*/reject_*) is owed before more events can come
    PAUSED = "PAUSED"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Sentinel.NEED_DATA
PAUSED: Final = Sentinel.PAUSED


@attrs.frozen
class ConnectRequested:
    """The client sent `connect`; answer with accept_connect() or reject_connect()."""

    transaction_id: float
    app: str
    tc_url: str | None
    #: the whole command object as sent (flashVer, swfUrl, objectEncoding, fourCcList, capsEx, …)
    properties: dict[str, Any]
    #: optional arguments after the command object
    args: list[Any]

    @property
    def fourcc_list(self) -> list[str]:
        """E-RTMP codecs the client announced ("*" means any)."""
        value = self.properties.get("fourCcList")
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    @property
    def caps_ex(self) -> int:
        """E-RTMP capsEx flags: 0x1 Reconnect, 0x2 Multitrack, 0x4 ModEx, 0x8 NanoOffset."""
        value = self.properties.get("capsEx")
        return int(value) if isinstance(value, float) and 0 <= value < 2**31 else 0


@attrs.frozen
class StreamCreated:
    stream_id: int


@attrs.frozen
class PublishRequested:
    """`publish` on a message stream; answer with accept_publish() or reject_publish()."""

    stream_id: int
    #: the name exactly as sent (query included)
    name: str
    publish_type: str
    address: StreamAddress


@attrs.frozen
class PlayRequested:
    """`play`/`play2`; answer with accept_play() or reject_play()."""

    stream_id: int
    name: str
    start: float
    duration: float
    reset: bool
    address: StreamAddress


@attrs.frozen
class Unpublished:
    """The publisher stopped publishing on this stream (FCUnpublish, closeStream, deleteStream)."""

    stream_id: int
    reason: str


@attrs.frozen
class PlayStopped:
    """The player closed or deleted its stream."""

    stream_id: int


@attrs.frozen
class StreamDeleted:
    stream_id: int


@attrs.frozen
class AudioData:
    stream_id: int
    timestamp_ms: int
    payload: bytes


@attrs.frozen
class VideoData:
    stream_id: int
    timestamp_ms: int
    payload: bytes


@attrs.frozen
class DataMessage:
    """A data message such as @setDataFrame/onMetaData.

    `name` is the handler ("onMetaData" after stripping "@setDataFrame"), `values` the
    arguments, `payload` the AMF0 body as a player should receive it.
    """

    stream_id: int
    timestamp_ms: int
    name: str
    values: list[Any]
    payload: bytes


@attrs.frozen
class Paused:
    stream_id: int
    paused: bool
    position_ms: float


@attrs.frozen
class ReceiveMedia:
    """receiveAudio/receiveVideo: the player wants (or not) one kind of media."""

    stream_id: int
    media: str
    enabled: bool


@attrs.frozen
class BufferLength:
    stream_id: int
    length_ms: int


@attrs.frozen
class PingResponse:
    """The peer answered our PingRequest; `timestamp_ms` is the value we sent."""

    timestamp_ms: int


@attrs.frozen
class UnknownCommand:
    """A command the core does not know; it was answered with `_error`."""

    stream_id: int
    name: str
    transaction_id: float
    args: list[Any]


@attrs.frozen
class UnknownMessage:
    """A message of a type the core does not handle (shared objects, …)."""

    stream_id: int
    type_id: int
    timestamp_ms: int
    payload: bytes


@attrs.frozen
class CommandResponse:
    """Client role: `_result` or `_error` for one of our calls."""

    transaction_id: float
    ok: bool
    values: list[Any]


@attrs.frozen
class Status:
    """An onStatus (or onFCPublish/onFCUnpublish) the peer sent."""

    stream_id: int
    level: str
    code: str
    description: str
    info: dict[str, Any]


@attrs.frozen
class ConnectionClosed:
    """The peer closed the connection (EOF)."""


Event = (
    ConnectRequested
    | StreamCreated
    | PublishRequested
    | PlayRequested
    | Unpublished
    | PlayStopped
    | StreamDeleted
    | AudioData
    | VideoData
    | DataMessage
    | Paused
    | ReceiveMedia
    | BufferLength
    | PingResponse
    | UnknownCommand
    | UnknownMessage
    | CommandResponse
    | Status
    | ConnectionClosed
)

"""The server role: what an encoder or a player talks to.

Connection states and the inputs that move them (`ConnInput`) are in
`CONN_TRANSITIONS`; each message stream (createStream) has its own state in
`STREAM_TRANSITIONS`, moved by `StreamInput`s. Every state change goes through
these tables. A peer command the connection state does not allow (anything but
`connect` first, a second `connect`) is a `RemoteProtocolError`; a stream command
in the wrong stream state is answered with an error status and the session goes
on. A decision method called in the wrong state is a `LocalProtocolError`. Either
error moves the connection to ERROR (see connection.py), from any state.

Memory: until one of its streams is PUBLISHING, a connection may hold only
`max_pending_bytes_unadmitted` of peer input (`_set_admitted` follows the stream
states).

Decisions that need the world outside (may this app connect? may this key
publish? does this stream exist?) are events answered by methods:
ConnectRequested → accept_connect()/reject_connect(), PublishRequested →
accept_publish()/reject_publish(), PlayRequested → accept_play()/reject_play().
Until a decision is made, `next_event()` returns PAUSED and the messages behind
the request wait (an encoder may send media right after `publish`). After reject_connect, reject_publish, end_publish or
close() the connection is CLOSED: input is dropped undecoded and the driver should flush
`data_to_send()` and close the socket (librtmp clients hang on an error status
otherwise — docs/clients.md §3).

Everything else is answered here: releaseStream, FCPublish (+ onFCPublish),
createStream, FCUnpublish, deleteStream (numeric id, or the stream name as
rtmp2sink sends it), closeStream, pause, receiveAudio/Video, getStreamLength,
checkbw, and unknown commands (`_error`, NetConnection.Call.Failed).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs

from . import amf0
from . import messages as msg
from .address import parse_address
from .connection import Connection
from .errors import RemoteProtocolError
from .events import (
    AudioData,
    BufferLength,
    ConnectRequested,
    DataMessage,
    Paused,
    PlayRequested,
    PlayStopped,
    PublishRequested,
    ReceiveMedia,
    StreamCreated,
    StreamDeleted,
    UnknownCommand,
    UnknownMessage,
    Unpublished,
    VideoData,
)
from .handshake import ServerHandshake
from .limits import DEFAULT_LIMITS, Limits


class ConnState(enum.Enum):
    HANDSHAKE = "handshake"
    AWAIT_CONNECT = "await_connect"
    CONNECT_PENDING = "connect_pending"
    CONNECTED = "connected"
    CLOSED = "closed"
    #: a protocol error (the peer's or ours) stopped the connection; terminal
    ERROR = "error"


class ConnInput(enum.Enum):
    """What moves the connection state: the peer's connect, our decisions, errors."""

    HANDSHAKE_DONE = "handshake_done"
    CONNECT = "connect"
    ACCEPT_CONNECT = "accept_connect"
    REJECT_CONNECT = "reject_connect"
    REJECT_PUBLISH = "reject_publish"
    END_PUBLISH = "end_publish"
    CLOSE = "close"
    PROTOCOL_ERROR = "protocol_error"


class StreamState(enum.Enum):
    IDLE = "idle"
    PUBLISH_PENDING = "publish_pending"
    PUBLISHING = "publishing"
    PLAY_PENDING = "play_pending"
    PLAYING = "playing"


class StreamInput(enum.Enum):
    """What moves a message stream's state: the peer's commands and our decisions."""

    PUBLISH = "publish"
    ACCEPT_PUBLISH = "accept_publish"
    REJECT_PUBLISH = "reject_publish"
    UNPUBLISH = "unpublish"  #: FCUnpublish, closeStream, deleteStream of a publisher
    END_PUBLISH = "end_publish"
    PLAY = "play"
    ACCEPT_PLAY = "accept_play"
    REJECT_PLAY = "reject_play"
    STOP_PLAY = "stop_play"  #: closeStream, deleteStream of a player
    END_PLAY = "end_play"


C, S, CI, SI = ConnState, StreamState, ConnInput, StreamInput

#: (state, input) → next state. Inputs: the peer's connect, our decisions, protocol errors.
CONN_TRANSITIONS: dict[tuple[ConnState, ConnInput], ConnState] = {
    (C.HANDSHAKE, CI.HANDSHAKE_DONE): C.AWAIT_CONNECT,
    (C.AWAIT_CONNECT, CI.CONNECT): C.CONNECT_PENDING,
    (C.CONNECT_PENDING, CI.ACCEPT_CONNECT): C.CONNECTED,
    (C.CONNECT_PENDING, CI.REJECT_CONNECT): C.CLOSED,
    (C.CONNECTED, CI.REJECT_PUBLISH): C.CLOSED,
    (C.CONNECTED, CI.END_PUBLISH): C.CLOSED,
    **{(state, CI.CLOSE): C.CLOSED for state in ConnState if state is not C.ERROR},
    (C.ERROR, CI.CLOSE): C.ERROR,  #: closing a failed connection is harmless, it stays failed
    **{(state, CI.PROTOCOL_ERROR): C.ERROR for state in ConnState},
}

STREAM_TRANSITIONS: dict[tuple[StreamState, StreamInput], StreamState] = {
    (S.IDLE, SI.PUBLISH): S.PUBLISH_PENDING,
    (S.PUBLISH_PENDING, SI.ACCEPT_PUBLISH): S.PUBLISHING,
    (S.PUBLISH_PENDING, SI.REJECT_PUBLISH): S.IDLE,
    (S.PUBLISH_PENDING, SI.UNPUBLISH): S.IDLE,
    (S.PUBLISHING, SI.UNPUBLISH): S.IDLE,
    (S.PUBLISHING, SI.END_PUBLISH): S.IDLE,
    (S.PUBLISH_PENDING, SI.END_PUBLISH): S.IDLE,
    (S.IDLE, SI.PLAY): S.PLAY_PENDING,
    (S.PLAY_PENDING, SI.ACCEPT_PLAY): S.PLAYING,
    (S.PLAY_PENDING, SI.REJECT_PLAY): S.IDLE,
    (S.PLAY_PENDING, SI.STOP_PLAY): S.IDLE,
    (S.PLAYING, SI.STOP_PLAY): S.IDLE,
    (S.PLAYING, SI.END_PLAY): S.IDLE,
}

#: Streams one connection may create; encoders and players use one.
MAX_STREAMS_PER_CONNECTION = 8
#: What we announce in the connect `_result` (what FMS/nginx-rtmp/SRS answer).
FMS_VERSION = "FMS/3,5,7,7009"
#: E-RTMP codecs we accept and forward (E-RTMP v2 "Enhancing NetConnection connect").
SERVER_FOURCC_LIST = [
    "av01",
    "vp09",
    "vp08",
    "hvc1",
    "avc1",
    "Opus",
    "fLaC",
    "ac-3",
    "ec-3",
    "mp4a",
    ".mp3",
]
#: capsEx we support: Reconnect 0x1 | Multitrack 0x2 | ModEx 0x4 | TimestampNanoOffset 0x8.
SERVER_CAPS_EX = 0x1 | 0x2 | 0x4 | 0x8


@attrs.define
class _Stream:
    state: StreamState = StreamState.IDLE
    name: str = ""  #: publish/play name without the query


def _key(name: str) -> str:
    return name.partition("?")[0]


class ServerConnection(Connection):
    """Sans-IO RTMP server connection."""

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(ServerHandshake(), limits=limits)
        self.state = ConnState.HANDSHAKE
        self._set_admitted(False)  #: a stranger until a publish is accepted
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        self._owed: int | None = None  #: stream id (0 = connect) whose decision is owed
        self._connect: ConnectRequested | None = None

    # -- state table ---------------------------------------------------------------

    def _advance(self, action: ConnInput, *, local: bool, why: str = "") -> None:
        nxt = CONN_TRANSITIONS.get((self.state, action))
        if nxt is None:
            text = why or f"{action.value} not allowed in connection state {self.state.value}"
            raise self._refuse(text) if local else RemoteProtocolError(text)
        self.state = nxt

    def _on_error(self) -> None:
        self._advance(ConnInput.PROTOCOL_ERROR, local=True)
        self._owed = None

    def stream_state(self, stream_id: int) -> StreamState | None:
        stream = self._streams.get(stream_id)
        return stream.state if stream is not None else None

    def _move(self, stream: _Stream, action: StreamInput) -> bool:
        """Moves a stream through STREAM_TRANSITIONS; False if the table has no such move."""
        nxt = STREAM_TRANSITIONS.get((stream.state, action))
        if nxt is None:
            return False
        stream.state = nxt
        #: the large input allowance is for admitted publishers only
        self._set_admitted(any(s.state is S.PUBLISHING for s in self._streams.values()))
        return True

    def _stream_advance(self, stream_id: int, action: StreamInput) -> _Stream:
        if self.state is not ConnState.CONNECTED:
            raise self._refuse(f"{action.value} not allowed in connection state {self.state.value}")
        stream = self._streams.get(stream_id)
        if stream is None:
            raise self._refuse(f"{action.value}: no message stream {stream_id}")
        before = stream.state
        if not self._move(stream, action):
            raise self._refuse(f"{action.value} not allowed in stream state {before.value}")
        if self._owed == stream_id:
            self._owed = None
        return stream

    def _paused(self) -> bool:
        return self._owed is not None and self.state is not ConnState.CLOSED

    def _accepts_input(self) -> bool:
        return self.state is not ConnState.CLOSED

    @property
    def connect_request(self) -> ConnectRequested | None:
        """The accepted (or pending) connect command."""
        return self._connect

    def _on_handshake_complete(self) -> None:
        super()._on_handshake_complete()
        self._advance(ConnInput.HANDSHAKE_DONE, local=False)

    # -- decisions -----------------------------------------------------------------

    def accept_connect(
        self,
        *,
        properties: dict[str, Any] | None = None,
        description: str = "Connection succeeded.",
    ) -> None:
        """Answers `connect` with window/bandwidth/chunk size and `_result`."""
        self._advance(ConnInput.ACCEPT_CONNECT, local=True)
        request = self._connect
        assert request is not None
        limits = self.limits
        self.send_window_ack_size(limits.window_ack_size)
        self._send_control(
            msg.SET_PEER_BANDWIDTH,
            msg.peer_bandwidth_body(limits.window_ack_size, msg.LIMIT_DYNAMIC),
        )
        self.set_chunk_size(limits.out_chunk_size)
        props: dict[str, Any] = {"fmsVer": FMS_VERSION, "capabilities": 31.0, "mode": 1.0}
        if "fourCcList" in request.properties or "capsEx" in request.properties:
            props["fourCcList"] = list(SERVER_FOURCC_LIST)
            props["capsEx"] = float(SERVER_CAPS_EX)
        props.update(properties or {})
        encoding = request.properties.get("objectEncoding", 0.0)
        info = {
            "level": "status",
            "code": "NetConnection.Connect.Success",
            "description": description,
            "objectEncoding": encoding if isinstance(encoding, float) else 0.0,
        }
        self._send_command(0, "_result", request.transaction_id, props, info)
        self._owed = None

    def reject_connect(
        self, description: str, *, code: str = "NetConnection.Connect.Rejected"
    ) -> None:
        """Answers `connect` with `_error`; the connection is then closed."""
        self._advance(ConnInput.REJECT_CONNECT, local=True)
        assert self._connect is not None
        info = {"level": "error", "code": code, "description": description}
        self._send_command(0, "_error", self._connect.transaction_id, None, info)
        self._owed = None

    def accept_publish(self, stream_id: int) -> None:
        stream = self._stream_advance(stream_id, StreamInput.ACCEPT_PUBLISH)
        self._send_control(msg.USER_CONTROL, msg.user_control_body(msg.STREAM_BEGIN, stream_id))
        self._send_status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            f"{stream.name} is now published.",
            details=stream.name,
        )

    def reject_publish(
        self, stream_id: int, description: str, *, code: str = "NetStream.Publish.BadName"
    ) -> None:
        """Refuses a publish with an error status the encoder logs; closes the connection."""
        self._stream_advance(stream_id, StreamInput.REJECT_PUBLISH)
        self._send_status(stream_id, "error", code, description)
        self._advance(ConnInput.REJECT_PUBLISH, local=True)

    def end_publish(
        self, stream_id: int, description: str, *, code: str = "NetStream.Publish.BadName"
    ) -> None:
        """Ends an accepted publish (superseded, kicked, idle) with a status; closes."""
        self._stream_advance(stream_id, StreamInput.END_PUBLISH)
        self._send_status(stream_id, "error", code, description)
        self._advance(ConnInput.END_PUBLISH, local=True)

    def accept_play(self, stream_id: int, *, reset: bool = True) -> None:
        stream = self._stream_advance(stream_id, StreamInput.ACCEPT_PLAY)
        self._send_control(msg.USER_CONTROL, msg.user_control_body(msg.STREAM_BEGIN, stream_id))
        if reset:
            self._send_status(
                stream_id,
                "status",
                "NetStream.Play.Reset",
                f"Playing and resetting {stream.name}.",
                details=stream.name,
            )
        self._send_status(
            stream_id,
            "status",
            "NetStream.Play.Start",
            f"Started playing {stream.name}.",
            details=stream.name,
        )
        self.send_data(stream_id, 0, amf0.encode("|RtmpSampleAccess", True, True))

    def reject_play(
        self, stream_id: int, description: str, *, code: str = "NetStream.Play.StreamNotFound"
    ) -> None:
        self._stream_advance(stream_id, StreamInput.REJECT_PLAY)
        self._send_status(stream_id, "error", code, description)

    def end_play(
        self, stream_id: int, description: str, *, code: str = "NetStream.Play.UnpublishNotify"
    ) -> None:
        """Ends playback (the stream went away) with a status and StreamEOF."""
        self._stream_advance(stream_id, StreamInput.END_PLAY)
        self._send_status(stream_id, "status", code, description)
        self._send_control(msg.USER_CONTROL, msg.user_control_body(msg.STREAM_EOF, stream_id))

    def send_reconnect_request(
        self, *, tc_url: str | None = None, description: str = "The server asks you to reconnect."
    ) -> None:
        """E-RTMP: asks a client that announced capsEx Reconnect to reconnect (to `tc_url`)."""
        if self.state is not ConnState.CONNECTED:
            raise self._refuse("reconnect request before the connection is established")
        extra = {"tcUrl": tc_url} if tc_url else {}
        self._send_status(
            0, "status", "NetConnection.Connect.ReconnectRequest", description, **extra
        )

    def close(self) -> None:
        """Stops processing input; flush data_to_send() and close the socket."""
        self._advance(ConnInput.CLOSE, local=True)

    # -- peer messages -------------------------------------------------------------

    def _on_message(self, msid: int, type_id: int, timestamp: int, body: bytes) -> None:
        state = self.state
        if state is ConnState.CONNECTED:
            if type_id == msg.VIDEO or type_id == msg.AUDIO:
                stream = self._streams.get(msid)
                if stream is not None and (
                    stream.state is S.PUBLISHING or stream.state is S.PUBLISH_PENDING
                ):
                    cls = VideoData if type_id == msg.VIDEO else AudioData
                    self._events.append(cls(msid, timestamp, body))
                return
            if type_id == msg.COMMAND_AMF0 or type_id == msg.COMMAND_AMF3:
                self._on_command(msid, *self._decode_command(type_id, body))
            elif type_id == msg.DATA_AMF0 or type_id == msg.DATA_AMF3:
                self._on_data(msid, type_id, timestamp, body)
            else:
                self._events.append(UnknownMessage(msid, type_id, timestamp, body))
        elif state is ConnState.AWAIT_CONNECT:
            if type_id not in (msg.COMMAND_AMF0, msg.COMMAND_AMF3):
                raise RemoteProtocolError(f"message type {type_id} before connect")
            name, txid, args = self._decode_command(type_id, body)
            if name != "connect":
                raise RemoteProtocolError(f"command {name!r} before connect")
            self._on_connect(txid, args)
        #: CLOSED: input is ignored

    def _on_connect(self, txid: float, args: list[Any]) -> None:
        props = args[0] if args and isinstance(args[0], dict) else {}
        app = props.get("app")
        tc_url = props.get("tcUrl")
        self._connect = ConnectRequested(
            transaction_id=txid,
            app=app if isinstance(app, str) else "",
            tc_url=tc_url if isinstance(tc_url, str) else None,
            properties=dict(props),
            args=list(args[1:]),
        )
        self._advance(ConnInput.CONNECT, local=False)
        self._owed = 0
        self._events.append(self._connect)

    def _on_data(self, msid: int, type_id: int, timestamp: int, body: bytes) -> None:
        stream = self._streams.get(msid)
        if stream is None or stream.state not in (S.PUBLISHING, S.PUBLISH_PENDING):
            return
        values = self._decode_data(type_id, body)
        if not values or not isinstance(values[0], str):
            return
        name, rest = values[0], values[1:]
        if name == "@setDataFrame" and rest and isinstance(rest[0], str):
            name, rest = rest[0], rest[1:]  #: FMLE convention: strip the setter, keep the data
            payload = amf0.encode(name, *rest)
        elif type_id == msg.DATA_AMF0:
            payload = body
        else:
            payload = amf0.encode(name, *rest)
        self._events.append(DataMessage(msid, timestamp, name, rest, payload))

    def _reply(self, txid: float, *values: Any) -> None:
        if txid:  #: transaction id 0 expects no answer (rtmp2sink sends 0 throughout)
            self._send_command(0, "_result", txid, *values)

    def _on_command(self, msid: int, name: str, txid: float, args: list[Any]) -> None:
        handler = _COMMANDS.get(name)
        if handler is not None:
            handler(self, msid, txid, args)
            return
        if name in ("_result", "_error", "onBWDone", "onStatus", "_checkbw", "checkbw"):
            if name in ("_checkbw", "checkbw"):
                self._reply(txid, None, amf0.UNDEFINED)
            return
        if name == "connect":
            self._advance(ConnInput.CONNECT, local=False, why="second connect on one connection")
        self._events.append(UnknownCommand(msid, name, txid, args))
        if txid:
            self._send_command(
                0,
                "_error",
                txid,
                None,
                {
                    "level": "error",
                    "code": "NetConnection.Call.Failed",
                    "description": f"Method not found ({name}).",
                },
            )

    @staticmethod
    def _string_arg(args: list[Any], index: int) -> str:
        value = args[index] if len(args) > index else None
        return value if isinstance(value, str) else ""

    def _cmd_release_stream(self, msid: int, txid: float, args: list[Any]) -> None:
        self._reply(txid, None, amf0.UNDEFINED)

    def _cmd_fc_publish(self, msid: int, txid: float, args: list[Any]) -> None:
        self._reply(txid, None, amf0.UNDEFINED)
        name = self._string_arg(args, 1)
        self._send_command(
            0, "onFCPublish", 0, None, {"code": "NetStream.Publish.Start", "description": name}
        )

    def _cmd_create_stream(self, msid: int, txid: float, args: list[Any]) -> None:
        if len(self._streams) >= MAX_STREAMS_PER_CONNECTION:
            self._send_command(
                0,
                "_error",
                txid,
                None,
                {
                    "level": "error",
                    "code": "NetConnection.Call.Failed",
                    "description": f"At most {MAX_STREAMS_PER_CONNECTION} streams per connection.",
                },
            )
            return
        stream_id = self._new_stream()
        self._send_command(0, "_result", txid, None, float(stream_id))

    def _new_stream(self, stream_id: int | None = None) -> int:
        if stream_id is None:
            stream_id = self._next_stream_id
        self._next_stream_id = max(self._next_stream_id, stream_id + 1)
        self._streams[stream_id] = _Stream()
        self._events.append(StreamCreated(stream_id))
        return stream_id

    def _stream_for(self, msid: int, command: str) -> _Stream | None:
        """The message stream a publish/play arrived on, created if the client skipped createStream."""
        stream = self._streams.get(msid)
        if stream is None:
            if msid == 0 or len(self._streams) >= MAX_STREAMS_PER_CONNECTION:
                self._send_status(
                    msid,
                    "error",
                    "NetStream.Failed",
                    f"{command} on message stream {msid}, which was not created.",
                )
                return None
            self._new_stream(msid)
            stream = self._streams[msid]
        return stream

    def _cmd_publish(self, msid: int, txid: float, args: list[Any]) -> None:
        stream = self._stream_for(msid, "publish")
        if stream is None:
            return
        name = self._string_arg(args, 1)
        state = stream.state
        if not self._move(stream, StreamInput.PUBLISH):
            self._send_status(
                msid,
                "error",
                "NetStream.Publish.BadName",
                f"This stream is already {state.value.replace('_', ' ')}.",
            )
            return
        publish_type = self._string_arg(args, 2) or "live"
        stream.name = _key(name)
        address = parse_address(
            app=self._connect.app if self._connect else "",
            tc_url=self._connect.tc_url if self._connect else None,
            name=name,
        )
        self._owed = msid
        self._events.append(PublishRequested(msid, name, publish_type, address))

    def _cmd_play(self, msid: int, txid: float, args: list[Any]) -> None:
        stream = self._stream_for(msid, "play")
        if stream is None:
            return
        name = self._string_arg(args, 1)
        start = args[2] if len(args) > 2 and amf0.is_number(args[2]) else -2.0
        duration = args[3] if len(args) > 3 and amf0.is_number(args[3]) else -1.0
        reset = args[4] if len(args) > 4 and isinstance(args[4], bool) else True
        self._play(msid, stream, name, start, duration, reset)

    def _cmd_play2(self, msid: int, txid: float, args: list[Any]) -> None:
        stream = self._stream_for(msid, "play2")
        if stream is None:
            return
        params = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        name = params.get("streamName")
        start = params.get("start")
        duration = params.get("len")
        self._play(
            msid,
            stream,
            name if isinstance(name, str) else "",
            start if amf0.is_number(start) else -2.0,
            duration if amf0.is_number(duration) else -1.0,
            True,
        )

    def _play(
        self, msid: int, stream: _Stream, name: str, start: float, duration: float, reset: bool
    ) -> None:
        state = stream.state
        if not self._move(stream, StreamInput.PLAY):
            self._send_status(
                msid,
                "error",
                "NetStream.Play.Failed",
                f"This stream is already {state.value.replace('_', ' ')}.",
            )
            return
        stream.name = _key(name)
        address = parse_address(
            app=self._connect.app if self._connect else "",
            tc_url=self._connect.tc_url if self._connect else None,
            name=name,
        )
        self._owed = msid
        self._events.append(PlayRequested(msid, name, start, duration, reset, address))

    def _stop(self, stream_id: int, stream: _Stream, reason: str) -> None:
        if self._move(stream, StreamInput.UNPUBLISH):
            self._events.append(Unpublished(stream_id, reason))
        elif self._move(stream, StreamInput.STOP_PLAY):
            self._events.append(PlayStopped(stream_id))

    def _cmd_fc_unpublish(self, msid: int, txid: float, args: list[Any]) -> None:
        self._reply(txid, None, amf0.UNDEFINED)
        name = _key(self._string_arg(args, 1))
        self._send_command(
            0,
            "onFCUnpublish",
            0,
            None,
            {"code": "NetStream.Unpublish.Success", "description": name},
        )
        for stream_id, stream in self._streams.items():
            if stream.name == name and stream.state in (S.PUBLISHING, S.PUBLISH_PENDING):
                self._stop(stream_id, stream, "FCUnpublish")

    def _cmd_close_stream(self, msid: int, txid: float, args: list[Any]) -> None:
        stream = self._streams.get(msid)
        if stream is not None:
            self._stop(msid, stream, "closeStream")

    def _cmd_delete_stream(self, msid: int, txid: float, args: list[Any]) -> None:
        target = args[1] if len(args) > 1 else None
        stream_id: int | None = None
        if amf0.is_number(target) and 0 < target < 2**32:
            stream_id = int(target)
        elif isinstance(target, str):  #: rtmp2sink sends the stream name
            key = _key(target)
            matches = [sid for sid, s in self._streams.items() if s.name == key]
            stream_id = matches[0] if matches else (msid if msid in self._streams else None)
            if stream_id is None and len(self._streams) == 1:
                stream_id = next(iter(self._streams))
        elif msid in self._streams:
            stream_id = msid
        if stream_id is None:
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        self._stop(stream_id, stream, "deleteStream")
        del self._streams[stream_id]
        self._events.append(StreamDeleted(stream_id))

    def _cmd_pause(self, msid: int, txid: float, args: list[Any]) -> None:
        stream = self._streams.get(msid)
        if stream is None or stream.state is not S.PLAYING:
            return
        paused = bool(args[1]) if len(args) > 1 and isinstance(args[1], bool) else True
        position = args[2] if len(args) > 2 and amf0.is_number(args[2]) else 0.0
        self._events.append(Paused(msid, paused, position))
        if paused:
            self._send_status(msid, "status", "NetStream.Pause.Notify", f"Paused {stream.name}.")
        else:
            self._send_status(
                msid, "status", "NetStream.Unpause.Notify", f"Unpaused {stream.name}."
            )

    def _cmd_get_stream_length(self, msid: int, txid: float, args: list[Any]) -> None:
        self._reply(txid, None, 0.0)

    def _on_user_control(self, event: int, value: int, extra: int) -> None:
        if event == msg.SET_BUFFER_LENGTH:
            self._events.append(BufferLength(value, extra))


_Handler = Callable[[ServerConnection, int, float, list[Any]], None]


def _receive_handler(media: str) -> _Handler:
    """receiveAudio/receiveVideo(flag): the player wants (or not) one kind of media."""

    def handler(self: ServerConnection, msid: int, txid: float, args: list[Any]) -> None:
        enabled = bool(args[1]) if len(args) > 1 and isinstance(args[1], bool) else True
        self._events.append(ReceiveMedia(msid, media, enabled))

    return handler


_COMMANDS: dict[str, _Handler] = {
    "releaseStream": ServerConnection._cmd_release_stream,
    "FCPublish": ServerConnection._cmd_fc_publish,
    "createStream": ServerConnection._cmd_create_stream,
    "publish": ServerConnection._cmd_publish,
    "play": ServerConnection._cmd_play,
    "play2": ServerConnection._cmd_play2,
    "FCUnpublish": ServerConnection._cmd_fc_unpublish,
    "closeStream": ServerConnection._cmd_close_stream,
    "deleteStream": ServerConnection._cmd_delete_stream,
    "pause": ServerConnection._cmd_pause,
    "receiveAudio": _receive_handler("audio"),
    "receiveVideo": _receive_handler("video"),
    "getStreamLength": ServerConnection._cmd_get_stream_length,
}

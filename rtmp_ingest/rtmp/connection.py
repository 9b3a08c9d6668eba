"""What both roles share: bytes in → messages → events, and events/calls → bytes out.

Shape (h11/h2): `receive_data(data)` takes bytes (`b""` = the peer closed),
`next_event()` returns the next event, `PAUSED` while the caller owes a
decision, `NEED_DATA`, or raises the `RemoteProtocolError` that stopped the
connection (after every event decoded before it), and `data_to_send()` returns
what the core wants written: handshake replies, acknowledgements, ping
responses, command replies, media. `pending_bytes` is what the peer's input
costs the connection now (for a budget across connections).

`receive_data` decodes a whole socket read into messages in one pass;
`next_event` turns them into events one by one, so decisions (accept/reject)
apply to the messages that follow the event they answer. Protocol
control is handled here: SetChunkSize/Abort by the chunk decoder,
WindowAcknowledgementSize by acknowledging every window of bytes (RTMP 1.0
§5.4.3), PingRequest by a PingResponse, aggregates split into their parts. The
role subclasses handle commands, data and media in `_on_message`.

Errors (h11's ERROR state): a `RemoteProtocolError` found while decoding waits
until the events decoded before it are taken, then `next_event()` raises it and
the connection is in ERROR; a call the state does not allow raises a
`LocalProtocolError` and puts the connection in ERROR too. In ERROR,
`next_event()` and `receive_data()` raise that first error again, every send
raises `LocalProtocolError` (caused by it), and nothing new is queued; bytes
queued before still come out of `data_to_send()`.

Media timestamps are unwrapped per message stream: each 32-bit value is read
as the 64-bit value nearest to the previous one, so a stream runs past 2^32 ms
and a slightly late audio message around the wrap stays slightly late.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from . import messages as msg
from .chunk import ChunkDecoder, ChunkEncoder, RawMessage
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import NEED_DATA, PAUSED, ConnectionClosed, Event, PingResponse, Sentinel
from .handshake import ClientHandshake, ServerHandshake
from .limits import Limits

#: Chunk stream ids we send on (any 2..65599 would do; these match common servers).
CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_STREAM_COMMAND = 5
CSID_AUDIO = 6
CSID_VIDEO = 7

#: What one complete message waiting in the queue is charged on top of its body: about
#: what its tuple and bytes object cost CPython, so that empty messages count too.
QUEUED_MESSAGE_BYTES = 128

_HALF = 0x80000000
_WRAP = 0x100000000


class Connection:
    """Base of ServerConnection and ClientConnection."""

    def __init__(self, handshake: ServerHandshake | ClientHandshake, *, limits: Limits) -> None:
        self.limits = limits
        self._handshake = handshake
        self._decoder = ChunkDecoder(limits=limits)
        self._encoder = ChunkEncoder()
        self._out = bytearray(handshake.data_to_send())
        #: chunks written before the handshake completed (client role pipelining)
        self._deferred = bytearray()
        self._events: deque[Event] = deque()
        self._raw: deque[RawMessage] = deque()
        #: what the messages in _raw cost: bodies plus QUEUED_MESSAGE_BYTES each
        self._raw_bytes = 0
        #: input the connection may hold now (_set_admitted switches it)
        self._held_limit = limits.max_pending_bytes
        self._error_at_dispatch: RemoteProtocolError | None = None
        self._error: RemoteProtocolError | None = None
        #: the error that put the connection in ERROR (raised by next_event/receive_data)
        self._failed: ProtocolError | None = None
        self._eof = False
        self._peer_window = 0
        self._acked = 0
        self._clocks: dict[int, int] = {}
        #: bytes the peer says it received (its last Acknowledgement)
        self.peer_acknowledged_bytes = 0
        self.bytes_sent = 0

    # -- bytes in ------------------------------------------------------------------

    @property
    def bytes_received(self) -> int:
        return self._decoder.bytes_received

    @property
    def peer_chunk_size(self) -> int:
        return self._decoder.chunk_size

    @property
    def handshake_complete(self) -> bool:
        return self._handshake.complete

    @property
    def error(self) -> ProtocolError | None:
        """The protocol error that put the connection in ERROR; None while it works."""
        return self._failed

    @property
    def pending_bytes(self) -> int:
        """Bytes of peer input held now: partial messages, unparsed chunks, handshake.

        Cheap (no scan): a driver may sum it over its connections for a global budget.
        """
        return self._raw_bytes + self._decoder.pending_bytes + self._handshake.buffered_bytes

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feeds bytes from the peer; `b""` means the peer closed the connection.

        In ERROR this raises the error that stopped the connection.
        """
        if self._failed is not None:
            raise self._failed
        if self._error is not None or self._eof:
            return
        if not data:
            self._eof = True
            return
        if not self._accepts_input():
            return
        try:
            if not self._handshake.complete:
                data = self._handshake.receive_data(bytes(data))
                self._out += self._handshake.data_to_send()
                if not self._handshake.complete:
                    return
                self._on_handshake_complete()
                if not data:
                    return
            decoder = self._decoder
            messages = decoder.feed(data)
            if messages:
                self._raw.extend(messages)
                self._raw_bytes += decoder.completed_bytes + QUEUED_MESSAGE_BYTES * len(messages)
            if decoder.error is not None:  #: after messages completed before the bad bytes
                self._error = decoder.error
                return
            if self._raw_bytes + decoder.pending_bytes > self._held_limit:
                raise self._over_held()
            if (
                self._peer_window
                and self._decoder.bytes_received - self._acked >= self._peer_window
            ):
                self._acked = self._decoder.bytes_received
                self._send_control(msg.ACKNOWLEDGEMENT, msg.u32_body(self._acked))
        except RemoteProtocolError as exc:
            self._error = exc

    def _set_admitted(self, admitted: bool) -> None:
        """Switches between the small and the normal allowance of input held."""
        self._decoder.admitted = admitted
        limits = self.limits
        self._held_limit = (
            limits.max_pending_bytes if admitted else limits.max_pending_bytes_unadmitted
        )

    def _over_held(self) -> RemoteProtocolError:
        held = self._raw_bytes + self._decoder.pending_bytes
        if self._decoder.admitted:
            name, limit = "max_pending_bytes", self.limits.max_pending_bytes
        else:
            name, limit = "max_pending_bytes_unadmitted", self.limits.max_pending_bytes_unadmitted
        return RemoteProtocolError(f"{held} bytes of input held exceed {name}={limit}")

    def _paused(self) -> bool:
        """True while a decision (accept/reject) is owed; the roles override it."""
        return False

    def _accepts_input(self) -> bool:
        """False once the role has closed: input is then dropped undecoded."""
        return True

    def next_event(self) -> Event | Sentinel:
        """The next event; `PAUSED` while a decision is owed; `NEED_DATA`; or the error.

        Messages are turned into events one at a time here, so a decision taken on
        an event (accept_publish, …) applies to every message after it. Raising the
        error puts the connection in ERROR; every later call raises it again.
        """
        if self._failed is not None:
            raise self._failed
        events = self._events
        raw = self._raw
        while not events and raw and self._error_at_dispatch is None:
            if self._paused():
                return PAUSED
            message = raw.popleft()  #: _dispatch_next(), inlined: once per message
            self._raw_bytes -= len(message[4]) + QUEUED_MESSAGE_BYTES
            try:
                self._dispatch(message)
            except RemoteProtocolError as exc:
                self._error_at_dispatch = exc
                raw.clear()
                self._raw_bytes = 0
        if events:
            return events.popleft()
        if self._error_at_dispatch is None and self._paused():
            return PAUSED
        error = self._error_at_dispatch or self._error
        if error is not None:
            self._enter_error(error)
            raise error
        if self._eof:
            return ConnectionClosed()
        return NEED_DATA

    def _dispatch_next(self) -> None:
        """Turns the next queued message into events (or the error that stops the rest)."""
        message = self._raw.popleft()
        self._raw_bytes -= len(message[4]) + QUEUED_MESSAGE_BYTES
        try:
            self._dispatch(message)
        except RemoteProtocolError as exc:
            self._error_at_dispatch = exc
            self._raw.clear()
            self._raw_bytes = 0

    def events(self) -> list[Event]:
        """Every event available until NEED_DATA or PAUSED.

        A protocol error behind the events is left for the next call (the connection
        is not in ERROR until it is raised, so the events can still be answered); with
        no event before it, it is raised like next_event does.
        """
        out: list[Event] = []
        while True:
            if out and self._error_is_next():
                return out
            event = self.next_event()
            if event is NEED_DATA or event is PAUSED:
                return out
            out.append(event)
            if isinstance(event, ConnectionClosed):
                return out

    def _error_is_next(self) -> bool:
        """Whether next_event() would raise now (queued messages are dispatched to see)."""
        if self._failed is not None:
            return True
        while not self._events and self._raw and self._error_at_dispatch is None:
            if self._paused():
                return False
            self._dispatch_next()
        return (
            not self._events
            and not (self._error_at_dispatch is None and self._paused())
            and (self._error_at_dispatch or self._error) is not None
        )

    # -- the ERROR state -------------------------------------------------------------

    def _enter_error(self, error: ProtocolError) -> None:
        """Moves to ERROR (once) and lets go of everything still queued from the peer."""
        if self._failed is not None:
            return
        self._failed = error
        self._raw.clear()
        self._raw_bytes = 0
        self._events.clear()
        self._deferred = bytearray()
        self._decoder.release()
        self._on_error()

    def _on_error(self) -> None:
        """The roles record the ERROR state in their own state table."""

    def _refuse(self, what: str) -> LocalProtocolError:
        """The error for a call the state does not allow; the connection enters ERROR.

        In ERROR already, the error names the state and is caused by the first error.
        """
        failed = self._failed
        if failed is None:
            exc = LocalProtocolError(what)
            self._enter_error(exc)
            return exc
        exc = LocalProtocolError(f"{what}: the connection is in the ERROR state ({failed.message})")
        exc.__cause__ = failed
        return exc

    def _on_handshake_complete(self) -> None:
        if self._deferred:
            self._out += self._deferred
            self._deferred.clear()

    def _dispatch(self, message: RawMessage) -> None:
        _csid, msid, type_id, timestamp, body = message
        if type_id > msg.SET_PEER_BANDWIDTH:
            if type_id == msg.AGGREGATE:
                for sub_type, sub_time, sub_body in msg.split_aggregate(body, timestamp):
                    if sub_type in (msg.AUDIO, msg.VIDEO, msg.DATA_AMF0):
                        self._on_message(msid, sub_type, self._unwrap(msid, sub_time), sub_body)
                return
            self._on_message(msid, type_id, self._unwrap(msid, timestamp), body)
            return
        if type_id == msg.USER_CONTROL:
            event, value, extra = msg.parse_user_control(body)
            if event == msg.PING_REQUEST:
                self._send_control(
                    msg.USER_CONTROL, msg.user_control_body(msg.PING_RESPONSE, value)
                )
            elif event == msg.PING_RESPONSE:
                self._events.append(PingResponse(value))
            else:
                self._on_user_control(event, value, extra)
        elif type_id == msg.WINDOW_ACK_SIZE:
            self._peer_window = msg.parse_u32(body, "WindowAcknowledgementSize")
        elif type_id == msg.ACKNOWLEDGEMENT:
            self.peer_acknowledged_bytes = msg.parse_u32(body, "Acknowledgement")
        elif type_id == msg.SET_PEER_BANDWIDTH:
            self._on_peer_bandwidth(*msg.parse_peer_bandwidth(body))
        #: SetChunkSize and Abort were applied by the chunk decoder

    def _unwrap(self, msid: int, timestamp: int) -> int:
        last = self._clocks.get(msid)
        if last is None:
            value = timestamp
        else:
            value = last + ((timestamp - last + _HALF) & 0xFFFFFFFF) - _HALF
            if value < 0:
                value = timestamp
        self._clocks[msid] = value
        return value

    # -- for the roles ---------------------------------------------------------------

    def _on_message(self, msid: int, type_id: int, timestamp: int, body: bytes) -> None:
        raise NotImplementedError

    def _on_user_control(self, event: int, value: int, extra: int) -> None:
        """StreamBegin, StreamEOF, SetBufferLength, …: the roles decide."""

    def _on_peer_bandwidth(self, window: int, limit_type: int) -> None:
        """SetPeerBandwidth: the client role answers it."""

    def _decode_command(self, type_id: int, body: bytes) -> tuple[str, float, list[Any]]:
        limits = self.limits
        return msg.parse_command(
            type_id,
            body,
            max_depth=limits.max_amf_depth,
            max_items=limits.max_amf_items,
            max_nodes=limits.max_amf_nodes,
        )

    def _decode_data(self, type_id: int, body: bytes) -> list[Any]:
        limits = self.limits
        return msg.parse_data(
            type_id,
            body,
            max_depth=limits.max_amf_depth,
            max_items=limits.max_amf_items,
            max_nodes=limits.max_amf_nodes,
        )

    # -- bytes out -------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything the core wants written to the peer, in order; clears it."""
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        self.bytes_sent += len(out)
        return out

    def _sink(self) -> bytearray:
        """Where a send writes its chunks; refuses (ERROR) once the connection failed."""
        if self._failed is not None:
            raise self._refuse("send")
        return self._out if self._handshake.complete else self._deferred

    def _send(self, csid: int, msid: int, type_id: int, timestamp: int, body: bytes) -> None:
        try:
            self._encoder.encode(csid, msid, type_id, timestamp, body, self._sink())
        except ValueError as exc:  #: a chunk stream id or body size RTMP cannot frame
            raise self._refuse(str(exc)) from exc

    def _send_control(self, type_id: int, body: bytes) -> None:
        self._send(CSID_CONTROL, 0, type_id, 0, body)

    def _send_command(self, msid: int, name: str, transaction_id: float, *values: Any) -> None:
        csid = CSID_COMMAND if msid == 0 else CSID_STREAM_COMMAND
        self._send(csid, msid, msg.COMMAND_AMF0, 0, msg.command_body(name, transaction_id, *values))

    def _send_status(
        self, msid: int, level: str, code: str, description: str, **extra: Any
    ) -> None:
        info = {"level": level, "code": code, "description": description, **extra}
        self._send_command(msid, "onStatus", 0, None, info)

    def set_chunk_size(self, size: int) -> None:
        """Sends SetChunkSize and uses the new size for everything after it."""
        if not 1 <= size <= 0x7FFFFFFF:
            raise self._refuse(f"chunk size {size} outside 1..2^31-1")
        self._send_control(msg.SET_CHUNK_SIZE, msg.u32_body(size))
        self._encoder.set_chunk_size(size)

    def send_window_ack_size(self, window: int) -> None:
        self._send_control(msg.WINDOW_ACK_SIZE, msg.u32_body(window))

    def send_abort(self, csid: int) -> None:
        self._send_control(msg.ABORT, msg.u32_body(csid))

    def ping(self, timestamp_ms: int) -> None:
        """Sends a PingRequest; the answer arrives as a PingResponse event."""
        self._send_control(msg.USER_CONTROL, msg.user_control_body(msg.PING_REQUEST, timestamp_ms))

    def send_audio(self, stream_id: int, timestamp_ms: int, payload: bytes) -> None:
        try:
            self._encoder.encode(
                CSID_AUDIO, stream_id, msg.AUDIO, timestamp_ms, payload, self._sink()
            )
        except ValueError as exc:
            raise self._refuse(str(exc)) from exc

    def send_video(self, stream_id: int, timestamp_ms: int, payload: bytes) -> None:
        try:
            self._encoder.encode(
                CSID_VIDEO, stream_id, msg.VIDEO, timestamp_ms, payload, self._sink()
            )
        except ValueError as exc:
            raise self._refuse(str(exc)) from exc

    def send_data(self, stream_id: int, timestamp_ms: int, payload: bytes) -> None:
        """Sends an AMF0 data message body (e.g. onMetaData) as it is."""
        self._send(CSID_STREAM_COMMAND, stream_id, msg.DATA_AMF0, timestamp_ms, payload)

    def send_raw_message(
        self, csid: int, stream_id: int, type_id: int, timestamp_ms: int, payload: bytes
    ) -> None:
        """Sends any message (tests and tools: aggregates, unknown types)."""
        self._send(csid, stream_id, type_id, timestamp_ms, payload)

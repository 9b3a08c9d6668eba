"""The client role: publish and play, for our tests, relays and benchmarks.

The same sans-IO shape as the server: calls queue bytes for `data_to_send()`
(chunks written before the handshake completes wait behind it, so a caller may
pipeline connect/createStream/publish at once), and `next_event()` returns the
server's answers (`CommandResponse`, `Status`) and, when playing, media.
"""

from __future__ import annotations

from typing import Any

from . import amf0
from . import messages as msg
from .connection import Connection
from .events import (
    AudioData,
    CommandResponse,
    DataMessage,
    Status,
    UnknownCommand,
    UnknownMessage,
    VideoData,
)
from .handshake import ClientHandshake
from .limits import DEFAULT_LIMITS, Limits

#: The flashVer we announce (ffmpeg-like: FMLE prefix makes servers treat us as an encoder).
FLASH_VERSION = "FMLE/3.0 (compatible; rtmp_ingest)"


class ClientConnection(Connection):
    """Sans-IO RTMP client connection."""

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS, digest_handshake: bool = True) -> None:
        super().__init__(ClientHandshake(digest=digest_handshake), limits=limits)
        self._next_txid = 1
        self._our_window = 0

    def _txid(self) -> float:
        txid = self._next_txid
        self._next_txid += 1
        return float(txid)

    def call(
        self, name: str, *args: Any, stream_id: int = 0, transaction_id: float | None = None
    ) -> float:
        """Sends any command; returns its transaction id (0 = no answer expected)."""
        txid = self._txid() if transaction_id is None else transaction_id
        self._send_command(stream_id, name, txid, *args)
        return txid

    def connect(self, app: str, *, tc_url: str, properties: dict[str, Any] | None = None) -> float:
        props: dict[str, Any] = {
            "app": app,
            "type": "nonprivate",
            "flashVer": FLASH_VERSION,
            "tcUrl": tc_url,
        }
        props.update(properties or {})
        return self.call("connect", props)

    def create_stream(self) -> float:
        return self.call("createStream", None)

    def publish(self, stream_id: int, name: str, *, publish_type: str = "live") -> float:
        """releaseStream + FCPublish + publish, as ffmpeg and OBS send them."""
        self.call("releaseStream", None, name)
        self.call("FCPublish", None, name)
        return self.call("publish", None, name, publish_type, stream_id=stream_id)

    def play(self, stream_id: int, name: str, *, start: float = -2.0) -> float:
        return self.call("play", None, name, float(start), stream_id=stream_id, transaction_id=0.0)

    def unpublish(self, stream_id: int, name: str) -> None:
        """FCUnpublish + deleteStream, as encoders close."""
        self.call("FCUnpublish", None, name)
        self.call("deleteStream", None, float(stream_id))

    def delete_stream(self, stream_id: int) -> None:
        self.call("deleteStream", None, float(stream_id))

    def set_buffer_length(self, stream_id: int, length_ms: int) -> None:
        self._send_control(
            msg.USER_CONTROL, msg.user_control_body(msg.SET_BUFFER_LENGTH, stream_id, length_ms)
        )

    @staticmethod
    def stream_id_of(response: CommandResponse) -> int | None:
        """The stream id in a createStream `_result`."""
        for value in response.values:
            if amf0.is_number(value):
                return int(value)
        return None

    def _on_peer_bandwidth(self, window: int, limit_type: int) -> None:
        if window != self._our_window:  #: RTMP 1.0 §5.4.5: answer with our window
            self._our_window = window
            self.send_window_ack_size(window)

    def _on_message(self, msid: int, type_id: int, timestamp: int, body: bytes) -> None:
        if type_id == msg.VIDEO:
            self._events.append(VideoData(msid, timestamp, body))
        elif type_id == msg.AUDIO:
            self._events.append(AudioData(msid, timestamp, body))
        elif type_id in (msg.COMMAND_AMF0, msg.COMMAND_AMF3):
            name, txid, args = self._decode_command(type_id, body)
            if name in ("_result", "_error"):
                self._events.append(CommandResponse(txid, name == "_result", args))
            elif name in ("onStatus", "onFCPublish", "onFCUnpublish"):
                info = next((a for a in args if isinstance(a, dict)), {})
                self._events.append(
                    Status(
                        msid,
                        str(info.get("level", "")),
                        str(info.get("code", "")),
                        str(info.get("description", "")),
                        info,
                    )
                )
            else:
                self._events.append(UnknownCommand(msid, name, txid, args))
        elif type_id in (msg.DATA_AMF0, msg.DATA_AMF3):
            values = self._decode_data(type_id, body)
            name = values[0] if values and isinstance(values[0], str) else ""
            self._events.append(DataMessage(msid, timestamp, name, values[1:], body))
        else:
            self._events.append(UnknownMessage(msid, type_id, timestamp, body))

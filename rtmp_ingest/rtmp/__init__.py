"""Sans-IO RTMP: handshake, chunk codec, AMF0/AMF3, messages, server and client roles.

Standard library only (plus attrs for records). Feed bytes with
`receive_data()`, read events with `next_event()`, write `data_to_send()`.
"""

from .address import StreamAddress, parse_address
from .client import ClientConnection
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import *  # noqa: F403
from .events import NEED_DATA, PAUSED, Sentinel
from .limits import DEFAULT_LIMITS, Limits
from .server import ConnInput, ConnState, ServerConnection, StreamInput, StreamState

__all__ = [
    "DEFAULT_LIMITS",
    "NEED_DATA",
    "PAUSED",
    "ClientConnection",
    "ConnInput",
    "ConnState",
    "Limits",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "Sentinel",
    "ServerConnection",
    "StreamAddress",
    "StreamInput",
    "StreamState",
    "parse_address",
]

"""The protocol core's errors.

Like h11, there is one base class and two kinds: the peer broke the protocol
(`RemoteProtocolError`, carrying a status text the driver can send or log), or
the caller used the core wrongly (`LocalProtocolError`). Whatever bytes arrive,
the core raises nothing else.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error the RTMP core raises on purpose."""

    def __init__(self, message: str, *, code: str = "NetConnection.Connect.Failed") -> None:
        super().__init__(message)
        self.message = message
        #: onStatus code an encoder will log when the driver tells it before closing.
        self.code = code


class RemoteProtocolError(ProtocolError):
    """The peer sent something RTMP does not allow, or exceeded a limit."""


class LocalProtocolError(ProtocolError):
    """The caller asked the core for something the current state does not allow."""

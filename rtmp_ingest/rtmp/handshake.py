"""The RTMP handshake, both roles (RTMP 1.0 §5.2, plus the Flash digest scheme).

C0/S0 is the version byte (only 3 is RTMP). C1/S1 are 1536 bytes: time, four
version bytes, random data. A client that puts a non-zero version in C1 (Flash
Player, ffmpeg, PyAV) hides an HMAC-SHA256 digest in it at an offset derived
from the data ("scheme 0" at 8..11 → offset 12+, "scheme 1" at 772..775 →
offset 776+), keyed with the Flash Player key; such a client may check that S1
carries a digest keyed with the Media Server key and that S2 is signed with a
key derived from its own C1 digest. Clients that send zeros (GStreamer, OBS,
librtmp) get the plain echo handshake. The server answers in kind, so both
families complete; C2 is read and not checked, as every deployed server does.

Sans-IO: `receive_data(bytes)` returns the bytes that follow the handshake (the
first chunks), `data_to_send()` hands out S0/S1/S2 (or C0/C1/C2), `complete`
tells when chunks may flow.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time

from .errors import RemoteProtocolError

RTMP_VERSION = 3
SIG_SIZE = 1536
DIGEST_SIZE = 32

_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
#: Keys of the Flash digest handshake, as published by librtmp/nginx-rtmp/ffmpeg.
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
FMS_KEY_TEXT_LEN = 36
FP_KEY_TEXT_LEN = 30
#: Version we announce in a digest S1 (what FMS 3.5 sent; clients only test non-zero).
SERVER_VERSION = bytes((3, 5, 1, 1))
#: Version ffmpeg and PyAV put in their digest C1.
CLIENT_VERSION = bytes((9, 0, 124, 2))

_U32 = struct.Struct(">I")


def _digest_offset(data: bytes | bytearray, scheme: int) -> int:
    """Offset of the 32-byte digest in a C1/S1 for scheme 0 or 1."""
    base = 8 if scheme == 0 else 772
    return sum(data[base : base + 4]) % 728 + base + 4


def _hmac(key: bytes, *parts: bytes | bytearray) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        h.update(part)
    return h.digest()


def find_digest(c1: bytes, key: bytes) -> bytes | None:
    """Returns the digest hidden in `c1` if it verifies with `key` under either scheme."""
    for scheme in (0, 1):
        offset = _digest_offset(c1, scheme)
        digest = c1[offset : offset + DIGEST_SIZE]
        expected = _hmac(key, c1[:offset], c1[offset + DIGEST_SIZE :])
        if hmac.compare_digest(digest, expected):
            return digest
    return None


def make_digest_packet(version: bytes, key: bytes, *, scheme: int = 0) -> bytes:
    """Builds a C1/S1 with a digest: time, version, random data, digest at its offset."""
    packet = bytearray(
        _U32.pack(int(time.monotonic() * 1000) & 0xFFFFFFFF) + version + os.urandom(SIG_SIZE - 8)
    )
    offset = _digest_offset(packet, scheme)
    packet[offset : offset + DIGEST_SIZE] = _hmac(
        key, packet[:offset], packet[offset + DIGEST_SIZE :]
    )
    return bytes(packet)


def make_response_packet(peer_digest: bytes, key: bytes) -> bytes:
    """Builds an S2/C2 signed with a key derived from the peer's C1/S1 digest."""
    body = os.urandom(SIG_SIZE - DIGEST_SIZE)
    return body + _hmac(_hmac(key, peer_digest), body)


def _plain_packet() -> bytes:
    return (
        _U32.pack(int(time.monotonic() * 1000) & 0xFFFFFFFF) + bytes(4) + os.urandom(SIG_SIZE - 8)
    )


class ServerHandshake:
    """Server role: reads C0+C1, answers S0+S1+S2, reads C2."""

    __slots__ = ("_buf", "_out", "_stage", "digest_used")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._out = bytearray()
        self._stage = 0  #: 0 = want C0+C1, 1 = want C2, 2 = complete
        #: Whether the client used the Flash digest scheme (for logs and tests).
        self.digest_used = False

    @property
    def complete(self) -> bool:
        return self._stage == 2

    @property
    def buffered_bytes(self) -> int:
        """Handshake bytes received and not yet consumed."""
        return len(self._buf)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> bytes:
        """Consumes handshake bytes; returns whatever arrived after C2."""
        if self._stage == 2:
            return bytes(data)
        self._buf += data
        if self._stage == 0:
            if not self._buf:
                return b""
            if self._buf[0] != RTMP_VERSION:
                raise RemoteProtocolError(
                    f"handshake: unsupported RTMP version {self._buf[0]} (only 3 is RTMP; "
                    f"RTMPE/RTMPT are not served)"
                )
            if len(self._buf) < 1 + SIG_SIZE:
                return b""
            c1 = bytes(self._buf[1 : 1 + SIG_SIZE])
            del self._buf[: 1 + SIG_SIZE]
            self._out.append(RTMP_VERSION)
            digest = find_digest(c1, FP_KEY[:FP_KEY_TEXT_LEN]) if c1[4:8] != bytes(4) else None
            if digest is not None:
                self.digest_used = True
                self._out += make_digest_packet(SERVER_VERSION, FMS_KEY[:FMS_KEY_TEXT_LEN])
                self._out += make_response_packet(digest, FMS_KEY)
            else:
                self._out += _plain_packet()
                self._out += c1  #: S2 echoes C1 (RTMP 1.0 §5.2.4)
            self._stage = 1
        if len(self._buf) < SIG_SIZE:
            return b""
        del self._buf[:SIG_SIZE]  #: C2 is not checked: no deployed server does
        self._stage = 2
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


class ClientHandshake:
    """Client role: sends C0+C1 at once, reads S0+S1+S2, sends C2."""

    __slots__ = ("_buf", "_digest", "_out", "_stage")

    def __init__(self, *, digest: bool = True) -> None:
        self._buf = bytearray()
        self._digest = digest
        c1 = (
            make_digest_packet(CLIENT_VERSION, FP_KEY[:FP_KEY_TEXT_LEN])
            if digest
            else _plain_packet()
        )
        self._out = bytearray(bytes((RTMP_VERSION,)) + c1)
        self._stage = 0

    @property
    def complete(self) -> bool:
        return self._stage == 1

    @property
    def buffered_bytes(self) -> int:
        """Handshake bytes received and not yet consumed."""
        return len(self._buf)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> bytes:
        if self._stage == 1:
            return bytes(data)
        self._buf += data
        if self._buf and self._buf[0] != RTMP_VERSION:
            raise RemoteProtocolError(f"handshake: server answered RTMP version {self._buf[0]}")
        if len(self._buf) < 1 + 2 * SIG_SIZE:
            return b""
        s1 = bytes(self._buf[1 : 1 + SIG_SIZE])
        digest = (
            find_digest(s1, FMS_KEY[:FMS_KEY_TEXT_LEN])
            if self._digest and s1[4:8] != bytes(4)
            else None
        )
        self._out += make_response_packet(digest, FP_KEY) if digest is not None else s1
        rest = bytes(self._buf[1 + 2 * SIG_SIZE :])
        self._buf.clear()
        self._stage = 1
        return rest

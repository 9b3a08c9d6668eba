"""The local link between the daemon and the WebRTC process (sans-IO).

The daemon and its WebRTC child talk over one unix stream socket (a
socketpair the daemon creates and passes to the child). Each message is
framed as

    length  u32 big-endian   bytes of kind + body
    kind    u8               1 = control, 2 = media
    body

A control body is one JSON object (UTF-8) with a string "op". A media body
is one encoded frame, already in its final form (an FLV tag body), behind a
fixed header:

    session  u32   the WHIP session the daemon allocated
    track    u8    index into the session's track list (see the "answer" op)
    flags    u8    bit 0 keyframe, bit 1 configuration record
    dts_ms   i64   the frame's time on the session's clock (RTP + RTCP SR)

so the daemon wraps it in a bundle `Frame` without parsing anything. In the
other direction (daemon → process, a WHEP viewer's media) the same header
carries the viewer's session, track 0 (video) or 1 (audio), the keyframe flag
and the presentation time in ms on the viewer's timeline; the body is what
aiortc packetizes as is: an H.264 access unit in Annex B, or one Opus packet
(`rtmp_ingest.webrtc.sender`).

`LinkDecoder` follows h11's shape: `receive_data(data)` (b"" = EOF), then
`next_event()` until `NEED_DATA`. Any byte sequence yields events or a
`LinkError`; nothing else escapes.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import attrs

KiB = 1024
MiB = 1024 * KiB

#: The largest link message: a 4K H.264 keyframe stays far below it (RTMP's default
#: max_message_bytes is the same).
MAX_MESSAGE_BYTES = 32 * MiB
#: Control messages are small (an SDP offer or answer is a few KiB).
MAX_CONTROL_BYTES = 1 * MiB

KIND_CONTROL = 1
KIND_MEDIA = 2
FLAG_KEYFRAME = 0x01
FLAG_CONFIG = 0x02

_HEAD = struct.Struct(">IB")
_MEDIA = struct.Struct(">IBBq")
HEAD_BYTES = _HEAD.size
MEDIA_HEAD_BYTES = _MEDIA.size


class LinkError(Exception):
    """The peer sent something that is not a link message."""


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@attrs.frozen
class Control:
    """A control message: `message["op"]` names it."""

    message: dict[str, Any]


@attrs.frozen
class Media:
    """One encoded frame of one track of one session."""

    session: int
    track: int
    dts_ms: int
    payload: bytes
    keyframe: bool = False
    config: bool = False


@attrs.frozen
class Closed:
    """The peer closed the link at a message boundary."""


def encode_control(message: dict[str, Any]) -> bytes:
    """One framed control message."""
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_CONTROL_BYTES:
        raise ValueError(f"control message of {len(body)} bytes exceeds {MAX_CONTROL_BYTES}")
    return _HEAD.pack(len(body) + 1, KIND_CONTROL) + body


def encode_media(
    session: int,
    track: int,
    dts_ms: int,
    payload: bytes,
    *,
    keyframe: bool = False,
    config: bool = False,
) -> bytes:
    """One framed media message."""
    size = MEDIA_HEAD_BYTES + len(payload)
    if size + 1 > MAX_MESSAGE_BYTES:
        raise ValueError(f"media frame of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    flags = (FLAG_KEYFRAME if keyframe else 0) | (FLAG_CONFIG if config else 0)
    return _HEAD.pack(size + 1, KIND_MEDIA) + _MEDIA.pack(session, track, flags, dts_ms) + payload


class LinkDecoder:
    """Bytes from the link → `Control` / `Media` / `Closed` events."""

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self._eof = False
        self._closed = False
        self._max = max_message_bytes

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; b"" means it closed its end."""
        if not data:
            self._eof = True
        else:
            self._buf += data

    def next_event(self) -> Control | Media | Closed | _NeedData:
        buf = self._buf
        if len(buf) < HEAD_BYTES:
            return self._at_end()
        size, kind = _HEAD.unpack_from(buf)
        if size < 1 or size > self._max:
            raise LinkError(f"link message of {size} bytes (limit {self._max})")
        if kind not in (KIND_CONTROL, KIND_MEDIA):
            raise LinkError(f"unknown link message kind {kind}")
        end = HEAD_BYTES - 1 + size
        if len(buf) < end:
            return self._at_end()
        if kind == KIND_CONTROL:
            with memoryview(buf) as view:
                body = bytes(view[HEAD_BYTES:end])
            del buf[:end]
            return Control(_control(body))
        if size - 1 < MEDIA_HEAD_BYTES:
            raise LinkError("truncated media header")
        session, track, flags, dts_ms = _MEDIA.unpack_from(buf, HEAD_BYTES)
        if flags & ~(FLAG_KEYFRAME | FLAG_CONFIG):
            raise LinkError(f"unknown media flags {flags:#x}")
        with memoryview(buf) as view:
            payload = bytes(view[HEAD_BYTES + MEDIA_HEAD_BYTES : end])  #: the one copy
        del buf[:end]
        return Media(
            session,
            track,
            dts_ms,
            payload,
            bool(flags & FLAG_KEYFRAME),
            bool(flags & FLAG_CONFIG),
        )

    def _at_end(self) -> Closed | _NeedData:
        if not self._eof:
            return NEED_DATA
        if self._buf:
            raise LinkError(f"link closed inside a message ({len(self._buf)} bytes pending)")
        if self._closed:
            return NEED_DATA
        self._closed = True
        return Closed()


def _control(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_CONTROL_BYTES:
        raise LinkError(f"control message of {len(body)} bytes (limit {MAX_CONTROL_BYTES})")
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise LinkError(f"control message is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise LinkError('control message is not an object with a string "op"')
    return message

"""The chunk stream layer: messages ⇄ chunks (RTMP 1.0 §5.3).

Decoding keeps one receive buffer (`bytearray`). A feed parses as many whole
chunks as the buffer holds, each in two steps: read the header into locals, and
only when the chunk's body is in the buffer too, commit the header to that chunk
stream's state and take the body. A partial chunk therefore never changes any
state; the loop stops and resumes there on the next feed. The consumed prefix is
cut once per feed (`del buf[:n]`).

Message bodies are gathered as memoryview slices of the buffer and joined once
when the message completes (one copy). Slices of a message still incomplete at
the end of a feed are joined into a bytes piece before the buffer is cut.

Timestamps (RTMP 1.0 §5.3.1.2): a type-0 header carries the absolute time, types
1 and 2 a delta, type 3 reuses the previous field: as a delta when it starts a
new message (after a type-0 header, the previous *field* is added, as ffmpeg's
writer and reader both do), unchanged when it continues one. A field of 0xFFFFFF
means a 32-bit extended value follows the header, which for types 1/2 is also a
delta; it is repeated on type-3 chunks of the same stream by ffmpeg/FMLE/OBS
but not by rtmpdump, so on type 3 the four bytes are taken only when they equal
the stored value (the peek-and-compare rule of rust-media-libs, SRS, OBS).
Times are kept modulo 2^32; unwrapping is the connection's job.

SetChunkSize and Abort change how the following chunks parse, so the decoder
applies them itself the moment such a message completes (and still reports the
message).

Limits are checked as early as the bytes allow: a message's length against its
type's limit (`max_message_bytes` for audio, video and aggregates,
`max_command_bytes` for everything else) the moment its header is complete, before
any body byte is kept; declared partial-message bytes against `max_pending_bytes`
when a message starts; and, while `admitted` is false (the server role before a
publish is accepted), what the decoder holds (`pending_bytes`) against
`max_pending_bytes_unadmitted` at the end of every feed. A dead decoder drops its
buffers at once.
"""

from __future__ import annotations

import struct

from .errors import RemoteProtocolError
from .limits import DEFAULT_LIMITS, MAX_CHUNK_SIZE, Limits

_U32 = struct.Struct(">I")
_U32_PAIR = struct.Struct(">II")
_U32_LE = struct.Struct("<I")

#: RTMP 1.0 §5.4: protocol control message type ids that the chunk layer itself obeys.
MSG_SET_CHUNK_SIZE = 1
MSG_ABORT = 2
#: Audio, video and aggregate (RTMP 1.0 §7.1.4, §7.1.5, §7.1.6): the large-message types.
MEDIA_TYPES = frozenset({8, 9, 22})

DEFAULT_CHUNK_SIZE = 128  #: RTMP 1.0 §5.4.1: the size until a SetChunkSize says otherwise
EXTENDED = 0xFFFFFF
_MARKERS = [bytes((i,)) for i in range(256)]


class _Stream:
    """Per chunk stream state: the last header's fields and the message in progress."""

    __slots__ = (
        "ext",
        "has_ext",
        "length",
        "msid",
        "pieces",
        "remaining",
        "timestamp",
        "ts_field",
        "type_id",
        "views",
    )

    def __init__(self) -> None:
        self.timestamp = 0  #: timestamp of the current/last message, mod 2^32
        self.ts_field = 0  #: the last timestamp field (absolute after type 0, else delta)
        self.length = 0
        self.type_id = 0
        self.msid = 0
        self.ext = 0  #: the last extended timestamp value
        self.has_ext = False  #: the last header of this stream had an extended timestamp
        self.remaining = 0  #: body bytes still to come for the message in progress
        self.pieces: list[bytes] = []  #: body bytes of the message from earlier feeds
        self.views: list[memoryview] = []  #: body slices from the current feed


#: One decoded message: (chunk stream id, message stream id, type id, timestamp mod 2^32, body).
RawMessage = tuple[int, int, int, int, bytes]


class ChunkDecoder:
    """Turns a byte stream of chunks into complete messages."""

    __slots__ = (
        "_buf",
        "_error",
        "_limits",
        "_max_length",
        "_partial_bytes",
        "_pending_bytes",
        "_streams",
        "admitted",
        "bytes_received",
        "chunk_size",
        "completed_bytes",
    )

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self._buf = bytearray()
        self._streams: dict[int, _Stream] = {}
        #: the peer's current chunk size (changes with its SetChunkSize messages)
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._limits = limits
        #: largest length per message type id (media: max_message_bytes, else max_command_bytes)
        self._max_length = tuple(
            limits.max_message_bytes if type_id in MEDIA_TYPES else limits.max_command_bytes
            for type_id in range(256)
        )
        self._pending_bytes = 0  #: declared lengths of the messages in progress
        self._partial_bytes = 0  #: body bytes received of the messages in progress
        self._error: RemoteProtocolError | None = None
        self.bytes_received = 0
        #: body bytes of the messages the last feed returned
        self.completed_bytes = 0
        #: False: hold at most max_pending_bytes_unadmitted (the owner sets it, see above)
        self.admitted = True

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet part of a complete chunk."""
        return len(self._buf)

    @property
    def error(self) -> RemoteProtocolError | None:
        """The error that killed the decoder, if any."""
        return self._error

    @property
    def pending_bytes(self) -> int:
        """Bytes held now: received parts of unfinished messages plus unparsed input."""
        return self._partial_bytes + len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[RawMessage]:
        """Adds bytes; returns every message they complete, in order of completion.

        Raises RemoteProtocolError on malformed input; the decoder is then dead and
        raises the same error on every later call. Messages completed in the same feed
        before the malformed bytes are returned first: the error is then in `error`
        and raised by the next call.
        """
        if self._error is not None:
            raise self._error
        self.bytes_received += len(data)
        buf = self._buf
        buf += data
        out: list[RawMessage] = []
        self.completed_bytes = 0
        mv = memoryview(buf)
        try:
            pos = self._parse(buf, mv, out)
        except RemoteProtocolError as exc:
            mv.release()
            self._die(exc)
            if out:
                return out
            raise
        partial = 0
        for stream in self._streams.values():
            if stream.views:
                stream.pieces.append(b"".join(stream.views))
                stream.views.clear()
            if stream.remaining:
                partial += stream.length - stream.remaining
        mv.release()
        self._partial_bytes = partial
        if pos:
            del buf[:pos]  #: CPython gives the memory back once less than half is in use
        if not self.admitted and partial + len(buf) > self._limits.max_pending_bytes_unadmitted:
            error = self._fail(
                f"{partial + len(buf)} bytes held before a publish is admitted exceed "
                f"max_pending_bytes_unadmitted={self._limits.max_pending_bytes_unadmitted}"
            )
            self._die(error)
            if out:
                return out
            raise error
        return out

    def _die(self, exc: RemoteProtocolError) -> None:
        """Remembers the error and lets go of everything held."""
        self._error = exc
        self.release()

    def release(self) -> None:
        """Lets go of every byte held (the owner stops feeding: its connection failed)."""
        self._buf = bytearray()
        self._partial_bytes = 0
        self._pending_bytes = 0
        for stream in self._streams.values():
            stream.views.clear()
            stream.pieces.clear()
            stream.remaining = 0

    def _fail(self, message: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"chunk stream: {message}")

    def _parse(self, buf: bytearray, mv: memoryview, out: list[RawMessage]) -> int:
        streams = self._streams
        limits = self._limits
        max_length = self._max_length
        u32_from = _U32.unpack_from
        pair_from = _U32_PAIR.unpack_from
        n = len(buf)
        pos = 0
        completed = 0
        while pos < n:
            b0 = buf[pos]
            fmt = b0 >> 6
            csid = b0 & 0x3F
            hpos = pos + 1
            if csid == 0:  #: 2-byte basic header: ids 64..319
                if hpos >= n:
                    break
                csid = buf[hpos] + 64
                hpos += 1
            elif csid == 1:  #: 3-byte basic header: ids 64..65599
                if hpos + 1 >= n:
                    break
                csid = buf[hpos] + (buf[hpos + 1] << 8) + 64
                hpos += 2
            stream = streams.get(csid)
            if fmt == 0:
                if hpos + 11 > n:
                    break
                word0, word1 = pair_from(buf, hpos - 1)
                field = word0 & 0xFFFFFF
                length = word1 >> 8
                type_id = word1 & 0xFF
                msid = _U32_LE.unpack_from(buf, hpos + 7)[0]
                hpos += 11
            elif fmt == 3:
                if stream is None:
                    raise self._fail(f"type-3 chunk on chunk stream {csid} before any header")
                field = stream.ts_field
                length = stream.length
                type_id = stream.type_id
                msid = stream.msid
                if stream.has_ext:
                    if hpos + 4 > n:
                        break
                    if u32_from(buf, hpos)[0] == stream.ext:
                        hpos += 4
            else:
                if stream is None:
                    raise self._fail(
                        f"type-{fmt} chunk on chunk stream {csid} before a type-0 header"
                    )
                if fmt == 1:
                    if hpos + 7 > n:
                        break
                    word0, word1 = pair_from(buf, hpos - 1)
                    length = word1 >> 8
                    type_id = word1 & 0xFF
                    hpos += 7
                else:
                    if hpos + 3 > n:
                        break
                    word0 = u32_from(buf, hpos - 1)[0]
                    length = stream.length
                    type_id = stream.type_id
                    hpos += 3
                field = word0 & 0xFFFFFF
                msid = stream.msid
            has_ext = False
            if fmt != 3 and field == EXTENDED:
                if hpos + 4 > n:
                    break
                field = u32_from(buf, hpos)[0]
                hpos += 4
                has_ext = True
            # -- the header is complete; is the body there? (nothing is committed before)
            if stream is not None and stream.remaining and fmt == 3:
                remaining = stream.remaining
            else:
                remaining = length
                if length > max_length[type_id]:
                    raise self._too_long(length, type_id)
            size = self.chunk_size if remaining > self.chunk_size else remaining
            end = hpos + size
            if end > n:
                break
            # -- commit the header
            if stream is None:
                if len(streams) >= limits.max_chunk_streams:
                    raise self._fail(
                        f"more than max_chunk_streams={limits.max_chunk_streams} chunk streams"
                    )
                stream = streams[csid] = _Stream()
            if fmt == 3:
                if not stream.remaining:  #: a new message reusing the previous header
                    stream.timestamp = (stream.timestamp + field) & 0xFFFFFFFF
                    self._start(stream, length)
            else:
                if stream.remaining:  #: a new header in mid-message replaces that message
                    self._discard(stream)
                stream.timestamp = field if fmt == 0 else (stream.timestamp + field) & 0xFFFFFFFF
                stream.ts_field = field
                stream.length = length
                stream.type_id = type_id
                stream.msid = msid
                stream.has_ext = has_ext
                if has_ext:
                    stream.ext = field
                self._start(stream, length)
            # -- take the body, then any type-3 continuation chunks that follow at once
            views = stream.views
            if size:
                views.append(mv[hpos:end])
            remaining -= size
            pos = end
            if remaining and csid < 64 and not stream.has_ext:
                chunk_size = self.chunk_size
                step = chunk_size + 1
                count = (remaining + chunk_size - 1) // chunk_size
                span = remaining + count
                marker = 0xC0 | csid
                if pos + span <= n and buf[pos : pos + span : step] == _MARKERS[marker] * count:
                    #: the rest of the message follows uninterrupted: slice it in one go
                    last = pos + (count - 1) * step
                    views += [mv[i : i + chunk_size] for i in range(pos + 1, last, step)]
                    views.append(mv[last + 1 : pos + span])
                    remaining = 0
                    pos += span
                else:
                    while pos < n and buf[pos] == marker:
                        size = chunk_size if remaining > chunk_size else remaining
                        end = pos + 1 + size
                        if end > n:
                            break
                        views.append(mv[pos + 1 : end])
                        remaining -= size
                        pos = end
                        if not remaining:
                            break
            stream.remaining = remaining
            if remaining:
                continue
            # -- the message is complete
            if stream.pieces:
                body = b"".join([*stream.pieces, *views])
                stream.pieces.clear()
            elif len(views) == 1:
                body = bytes(views[0])
            else:
                body = b"".join(views)
            views.clear()
            self._pending_bytes -= length
            if msid == 0 and type_id <= MSG_ABORT:
                self._control(type_id, body)
            out.append((csid, msid, type_id, stream.timestamp, body))
            completed += length
            self.completed_bytes = completed
        return pos

    def _too_long(self, length: int, type_id: int) -> RemoteProtocolError:
        if type_id in MEDIA_TYPES:
            name, limit = "max_message_bytes", self._limits.max_message_bytes
        else:
            name, limit = "max_command_bytes", self._limits.max_command_bytes
        return self._fail(f"message of type {type_id} and {length} bytes exceeds {name}={limit}")

    def _start(self, stream: _Stream, length: int) -> None:
        stream.remaining = length
        self._pending_bytes += length
        if self._pending_bytes > self._limits.max_pending_bytes:
            raise self._fail(
                f"{self._pending_bytes} bytes in partial messages exceed "
                f"max_pending_bytes={self._limits.max_pending_bytes}"
            )

    def _discard(self, stream: _Stream) -> None:
        self._pending_bytes -= stream.length
        stream.remaining = 0
        stream.pieces.clear()
        stream.views.clear()

    def _control(self, type_id: int, body: bytes) -> None:
        if len(body) < 4:
            raise self._fail(f"protocol control message {type_id} shorter than 4 bytes")
        value = _U32.unpack_from(body)[0]
        if type_id == MSG_SET_CHUNK_SIZE:
            value &= 0x7FFFFFFF  #: RTMP 1.0 §5.4.1: the first bit must be zero
            if value < 1:
                raise self._fail("SetChunkSize to 0")
            self.chunk_size = value
        else:
            stream = self._streams.get(value)
            if stream is not None and stream.remaining:
                self._discard(stream)


def _basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))


class _OutStream:
    __slots__ = ("delta_valid", "length", "msid", "timestamp", "ts_field", "type3", "type_id")

    def __init__(self, csid: int) -> None:
        self.timestamp = 0
        self.ts_field = 0
        self.length = -1
        self.type_id = -1
        self.msid = -1
        self.delta_valid = False  #: ts_field is a delta (set by a type-1/2 header)
        self.type3 = _basic_header(3, csid)


class ChunkEncoder:
    """Turns messages into chunks, compressing headers (types 1–3) where valid."""

    __slots__ = ("_streams", "chunk_size")

    def __init__(self) -> None:
        #: our chunk size; change it only together with sending SetChunkSize
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _OutStream] = {}

    def set_chunk_size(self, size: int) -> None:
        if not 1 <= size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be 1..{MAX_CHUNK_SIZE}")
        self.chunk_size = size

    def encode(
        self, csid: int, msid: int, type_id: int, timestamp: int, body: bytes, out: bytearray
    ) -> None:
        """Appends the chunks of one message to `out`."""
        if not 2 <= csid <= 65599:
            raise ValueError(f"chunk stream id {csid} outside 2..65599")
        timestamp &= 0xFFFFFFFF
        length = len(body)
        if length > 0xFFFFFF:
            raise ValueError("message body longer than 16 MiB - 1 cannot be framed")
        stream = self._streams.get(csid)
        if stream is None:
            stream = self._streams[csid] = _OutStream(csid)
            fmt = 0
        else:
            delta = (timestamp - stream.timestamp) & 0xFFFFFFFF
            if msid != stream.msid or delta >= 0x80000000:
                fmt = 0
            elif length != stream.length or type_id != stream.type_id:
                fmt = 1
            elif delta != stream.ts_field or not stream.delta_valid:
                fmt = 2
            else:
                fmt = 3
        field = timestamp if fmt == 0 else (timestamp - stream.timestamp) & 0xFFFFFFFF
        ext = _U32.pack(field) if field >= EXTENDED else b""
        header_field = EXTENDED if ext else field
        out += _basic_header(fmt, csid)
        if fmt == 0:
            out += _U32_PAIR.pack(header_field, (length << 8) | type_id)[1:]
            out += _U32_LE.pack(msid)
        elif fmt == 1:
            out += _U32_PAIR.pack(header_field, (length << 8) | type_id)[1:]
        elif fmt == 2:
            out += _U32.pack(header_field)[1:]
        out += ext
        stream.timestamp = timestamp
        stream.ts_field = field
        stream.length = length
        stream.type_id = type_id
        stream.msid = msid
        stream.delta_valid = fmt in (1, 2) or (fmt == 3 and stream.delta_valid)
        size = self.chunk_size
        if length <= size:
            out += body
            return
        out += body[:size] if isinstance(body, bytes) else bytes(body[:size])
        continuation = stream.type3 + ext
        view = memoryview(body)
        for start in range(size, length, size):
            out += continuation
            out += view[start : start + size]

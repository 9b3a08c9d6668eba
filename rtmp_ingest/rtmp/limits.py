"""Named limits of the protocol core.

Every number that bounds memory or work per connection lives here with its unit
and its reason. `Limits` bundles them so a config file can override each one;
exceeding a limit is a `RemoteProtocolError` that names it.
"""

from __future__ import annotations

import attrs

KiB = 1024
MiB = 1024 * KiB

#: A 4K HEVC keyframe at high bitrate reaches several MiB; nginx-rtmp's 1 MiB cap breaks
#: such feeds (nginx-rtmp #324, nginx-http-flv-module #242), so the default is generous.
MAX_MESSAGE_BYTES = 32 * MiB
#: Bytes declared by all partially received messages of one connection together.
#: Bounds what interleaved chunk streams can make us hold at once.
MAX_PENDING_BYTES = 64 * MiB
#: Distinct chunk stream ids one peer may use. Real encoders use fewer than ten.
MAX_CHUNK_STREAMS = 64
#: Nesting depth of AMF objects/arrays; deeper input would only serve to exhaust the stack.
MAX_AMF_DEPTH = 32
#: Elements in one AMF object, ECMA array or strict array.
MAX_AMF_ITEMS = 65_536
#: Largest chunk size RTMP allows (RTMP 1.0 §5.4.1: 31 bits).
MAX_CHUNK_SIZE = 0x7FFF_FFFF
#: Chunk size we announce for what we send: large chunks cost fewer headers; 4096 is
#: what ffmpeg, OBS and nginx-rtmp use, so every client copes with it.
OUT_CHUNK_SIZE = 4096
#: Acknowledgement window we ask of peers, in bytes (the usual 2.5 MB of FMS/nginx).
WINDOW_ACK_SIZE = 2_500_000


@attrs.frozen
class Limits:
    """Per-connection limits; every field defaults to the constant of the same name."""

    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_pending_bytes: int = MAX_PENDING_BYTES
    max_chunk_streams: int = MAX_CHUNK_STREAMS
    max_amf_depth: int = MAX_AMF_DEPTH
    max_amf_items: int = MAX_AMF_ITEMS
    out_chunk_size: int = attrs.field(default=OUT_CHUNK_SIZE)
    window_ack_size: int = WINDOW_ACK_SIZE

    @out_chunk_size.validator
    def _check_chunk_size(self, _attribute: object, value: int) -> None:
        if not 1 <= value <= MAX_CHUNK_SIZE:
            raise ValueError(f"out_chunk_size must be 1..{MAX_CHUNK_SIZE}, got {value}")


DEFAULT_LIMITS = Limits()

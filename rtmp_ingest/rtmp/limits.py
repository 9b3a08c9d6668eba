"""Named limits of the protocol core.

Every number that bounds memory or work per connection lives here with its unit
and its reason. `Limits` bundles them so a config file can override each one;
exceeding a limit is a `RemoteProtocolError` that names it.

Memory a peer can make one connection hold (`pending_bytes`: partial messages,
unparsed chunks, complete messages waiting behind an owed decision): before a
publish is admitted at most `max_pending_bytes_unadmitted` (plus one socket read);
after, at most `max_pending_bytes`, which also bounds the lengths partial
messages declare, each at most `max_message_bytes`. Work: a command or data
message is at most `max_command_bytes` and decodes at most `max_amf_nodes` values.
"""

from __future__ import annotations

import attrs

KiB = 1024
MiB = 1024 * KiB

#: RTMP 1.0 §5.3.1.2.2: the message length field has 24 bits, so no message is longer.
RTMP_MAX_MESSAGE_BYTES = 0xFFFFFF
#: Largest audio/video/aggregate message. A 4K HEVC keyframe at high bitrate reaches several
#: MiB; nginx-rtmp's 1 MiB cap breaks such feeds (nginx-rtmp #324, nginx-http-flv-module
#: #242), so the default is what the 24-bit length field can express: 16 MiB − 1.
MAX_MESSAGE_BYTES = RTMP_MAX_MESSAGE_BYTES
#: Largest command, data, shared-object or protocol-control message (any type but 8, 9, 22).
#: A connect or onMetaData is a few hundred bytes; a 16 MiB command of 4 M AMF items would
#: stall the event loop for seconds before authentication. Checked from the chunk header.
MAX_COMMAND_BYTES = 64 * KiB
#: Bytes declared by all partially received messages of one admitted connection together,
#: and bytes of its input held at once. Bounds what interleaved chunk streams can cost.
MAX_PENDING_BYTES = 64 * MiB
#: Bytes of input a connection may hold until a publish is admitted: a stranger (no token
#: checked yet) costs at most this (plus one socket read), not MAX_PENDING_BYTES.
MAX_PENDING_BYTES_UNADMITTED = 1 * MiB
#: Distinct chunk stream ids one peer may use. Real encoders use fewer than ten.
MAX_CHUNK_STREAMS = 64
#: Nesting depth of AMF objects/arrays; deeper input would only serve to exhaust the stack.
MAX_AMF_DEPTH = 32
#: Elements in one AMF object, ECMA array or strict array.
MAX_AMF_ITEMS = 65_536
#: Values and property keys decoded from one message (AMF3 references count as what they
#: repeat). connect and onMetaData have well under 200; 4096 caps decoding at ~1 ms.
MAX_AMF_NODES = 4096
#: Largest chunk size RTMP allows (RTMP 1.0 §5.4.1: 31 bits).
MAX_CHUNK_SIZE = 0x7FFF_FFFF
#: Chunk size we announce for what we send: large chunks cost fewer headers; 4096 is
#: what ffmpeg, OBS and nginx-rtmp use, so every client copes with it.
OUT_CHUNK_SIZE = 4096
#: Acknowledgement window we ask of peers, in bytes (the usual 2.5 MB of FMS/nginx).
WINDOW_ACK_SIZE = 2_500_000


def _positive(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


def _framable(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= RTMP_MAX_MESSAGE_BYTES:
        raise ValueError(
            f"{attribute.name} must be 1..{RTMP_MAX_MESSAGE_BYTES} "
            f"(the 24-bit RTMP message length), got {value}"
        )


def _chunk_size(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= MAX_CHUNK_SIZE:
        raise ValueError(f"{attribute.name} must be 1..{MAX_CHUNK_SIZE}, got {value}")


@attrs.frozen
class Limits:
    """Per-connection limits; every field defaults to the constant of the same name.

    `max_message_bytes` and `max_command_bytes` cannot exceed 16 MiB − 1: RTMP's message
    length field has 24 bits, so a larger value would be a limit no peer can reach.
    """

    max_message_bytes: int = attrs.field(default=MAX_MESSAGE_BYTES, validator=_framable)
    max_command_bytes: int = attrs.field(default=MAX_COMMAND_BYTES, validator=_framable)
    max_pending_bytes: int = attrs.field(default=MAX_PENDING_BYTES, validator=_positive)
    max_pending_bytes_unadmitted: int = attrs.field(
        default=MAX_PENDING_BYTES_UNADMITTED, validator=_positive
    )
    max_chunk_streams: int = attrs.field(default=MAX_CHUNK_STREAMS, validator=_positive)
    max_amf_depth: int = attrs.field(default=MAX_AMF_DEPTH, validator=_positive)
    max_amf_items: int = attrs.field(default=MAX_AMF_ITEMS, validator=_positive)
    max_amf_nodes: int = attrs.field(default=MAX_AMF_NODES, validator=_positive)
    out_chunk_size: int = attrs.field(default=OUT_CHUNK_SIZE, validator=_chunk_size)
    window_ack_size: int = attrs.field(default=WINDOW_ACK_SIZE, validator=_positive)


DEFAULT_LIMITS = Limits()

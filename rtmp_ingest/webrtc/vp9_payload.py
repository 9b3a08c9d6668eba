"""VP9 frames → RTP payloads (RFC 9628), for WHEP viewers of a VP9 source (sans-IO).

aiortc packetizes H.264 and VP8 but not VP9, so WHEP viewers of an E-RTMP
`vp09` source (or of a VP9 WHIP publisher) get their frames cut here. A frame
from the bundle is one complete VP9 frame (a superframe stays whole: the
receiver's decoder splits it). It is split into near-equal payloads of at most
`max_payload_bytes`, each behind a payload descriptor (docs/spec.md §7, RFC 9628
§4.2):

    |I|P|L|F|B|E|V|Z|   I=1 always (15-bit picture id, +1 per frame);
                        P: not a keyframe; B/E on the first/last payload;
                        V on a keyframe's first payload (scalability structure)

Two modes, as libwebrtc's receiver reads them (`video_rtp_depacketizer_vp9`,
its VP9 reference finder):

- **flexible** (the default, F=1, no layer indices): an inter frame names its
  reference explicitly, P_DIFF=1 (the previous picture); the scalability
  structure on keyframes carries the resolution only (N_S=0, Y=1, G=0).
- **non-flexible** (F=0): layer indices with TID=SID=0 and a TL0PICIDX that
  counts base-layer pictures, and the keyframe's scalability structure adds a
  picture group of one frame that references the previous one (N_G=1, R=1,
  P_DIFF=1), which is the shape of libwebrtc's own single-layer VP9.

Either way every inter frame depends on the one before it, which holds for
passthrough: the sender skips to a keyframe after any loss of frames, so the
picture ids a viewer sees never have a hole that the decoder would need.
Whether a frame is a keyframe, and its size, come from its uncompressed header
(VP9 bitstream §6.2, `vp9.keyframe_header`).
"""

from __future__ import annotations

import random

from rtmp_ingest.webrtc.vp9 import keyframe_header

#: RTP payload bytes per packet, descriptor included: with the RTP header, SRTP's tag
#: and header extensions a packet stays under 1280 bytes (IPv6's minimum MTU), as
#: browsers' own packetizers do.
MAX_PAYLOAD_BYTES = 1200
#: Picture ids are 15 bits (M=1), the extended form RFC 9628 §4.2 recommends.
PICTURE_ID_MODULO = 1 << 15
#: The descriptor's flag bits (RFC 9628 §4.2)
FLAG_I, FLAG_P, FLAG_L, FLAG_F = 0x80, 0x40, 0x20, 0x10
FLAG_B, FLAG_E, FLAG_V = 0x08, 0x04, 0x02
#: Scalability structure byte: N_S (3 bits, layers − 1), Y (resolutions follow), G (groups)
SS_Y, SS_G = 0x10, 0x08
#: The largest descriptor written: flags, 2 picture id bytes, L + TL0PICIDX or one
#: P_DIFF, and an SS of one layer's resolution plus a one-frame picture group.
MAX_DESCRIPTOR_BYTES = 1 + 2 + 2 + 1 + 4 + 1 + 2


class Vp9Payloader:
    """One VP9 stream → RTP payloads per frame; the caller sets the marker on the last."""

    def __init__(
        self,
        *,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        flexible: bool = True,
        picture_id: int | None = None,
    ) -> None:
        if max_payload_bytes <= MAX_DESCRIPTOR_BYTES:
            raise ValueError(f"max_payload_bytes must exceed {MAX_DESCRIPTOR_BYTES}")
        self.max_payload_bytes = max_payload_bytes
        self.flexible = flexible
        #: the next frame's picture id (random start, as RFC 9628 §4.2 suggests)
        self.picture_id = (
            random.randrange(PICTURE_ID_MODULO) if picture_id is None else picture_id
        ) % PICTURE_ID_MODULO
        self.tl0_pic_idx = 0
        self.frames = 0
        self.keyframes = 0
        self.width = 0
        self.height = 0

    def payloads(self, frame: bytes) -> list[bytes]:
        """The payloads of one frame, in order (none for an empty frame)."""
        if not frame:
            return []
        header = keyframe_header(frame)
        keyframe = header is not None
        if header is not None:
            #: the SS carries 16 bits; VP9 allows 65536, which no receiver decodes anyway
            self.width, self.height = min(header.width, 0xFFFF), min(header.height, 0xFFFF)
            self.keyframes += 1
        first_head = self._descriptor(keyframe, begin=True, end=False, with_ss=keyframe)
        #: every payload is given the room left by the largest descriptor, then the
        #: frame is cut into that many near-equal pieces
        room = self.max_payload_bytes - len(first_head)
        count = -(-len(frame) // room)
        size, extra = divmod(len(frame), count)
        out: list[bytes] = []
        pos = 0
        for index in range(count):
            length = size + (1 if index < extra else 0)
            head = self._descriptor(
                keyframe, begin=index == 0, end=index == count - 1, with_ss=keyframe and index == 0
            )
            out.append(head + frame[pos : pos + length])
            pos += length
        self.picture_id = (self.picture_id + 1) % PICTURE_ID_MODULO
        self.tl0_pic_idx = (self.tl0_pic_idx + 1) & 0xFF
        self.frames += 1
        return out

    def _descriptor(self, keyframe: bool, *, begin: bool, end: bool, with_ss: bool) -> bytes:
        flags = FLAG_I
        flags |= 0 if keyframe else FLAG_P
        flags |= FLAG_F if self.flexible else FLAG_L
        flags |= (FLAG_B if begin else 0) | (FLAG_E if end else 0)
        flags |= FLAG_V if with_ss else 0
        #: M=1: the 15-bit picture id
        head = bytearray((flags, 0x80 | self.picture_id >> 8, self.picture_id & 0xFF))
        if self.flexible:
            if not keyframe:
                head.append(1 << 1)  #: P_DIFF=1, N=0: the previous picture
        else:
            head.append(0)  #: TID=0, U=0, SID=0, D=0
            head.append(self.tl0_pic_idx)
        if with_ss:
            head.append(SS_Y | (0 if self.flexible else SS_G))  #: N_S=0: one spatial layer
            head += self.width.to_bytes(2, "big") + self.height.to_bytes(2, "big")
            if not self.flexible:
                head.append(1)  #: N_G=1
                head.append(0 << 5 | 0 << 4 | 1 << 2)  #: T=0, U=0, R=1
                head.append(1)  #: P_DIFF=1
        return bytes(head)

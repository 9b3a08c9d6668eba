"""How aiortc and aioice are set up in the WebRTC process (and in test clients).

- **Codecs**: the process receives H.264 (packetization-mode 1, every profile a
  browser offers: Constrained Baseline, Baseline, Main, Constrained High,
  High), VP9 when an offer has no H.264, and Opus, nothing it would have to
  decode; aiortc's own list (VP8, Baseline-only H.264, G.722, PCMU/PCMA) is
  replaced in place. The level
  we announce is 5.2 so that, with level-asymmetry-allowed, no browser caps
  its resolution to fit us. "ccm fir" is offered beside NACK, PLI and REMB.
- **Host candidates**: aioice gathers every interface address except
  loopback; `restrict_host_addresses` makes it use the configured addresses,
  or every address plus 127.0.0.1 (so a publisher on the same machine, and
  every test, works on loopback).
- **UDP ports**: aioice binds port 0; `PortRangeLoop` is an event loop whose
  `create_datagram_endpoint` picks a free port of the configured range
  instead (firewalls). Nothing else in the process binds UDP port 0.
- **ICE servers** come only from the configuration: an empty list is passed
  explicitly, so aiortc's default public STUN server is never contacted.

- **Payload types**: an answer must reuse the offer's payload type for a codec;
  aiortc does so only for 96-127, but browsers also number codecs 35-63 (Chromium's
  AV1 is 45), so `aiortc.rtp.DYNAMIC_PAYLOAD_TYPES` is widened to both ranges
  (RFC 3551 §3; 64-95 stay out, RFC 5761 §4).

aiortc internals touched here: the `aiortc.codecs.CODECS` table,
`aiortc.rtp.DYNAMIC_PAYLOAD_TYPES` and `aioice.ice.get_host_addresses`, all module
globals of this process.
"""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import Callable
from typing import Any

import aioice.ice
import aiortc.rtp
from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters

#: profile_idc + constraint flags of every H.264 profile aiortc's matcher knows, at level 5.2
H264_PROFILE_LEVEL_IDS = ("42e034", "420034", "4d0034", "640c34", "640034")
VIDEO_PAYLOAD_TYPE_BASE = 102
VP9_PAYLOAD_TYPE = 98
OPUS_PAYLOAD_TYPE = 111
LOOPBACK_V4 = "127.0.0.1"
#: Payload types an answer takes over from the offer (see the module docstring)
DYNAMIC_PAYLOAD_TYPES = frozenset(range(35, 64)) | frozenset(range(96, 128))


def configure_codecs() -> None:
    """Receive H.264 (mode 1, any profile) and Opus only (see the module docstring)."""
    feedback = [
        RTCRtcpFeedback(type="nack"),
        RTCRtcpFeedback(type="nack", parameter="pli"),
        RTCRtcpFeedback(type="ccm", parameter="fir"),
        RTCRtcpFeedback(type="goog-remb"),
    ]
    video: list[RTCRtpCodecParameters] = []
    for index, profile_level_id in enumerate(H264_PROFILE_LEVEL_IDS):
        payload_type = VIDEO_PAYLOAD_TYPE_BASE + 2 * index
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=90000,
                payloadType=payload_type,
                rtcpFeedback=list(feedback),
                parameters={
                    "level-asymmetry-allowed": "1",
                    "packetization-mode": "1",
                    "profile-level-id": profile_level_id,
                },
            )
        )
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/rtx",
                clockRate=90000,
                payloadType=payload_type + 1,
                parameters={"apt": payload_type},
            )
        )
    #: VP9 (RFC 9628) after every H.264 entry: answered only to offers without H.264
    #: (see `codec_preferences`), since Safari's HLS and legacy RTMP players need H.264
    video.append(
        RTCRtpCodecParameters(
            mimeType="video/VP9",
            clockRate=90000,
            payloadType=VP9_PAYLOAD_TYPE,
            rtcpFeedback=list(feedback),
            parameters={"profile-id": "0"},
        )
    )
    video.append(
        RTCRtpCodecParameters(
            mimeType="video/rtx",
            clockRate=90000,
            payloadType=VP9_PAYLOAD_TYPE + 1,
            parameters={"apt": VP9_PAYLOAD_TYPE},
        )
    )
    aiortc.rtp.DYNAMIC_PAYLOAD_TYPES = DYNAMIC_PAYLOAD_TYPES  # type: ignore[assignment]
    CODECS["video"][:] = video
    CODECS["audio"][:] = [
        RTCRtpCodecParameters(
            mimeType="audio/opus", clockRate=48000, channels=2, payloadType=OPUS_PAYLOAD_TYPE
        )
    ]


#: What the receiver depacketizes; the table may hold more for WHEP's senders (AV1)
RECEIVED_MIME_TYPES = frozenset({"video/h264", "video/vp9", "video/rtx", "audio/opus"})


def codec_preferences(kind: str) -> list[Any]:
    """Receive capabilities in preference order: H.264 before VP9, RTX kept."""
    from aiortc import RTCRtpReceiver  # noqa: PLC0415 - aiortc is set up by configure_codecs

    capabilities = RTCRtpReceiver.getCapabilities(kind)
    assert capabilities is not None
    rank = {"video/h264": 0, "video/vp9": 1}
    received = [c for c in capabilities.codecs if c.mimeType.lower() in RECEIVED_MIME_TYPES]
    return sorted(received, key=lambda c: rank.get(c.mimeType.lower(), 2))


def restrict_host_addresses(addresses: list[str], *, include_loopback: bool = True) -> None:
    """Which local addresses ICE offers: `addresses`, else every one (+ loopback)."""
    original: Callable[[bool, bool], list[str]] = getattr(
        aioice.ice, "_rtmp_ingest_original", aioice.ice.get_host_addresses
    )
    aioice.ice._rtmp_ingest_original = original  # type: ignore[attr-defined]

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if addresses:
            return list(addresses)
        found = original(use_ipv4, use_ipv6)
        if include_loopback and use_ipv4 and LOOPBACK_V4 not in found:
            found.insert(0, LOOPBACK_V4)
        return found

    aioice.ice.get_host_addresses = host_addresses


class PortRangeLoop(asyncio.SelectorEventLoop):
    """An event loop that binds "any UDP port" within `port_range` (inclusive)."""

    port_range: tuple[int, int] | None = None

    async def create_datagram_endpoint(
        self, protocol_factory: Any, local_addr: Any = None, remote_addr: Any = None, **kwargs: Any
    ) -> Any:
        span = self.port_range
        if span is None or local_addr is None or local_addr[1] != 0 or remote_addr is not None:
            return await super().create_datagram_endpoint(
                protocol_factory, local_addr=local_addr, remote_addr=remote_addr, **kwargs
            )
        low, high = span
        count = high - low + 1
        first = random.randrange(count)
        for step in range(count):
            port = low + (first + step) % count
            try:
                return await super().create_datagram_endpoint(
                    protocol_factory, local_addr=(local_addr[0], port), **kwargs
                )
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
        raise OSError(errno.EADDRINUSE, f"no free UDP port in {low}-{high} (webrtc.udp_ports)")

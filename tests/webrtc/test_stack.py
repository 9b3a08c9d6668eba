"""aiortc/aioice setup of the WebRTC process: UDP port range, host addresses, codecs."""

from __future__ import annotations

import asyncio
import socket

import aioice.ice
import pytest

from rtmp_ingest.webrtc import stack


def free_udp_range(size: int) -> tuple[int, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    low = min(base, 65535 - size)
    return low, low + size - 1


def test_datagram_endpoints_bind_inside_the_range_and_say_when_it_is_full() -> None:
    low, high = free_udp_range(3)

    async def bind_all() -> list[int]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, stack.PortRangeLoop)
        loop.port_range = (low, high)
        ports, transports = [], []
        try:
            for _ in range(high - low + 1):
                transport, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
                )
                transports.append(transport)
                ports.append(transport.get_extra_info("sockname")[1])
            with pytest.raises(OSError, match=r"webrtc\.udp_ports"):
                await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
                )
        finally:
            for transport in transports:
                transport.close()
        return ports

    with asyncio.Runner(loop_factory=stack.PortRangeLoop) as runner:
        ports = runner.run(bind_all())
    assert sorted(ports) == list(range(low, high + 1))


def test_host_addresses_configured_or_every_one_plus_loopback() -> None:
    saved = aioice.ice.get_host_addresses
    try:
        stack.restrict_host_addresses(["127.0.0.1"])
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
        stack.restrict_host_addresses([], include_loopback=True)
        found = aioice.ice.get_host_addresses(True, False)
        assert found[0] == "127.0.0.1"
        stack.restrict_host_addresses([], include_loopback=False)
        assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)
    finally:
        aioice.ice.get_host_addresses = saved


def test_codecs_are_h264_mode_1_in_every_profile_and_opus() -> None:
    from aiortc.codecs import CODECS

    saved = {kind: list(codecs) for kind, codecs in CODECS.items()}
    try:
        stack.configure_codecs()
        video = [c for c in CODECS["video"] if c.mimeType == "video/H264"]
        assert {c.parameters["profile-level-id"][:4] for c in video} == {
            "42e0",
            "4200",
            "4d00",
            "640c",
            "6400",
        }
        assert all(c.parameters["packetization-mode"] == "1" for c in video)
        assert [c.mimeType for c in CODECS["audio"]] == ["audio/opus"]
    finally:
        for kind, codecs in saved.items():
            CODECS[kind][:] = codecs

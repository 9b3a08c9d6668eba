"""Handshake: plain (echo) and Flash digest, both roles, whole and byte by byte."""

from __future__ import annotations

import pytest

from rtmp_ingest.rtmp.errors import RemoteProtocolError
from rtmp_ingest.rtmp.handshake import (
    CLIENT_VERSION,
    FMS_KEY,
    FMS_KEY_TEXT_LEN,
    FP_KEY,
    FP_KEY_TEXT_LEN,
    SIG_SIZE,
    ClientHandshake,
    ServerHandshake,
    find_digest,
    make_digest_packet,
    make_response_packet,
)

from .helpers import pieces


def feed(side, data: bytes, bytewise: bool) -> bytes:
    rest = b""
    for piece in pieces(data, bytewise):
        rest += side.receive_data(piece)
    return rest


@pytest.mark.parametrize("digest", [True, False], ids=["digest", "plain"])
def test_client_and_server_complete_and_pass_on_following_bytes(digest, bytewise):
    client, server = ClientHandshake(digest=digest), ServerHandshake()
    c0c1 = client.data_to_send()
    assert len(c0c1) == 1 + SIG_SIZE and c0c1[0] == 3
    assert feed(server, c0c1, bytewise) == b""
    s0s1s2 = server.data_to_send()
    assert len(s0s1s2) == 1 + 2 * SIG_SIZE
    assert server.digest_used is digest
    assert feed(client, s0s1s2 + b"first chunk", bytewise) == b"first chunk"
    assert client.complete
    c2 = client.data_to_send()
    assert len(c2) == SIG_SIZE
    assert feed(server, c2 + b"chunks", bytewise) == b"chunks"
    assert server.complete
    assert server.receive_data(b"more") == b"more"


def test_plain_server_echoes_c1_as_s2():
    client, server = ClientHandshake(digest=False), ServerHandshake()
    c0c1 = client.data_to_send()
    server.receive_data(c0c1)
    s0s1s2 = server.data_to_send()
    assert s0s1s2[1 + SIG_SIZE :] == c0c1[1:]


def test_digest_server_signs_s1_with_the_media_server_key_and_s2_with_the_client_digest():
    client, server = ClientHandshake(digest=True), ServerHandshake()
    c1 = client.data_to_send()[1:]
    server.receive_data(b"\x03" + c1)
    reply = server.data_to_send()
    s1, s2 = reply[1 : 1 + SIG_SIZE], reply[1 + SIG_SIZE :]
    assert find_digest(s1, FMS_KEY[:FMS_KEY_TEXT_LEN]) is not None
    client_digest = find_digest(c1, FP_KEY[:FP_KEY_TEXT_LEN])
    assert client_digest is not None
    import hashlib
    import hmac

    key = hmac.new(FMS_KEY, client_digest, hashlib.sha256).digest()
    assert s2[-32:] == hmac.new(key, s2[:-32], hashlib.sha256).digest()


@pytest.mark.parametrize("scheme", [0, 1])
def test_both_digest_schemes_are_recognised(scheme):
    c1 = make_digest_packet(CLIENT_VERSION, FP_KEY[:FP_KEY_TEXT_LEN], scheme=scheme)
    server = ServerHandshake()
    server.receive_data(b"\x03" + c1)
    assert server.digest_used


def test_nonzero_version_without_valid_digest_falls_back_to_echo():
    c1 = bytes(4) + b"\x09\x00\x7c\x02" + bytes(SIG_SIZE - 8)
    server = ServerHandshake()
    server.receive_data(b"\x03" + c1)
    assert not server.digest_used
    assert server.data_to_send()[1 + SIG_SIZE :] == c1


def test_response_packet_is_signed_with_a_key_derived_from_the_peer_digest():
    packet = make_response_packet(b"d" * 32, FP_KEY)
    assert len(packet) == SIG_SIZE


@pytest.mark.parametrize("version", [0, 6, 8, 0xFF])
def test_server_refuses_other_rtmp_versions(version):
    with pytest.raises(RemoteProtocolError, match="version"):
        ServerHandshake().receive_data(bytes([version]))


def test_client_refuses_a_server_answering_another_version():
    client = ClientHandshake()
    with pytest.raises(RemoteProtocolError, match="version"):
        client.receive_data(b"\x06" + bytes(10))


def test_server_handshake_waits_for_c2():
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(SIG_SIZE) + bytes(SIG_SIZE - 1))
    assert not server.complete
    assert server.receive_data(b"\x00") == b""
    assert server.complete

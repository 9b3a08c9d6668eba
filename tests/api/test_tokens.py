"""POST /api/v1/tokens: every bad body is a 4xx with a message; minted tokens verify."""

from __future__ import annotations

import json
import time

import httpx
import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, given, settings

from rtmp_ingest.api.claims import MAX_JSON_DEPTH, MAX_PORTABLE_TOKEN_BYTES, parse_json_body
from rtmp_ingest.auth import tokens
from tests.api.conftest import build_app
from tests.api.fake import FakeServer


async def post(client, body: bytes | str):
    return await client.post(
        "/api/v1/tokens", content=body, headers={"Content-Type": "application/json"}
    )


async def test_a_good_request_mints_a_token_the_server_accepts(client, server):
    response = await client.post(
        "/api/v1/tokens", json={"streams": ["live/*"], "multisource": True, "ttl": "1h"}
    )
    assert response.status_code == 201
    token = response.json()["token"]
    claims = tokens.verify(
        token,
        server.secret,
        stream_path="live/show",
        source_id="cam1",
        remote_ip="10.0.0.1",
        now_s=time.time(),
    )
    assert claims.multisource and claims.expires_at is not None
    assert server.keyring is not None and server.keyring.issued == [(claims.token_id, "api")]


@pytest.mark.parametrize(
    "body",
    [
        '{"streams": ["live/x"], "expiresAt": NaN}',
        '{"streams": ["live/x"], "expiresAt": Infinity}',
        '{"streams": ["live/x"], "expiresAt": -Infinity}',
        '{"streams": ["live/x"], "expiresAt": 1e400}',
        '{"streams": ["live/x"], "expiresAt": 1e308}',
        '{"streams": ["live/x"], "expiresAt": 1}',
        '{"streams": ["live/x"], "expiresAt": ' + "9" * 5000 + "}",
        '{"streams": ["live/x"], "ttl": 1e400}',
        '{"streams": ["live/x"], "ttl": "' + "9" * 400 + 'd"}',
        '{"streams": ["live/x"], "ttl": 0.5}',
        '{"streams": ["live/x"], "expiresAt": true}',
        '{"streams": ' + "[" * 100000 + "]" * 100000 + "}",
        "[" * 50 + "]" * 50,
        '{"streams": [' + ",".join(['"live/' + "x" * 500 + '"'] * 64) + "]}",
        '{"streams": []}',
        '{"streams": "live/x"}',
        "{",
        b"\xff\xfe",
        "null",
    ],
)
async def test_bad_bodies_are_400_with_a_message(client, body):
    response = await post(client, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


async def test_a_token_longer_than_the_server_accepts_is_never_minted(client):
    # 64 streams of 60 characters fit every per-field limit but not one token
    streams = [f"live/{i:02d}-" + "x" * 52 for i in range(64)]
    response = await client.post("/api/v1/tokens", json={"streams": streams})
    assert response.status_code == 400
    assert str(tokens.MAX_TOKEN_BYTES) in response.json()["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    ["streams", "ttl", "expiresAt", "multisource", "record", "label", "networks", "sourceIds"]
)


@settings(suppress_health_check=[HealthCheck.too_slow])  # a busy 2-core machine
@given(st.dictionaries(keys, json_values, max_size=6))
def test_any_json_object_is_minted_or_refused_never_an_error(body):
    server = FakeServer()

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_app(server))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await post(client, json.dumps(body))

    response = trio.run(run)
    assert response.status_code in (201, 400), response.text
    if response.status_code == 201:
        token = response.json()["token"]
        assert len(token) <= tokens.MAX_TOKEN_BYTES
        assert tokens.decode(token, server.secret).token_id == response.json()["id"]
    else:
        assert response.json()["error"]


def test_the_json_reader_bounds_nesting_without_recursing():
    assert parse_json_body(b'{"a": [[1]]}') == {"a": [[1]]}
    with pytest.raises(ValueError, match="nested"):
        parse_json_body(("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)).encode())


async def test_a_token_too_long_for_ffmpeg_is_minted_with_a_warning(client):
    short = await client.post("/api/v1/tokens", json={"streams": ["live/*"]})
    assert "warning" not in short.json()
    streams = [f"live/room-{i:02d}-" + "x" * 40 for i in range(20)]
    long = await client.post("/api/v1/tokens", json={"streams": streams})
    assert long.status_code == 201
    assert len(long.json()["token"]) > MAX_PORTABLE_TOKEN_BYTES
    assert "ffmpeg" in long.json()["warning"]

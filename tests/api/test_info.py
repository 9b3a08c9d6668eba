"""Health, version and the effective config, against a fake server."""

from __future__ import annotations

import pytest

from rtmp_ingest import __version__
from rtmp_ingest import config as config_mod
from tests.api.fake import FakeServer


async def test_healthz_is_200_while_every_listener_is_up(client, server):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "listeners": {"rtmp": True, "http": True},
        "version": __version__,
    }


async def test_healthz_is_503_and_names_the_listener_that_is_down(client, server):
    server.listeners["rtmp"] = False
    response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["listeners"] == {"rtmp": False, "http": True}
    server.listeners.clear()
    assert (await client.get("/healthz")).status_code == 503  #: nothing listening yet


async def test_healthz_needs_no_admin_key_but_the_api_does(client_for):
    server = FakeServer(http={"admin_key": "k" * 24})
    async with client_for(server) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/api/v1")).status_code == 401
        assert (await client.get("/api/v1/config")).status_code == 401
        ok = await client.get("/api/v1", headers={"Authorization": "Bearer " + "k" * 24})
        assert ok.status_code == 200


async def test_the_version_is_in_the_api_and_every_response(client):
    response = await client.get("/api/v1")
    assert response.json() == {"name": "rtmp-ingest", "version": __version__}
    assert response.headers["server"] == f"rtmp-ingest/{__version__}"
    streams = await client.get("/api/v1/streams")
    assert streams.headers["server"] == f"rtmp-ingest/{__version__}"
    assert (await client.get("/nope")).headers["server"] == f"rtmp-ingest/{__version__}"


async def test_the_config_is_the_effective_one_with_secrets_masked(client_for):
    server = FakeServer(
        auth={
            "mode": "token",
            "secret": "s3cret-s3cret-s3cret-s3cret",
            "hooks": {"url": "https://hook:pa55w0rd@hooks.example/publish"},
        },
        http={
            "admin_key": "admin-admin-admin-admin",
            "hlsjs_url": "https://mirror:hunter2@assets.example:8443/hls.min.js",
        },
        rtmp={"chunk_size": 8192},
    )
    async with client_for(server) as client:
        response = await client.get(
            "/api/v1/config", headers={"Authorization": "Bearer admin-admin-admin-admin"}
        )
    assert response.status_code == 200
    text = response.text
    for secret in ("s3cret", "admin-admin", "hunter2", "pa55w0rd"):
        assert secret not in text
    config = response.json()["config"]
    assert config["auth"]["mode"] == "token" and config["auth"]["secret"] == "***"
    assert config["auth"]["hooks"]["url"] == "https://hook:***@hooks.example/publish"
    assert config["http"]["admin_key"] == "***"
    assert config["http"]["hlsjs_url"] == "https://mirror:***@assets.example:8443/hls.min.js"
    assert config["rtmp"]["chunk_size"] == 8192  #: the merged value, not the default
    assert response.json()["version"]


async def test_metrics_carry_the_build_info(client):
    text = (await client.get("/metrics")).text
    assert f'rtmp_ingest_build_info{{version="{__version__}"}} 1.0' in text


@pytest.mark.parametrize(
    "key", ["max_body_bytes", "write_timeout_s", "max_connections", "max_connections_per_address"]
)
def test_an_http_limit_of_zero_is_a_config_error_naming_the_key(key):
    with pytest.raises(config_mod.ConfigError, match=key):
        config_mod.load(None, overrides={"http": {key: 0}})

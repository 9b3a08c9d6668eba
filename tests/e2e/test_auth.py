"""End to end: publish tokens and the multisource gates (docs/spec.md §3.7, §5)."""

from __future__ import annotations

import inspect
import time

import pytest
import trio

from rtmp_ingest.app import App as Daemon
from rtmp_ingest.auth import tokens
from tests.tools import clients

pytestmark = pytest.mark.e2e
needs_rtmpsink = pytest.mark.skipif(
    not clients.have_gst_element("rtmpsink"), reason="librtmp sink missing"
)
needs_ffmpeg = pytest.mark.skipif(not clients.have("ffmpeg"), reason="ffmpeg CLI not installed")

TOKEN_MODE = {"auth": {"mode": "token", "secret": "test-secret-test-secret-0123456789"}}


async def mint(running, **body):
    response = await running.request("POST", "/api/v1/tokens", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def refused_quickly(spawn, argv, within_s=10.0):
    client = await spawn(argv)
    start = trio.current_time()
    code = await client.wait(timeout_s=within_s)
    return code, trio.current_time() - start


async def test_token_without_multisource_cannot_publish_a_source_id(start_daemon, spawn):
    running = await start_daemon(**TOKEN_MODE)
    token = (await mint(running, streams=["live/*"]))["token"]
    code, seconds = await refused_quickly(
        spawn, clients.pyav(running.url("live/a", sourceId="cam1", token=token), 5)
    )
    assert code != 0 and seconds < 5
    assert await running.sources("live/a") == {}
    text = (await running.get("/metrics")).text
    assert 'rtmp_ingest_publishes_refused_total{reason="multisource-not-permitted"} 1.0' in text


@needs_rtmpsink
async def test_librtmp_client_refused_exits_instead_of_hanging(start_daemon, spawn):
    running = await start_daemon(**TOKEN_MODE)
    token = (await mint(running, streams=["live/*"]))["token"]
    code, seconds = await refused_quickly(
        spawn, clients.gstreamer(running.url("live/a", sourceId="cam1", token=token), 5, "rtmpsink")
    )
    assert code != 0 and seconds < 8


async def test_multisource_token_publishes_sources_and_the_default(start_daemon, spawn):
    running = await start_daemon(**TOKEN_MODE)
    token = (await mint(running, streams=["live/show"], multisource=True))["token"]
    a = await spawn(clients.pyav(running.url("live/show", sourceId="cam1", token=token), 3))
    b = await spawn(clients.pyav(running.url("live/show", token=token), 3))

    async def both():
        sources = await running.sources("live/show")
        return {k for k, v in sources.items() if v["state"] == "live"} == {"cam1", ""}

    await running.wait_for(both)
    assert await a.wait() == 0 and await b.wait() == 0


@pytest.mark.parametrize(
    "case", ["missing", "wrong-stream", "expired", "revoked", "forged", "source-not-allowed"]
)
async def test_bad_tokens_are_refused(start_daemon, spawn, case):
    running = await start_daemon(**TOKEN_MODE)
    body = {"streams": ["live/ok"], "multisource": True}
    if case == "source-not-allowed":
        body["sourceIds"] = ["cam2"]
    minted = await mint(running, **body)
    token = minted["token"]
    path = "live/ok"
    if case == "missing":
        token = ""
    elif case == "wrong-stream":
        path = "live/other"
    elif case == "expired":
        claims = tokens.decode(token, running.daemon.secret)
        token = tokens.mint(
            tokens.TokenClaims(
                token_id="x", streams=claims.streams, multisource=True, expires_at=time.time() - 1
            ),
            running.daemon.secret,
        )
    elif case == "revoked":
        response = await running.request("POST", f"/api/v1/tokens/{minted['id']}/revoke")
        assert response.json()["revoked"] is True
    elif case == "forged":
        token = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    query = {"sourceId": "cam1"}
    if token:
        query["token"] = token
    code, seconds = await refused_quickly(spawn, clients.pyav(running.url(path, **query), 5))
    assert code != 0 and seconds < 5
    assert await running.sources(path) == {}


async def test_app_without_multisource_refuses_source_ids_but_not_the_default(start_daemon, spawn):
    running = await start_daemon(apps={"*": {"multisource": False}})
    code, _ = await refused_quickly(spawn, clients.pyav(running.url("live/x", sourceId="cam1"), 4))
    assert code != 0
    ok = await spawn(clients.pyav(running.url("live/x"), 2))
    assert await ok.wait() == 0


@needs_ffmpeg
async def test_rtmps_with_a_self_signed_certificate(start_daemon, spawn, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    running = await start_daemon(
        rtmps={"listen": "127.0.0.1:0", "cert_file": str(cert_file), "key_file": str(key_file)}
    )
    url = f"rtmps://127.0.0.1:{running.rtmps_port}/live/secure?sourceId=cam1"
    client = await spawn(clients.ffmpeg(url, 3))
    source = await running.wait_for(lambda: _live(running, "live/secure", "cam1"), timeout_s=15)
    assert source["onAir"]["bytesIn"] > 0
    assert await client.wait() == 0


async def _live(running, stream, source_id):
    source = (await running.sources(stream)).get(source_id)
    return source if source and source["state"] == "live" else None


@pytest.mark.parametrize(
    "body",
    [
        '{"streams": ["live/*"], "expiresAt": NaN}',
        '{"streams": ["live/*"], "expiresAt": Infinity}',
        '{"streams": ["live/*"], "expiresAt": 1e999}',
        '{"streams": ["live/*"], "expiresAt": ' + "9" * 5000 + "}",
        '{"streams": ' + "[" * 20000 + "]" * 20000 + "}",
        '{"streams": [' + ",".join(['"live/' + "x" * 500 + '"'] * 64) + "]}",
    ],
)
async def test_token_requests_the_server_cannot_honour_are_400_not_500(start_daemon, body):
    running = await start_daemon(**TOKEN_MODE)
    response = await running.request(
        "POST", "/api/v1/tokens", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] and "Traceback" not in response.text
    assert (await mint(running, streams=["live/*"]))["token"]  #: the API still serves


async def test_a_token_with_many_claims_is_one_the_server_and_ffmpeg_accept(start_daemon, spawn):
    running = await start_daemon(**TOKEN_MODE)
    many = [f"live/room-{i:02d}-" + "x" * 40 for i in range(40)] + ["live/big"]
    too_long = await mint(running, streams=many, multisource=True, label="x" * 128, ttl="1h")
    assert len(too_long["token"]) <= tokens.MAX_TOKEN_BYTES
    assert "ffmpeg" in too_long["warning"]  #: minted, with what it means for encoders
    streams = [f"live/room-{i:02d}-" + "x" * 40 for i in range(6)] + ["live/big"]
    minted = await mint(running, streams=streams, multisource=True, label="x" * 40, ttl="1h")
    assert "warning" not in minted
    publisher = await spawn(
        clients.pyav(running.url("live/big", sourceId="cam1", token=minted["token"]), 3)
    )

    async def live():
        source = (await running.sources("live/big")).get("cam1")
        return source if source and source["state"] == "live" else None

    await running.wait_for(live, timeout_s=20)
    assert await publisher.wait() == 0


needs_bans = pytest.mark.skipif(
    "ban_s" not in inspect.signature(Daemon.kick_source).parameters
    or not hasattr(Daemon, "kick_feed"),
    reason="the daemon has no kick bans / kick_feed yet (api/defs.py)",
)


@needs_bans
async def test_a_kick_with_a_ban_sends_a_reconnecting_encoder_away(start_daemon, spawn):
    running = await start_daemon()
    await spawn(clients.pyav(running.url("live/ban", sourceId="cam1"), 30))
    source = await running.wait_for(lambda: _live(running, "live/ban", "cam1"), timeout_s=20)
    response = await running.request(
        "DELETE", "/api/v1/streams/live/ban/sources/cam1", params={"ban_s": "60"}
    )
    assert response.status_code == 200 and response.json()["banS"] == 60.0
    assert response.json()["feedId"] == source["onAir"]["id"]
    # the same encoder from the same address is refused while the ban lasts
    code, _ = await refused_quickly(
        spawn, clients.pyav(running.url("live/ban", sourceId="cam1"), 5)
    )
    assert code != 0
    source = (await running.sources("live/ban")).get("cam1")
    assert source is None or source["onAir"] is None  #: gone, or its grace running out


@needs_bans
async def test_a_standby_feed_is_kicked_by_its_feed_id(start_daemon, spawn):
    running = await start_daemon()
    await spawn(clients.pyav(running.url("live/kf", sourceId="cam1"), 30))
    await running.wait_for(lambda: _live(running, "live/kf", "cam1"), timeout_s=20)
    await spawn(clients.pyav(running.url("live/kf", sourceId="cam1", priority="-1"), 30))

    async def standby():
        source = (await running.sources("live/kf")).get("cam1")
        return source["standby"][0] if source and source["standby"] else None

    feed = await running.wait_for(standby, timeout_s=20)
    response = await running.request("DELETE", f"/api/v1/streams/live/kf/feeds/{feed['id']}")
    assert response.status_code == 200 and response.json()["feedId"] == feed["id"]

    async def gone():
        source = (await running.sources("live/kf")).get("cam1")
        return source is not None and not source["standby"] and source["onAir"] is not None

    await running.wait_for(gone, timeout_s=15)
    missing = await running.request("DELETE", "/api/v1/streams/live/kf/feeds/999999")
    assert missing.status_code == 404


async def _live(running, stream, source_id):
    source = (await running.sources(stream)).get(source_id)
    return source if source and source["state"] == "live" else None

"""Publish hooks against a real HTTP server on loopback (issue 15, "publish hooks")."""

from __future__ import annotations

import socket

import pytest
import trio

from rtmp_ingest.auth import hooks as hooks_mod
from rtmp_ingest.auth import tokens
from rtmp_ingest.auth.authorize import Authorizer, PlayAttempt
from rtmp_ingest.auth.hooks import MAX_REASON_CHARS, open_hook_client, plain_text
from rtmp_ingest.auth.keyring import Keyring
from rtmp_ingest.auth.policy import (
    RTMP_REJECTED,
    Permit,
    Policy,
    PolicySettings,
    PublishAttempt,
    Refusal,
    RefusalCode,
)
from rtmp_ingest.auth.tokens import TokenClaims
from rtmp_ingest.config import HooksConfig
from tests.auth.hookserver import HookServer

NOW = 1_800_000_000.0
KEYRING = Keyring(b"hook-test-secret-0123456789", data_dir=None)
#: generous: the hook answers at once; only the timeout tests wait for it to expire
TIMEOUT_S = 10.0


def publish(path="live/show", *, token=None, **query):
    if token:
        query["token"] = token
    return PublishAttempt.from_query(
        protocol="rtmp", stream_path=path, query=query, remote="10.0.0.7:4000"
    )


def authorizer(hook, mode="open"):
    policy = Policy(PolicySettings(mode=mode), verifier=KEYRING)
    return Authorizer(policy, hook=hook, clock=lambda: NOW)


async def _with_hook(nursery, respond, *, timeout_s=TIMEOUT_S, on_failure="deny", actions=None):
    server = HookServer(respond)
    await nursery.start(server.serve)
    settings = HooksConfig(
        url=server.url,
        timeout_s=timeout_s,
        on_failure=on_failure,
        actions=actions or ["publish", "unpublish", "play"],
    )
    return server, settings


async def test_a_2xx_answer_allows_and_the_hook_sees_the_publish():
    token = tokens.mint(
        TokenClaims(token_id="tid", streams=("live/*",), multisource=True, label="venue A"),
        KEYRING.secret,
    )
    async with trio.open_nursery() as nursery:
        server, settings = await _with_hook(nursery, lambda body: (204, b""))
        async with open_hook_client(settings) as hook:
            decision = await authorizer(hook, "token").authorize(
                publish(token=token, sourceId="cam1", custom="x")
            )
            assert isinstance(decision, Permit)
            sent = server.received.receive_nowait()
            assert hook.statistics().allowed == 1
        nursery.cancel_scope.cancel()
    assert sent["action"] == "publish" and sent["protocol"] == "rtmp"
    assert sent["app"] == "live" and sent["stream"] == "live/show" and sent["sourceId"] == "cam1"
    assert sent["query"] == {"sourceId": "cam1", "custom": "x", "token": token}
    assert sent["remoteAddr"] == "10.0.0.7:4000"
    assert sent["tokenId"] == "tid" and sent["tokenLabel"] == "venue A"
    assert sent["_headers"]["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (403, b"Stream key unknown\n", "Publish refused: Stream key unknown"),
        (500, b"", "Publish refused: refused by the publish hook (HTTP 500)"),
        (302, b"see elsewhere", "Publish refused: see elsewhere"),  #: redirects are not followed
        (401, b"bad\r\nINFO forged\x00line", "Publish refused: bad INFO forged line"),
    ],
)
async def test_any_other_answer_refuses_with_its_body(status, body, reason):
    async with trio.open_nursery() as nursery:
        _server, settings = await _with_hook(nursery, lambda _: (status, body))
        async with open_hook_client(settings) as hook:
            refusal = await authorizer(hook).authorize(publish(sourceId="cam1"))
        nursery.cancel_scope.cancel()
    assert isinstance(refusal, Refusal)
    assert refusal.code is RefusalCode.HOOK_DENIED
    assert refusal.status_text == reason
    assert (refusal.http_status, refusal.rtmp_code) == (403, RTMP_REJECTED)
    assert "\n" not in refusal.log_text and f"HTTP {status}" in refusal.log_text


async def test_a_huge_answer_is_read_only_in_part_and_shown_truncated():
    async with trio.open_nursery() as nursery:
        _server, settings = await _with_hook(nursery, lambda _: (403, b"no " * 500_000))
        async with open_hook_client(settings) as hook:
            refusal = await authorizer(hook).authorize(publish())
        nursery.cancel_scope.cancel()
    assert isinstance(refusal, Refusal)
    assert len(refusal.status_text) <= len("Publish refused: ") + MAX_REASON_CHARS
    assert refusal.status_text.endswith("...")


async def test_the_hook_is_not_asked_when_the_policy_refuses():
    async with trio.open_nursery() as nursery:
        server, settings = await _with_hook(nursery, lambda _: (200, b""))
        async with open_hook_client(settings) as hook:
            refusal = await authorizer(hook, "token").authorize(publish())
            assert isinstance(refusal, Refusal) and refusal.code is RefusalCode.NO_TOKEN
            assert hook.statistics().calls == 0
        nursery.cancel_scope.cancel()
    with pytest.raises(trio.WouldBlock):
        server.received.receive_nowait()


@pytest.mark.parametrize(("on_failure", "allowed"), [("deny", False), ("allow", True)])
async def test_a_hook_that_does_not_answer_in_time_follows_the_failure_policy(on_failure, allowed):
    async with trio.open_nursery() as nursery:
        server, settings = await _with_hook(
            nursery, lambda _: None, timeout_s=0.2, on_failure=on_failure
        )
        async with open_hook_client(settings) as hook:
            decision = await authorizer(hook).authorize(publish())
            assert server.received.receive_nowait()["action"] == "publish"
            assert hook.statistics().failures == 1
        nursery.cancel_scope.cancel()
    if allowed:
        assert isinstance(decision, Permit)
    else:
        assert isinstance(decision, Refusal)
        assert decision.code is RefusalCode.HOOK_UNAVAILABLE and decision.http_status == 503
        assert "unavailable" in decision.status_text
        assert "no answer within 0.2 s" in decision.log_text


async def test_a_hook_nobody_listens_on_is_a_failure():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = HooksConfig(url=f"http://127.0.0.1:{port}/hook", timeout_s=TIMEOUT_S)
    async with open_hook_client(settings) as hook:
        refusal = await authorizer(hook).authorize(publish())
    assert isinstance(refusal, Refusal) and refusal.code is RefusalCode.HOOK_UNAVAILABLE
    assert "ConnectError" in refusal.log_text


async def test_play_is_asked_and_refused_with_a_play_code():
    answers = iter([(200, b""), (403, b"subscribers only")])
    async with trio.open_nursery() as nursery:
        server, settings = await _with_hook(nursery, lambda _: next(answers))
        async with open_hook_client(settings) as hook:
            auth = authorizer(hook)
            play = PlayAttempt(
                protocol="httpflv", stream_path="live/show", source_id="cam1", remote="1.2.3.4:5"
            )
            assert await auth.authorize_play(play) is None
            refusal = await auth.authorize_play(play)
            sent = server.received.receive_nowait()
        nursery.cancel_scope.cancel()
    assert sent["action"] == "play" and sent["protocol"] == "httpflv"
    assert sent["sourceId"] == "cam1"
    assert refusal is not None and refusal.code is RefusalCode.HOOK_DENIED
    assert refusal.status_text == "Play refused: subscribers only"
    assert refusal.rtmp_code == "NetStream.Play.Failed"
    assert refusal.log_text.startswith("play refused")


async def test_unpublish_is_a_background_notification():
    async with trio.open_nursery() as nursery:
        server, settings = await _with_hook(nursery, lambda _: (500, b"ignored"))
        async with open_hook_client(settings) as hook:
            authorizer(hook).unpublished(publish(sourceId="cam1"), reason="unpublish")
            with trio.fail_after(TIMEOUT_S):
                sent = await server.received.receive()
        nursery.cancel_scope.cancel()
    assert sent["action"] == "unpublish" and sent["reason"] == "unpublish"
    assert sent["sourceId"] == "cam1"


async def test_only_the_configured_actions_are_sent():
    async with trio.open_nursery() as nursery:
        server, settings = await _with_hook(nursery, lambda _: (403, b"no"), actions=["play"])
        async with open_hook_client(settings) as hook:
            auth = authorizer(hook)
            assert isinstance(await auth.authorize(publish()), Permit)
            auth.unpublished(publish(), reason="disconnect")
            assert hook.statistics().calls == 0
        nursery.cancel_scope.cancel()
    with pytest.raises(trio.WouldBlock):
        server.received.receive_nowait()


async def test_no_url_means_no_hook():
    async with open_hook_client(HooksConfig(url="")) as hook:
        assert not hook.wants("publish")
        assert isinstance(await authorizer(hook).authorize(publish()), Permit)


def test_plain_text():
    assert plain_text(b"a\x00b\r\nc\t d") == "a b c d"
    assert plain_text(b"\xff ok") == "\ufffd ok"
    assert plain_text("x" * 500, max_chars=10) == "xxxxxxx..."


async def test_notifications_beyond_the_bound_are_dropped_and_counted(monkeypatch):
    monkeypatch.setattr(hooks_mod, "MAX_PENDING_NOTIFICATIONS", 2)
    async with trio.open_nursery() as nursery:
        server, settings = await _with_hook(nursery, lambda _: None)  #: never answers
        async with open_hook_client(settings) as hook:
            auth = authorizer(hook)
            for _ in range(5):
                auth.unpublished(publish(), reason="disconnect")
            with trio.fail_after(TIMEOUT_S):
                await server.received.receive()
                await server.received.receive()
            assert hook.statistics().notifications_dropped == 3
        nursery.cancel_scope.cancel()

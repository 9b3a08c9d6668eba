"""The SRT driver on loopback with a real libsrt caller: admission before accept, media
into a real bundle registry, kicks, passphrases, limits. The publish policy is a fake
with the shape of `auth.policy.decide`."""

from __future__ import annotations

import enum
import logging
from typing import Any

import attrs
import pytest
import trio

from rtmp_ingest.bundle import EndReason, Media, Permissions, PublishRequest, Registry
from rtmp_ingest.config import SrtConfig
from rtmp_ingest.server.srt import SrtPublishAttempt, SrtServer
from rtmp_ingest.srt import lib
from rtmp_ingest.ts import TsMedia
from tests.srt import caller
from tests.ts.media import encode_ts

pytestmark = pytest.mark.skipif(
    not lib.available(), reason="libsrt not installed (apt-get install libsrt1.5-openssl)"
)


class Code(enum.Enum):
    BAD_TOKEN = "bad-token"
    UNKNOWN_APP = "unknown-app"


@attrs.frozen
class Permit:
    request: PublishRequest
    record: bool = False


@attrs.frozen
class Refusal:
    code: Code
    log_text: str
    status_text: str
    http_status: int


def decide(attempt: SrtPublishAttempt, *, now_s: float) -> Permit | Refusal:
    if attempt.app != "live":
        return Refusal(Code.UNKNOWN_APP, f"no app {attempt.app!r}", "Unknown app.", 404)
    if attempt.token == "bad":
        return Refusal(Code.BAD_TOKEN, "token signature wrong", "Bad token.", 401)
    return Permit(
        PublishRequest(
            stream_path=f"{attempt.app}/{attempt.stream}",
            source_id=attempt.source_id,
            permissions=Permissions(app_multisource=True, token_multisource=True),
            remote_addr=attempt.remote,
            query=tuple(attempt.query.items()),
        )
    )


class Host:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.started: list[Any] = []
        self.ended: list[tuple[Any, EndReason]] = []
        self.changed = trio.Event()

    def feed_started(self, session: Any) -> None:
        self.started.append(session)
        self.changed.set()

    def end_feed(self, session: Any, reason: EndReason) -> None:
        self.ended.append((session, reason))
        self.registry.end_feed(session.feed, reason, now_s=trio.current_time())
        self.changed.set()


async def start(nursery: trio.Nursery, **settings: Any) -> tuple[SrtServer, Host, int]:
    host = Host(Registry())
    config = SrtConfig(listen="127.0.0.1:0", **settings)
    server = SrtServer(host, config, decide=decide)
    bound = await nursery.start(server.run)
    return server, host, bound[1]


async def wait_until(predicate: Any, timeout_s: float = 5.0) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.02)


async def publish(port: int, stream_id: str, data: bytes, **kwargs: Any) -> int:
    sock = await trio.to_thread.run_sync(lambda: caller.connect(port, stream_id, **kwargs))
    await trio.to_thread.run_sync(caller.send_ts, sock, data)
    return sock


async def rejected(port: int, stream_id: str, **kwargs: Any) -> int:
    with pytest.raises(caller.Rejected) as info:
        await trio.to_thread.run_sync(lambda: caller.connect(port, stream_id, **kwargs))
    return info.value.reason


async def test_publish_reaches_the_bundle(nursery: trio.Nursery) -> None:
    server, host, port = await start(nursery)
    data = encode_ts("h264", "aac")
    sock = await publish(port, "#!::r=live/show,m=publish,sourceId=cam1", data)
    registry = host.registry
    await wait_until(lambda: host.started)
    session = host.started[0]
    assert (session.protocol, session.stream_path, session.source_id) == (
        "srt",
        "live/show",
        "cam1",
    )
    await wait_until(
        lambda: registry.feed_statistics(session.feed, now_s=trio.current_time()).keyframes_in >= 1
    )
    stats = registry.source_statistics("live/show", "cam1", now_s=trio.current_time())
    assert stats is not None and stats.on_air_feed_id == session.feed.feed_id
    await wait_until(lambda: session.media.demux.packets == len(data) // 188)
    feed = registry.feed_statistics(session.feed, now_s=trio.current_time())
    assert {t.media for t in feed.tracks} == {Media.VIDEO, Media.AUDIO}
    expected = TsMedia().receive(data)  # the last video frame waits for the next PES
    assert feed.frames_in == len(expected) and session.media.dropped == 0
    link = session.statistics()
    assert link["packets_received"] >= len(data) // 1316 and link["rtt_ms"] >= 0
    assert session.remote.startswith("127.0.0.1:")
    caller.close(sock)
    await wait_until(lambda: host.ended)
    assert host.ended[0][1] is EndReason.DISCONNECT
    assert not server.sessions


@pytest.mark.parametrize(
    ("stream_id", "reason", "code"),
    [
        ("live/show?token=bad", 1401, "bad-token"),
        ("other/show", 1404, "unknown-app"),
        ("#!::r=live/show,m=request", 1405, "bad-stream-id"),
        ("live", 1400, "bad-stream-id"),
        ("live/show?sourceId=a%01b", 1400, "invalid-source-id"),
    ],
)
async def test_refused_before_accept_with_the_reason(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, stream_id: str, reason: int, code: str
) -> None:
    server, host, port = await start(nursery)
    with caplog.at_level(logging.INFO, logger="rtmp_ingest.srt"):
        assert await rejected(port, stream_id) == reason
    await wait_until(lambda: server.refused[code] == 1)
    assert not host.started and not server.sessions
    assert any(f"reason={code}" in r.getMessage() for r in caplog.records)


async def test_too_many_sources_is_1429(nursery: trio.Nursery) -> None:
    host = Host(Registry())
    from rtmp_ingest.bundle import BundleConfig

    host.registry = Registry(BundleConfig(max_sources_per_stream=1))
    server = SrtServer(host, SrtConfig(listen="127.0.0.1:0"), decide=decide)
    port = (await nursery.start(server.run))[1]
    sock = await publish(port, "live/show?sourceId=a", encode_ts("h264", None))
    assert await rejected(port, "live/show?sourceId=b") == 1429
    assert server.refused["too-many-sources"] == 1
    caller.close(sock)


async def test_connection_limit(nursery: trio.Nursery) -> None:
    _server, _, port = await start(nursery, max_connections=1)
    sock = await publish(port, "live/show?sourceId=a", b"")
    assert await rejected(port, "live/show?sourceId=b") == 1429
    caller.close(sock)


async def test_kick_closes_the_connection(nursery: trio.Nursery) -> None:
    _server, host, port = await start(nursery)
    sock = await publish(port, "live/show", encode_ts("h264", None))
    await wait_until(lambda: host.started)
    host.started[0].kick(EndReason.KICKED, "stopped by the operator")
    await wait_until(lambda: host.ended)
    assert host.ended[0][1] is EndReason.KICKED
    #: the caller learns it from the server's shutdown packet; if a busy machine loses
    #: that, from the silence, after libsrt's peer idle timeout (SRTO_PEERIDLETIMEO, 5 s)
    await wait_until(
        lambda: (
            lib.state(sock)
            in (lib.SockStatus.BROKEN, lib.SockStatus.CLOSED, lib.SockStatus.NONEXIST)
        ),
        timeout_s=12.0,
    )
    caller.close(sock)


async def test_passphrase_per_app(nursery: trio.Nursery) -> None:
    _server, host, port = await start(nursery, passphrases={"live": "correct horse battery"})
    sock = await publish(port, "live/a", b"", passphrase="correct horse battery")
    await wait_until(lambda: len(host.started) == 1)
    with pytest.raises((caller.Rejected, lib.SrtError)):
        await trio.to_thread.run_sync(lambda: caller.connect(port, "live/b"))
    assert len(host.started) == 1
    caller.close(sock)


async def test_idle_timeout(nursery: trio.Nursery) -> None:
    _server, host, port = await start(nursery, idle_timeout_s=0.3)
    sock = await publish(port, "live/quiet", b"")
    await wait_until(lambda: host.ended)
    assert host.ended[0][1] is EndReason.IDLE_TIMEOUT
    caller.close(sock)


async def test_not_mpeg_ts_ends_the_feed(nursery: trio.Nursery) -> None:
    _server, host, port = await start(nursery)
    sock = await publish(port, "live/noise", b"\x00" * 70_000)
    await wait_until(lambda: host.ended)
    assert host.ended[0][1] is EndReason.DISCONNECT
    caller.close(sock)


async def test_port_in_use_is_a_clear_error(nursery: trio.Nursery) -> None:
    _, _, port = await start(nursery)
    other = SrtServer(Host(Registry()), SrtConfig(listen=f"127.0.0.1:{port}"), decide=decide)
    with pytest.raises(OSError, match=f"srt.listen 127.0.0.1:{port}"):
        await other.run()


async def test_shutdown_steps(nursery: trio.Nursery) -> None:
    server, host, port = await start(nursery)
    sock = await publish(port, "live/a", encode_ts("h264", None))
    await wait_until(lambda: host.started)
    server.stop_accepting()
    assert await rejected(port, "live/b") == 1503
    server.kick_all(EndReason.SHUTDOWN, "Server shutting down.")
    await wait_until(lambda: not server.sessions)
    assert host.ended[0][1] is EndReason.SHUTDOWN
    caller.close(sock)

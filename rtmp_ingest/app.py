"""The composition root: builds the bundle and every service, runs them side by side.

    registry (bundle) ─ Feeds (live feeds, event pump, clock) ─┬─ RtmpListener (RTMP/RTMPS)
                                                               ├─ HlsService, RecorderService
                                                               └─ EventHub (SSE)
    HTTP (api/: control API, events, metrics, HLS, HTTP-FLV, pages) reads them through
    the narrow view it declares.

`App.run()` opens one nursery with the listeners, the HTTP server (unless
`http.listen` is empty), the outputs and the bundle's pump and clock; it reports the
bound addresses through `task_status`, so tests bind port 0. Shutdown
(SIGINT/SIGTERM → `shutdown()`): the RTMP listener drains (see server/listener.py),
recordings are closed, SSE subscribers are told, and `run` returns within
SHUTDOWN_TIMEOUT_S plus the recorder's close. Nothing under `server/` imports `api/`
or this module: the arrows point inwards.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from rtmp_ingest.api.events import EventHub
from rtmp_ingest.auth import (
    Authorizer,
    BanList,
    Keyring,
    KeyringError,
    Permit,
    PlayAttempt,
    Policy,
    PolicySettings,
    PublishAttempt,
    Refusal,
    TokenError,
)
from rtmp_ingest.bundle import EndReason, Registry
from rtmp_ingest.cluster.worker import WorkerAgent
from rtmp_ingest.config import Config, StartupError
from rtmp_ingest.server.counters import Metrics
from rtmp_ingest.server.feeds import Feeds
from rtmp_ingest.server.hls import HlsService
from rtmp_ingest.server.listener import SHUTDOWN_TIMEOUT_S, Address, RtmpListener
from rtmp_ingest.server.placement import PlacementError
from rtmp_ingest.server.play import Player
from rtmp_ingest.server.record import RecorderService
from rtmp_ingest.server.srt import SrtServer
from rtmp_ingest.server.srt_relay import ClusterSrt
from rtmp_ingest.server.webrtc_link import WebrtcService
from rtmp_ingest.server.whep import WhepService
from rtmp_ingest.srt.lib import SrtUnavailable

log = logging.getLogger("rtmp_ingest")


@attrs.frozen
class Bound:
    """Where the server listens (ports resolved when 0 was asked)."""

    rtmp: Address
    rtmps: Address | None
    http: Address | None
    srt: Address | None = None


class App:
    """One server process: its registry, services, listeners and HTTP."""

    def __init__(self, config: Config, *, worker: WorkerAgent | None = None) -> None:
        self.config = config
        #: one of `workers` processes (docs/spec.md §9): hand-offs, shared ports
        self.worker = worker
        self.data_dir = Path(config.data_dir)
        self.registry = Registry(config.bundle.bundle_config())
        self.metrics = Metrics()
        self.hub = EventHub()
        self.feeds = Feeds(self.registry, self.metrics)
        #: the secret, revocations and issued-token log (loaded when run starts)
        self.keyring: Keyring | None = None
        self.bans = BanList(max_bans=config.auth.max_bans, max_ban_s=config.auth.max_ban_s)
        #: the one publish policy (and hook) every ingest driver asks; set when run starts
        self.authorizer: Authorizer | None = None
        self.rtmp = RtmpListener(config, self.feeds)
        if worker is not None:
            self.rtmp.handoff = worker
            self.rtmp.reuse_port = True
        #: SRT ingest: libsrt listener, admission in its callback, TS demux (when enabled)
        self.srt = (
            SrtServer(self.feeds, config.srt, decide=self._decide_now, make_attempt=_srt_attempt)
            if config.srt.enabled
            else None
        )
        #: WHIP ingest: the supervised aiortc process and its sessions (when enabled)
        self.webrtc = (
            WebrtcService(self.feeds, config.webrtc, self._authorize, log_level=config.log_level)
            if config.webrtc.enabled
            else None
        )
        #: WHEP play over the same process (server/whep.py)
        self.whep = (
            WhepService(
                self.feeds,
                self.webrtc,
                config.webrtc,
                authorize_play=self._authorize_play,
                verify_token=self._verify_viewer_token,
            )
            if self.webrtc is not None and config.webrtc.whep_enabled
            else None
        )
        self.hls = HlsService(
            config=config.hls,
            registry=self.registry,
            metrics=self.metrics,
            viewers=self.feeds.viewers,
        )
        self.recorder = RecorderService(
            config=config.record,
            registry=self.registry,
            feeds=self.feeds.publishers,
            data_dir=self.data_dir,
            metrics=self.metrics,
        )
        self.feeds.add_sink(
            "events",
            lambda event: self.hub.publish(event, wall_origin_s=self.registry.wall_origin_s),
        )
        self.feeds.add_sink("hls", self.hls.on_event)
        self.feeds.add_sink("record", self.recorder.on_event)
        #: [cluster]: this process as one node sharing a Redis registry (docs/spec.md §9);
        #: coredis is imported only then
        self.cluster: Any = None
        if config.cluster.enabled:
            from rtmp_ingest.cluster.node import ClusterNode  # noqa: PLC0415 - coredis

            #: with workers, each worker is a node of its own that places only the streams
            #: it owns on this machine, and pulls only those (cluster/node.py)
            self.cluster = ClusterNode(config, self.feeds, machine=worker)
            self.rtmp.placement = self.cluster
            if self.srt is not None:
                self.srt.placement = ClusterSrt(self.cluster)
                self.srt.relay_backlog_bytes = config.cluster.relay_max_buffer_bytes
            self.feeds.add_sink("cluster", self.cluster.on_event)
        self.started_at = time.time()
        self.bound: Bound | None = None
        self._shutdown = trio.Event()

    # -- what the API and outputs read ------------------------------------------------

    @property
    def publishers(self) -> dict[int, Any]:
        return self.feeds.publishers

    @property
    def players(self) -> set[Player]:
        return self.feeds.players

    @property
    def bundle_changed(self) -> trio.Event:
        return self.feeds.bundle_changed

    @property
    def sessions(self) -> set[Any]:
        return self.rtmp.sessions

    def kick_source(self, stream_path: str, source_id: str, *, ban_s: float = 0.0) -> bool:
        """Ends the feed on air of a source; with `ban_s`, its client may not publish that
        source again for that long (an auto-reconnecting encoder stays away)."""
        stats = self.registry.source_statistics(stream_path, source_id, now_s=trio.current_time())
        if stats is None or stats.on_air_feed_id is None:
            return False
        return self.kick_feed(stats.on_air_feed_id, ban_s=ban_s)

    def kick_feed(self, feed_id: int, *, ban_s: float = 0.0) -> bool:
        """Ends one feed, on air or standby (see `kick_source` for `ban_s`); False if none.

        Raises ValueError when `ban_s` is negative, not finite or over `auth.max_ban_s`.
        """
        session = self.feeds.publishers.get(feed_id)
        if session is None or session.feed is None:
            return False
        if ban_s:
            self.bans.ban(
                stream_path=session.feed.stream_path,
                source_id=session.feed.source_id,
                remote_ip=session.remote.rsplit(":", 1)[0].strip("[]"),
                duration_s=ban_s,
                now_s=self.unix_now(),
            )
        return self.feeds.kick_feed(feed_id)

    def output_statistics(self) -> dict[str, int]:
        """players, bytes_out, frames_dropped over every output."""
        players = list(self.players)
        return {
            "players": len(players),
            "bytes_out": self.metrics.player_bytes_ended + sum(p.track.bytes for p in players),
            "frames_dropped": self.metrics.player_dropped_ended + sum(p.dropped() for p in players),
        }

    def players_of(self, stream_path: str, source_id: str) -> list[Player]:
        return [
            p
            for p in self.players
            if p.stream_path == stream_path
            and p.reader is not None
            and p.reader.source_id == source_id
        ]

    def listeners_up(self) -> dict[str, bool]:
        """Which listeners are serving (`/healthz`: 200 only when all are)."""
        up = {"rtmp": self.bound is not None and not self._shutdown.is_set()}
        if self.config.rtmps.listen:
            up["rtmps"] = up["rtmp"] and self.bound is not None and self.bound.rtmps is not None
        up["http"] = self.bound is not None and self.bound.http is not None
        if self.srt is not None:
            up["srt"] = self.bound is not None and self.bound.srt is not None
        if self.webrtc is not None:
            up["webrtc"] = self.webrtc.is_ready
        return up

    def _webrtc_routes(self) -> list[Any]:
        from rtmp_ingest.api import whep, whip  # noqa: PLC0415 - HTTP when served

        owner_url = self._owner_url if self.cluster is not None else None
        routes = whip.routes(self.webrtc, owner_url) if self.webrtc is not None else []
        return routes + (whep.routes(self.whep) if self.whep is not None else [])

    async def _owner_url(self, stream_path: str) -> str | None:
        """WHIP in a cluster: the owner's base URL when another node owns `stream_path`."""
        owner = await self.cluster.owner_of(stream_path)
        if owner is None:
            return None
        if not owner.http:
            raise PlacementError(f"The stream's owner ({owner.node_id}) serves no HTTP.")
        return f"http://{owner.http}"

    # -- auth ------------------------------------------------------------------------

    @property
    def secret(self) -> bytes:
        assert self.keyring is not None
        return self.keyring.secret

    @property
    def revocations(self) -> Keyring | None:
        """The keyring (its revoke() and revoked ids), as the API uses it."""
        return self.keyring

    def _policy_settings(self, config: Config) -> PolicySettings:
        return PolicySettings(mode=config.auth.mode, apps=config.apps)  # type: ignore[arg-type]

    def _decide_now(self, attempt: PublishAttempt, *, now_s: float) -> Permit | Refusal:
        """The policy without waiting (SRT decides inside libsrt's listen callback).

        A stream another node or worker serves is not refused here: the SRT driver
        relays it to the owner (server/srt_relay.py, docs/spec.md §9)."""
        assert self.authorizer is not None
        return self.authorizer.decide_nowait(attempt)

    def _verify_viewer_token(
        self, token: str, stream_path: str, source_id: str, remote_ip: str
    ) -> str | None:
        """None when a WHEP viewer's token covers what it asks for, else why not."""
        if self.keyring is None:
            return "the server has no keyring to check tokens with"
        try:
            self.keyring.verify(
                token,
                stream_path=stream_path,
                source_id=source_id,
                remote_ip=remote_ip,
                now_s=self.unix_now(),
            )
        except TokenError as exc:
            return str(exc)
        return None

    async def _authorize_play(self, attempt: PlayAttempt) -> Refusal | None:
        return None if self.authorizer is None else await self.authorizer.authorize_play(attempt)

    async def _authorize(self, attempt: PublishAttempt) -> Permit | Refusal:
        assert self.authorizer is not None
        return await self.authorizer.authorize(attempt)

    def unix_now(self) -> float:
        """Unix time on trio's clock (the registry's origin), so tests can move it."""
        return self.registry.wall_origin_s + trio.current_time()

    def open_auth(self, hook: Any = None) -> None:
        """Loads the keyring and sets up the publish policy (with `hook`) for every driver."""
        try:
            self.keyring = Keyring.load(self.data_dir, secret=self.config.auth.secret)
        except KeyringError as exc:
            raise StartupError(str(exc)) from None
        policy = Policy(self._policy_settings(self.config), verifier=self.keyring, bans=self.bans)
        self.authorizer = Authorizer(policy, hook=hook, clock=self.unix_now)
        self.rtmp.authorizer = self.authorizer

    def reload(self, new: Config) -> None:
        """SIGHUP: takes the app settings and log level of `new`, re-reads revocations.

        Feeds, players and listeners carry on. Every other changed section is named in
        the log line as needing a restart (listeners, limits and outputs are built once).
        """
        restart = [
            field.name
            for field in attrs.fields(Config)
            if field.name not in ("apps", "log_level")
            and getattr(new, field.name) != getattr(self.config, field.name)
        ]
        self.config = attrs.evolve(self.config, apps=new.apps, log_level=new.log_level)
        self.rtmp.config = self.config
        logging.getLogger("rtmp_ingest").setLevel(new.log_level.upper())
        revoked = 0
        if self.keyring is not None:
            try:
                revoked = self.keyring.reload()
            except KeyringError as exc:
                log.error("reload: revocation list kept as it was: %s", exc)
        if self.authorizer is not None:
            self.authorizer.policy.configure(self._policy_settings(self.config))
        log.info(
            "reloaded apps=%d revocations=%d%s",
            len(new.apps),
            revoked,
            f"; changed, needs a restart: {', '.join(restart)}" if restart else "",
        )

    # -- running -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED) -> None:
        """Serves until shutdown() (or cancellation)."""
        self.registry.wall_origin_s = time.time() - trio.current_time()
        config = self.config
        if config.auth.mode == "open":
            log.warning(
                'auth.mode is "open": ANYONE can publish to any stream, with multisource. '
                'Set [auth] mode = "token" for production.'
            )
        async with trio.open_nursery() as nursery:
            hook = None
            if config.auth.hooks.url:
                from rtmp_ingest.auth.hooks import open_hook_client  # noqa: PLC0415 - httpx

                hook = await nursery.start(_run_hook_client, open_hook_client, config.auth.hooks)
            self.open_auth(hook)
            await nursery.start(self.hls.run)
            await nursery.start(self.recorder.run)
            await nursery.start(self.feeds.run)
            if self.webrtc is not None:
                await nursery.start(self.webrtc.run)
            if self.whep is not None:
                await nursery.start(self.whep.run)
            if self.worker is not None:
                #: the supervisor's table of workers first: no connection routed on a guess
                await nursery.start(self.worker.run, self)
            rtmp_bound, rtmps_bound = await nursery.start(self.rtmp.run)
            srt_bound = None
            if self.srt is not None and self.worker is not None and self.worker.layout.count > 1:
                self._relay_srt_to_workers(rtmp_bound)
            if self.srt is not None:
                try:
                    srt_bound = await nursery.start(self.srt.run)
                except* SrtUnavailable as group:
                    raise StartupError(f"srt: {_first_leaf(group)}") from None
            http_bound = await self._start_http(nursery) if config.http.listen else None
            if self.cluster is not None:
                await self._start_cluster(nursery, rtmp_bound, http_bound)
            self.bound = Bound(rtmp=rtmp_bound, rtmps=rtmps_bound, http=http_bound, srt=srt_bound)
            if self.worker is not None:
                await self.worker.serving(attrs.asdict(self.bound))
            log.info(
                "listening rtmp=%s:%d%s%s%s%s",
                *rtmp_bound,
                f" rtmps={rtmps_bound[0]}:{rtmps_bound[1]}" if rtmps_bound else "",
                f" srt={srt_bound[0]}:{srt_bound[1]}" if srt_bound else "",
                " whip=on" if self.webrtc is not None else "",
                f" http={http_bound[0]}:{http_bound[1]}" if http_bound else " http=off",
            )
            task_status.started(self.bound)
            await self._shutdown.wait()
            if self.webrtc is not None:
                self.webrtc.shutdown()
            if self.srt is not None:
                self.srt.stop_accepting()
                self.srt.kick_all(EndReason.SHUTDOWN, "Server shutting down.")
            await self.rtmp.drain()
            if self.cluster is not None:
                await self.cluster.leave()
            self.recorder.close_all()
            with trio.move_on_after(SHUTDOWN_TIMEOUT_S):
                while self.recorder.recordings:
                    await trio.sleep(0.02)
            await self.hub.aclose()
            nursery.cancel_scope.cancel()

    def _relay_srt_to_workers(self, rtmp_bound: Address) -> None:
        """Workers: SRT publishes of streams another worker serves go there over RTMP."""
        from rtmp_ingest.cluster.hops import (  # noqa: PLC0415 - workers only
            MachineRelays,
            WorkerRelays,
        )

        assert self.srt is not None and self.worker is not None
        cluster = self.config.cluster
        workers = WorkerRelays(
            self.worker,
            rtmp=rtmp_bound,
            limits=self.config.rtmp.limits(),
            timeout_s=cluster.relay_connect_timeout_s,
            max_buffer_bytes=cluster.relay_max_buffer_bytes,
        )
        if self.cluster is None:
            self.srt.placement = workers
        else:  #: and nodes: the stream's worker first, then the node (docs/spec.md §9)
            self.srt.placement = MachineRelays(self.worker, workers, ClusterSrt(self.cluster))
        self.srt.relay_backlog_bytes = cluster.relay_max_buffer_bytes

    async def _start_http(self, nursery: trio.Nursery) -> Address:
        from rtmp_ingest.api.http import serve_http  # noqa: PLC0415 - RTMP runs without HTTP

        worker = self.worker
        try:
            bound: Address = await nursery.start(
                functools.partial(
                    serve_http,
                    self,
                    extra_routes=self._webrtc_routes(),
                    reuse_port=worker is not None,
                    internal_socket=worker.internal_http_socket if worker is not None else None,
                    outer=worker.http_middleware if worker is not None else None,
                )
            )
        except* OSError as group:
            exc = _first_leaf(group)
            raise StartupError(
                f"http.listen {self.config.http.listen}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        return bound

    async def _start_cluster(
        self, nursery: trio.Nursery, rtmp: Address, http: Address | None
    ) -> None:
        from rtmp_ingest.cluster.registry import RegistryUnavailable  # noqa: PLC0415 - coredis

        try:
            await nursery.start(functools.partial(self.cluster.run, rtmp=rtmp, http=http))
        except* RegistryUnavailable as group:
            raise StartupError(f"cluster.redis: {_first_leaf(group)}") from None

    def shutdown(self) -> None:
        """Starts a graceful shutdown (safe to call from a signal handler task)."""
        self._shutdown.set()


async def _run_hook_client(
    opener: Any, settings: Any, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    """Holds the publish hook's HTTP client open for the server's lifetime."""
    async with opener(settings) as hook:
        task_status.started(hook)
        await trio.sleep_forever()


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _srt_attempt(
    *,
    protocol: str,
    app: str,
    stream: str,
    source_id: str,
    query: dict[str, str],
    remote_ip: str,
    remote: str,
    token: str,
) -> PublishAttempt:
    """The SRT stream id as the publish policy's input (its sourceId/token keys included)."""
    return PublishAttempt(
        protocol="srt",
        stream_path=f"{app}/{stream}" if stream else app,
        source_id=source_id,
        query=query,
        remote=remote,
        remote_ip=remote_ip,
        token=token or None,
    )

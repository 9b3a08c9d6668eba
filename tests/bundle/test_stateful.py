"""Random interleavings of publishes, frames, ends, time and readers (docs/spec.md §3).

A hypothesis state machine drives one stream of a registry and checks, after
every step, the invariants of the bundle:

* at most one feed on air per source, and it is the one the statistics name;
* every frame a promptly drained reader gets belongs to the feed on air;
  hence no frame of a superseded or ended feed is delivered after its switch;
* a delivered video frame that does not directly follow the previous frame of
  its feed and track in that reader is a keyframe (first frame of every new
  on-air feed, after a lag skip, for a reader that starts late);
* per source and track the delivered DTS never decreases, and never runs ahead
  of the source's latest DTS by more than max(wall gap, frame duration) + jitter;
* refused publishes change nothing;
* events follow each source's state (no `inactive` without `active` …);
* docs/spec.md §3.3: a superseded feed stays connected as a standby (mode "standby")
  or ends with EndReason.SUPERSEDED and `Superseded.disconnect` (mode
  "disconnect"); a feed published from the host of a superseded encoder while
  one of its feeds is connected, or within the reconnect window after the last
  one left, ranks below the feed that superseded it and never supersedes it;
* a kicked feed ends with EndReason.KICKED and leaves the feed index;
* once every feed ended and every grace period ran out, the registry is empty.
"""

from __future__ import annotations

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import event as note_case
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from rtmp_ingest.bundle import (
    Active,
    BundleConfig,
    EndReason,
    FeedState,
    Frame,
    Inactive,
    Media,
    OutputFrame,
    Permissions,
    PublishRequest,
    Reconnecting,
    RefusalCode,
    Refused,
    Registry,
    SourceState,
    StartMode,
    Stopped,
    Superseded,
    TrackInfo,
    Updated,
)

PATH = "live/machine"
GRACE_S = 2.0
JITTER_MS = 200
WINDOW_S = 3.0
SOURCE_IDS = ["", "a", "b", "c", "bad\x07id"]
REMOTES = ["10.0.0.1:1000", "10.0.0.1:1001", "10.0.0.2:1000", "[2001:db8::1]:1935"]
CONFIG = BundleConfig(
    reconnect_grace_s=GRACE_S,
    max_sources_per_stream=3,
    max_feeds_per_source=3,
    max_jitter_ms=JITTER_MS,
    max_gop_cache_bytes=400,
    superseded_reconnect_s=WINDOW_S,
)


@attrs.define
class FeedModel:
    feed: object
    source_id: str
    kind: str  # "av", "video", "audio"
    codec: str
    clock_ms: int
    host: str = ""
    alive: bool = True
    video_index: dict[str, int] = attrs.Factory(dict)
    superseded: bool = False
    demoted: bool = False
    below: int | None = None  # feed id it must rank below (a superseded encoder's reconnect)


@attrs.define
class Lineage:
    ceiling: int  # the feed that superseded this host's feed
    priority: int
    until_lo: float = float("inf")  # the window ends between until_lo and until_hi
    until_hi: float = float("inf")


@attrs.define
class Pushed:
    feed_id: int
    track_id: str
    index: int  # position among this feed's coded frames of the track
    now_s: float
    frame_ms_before: float


@attrs.define
class ReaderModel:
    reader: object
    source_id: str | None
    lagging: bool
    last: dict[tuple[str, str], tuple[int, int]] = attrs.Factory(dict)


class BundleMachine(RuleBasedStateMachine):
    config = CONFIG

    @initialize()
    def setup(self):
        self.registry = Registry(self.config, wall_origin_s=1000.0)
        self.disconnect = self.config.superseded == "disconnect"
        self.lineage: dict[tuple[str, str], Lineage] = {}
        self.previous_on_air: dict[str, int] = {}
        self.step_start = 0.0
        self.now = 0.0
        self.models: list[FeedModel] = []
        self.pushed: dict[bytes, Pushed] = {}
        self.origin: dict[int, tuple[Frame, int]] = {}  # id(frame) -> (frame, feed id)
        self.counter = 0
        self.readers: list[ReaderModel] = []
        self.reference = ReaderModel(self.registry.subscribe(PATH, max_frames=10**9), None, False)
        self.event_state: dict[str, str] = {}
        self.stream_had_active = False
        # Continuity bookkeeping per source (on the reference reader).
        self.track_dts: dict[tuple[str, str], int] = {}
        self.source_max: dict[str, int] = {}
        self.source_last_now: dict[str, float] = {}

    # -- helpers -----------------------------------------------------------------

    def model_of(self, feed_id: int) -> FeedModel:
        return next(m for m in self.models if m.feed.feed_id == feed_id)

    def frame_ms(self, source_id: str) -> float:
        stats = self.registry.source_statistics(PATH, source_id, now_s=self.now)
        return stats.frame_duration_ms if stats else 0.0

    def push(self, model: FeedModel, frame: Frame) -> None:
        self.origin[id(frame)] = (frame, model.feed.feed_id)
        if not frame.config and frame.media is not Media.DATA:
            index = model.video_index.get(frame.track_id, 0)
            model.video_index[frame.track_id] = index + 1
            self.pushed[frame.payload] = Pushed(
                model.feed.feed_id,
                frame.track_id,
                index,
                self.now,
                self.frame_ms(model.source_id),
            )
        self.registry.push_frame(model.feed, frame, now_s=self.now)

    def tag(self, model: FeedModel) -> bytes:
        self.counter += 1
        return b"%d:%d" % (model.feed.feed_id, self.counter)

    # -- rules ----------------------------------------------------------------------

    @rule(
        source_id=st.sampled_from(SOURCE_IDS),
        priority=st.integers(0, 2),
        app=st.booleans(),
        token=st.booleans(),
        allowed=st.sampled_from([None, frozenset({"", "a"})]),
        kind=st.sampled_from(["av", "av", "video", "audio"]),
        codec=st.sampled_from(["h264", "hevc"]),
        remote=st.sampled_from(REMOTES),
    )
    def publish(self, source_id, priority, app, token, allowed, kind, codec, remote):
        self.do_publish(source_id, priority, app, token, allowed, kind, codec, remote)

    def do_publish(self, source_id, priority, app, token, allowed, kind, codec, remote):
        self.registry.tick(now_s=self.now)
        self.check_events()
        before = (
            self.registry.statistics(),
            self.registry.stream_statistics(PATH, now_s=self.now),
        )
        permissions = Permissions(
            app_multisource=app, token_multisource=token, allowed_source_ids=allowed
        )
        request = PublishRequest(
            stream_path=PATH,
            source_id=source_id,
            priority=priority,
            permissions=permissions,
            remote_addr=remote,
        )
        result = self.registry.request_publish(request, now_s=self.now)
        expected = self.expected_refusal(source_id, app, token, allowed)
        if isinstance(result, Refused):
            assert expected is None or result.code is expected, (result, expected)
            if expected is None:
                assert result.code in (RefusalCode.TOO_MANY_SOURCES, RefusalCode.TOO_MANY_FEEDS)
            after = (
                self.registry.statistics(),
                self.registry.stream_statistics(PATH, now_s=self.now),
            )
            assert after == before
            assert self.registry.drain_events() == []
            return
        assert expected is None, expected
        host = result.feed.client
        model = FeedModel(result.feed, source_id, kind, codec, clock_ms=0, host=host)
        lineage = self.lineage.get((source_id, host))
        if lineage is not None and lineage.priority == priority:
            connected = any(
                m.alive
                and m.source_id == source_id
                and m.host == host
                and (m.superseded or m.demoted)
                for m in self.models
            )
            if connected or self.now <= lineage.until_lo:
                model.demoted = True
                model.below = lineage.ceiling
                note_case("a superseded encoder's reconnect")
            elif self.now <= lineage.until_hi:
                model.demoted = result.feed.demoted  # inside the unsure band
        self.models.append(model)

    @precondition(lambda self: any(m.superseded for m in self.models))
    @rule(pick=st.integers(0, 1000), port=st.integers(2000, 2003), drop_old=st.booleans())
    def reconnect(self, pick, port, drop_old):
        """A superseded encoder comes back from its host (OBS reconnects by default)."""
        superseded = [m for m in self.models if m.superseded]
        old = superseded[pick % len(superseded)]
        if drop_old and old.alive:
            self.registry.end_feed(old.feed, EndReason.DISCONNECT, now_s=self.now)
            self.ended(old, self.now, self.now)
        remote = f"[{old.host}]:{port}" if ":" in old.host else f"{old.host}:{port}"
        self.do_publish(
            old.source_id, old.feed.priority, True, True, None, old.kind, old.codec, remote
        )

    def expected_refusal(self, source_id, app, token, allowed):
        if "\x07" in source_id:
            return RefusalCode.INVALID_SOURCE_ID
        if source_id and not (app and token):
            return RefusalCode.MULTISOURCE_NOT_PERMITTED
        if allowed is not None and source_id not in allowed:
            return RefusalCode.SOURCE_ID_NOT_ALLOWED
        return None

    @precondition(lambda self: any(m.alive for m in self.models))
    @rule(
        pick=st.integers(0, 1000),
        what=st.sampled_from(
            ["key", "inter", "inter", "audio", "audio", "config", "layer", "data"]
        ),
        count=st.integers(1, 12),
        jump=st.sampled_from([0, 0, 0, 0, -15, -5000, 10**6, "reset"]),
        advance_s=st.sampled_from([0.0, 0.01, 0.033, 0.2, 1.5]),
        codec_change=st.booleans(),
    )
    def frames(self, pick, what, count, jump, advance_s, codec_change):
        alive = [m for m in self.models if m.alive]
        model = alive[pick % len(alive)]
        if jump == "reset":
            model.clock_ms = 0
        else:
            model.clock_ms = max(0, model.clock_ms + jump)
        if codec_change and what == "config":
            model.codec = "hevc" if model.codec == "h264" else "h264"
        for n in range(count):
            self.now += advance_s / count
            video_ok = model.kind != "audio"
            audio_ok = model.kind != "video"
            if what in ("key", "inter", "layer") and video_ok:
                track = "video1" if what == "layer" else "video0"
                key = what == "key" or (what == "layer" and n == 0)
                frame = Frame(
                    track_id=track,
                    media=Media.VIDEO,
                    codec=model.codec,
                    dts_ms=model.clock_ms,
                    payload=self.tag(model),
                    keyframe=key and n == 0,
                    cts_ms=66,
                )
                model.clock_ms += 33
            elif what == "config":
                media = Media.VIDEO if video_ok else Media.AUDIO
                frame = Frame(
                    track_id="video0" if video_ok else "audio0",
                    media=media,
                    codec=model.codec if video_ok else "aac",
                    dts_ms=model.clock_ms,
                    payload=b"cfg-" + model.codec.encode() + (b"" if n == 0 else self.tag(model)),
                    config=True,
                    track_info=TrackInfo(width=640) if video_ok else None,
                )
            elif what == "data":
                frame = Frame(
                    track_id="data0",
                    media=Media.DATA,
                    codec="amf0",
                    dts_ms=model.clock_ms,
                    payload=b"meta" + self.tag(model),
                )
            elif audio_ok:
                frame = Frame(
                    track_id="audio0",
                    media=Media.AUDIO,
                    codec="aac",
                    dts_ms=model.clock_ms + 7,
                    payload=self.tag(model),
                )
                model.clock_ms += 21
            else:
                continue
            self.push(model, frame)

    @precondition(lambda self: any(m.alive for m in self.models))
    @rule(pick=st.integers(0, 1000), frames=st.integers(1, 40), audio_every=st.integers(0, 3))
    def gop(self, pick, frames, audio_every):
        """A realistic run: a keyframe, inter frames, interleaved audio, in real time."""
        alive = [m for m in self.models if m.alive]
        model = alive[pick % len(alive)]
        for n in range(frames):
            self.now += 0.033
            if model.kind != "audio":
                frame = Frame(
                    "video0", Media.VIDEO, model.codec, model.clock_ms, self.tag(model), n == 0
                )
                self.push(model, frame)
            if model.kind != "video" and audio_every and n % audio_every == 0:
                frame = Frame("audio0", Media.AUDIO, "aac", model.clock_ms + 5, self.tag(model))
                self.push(model, frame)
            model.clock_ms += 33

    @precondition(lambda self: any(m.alive for m in self.models))
    @rule(
        pick=st.integers(0, 1000),
        reason=st.sampled_from(sorted(set(EndReason) - {EndReason.SUPERSEDED}, key=str)),
    )
    def end_feed(self, pick, reason):
        alive = [m for m in self.models if m.alive]
        model = alive[pick % len(alive)]
        self.registry.end_feed(model.feed, reason, now_s=self.now)
        self.ended(model, self.now, self.now)
        assert model.feed.state is FeedState.ENDED

    @precondition(lambda self: any(m.alive for m in self.models))
    @rule(pick=st.integers(0, 1000))
    def kick(self, pick):
        alive = [m for m in self.models if m.alive]
        model = alive[pick % len(alive)]
        assert self.registry.kick_feed(model.feed.feed_id, now_s=self.now) is model.feed
        self.ended(model, self.now, self.now)
        assert model.feed.end_reason is EndReason.KICKED
        assert self.registry.find_feed(model.feed.feed_id) is None
        assert self.registry.kick_feed(model.feed.feed_id, now_s=self.now) is None

    def ended(self, model: FeedModel, lo: float, hi: float) -> None:
        model.alive = False
        lineage = self.lineage.get((model.source_id, model.host))
        if lineage is not None and (model.superseded or model.demoted):
            lineage.until_lo = lo + WINDOW_S
            lineage.until_hi = hi + WINDOW_S

    @precondition(lambda self: self.models)
    @rule(pick=st.integers(0, 1000))
    def push_after_end(self, pick):
        """Frames of ended (or superseded) feeds are ignored."""
        dead = [m for m in self.models if not m.alive]
        if dead:
            model = dead[pick % len(dead)]
            self.push(model, Frame("video0", Media.VIDEO, model.codec, 0, self.tag(model), True))

    @rule(seconds=st.sampled_from([0.05, 0.5, 1.0, GRACE_S + 0.1]))
    def advance_time(self, seconds):
        self.now += seconds
        deadline = self.registry.next_deadline_s()
        self.registry.tick(now_s=self.now)
        if deadline is not None and deadline <= self.now:
            assert self.registry.next_deadline_s() != deadline or deadline > self.now

    @rule(
        source_id=st.sampled_from([None, "", "a", "b"]),
        lagging=st.booleans(),
        max_frames=st.integers(1, 6),
        start=st.sampled_from(list(StartMode)),
    )
    def subscribe(self, source_id, lagging, max_frames, start):
        reader = self.registry.subscribe(
            PATH, source_id, max_frames=max_frames if lagging else 10**6, start=start
        )
        self.readers.append(ReaderModel(reader, source_id, lagging))

    @precondition(lambda self: any(r.lagging for r in self.readers))
    @rule(pick=st.integers(0, 1000))
    def drain_lagging(self, pick):
        lagging = [r for r in self.readers if r.lagging]
        model = lagging[pick % len(lagging)]
        self.check_delivered(model, model.reader.drain_nowait(), prompt=False)

    @precondition(lambda self: self.readers)
    @rule(pick=st.integers(0, 1000))
    def close_reader(self, pick):
        model = self.readers.pop(pick % len(self.readers))
        model.reader.close()

    # -- checks ------------------------------------------------------------------------

    def on_air(self) -> dict[str, int]:
        stream = self.registry.stream_statistics(PATH, now_s=self.now)
        if stream is None:
            return {}
        return {s.source_id: s.on_air_feed_id for s in stream.sources if s.on_air_feed_id}

    def check_delivered(self, model: ReaderModel, frames: list[OutputFrame], *, prompt: bool):
        on_air = self.on_air()
        for out in frames:
            sid = out.source_id
            if model.source_id is not None:
                assert sid == model.source_id
            frame = out.frame
            origin_id = self.origin[id(frame)][1]
            if prompt:
                assert on_air.get(sid) == origin_id, (out, on_air)
            if frame.config or frame.media is Media.DATA:
                continue
            record = self.pushed[frame.payload]
            assert self.model_of(record.feed_id).source_id == sid
            if frame.media is Media.VIDEO:
                key = (sid, frame.track_id)
                previous = model.last.get(key)
                follows = previous == (record.feed_id, record.index - 1)
                assert follows or frame.keyframe, (out, previous, record)
                model.last[key] = (record.feed_id, record.index)

    def check_continuity(self, frames: list[OutputFrame]) -> None:
        for out in frames:
            frame = out.frame
            if frame.config or frame.media is Media.DATA:
                continue
            record = self.pushed[frame.payload]
            sid = out.source_id
            key = (sid, frame.track_id)
            if key in self.track_dts:
                assert out.dts_ms >= self.track_dts[key], (out, self.track_dts[key])
            # Audio a feed sent while waiting goes out when the feed goes on air (its
            # preroll, pushed in an earlier step): it fills the time up to the sync
            # frame, and the wall-clock gap still counts from the last frame sent live.
            preroll = record.now_s < self.step_start
            if sid in self.source_max and not preroll:
                gap_ms = (record.now_s - self.source_last_now[sid]) * 1000
                bound = max(gap_ms, record.frame_ms_before) + JITTER_MS + 1
                assert out.dts_ms <= self.source_max[sid] + bound, (out, self.source_max[sid])
            self.track_dts[key] = out.dts_ms
            self.source_max[sid] = max(self.source_max.get(sid, out.dts_ms), out.dts_ms)
            if not preroll or sid not in self.source_last_now:
                self.source_last_now[sid] = record.now_s

    def check_ranks(self, feeds: list) -> None:
        """docs/spec.md §3.3, §3.4: standby feeds rank below the one on air, pending ones above."""
        on_air = [f for f in feeds if f.state is FeedState.ON_AIR]
        for feed in feeds:
            assert feed.rank[0] == feed.priority
            if feed.state is FeedState.STANDBY:
                assert on_air and feed.rank < on_air[0].rank
            elif feed.state is FeedState.PENDING and on_air:
                assert feed.rank > on_air[0].rank
        if on_air:  # nothing of its priority that ranks above it has had its sync frame yet
            top = on_air[0]
            assert all(
                f.state is FeedState.PENDING
                for f in feeds
                if f.priority == top.priority and f.rank > top.rank
            )

    def note_switches(self) -> None:
        """A feed that went on air in this step: its host's reconnects are newcomers again.

        Only the feed that pushes frames in a step can go on air, so at most one
        switch per source happens between two checks; it comes before the
        `Superseded` events of the same switch (which remember its losers' hosts).
        """
        now = {}
        for model in self.models:
            if model.alive and model.feed.state is FeedState.ON_AIR:
                now[model.source_id] = model
        for sid, model in now.items():
            if self.previous_on_air.get(sid) != model.feed.feed_id:
                model.superseded = model.demoted = False
                self.lineage.pop((sid, model.host), None)
        self.previous_on_air = {sid: m.feed.feed_id for sid, m in now.items()}

    def check_lineage(self) -> None:
        """docs/spec.md §3.3: a superseded encoder's reconnect ranks below its successor."""
        alive = {m.feed.feed_id: m for m in self.models if m.alive}
        for model in alive.values():
            if model.below is not None and model.below in alive:
                assert model.feed.rank < alive[model.below].feed.rank, (model, model.below)
        if not self.disconnect:
            assert all(m.feed.end_reason is not EndReason.SUPERSEDED for m in self.models)

    def check_events(self) -> None:
        for event in self.registry.drain_events():
            if isinstance(event, Stopped):
                assert self.stream_had_active
                assert all(state == "absent" for state in self.event_state.values())
                self.stream_had_active = False
                continue
            sid = event.source_id
            state = self.event_state.get(sid, "absent")
            if isinstance(event, Active):
                assert state in ("absent", "reconnecting"), (event, state)
                self.event_state[sid] = "active"
                self.stream_had_active = True
                if state == "absent":
                    for key in [k for k in self.track_dts if k[0] == sid]:
                        del self.track_dts[key]
                    self.source_max.pop(sid, None)
                    self.source_last_now.pop(sid, None)
            elif isinstance(event, (Updated, Superseded)):
                assert state == "active", (event, state)
                if isinstance(event, Superseded):
                    loser = self.model_of(event.feed_id)
                    winner = self.model_of(event.by_feed_id)
                    assert loser.alive and loser.source_id == sid
                    assert loser.feed.priority == winner.feed.priority
                    assert winner.below != loser.feed.feed_id, "a reconnect took the source back"
                    assert event.disconnect is self.disconnect
                    loser.superseded = True
                    note_case("superseded")
                    self.lineage[(sid, loser.host)] = Lineage(
                        event.by_feed_id, winner.feed.priority
                    )
                    if self.disconnect:
                        assert loser.feed.state is FeedState.ENDED
                        assert loser.feed.end_reason is EndReason.SUPERSEDED
                        self.ended(loser, self.step_start, self.now)
                    else:
                        assert loser.feed.state is not FeedState.ENDED
            elif isinstance(event, Reconnecting):
                assert state == "active", (event, state)
                self.event_state[sid] = "reconnecting"
            elif isinstance(event, Inactive):
                assert state in ("active", "reconnecting"), (event, state)
                self.event_state[sid] = "absent"
                for key in [k for k in self.lineage if k[0] == sid]:
                    del self.lineage[key]

    @invariant()
    def bundle_is_consistent(self):
        if not hasattr(self, "registry"):
            return
        # Events first: an Active that opens a new timeline resets the continuity
        # bookkeeping before the new timeline's frames are checked.
        self.note_switches()
        self.check_events()
        frames = self.reference.reader.drain_nowait()
        self.check_delivered(self.reference, frames, prompt=True)
        self.check_continuity(frames)
        for model in self.readers:
            if not model.lagging:
                self.check_delivered(model, model.reader.drain_nowait(), prompt=True)
        stream = self.registry.stream_statistics(PATH, now_s=self.now)
        sources = {} if stream is None else {s.source_id: s for s in stream.sources}
        for sid in set(sources) | set(self.event_state):
            stats = sources.get(sid)
            expected = {
                None: "absent",
                SourceState.PENDING: "absent",
                SourceState.LIVE: "active",
                SourceState.RECONNECTING: "reconnecting",
            }[stats.state if stats else None]
            assert self.event_state.get(sid, "absent") == expected, (sid, stats)
        for sid, stats in sources.items():
            on_air = [
                m for m in self.models if m.source_id == sid and m.feed.state is FeedState.ON_AIR
            ]
            assert len(on_air) <= 1
            assert stats.on_air_feed_id == (on_air[0].feed.feed_id if on_air else None)
        for model in self.models:
            if not model.alive:
                assert model.feed.state is FeedState.ENDED
        for sid in sources:
            self.check_ranks([m.feed for m in self.models if m.alive and m.source_id == sid])
        self.check_lineage()
        self.step_start = self.now
        assert self.registry.statistics().readers == len(self.readers) + 1
        if not any(m.alive for m in self.models) and self.registry.next_deadline_s() is None:
            assert self.registry.stream_paths() == ()
            statistics = self.registry.statistics()
            assert (statistics.streams, statistics.sources, statistics.feeds) == (0, 0, 0)

    def teardown(self):
        if not hasattr(self, "registry"):
            return
        for model in self.models:
            if model.alive:
                model.alive = False
                self.registry.end_feed(model.feed, EndReason.SHUTDOWN, now_s=self.now)
        self.now += GRACE_S + 1
        self.registry.tick(now_s=self.now)
        self.bundle_is_consistent()
        assert self.registry.stream_paths() == ()
        assert all(state == "absent" for state in self.event_state.values())
        assert not self.stream_had_active


class DisconnectMachine(BundleMachine):
    """The same rules with `bundle.superseded = "disconnect"`."""

    config = attrs.evolve(CONFIG, superseded="disconnect")


MACHINE_SETTINGS = settings(
    max_examples=400,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
BundleMachine.TestCase.settings = MACHINE_SETTINGS
DisconnectMachine.TestCase.settings = MACHINE_SETTINGS
TestBundleMachine = BundleMachine.TestCase
TestDisconnectMachine = DisconnectMachine.TestCase

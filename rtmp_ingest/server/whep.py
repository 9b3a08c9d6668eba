"""WHEP viewers on the daemon's side: a bundle reader per viewer, frames over the link.

`WhepService.play()` is a WHEP POST: it picks the source as RTMP play does
(`play.resolve_source`: the requested sourceId, else the default source, else
the top priority one), waiting up to `webrtc.whep_wait_s` for one to go live
(409 after that), checks that WebRTC can carry it (H.264 without B-frames or
VP9 profile 0, AV1 Main, Opus or AAC audio: else 422 with the reason, also kept
for the API in `playability`), has the WebRTC process answer the offer (sendonly), and once
the viewer's ICE/DTLS is up, reads the source from its cached GOP:

- **Video passes through**: each H.264 frame becomes one Annex B access unit
  (parameter sets in front of every keyframe, so a supersede by an encoder
  with other SPS/PPS needs nothing else) for aiortc to packetize; a VP9 frame
  goes as it is, an AV1 temporal unit with the sequence header on keyframes
  (the process's `vp9_payload`/`av1_payload` cut them into RTP); nothing is
  decoded or encoded.
- **Timeline**: presentation times are the bundle's output timeline (which
  already runs on across supersedes and reconnects) plus a per-viewer shift,
  so the RTP timestamps of the one peer connection run on. The cached GOP a
  viewer starts with is sent at once and its frames are given timestamps 1 ms
  apart, ending "now": the browser decodes through them and shows the live
  picture instead of playing the GOP out at its own pace (a GOP behind live).
- **Audio**: Opus passes through; AAC is transcoded to Opus once per source
  (`OpusTranscoder`, PyAV) however many viewers it has; its packets reach every
  viewer of the source on the same shifted timeline.
- **Slow viewers**: the bundle reader is bounded (lag → skip to a keyframe,
  counted), the link drops viewer media when the process is backed up, and the
  process bounds each viewer's queue again; ingest never waits for a viewer.
- A viewer's PLI cannot be honoured by passthrough: for a WebRTC publisher it
  becomes a keyframe request to that publisher (the process rate-limits it).

A viewer stays attached while its source is away (supersede, reconnect grace)
and ends when nothing came back within `webrtc.whep_linger_s`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from rtmp_ingest.bundle import Media, OutputFrame, StartMode
from rtmp_ingest.flv.tags import PacketType
from rtmp_ingest.outputs.flv import PlayerTrack
from rtmp_ingest.outputs.webrtc_media import (
    B_FRAMES_REASON,
    PLAYABLE_AUDIO,
    PLAYABLE_VIDEO,
    AacToOpus,
    Av1Access,
    H264Access,
    Playability,
    Vp9Access,
    audio_payload,
    check_playable,
    h264_profile,
    video_access,
)
from rtmp_ingest.server.play import Player, resolve_source, wait_for_source
from rtmp_ingest.server.webrtc_link import WhipError
from rtmp_ingest.webrtc import link

if TYPE_CHECKING:
    from rtmp_ingest.auth import PlayAttempt, Refusal
    from rtmp_ingest.bundle import Reader
    from rtmp_ingest.config import WebrtcConfig
    from rtmp_ingest.server.feeds import Feeds
    from rtmp_ingest.server.webrtc_link import WebrtcService

log = logging.getLogger("rtmp_ingest.whep")

TRACK_VIDEO = 0
TRACK_AUDIO = 1
#: Spacing of the cached GOP's frames on a new viewer's timeline (see the module docstring).
BURST_STEP_MS = 1


class OpusTranscoder:
    """One AAC source's audio as Opus, for every WHEP viewer of it."""

    def __init__(self, service: WhepService, stream_path: str, source_id: str) -> None:
        self.service = service
        self.stream_path = stream_path
        self.source_id = source_id
        self.viewers: set[WhepViewer] = set()
        self.codec = AacToOpus(bitrate=service.config.whep_opus_bitrate)
        self.cancel = trio.CancelScope()
        self.packets_out = 0
        self.cpu_s = 0.0  #: CPU time of the (trio) thread spent transcoding

    async def run(self) -> None:
        """Until its last viewer leaves; a failure ends the audio, never the service."""
        try:
            await self._run()
        except Exception:
            log.exception(
                "whep transcoder failed stream=%s sourceId=%r", self.stream_path, self.source_id
            )

    async def _run(self) -> None:
        with self.cancel:
            reader = self.service.feeds.registry.subscribe(
                self.stream_path, self.source_id, start=StartMode.LIVE
            )
            try:
                while True:
                    wake = trio.Event()
                    reader.set_wakeup(wake.set)
                    frames = reader.drain_nowait()
                    if not frames:
                        await wake.wait()
                        continue
                    self._transcode(frames)
            finally:
                reader.close()
                self.service.transcoders.pop((self.stream_path, self.source_id), None)
                self.service.transcode_cpu_ended_s += self.cpu_s

    def _transcode(self, frames: list[OutputFrame]) -> None:
        started = time.thread_time()
        codec = self.codec
        for out in frames:
            frame = out.frame
            if frame.media is not Media.AUDIO or frame.codec != "aac":
                continue
            parsed = audio_payload(frame.payload)
            if parsed is None:
                continue
            kind, data = parsed
            if kind is PacketType.SEQUENCE_START:
                codec.configure(data)
                continue
            for ms, packet in codec.push(out.dts_ms, data):
                self.packets_out += 1
                for viewer in list(self.viewers):
                    viewer.opus(ms, packet)
        self.cpu_s += time.thread_time() - started


# -- viewers ----------------------------------------------------------------------------------


@attrs.define(eq=False)
class WhepViewer:
    service: WhepService
    session_id: int
    location: str
    stream_path: str
    source_id: str
    remote: str
    answer: str = ""
    has_video: bool = True
    #: the source's video codec when the viewer was answered ("h264", "vp9")
    video_codec: str = "h264"
    audio_codec: str | None = None
    connected: trio.Event = attrs.Factory(trio.Event)
    ended: trio.Event = attrs.Factory(trio.Event)
    end_reason: str = ""
    player: Player | None = None
    #: output-timeline ms + shift = this viewer's presentation ms
    shift: int | None = None
    last_video_ms: int = -1
    last_audio_ms: int = -1
    video: H264Access | Vp9Access | Av1Access = attrs.Factory(
        lambda self: video_access(self.video_codec), takes_self=True
    )
    frames_out: int = 0
    bytes_out: int = 0
    frames_dropped: int = 0  #: the link to the process was backed up
    #: a picture was lost on the link: video waits for the next keyframe
    video_resync: bool = False
    b_frame_ends: int = 0
    plis: int = 0
    started_s: float = attrs.Factory(time.time)

    def _send(self, track: int, ms: int, payload: bytes, *, keyframe: bool) -> None:
        if self.service.webrtc.send_media(
            link.encode_media(self.session_id, track, ms, payload, keyframe=keyframe)
        ):
            self.frames_out += 1
            self.bytes_out += len(payload)
            if self.player is not None:
                self.player.track.frames += 1
                self.player.track.bytes += len(payload)
        else:
            self.frames_dropped += 1
            if track == TRACK_VIDEO:
                self.video_resync = True  #: what follows refers to the lost picture

    def opus(self, ms: int, packet: bytes) -> None:
        """A transcoded Opus packet of this viewer's source (output-timeline ms)."""
        if self.shift is None:
            if self.has_video:
                return  #: audio starts with the picture
            self.shift = -ms
        at = ms + self.shift
        if at <= self.last_audio_ms:
            return
        self.last_audio_ms = at
        self._send(TRACK_AUDIO, at, packet, keyframe=False)

    def frames(self, batch: list[OutputFrame], *, first: bool) -> None:
        """A batch from the reader; `first` is the cached GOP (see the module docstring)."""
        if first and self.has_video:
            coded = [
                out for out in batch if out.frame.media is Media.VIDEO and not out.frame.config
            ]
            if coded:
                last = coded[-1].dts_ms
                start = self.last_video_ms + 1 if self.last_video_ms >= 0 else 0
                base = start + BURST_STEP_MS * (len(coded) - 1)
                self.shift = base - last
                burst = {id(out): start + BURST_STEP_MS * i for i, out in enumerate(coded)}
                for out in batch:
                    if self.ended.is_set():
                        return
                    self._one(out, burst.get(id(out)), skip_audio_before=last)
                return
        for out in batch:
            if self.ended.is_set():
                return
            self._one(out, None, skip_audio_before=None)

    def _one(self, out: OutputFrame, at: int | None, *, skip_audio_before: int | None) -> None:
        frame = out.frame
        if frame.media is Media.VIDEO:
            if frame.codec != self.video_codec:
                #: a feed in another codec took the source: the peer connection was
                #: answered for one codec, so the viewer's client renegotiates (and a new
                #: POST hears whether the new codec can be carried)
                if frame.codec in PLAYABLE_VIDEO:
                    self.service.end_viewer(self, f"codec-{frame.codec}")
                else:
                    self.service.source_unplayable(
                        self,
                        f"codec-{frame.codec}",
                        f"The source's video is now {frame.codec}; WebRTC viewers get H.264, "
                        "VP9 or AV1 passed through, never re-encoded.",
                    )
                return
            unit = self.video.push(frame.payload)
            if unit is None:
                return
            data, keyframe, cts = unit
            if cts != 0:
                self.b_frame_ends += 1
                self.service.source_unplayable(self, "b-frames", B_FRAMES_REASON)
                return
            if self.video_resync:
                if not keyframe:
                    self.frames_dropped += 1
                    return
                self.video_resync = False
            if self.shift is None:
                if not keyframe:
                    return
                self.shift = (self.last_video_ms + 1 if self.last_video_ms >= 0 else 0) - out.dts_ms
            ms = at if at is not None else out.dts_ms + self.shift
            if ms <= self.last_video_ms:
                ms = self.last_video_ms + 1
            self.last_video_ms = ms
            self._send(TRACK_VIDEO, ms, data, keyframe=keyframe)
        elif frame.media is Media.AUDIO and frame.codec == "opus":
            if skip_audio_before is not None and out.dts_ms < skip_audio_before:
                return
            parsed = audio_payload(frame.payload)
            if parsed is None or parsed[0] is not PacketType.CODED_FRAMES:
                return
            if self.shift is None:
                if self.has_video:
                    return
                self.shift = -out.dts_ms
            ms = out.dts_ms + self.shift
            if ms <= self.last_audio_ms:
                return
            self.last_audio_ms = ms
            self._send(TRACK_AUDIO, ms, parsed[1], keyframe=False)


class WhepService:
    """WHEP viewers of every source, over the WebRTC process's link."""

    def __init__(
        self,
        feeds: Feeds,
        webrtc: WebrtcService,
        config: WebrtcConfig,
        *,
        authorize_play: Callable[[PlayAttempt], Awaitable[Refusal | None]] | None = None,
        verify_token: Callable[[str, str, str, str], str | None] | None = None,
    ) -> None:
        self.feeds = feeds
        #: the play hook, as RTMP and HTTP-FLV players are asked about (auth.hooks "play")
        self.authorize_play = authorize_play
        #: `verify_token(token, stream_path, source_id, remote_ip)` → None, or why not
        #: (webrtc.whep_require_token)
        self.verify_token = verify_token
        self.webrtc = webrtc
        self.config = config
        self.viewers: dict[int, WhepViewer] = {}
        self.by_location: dict[str, WhepViewer] = {}
        self.transcoders: dict[tuple[str, str], OpusTranscoder] = {}
        #: the last verdict per (stream path, source id), for the API's source objects
        self.verdicts: dict[tuple[str, str], Playability] = {}
        self.refused: dict[int, int] = {}  #: by HTTP status
        self.viewers_total = 0
        self.waiting = 0  #: POSTs waiting for their source to go live (webrtc.whep_wait_s)
        #: of viewers that left: frames the link dropped, frames and skips of the process queue
        self.link_dropped_ended = 0
        self.queue_dropped = 0
        self.queue_skips = 0
        self.transcode_cpu_ended_s = 0.0
        #: viewers' keyframe requests sent on to WebRTC publishers, and those folded into
        #: a request made less than `whep_pli_interval_s` before
        self.plis_forwarded = 0
        self.plis_coalesced = 0
        self._nursery: trio.Nursery | None = None
        webrtc.viewer_control = self._on_control

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the viewers' tasks until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for viewer in list(self.viewers.values()):
                self.end_viewer(viewer, "shutdown")

    def playability(self, stream_path: str, source_id: str) -> Playability | None:
        """What the API says of a source under "webrtc" (None: no viewer has asked yet)."""
        return self.verdicts.get((stream_path, source_id))

    def _source_tracks(self, stream_path: str, source_id: str) -> list[tuple[Media, str]]:
        stats = self.feeds.registry.stream_statistics(stream_path, now_s=trio.current_time())
        if stats is None:
            return []
        for source in stats.sources:
            if source.source_id == source_id:
                return [(t.media, t.codec) for t in source.tracks]
        return []

    async def play(
        self,
        *,
        app: str,
        stream: str,
        source_id: str | None,
        remote: str,
        offer: str,
        query: dict[str, str] | None = None,
        token: str = "",
    ) -> WhepViewer:
        """A WHEP POST; raises WhipError with the status and text."""
        config = self.config
        if config.whep_require_token:
            if not token:
                raise WhipError(401, "A viewer token is required (Authorization: Bearer, ?token=).")
            remote_ip = remote.rsplit(":", 1)[0].strip("[]")
            problem = (
                self.verify_token(token, f"{app}/{stream}", source_id or "", remote_ip)
                if self.verify_token is not None
                else "Viewer tokens cannot be checked: the server has no keyring."
            )
            if problem is not None:
                log.info("whep refused stream=%s/%s remote=%s: %s", app, stream, remote, problem)
                raise WhipError(403, f"Play refused: {problem}")
        if self.authorize_play is not None:
            from rtmp_ingest.auth import PlayAttempt  # noqa: PLC0415 - only with a play policy

            refusal = await self.authorize_play(
                PlayAttempt(
                    protocol="webrtc",
                    stream_path=f"{app}/{stream}",
                    source_id=source_id,
                    query=dict(query or {}),
                    remote=remote,
                )
            )
            if refusal is not None:
                log.info("%s", refusal.log_text)
                raise WhipError(refusal.http_status, refusal.status_text)
        nursery = self._nursery
        if nursery is None:
            raise WhipError(503, "WHEP is not available right now; retry shortly.")
        if len(self.viewers) >= config.whep_max_viewers:
            raise WhipError(503, f"Too many WHEP viewers (the limit is {config.whep_max_viewers}).")
        stream_path = f"{app}/{stream}"
        #: a viewer of the stream from here to `end_viewer` (a cluster node pulls it for it)
        self.feeds.viewers.arrive(stream_path)
        try:
            return await self._answer(stream_path, source_id, remote, offer, nursery)
        except BaseException:
            self.feeds.viewers.leave(stream_path)
            raise

    async def _answer(
        self,
        stream_path: str,
        source_id: str | None,
        remote: str,
        offer: str,
        nursery: trio.Nursery,
    ) -> WhepViewer:
        """The POST's answer once its source is live and playable (`play` checked the rest)."""
        config = self.config
        self.waiting += 1
        try:
            found = await wait_for_source(self.feeds, stream_path, source_id, config.whep_wait_s)
        finally:
            self.waiting -= 1
        if found is None:
            what = f"source {source_id!r} of {stream_path}" if source_id else stream_path
            raise WhipError(409, f"The {what} is not live.")
        tracks = self._source_tracks(stream_path, found)
        reader = self.feeds.registry.subscribe(stream_path, found, start=StartMode.GOP)
        try:
            gop = reader.drain_nowait()
        finally:
            reader.close()
        verdict = check_playable(tracks, gop)
        self.verdicts[(stream_path, found)] = verdict
        if not verdict.playable:
            raise WhipError(422, verdict.reason or "WebRTC cannot carry this source.")
        if not await self.webrtc.wait_ready(timeout_s=config.offer_timeout_s):
            raise WhipError(503, "WebRTC is not available right now; retry shortly.")
        video = next((c for m, c in tracks if m is Media.VIDEO), None)
        audio = next((c for m, c in tracks if m is Media.AUDIO and c in PLAYABLE_AUDIO), None)
        viewer = WhepViewer(
            service=self,
            session_id=self.webrtc.allocate_session_id(),
            location=secrets.token_urlsafe(24),
            stream_path=stream_path,
            source_id=found,
            remote=remote,
            has_video=video is not None,
            video_codec=video or "h264",
            audio_codec=audio,
        )
        reply = await self.webrtc.negotiate(
            {
                "op": "whep-offer",
                "session": viewer.session_id,
                "sdp": offer,
                "video": video,
                "h264_profile": h264_profile(gop),
                "audio": audio is not None,
            }
        )
        if reply["op"] == "error":
            raise WhipError(int(reply.get("status", 500)), str(reply.get("text", "")))
        viewer.answer = str(reply["sdp"])
        self.viewers[viewer.session_id] = viewer
        self.by_location[viewer.location] = viewer
        self.viewers_total += 1
        nursery.start_soon(self._serve, viewer)
        log.info(
            "whep play stream=%s sourceId=%r remote=%s session=%d video=%s audio=%s",
            stream_path,
            found,
            remote,
            viewer.session_id,
            video,
            audio,
        )
        return viewer

    async def _serve(self, viewer: WhepViewer) -> None:
        """One viewer's task; a failure in it ends that viewer, never the service."""
        try:
            await self._serve_viewer(viewer)
        except Exception:
            log.exception(
                "whep viewer failed stream=%s sourceId=%r session=%d",
                viewer.stream_path,
                viewer.source_id,
                viewer.session_id,
            )
            self.end_viewer(viewer, "internal-error")

    async def _serve_viewer(self, viewer: WhepViewer) -> None:
        config = self.config
        with trio.move_on_after(config.connect_timeout_s + config.offer_timeout_s) as scope:
            await viewer.connected.wait()
        if scope.cancelled_caught or viewer.ended.is_set():
            self.end_viewer(viewer, viewer.end_reason or "connect-timeout")
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._play, viewer, nursery.cancel_scope)
            await viewer.ended.wait()
            nursery.cancel_scope.cancel()

    async def _play(self, viewer: WhepViewer, scope: trio.CancelScope) -> None:
        feeds = self.feeds
        reader: Reader = feeds.registry.subscribe(
            viewer.stream_path, viewer.source_id, start=StartMode.GOP
        )
        player = viewer.player = Player(
            kind="whep",
            stream_path=viewer.stream_path,
            source_id=viewer.source_id,
            remote=viewer.remote,
            track=PlayerTrack(),
            reader=reader,
        )
        feeds.players.add(player)
        transcoder = self._attach_transcoder(viewer) if viewer.audio_codec == "aac" else None
        first = True
        try:
            while not viewer.ended.is_set():
                wake = trio.Event()
                reader.set_wakeup(wake.set)
                frames = reader.drain_nowait()
                if frames:
                    viewer.frames(frames, first=first)
                    first = False
                    continue
                with trio.move_on_after(self.config.whep_linger_s) as idle:
                    await wake.wait()
                if idle.cancelled_caught and (
                    resolve_source(feeds, viewer.stream_path, viewer.source_id) is None
                ):
                    self.end_viewer(viewer, "ended")
                    return
        finally:
            if transcoder is not None:
                transcoder.viewers.discard(viewer)
                if not transcoder.viewers:
                    transcoder.cancel.cancel()
            feeds.players.discard(player)
            stats = reader.statistics()
            feeds.metrics.player_bytes_ended += player.track.bytes
            feeds.metrics.player_dropped_ended += stats.dropped
            player.dropped_before += stats.dropped
            player.skips_before += stats.skips
            reader.close()
            player.reader = None
            scope.cancel()

    def _attach_transcoder(self, viewer: WhepViewer) -> OpusTranscoder | None:
        key = (viewer.stream_path, viewer.source_id)
        transcoder = self.transcoders.get(key)
        if transcoder is None:
            if self._nursery is None:
                return None
            transcoder = self.transcoders[key] = OpusTranscoder(self, *key)
            self._nursery.start_soon(transcoder.run)
        transcoder.viewers.add(viewer)
        return transcoder

    def _count_queue(self, message: dict[str, Any]) -> None:
        dropped, skips = message.get("framesDropped"), message.get("skips")
        self.queue_dropped += dropped if isinstance(dropped, int) else 0
        self.queue_skips += skips if isinstance(skips, int) else 0

    def _on_control(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "closed" and message.get("session") not in self.viewers:
            self._count_queue(message)  #: the process's report of a viewer the daemon ended
            return
        if op == "process-lost":
            for lost in list(self.viewers.values()):
                self.end_viewer(lost, "process-restart", close_peer=False)
            return
        viewer = self.viewers.get(message.get("session", -1))
        if viewer is None:
            return
        if op == "connected":
            viewer.connected.set()
            log.info(
                "whep connected stream=%s sourceId=%r remote=%s session=%d",
                viewer.stream_path,
                viewer.source_id,
                viewer.remote,
                viewer.session_id,
            )
        elif op == "closed":
            self._count_queue(message)
            self.end_viewer(viewer, str(message.get("reason", "closed")), close_peer=False)
        elif op == "pli":
            viewer.plis += 1
            self._forward_pli(viewer)

    def _forward_pli(self, viewer: WhepViewer) -> None:
        """A viewer's keyframe request → the source's WebRTC publisher, if it is one.

        The process limits each viewer to one request per `whep_pli_interval_s`; the
        publisher gets at most one per that interval however many viewers ask (its
        last request, from a viewer or from ingest's own loss recovery, counts)."""
        now = trio.current_time()
        for session in list(self.webrtc.sessions.values()):
            if (
                session.stream_path == viewer.stream_path
                and session.source_id == viewer.source_id
                and session.connected
                and session.has_video
            ):
                if now - session.keyframe_requested_s < self.config.whep_pli_interval_s:
                    self.plis_coalesced += 1
                    continue
                self.plis_forwarded += 1
                self.webrtc.request_keyframe(session)

    def source_unplayable(self, viewer: WhepViewer, code: str, reason: str) -> None:
        """The source turned into something WebRTC cannot carry: the API says so, the
        viewer ends (never sent broken)."""
        self.verdicts[(viewer.stream_path, viewer.source_id)] = Playability(False, reason)
        self.end_viewer(viewer, code)

    def end_viewer(self, viewer: WhepViewer, reason: str, *, close_peer: bool = True) -> None:
        """Ends a viewer (idempotent); its peer connection too unless the process closed it."""
        if viewer.ended.is_set():
            return
        viewer.end_reason = reason
        viewer.ended.set()
        self.feeds.viewers.leave(viewer.stream_path)
        viewer.connected.set()  #: a viewer still waiting to connect stops waiting
        self.link_dropped_ended += viewer.frames_dropped
        self.viewers.pop(viewer.session_id, None)
        self.by_location.pop(viewer.location, None)
        if close_peer:
            self.webrtc.send_control({"op": "close", "session": viewer.session_id})
        log.info(
            "whep end stream=%s sourceId=%r remote=%s session=%d reason=%s frames=%d dropped=%d",
            viewer.stream_path,
            viewer.source_id,
            viewer.remote,
            viewer.session_id,
            reason,
            viewer.frames_out,
            viewer.frames_dropped,
        )

    def delete(self, location: str) -> bool:
        viewer = self.by_location.get(location)
        if viewer is None:
            return False
        self.end_viewer(viewer, "delete")
        return True

    def statistics(self) -> dict[str, Any]:
        """For /metrics: gauges (viewers, transcoders) and counters (the rest)."""
        return {
            "viewers": len(self.viewers),
            "viewers_total": self.viewers_total,
            "refused": dict(self.refused),
            "transcoders": len(self.transcoders),
            "transcode_cpu_s": self.transcode_cpu_ended_s
            + sum(t.cpu_s for t in self.transcoders.values()),
            #: the link to the process was backed up (live viewers' and those that left)
            "link_frames_dropped": self.link_dropped_ended
            + sum(v.frames_dropped for v in self.viewers.values()),
            #: the process's per-viewer queue (reported when a viewer leaves)
            "queue_frames_dropped": self.queue_dropped,
            "queue_skips": self.queue_skips,
            "plis_forwarded": self.plis_forwarded,
            "plis_coalesced": self.plis_coalesced,
        }

"""JSON views of the bundle for the control API (docs/spec.md §4)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

from rtmp_ingest.api.defs import ApiServer
from rtmp_ingest.api.events import iso, track_json
from rtmp_ingest.bundle import FeedState, FeedStatistics, SourceStatistics, StreamStatistics
from rtmp_ingest.config import masked


def feed_json(feed: FeedStatistics, *, wall_origin_s: float, session: Any = None) -> dict[str, Any]:
    """A feed; `session` (its ingest session, when live) adds the protocol and its stats."""
    out: dict[str, Any] = {
        "id": feed.feed_id,
        "state": feed.state.value,
        "protocol": session.protocol if session is not None else None,
        "remoteAddr": feed.remote_addr,
        "priority": feed.priority,
        "startedAt": iso(wall_origin_s + feed.started_at_s),
        "uptimeS": round(feed.uptime_s, 3),
        "bytesIn": feed.bytes_in,
        "bitrateKbps": round(feed.bitrate_kbps, 1),
        "frames": feed.frames_in,
        "videoFrames": feed.video_frames_in,
        "audioFrames": feed.audio_frames_in,
        "keyframes": feed.keyframes_in,
        "framesDropped": feed.frames_dropped,
        "tracks": [track_json(t) for t in feed.tracks if t.media.value != "data"],
    }
    #: RTT, loss, retransmits from libsrt, where the SRT link is: a publish relayed from
    #: another node or worker (docs/spec.md §9) shows protocol "srt" without them
    link = getattr(session, "statistics", None)
    if session is not None and session.protocol == "srt" and link is not None:
        out["srt"] = link()
    return out


def source_json(
    source: SourceStatistics,
    *,
    wall_origin_s: float,
    extra: dict[str, Any] | None = None,
    sessions: Mapping[int, Any] | None = None,
) -> dict[str, Any]:
    on_air = next((f for f in source.feeds if f.feed_id == source.on_air_feed_id), None)
    of = (sessions or {}).get
    out: dict[str, Any] = {
        "sourceId": source.source_id,
        "state": source.state.value,
        "onAir": feed_json(on_air, wall_origin_s=wall_origin_s, session=of(on_air.feed_id))
        if on_air
        else None,
        "pending": [
            feed_json(f, wall_origin_s=wall_origin_s, session=of(f.feed_id))
            for f in source.feeds
            if f.state is FeedState.PENDING
        ],
        "standby": [
            feed_json(f, wall_origin_s=wall_origin_s, session=of(f.feed_id))
            for f in source.feeds
            if f.state is FeedState.STANDBY
        ],
        "tracks": [track_json(t) for t in source.tracks if t.media.value != "data"],
        "supersedeCount": source.supersede_count,
        "framesOut": source.frames_out,
        "readers": source.readers,
        "timelineOrigin": iso(source.timeline_origin_wall_s),
    }
    if source.reconnect_deadline_s is not None:
        out["reconnectDeadline"] = iso(wall_origin_s + source.reconnect_deadline_s)
    out.update(extra or {})
    return out


def stream_json(
    stream: StreamStatistics,
    *,
    wall_origin_s: float,
    extra: Callable[[str, str], dict[str, Any]] | None = None,
    sessions: Mapping[int, Any] | None = None,
) -> dict[str, Any]:
    """A stream; `extra(path, source_id)` adds fields to each source (urls, outputs)."""
    return {
        "path": stream.stream_path,
        "createdAt": iso(wall_origin_s + stream.created_at_s),
        "sources": [
            source_json(
                s,
                wall_origin_s=wall_origin_s,
                extra=extra(stream.stream_path, s.source_id) if extra else None,
                sessions=sessions,
            )
            for s in stream.sources
        ],
    }


def _mask_url_credentials(value: Any) -> Any:
    """Config data with the password of every `scheme://user:password@host` URL masked."""
    if isinstance(value, dict):
        return {k: _mask_url_credentials(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_url_credentials(v) for v in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        try:
            parts = urlsplit(value)
        except ValueError:
            return value
        if parts.password is not None or parts.username is not None:
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            port = f":{parts.port}" if parts.port is not None else ""
            user = parts.username or ""
            netloc = (
                f"{user}:***@{host}{port}" if parts.password is not None else f"***@{host}{port}"
            )
            return SplitResult(parts.scheme, netloc, parts.path, parts.query, "").geturl()
    return value


def config_view(server: ApiServer) -> dict[str, Any]:
    """The effective configuration, secrets and URL credentials masked."""
    data: dict[str, Any] = _mask_url_credentials(masked(server.config))
    return data

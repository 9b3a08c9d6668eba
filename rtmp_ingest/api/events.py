"""Bundle events as JSON, fanned out to event-stream subscribers (docs/spec.md §3.10).

The API owns the event JSON: `event_json` turns a bundle event into the
`(name, payload)` pair the SSE endpoint sends, with times as ISO 8601 UTC
strings like the REST views (`timelineOrigin`, `deadline`). `EventHub` is
what the server's event pump publishes into (`publish(event,
wall_origin_s=...)`); the composition root creates it and hands it to the
daemon, so the server never imports this module.

Each subscriber has a bounded queue; publishing never waits: a subscriber
whose queue is full is disconnected (its stream ends; the client reconnects
and gets the current state again) and counted. A subscription is removed from
the hub by `close()`, which the SSE response calls on every exit path.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import trio

from rtmp_ingest.bundle import Active, Inactive, Reconnecting, Stopped, Superseded, Updated
from rtmp_ingest.bundle.records import TrackDescription

#: Events a subscriber may fall behind by before it is cut off.
SUBSCRIBER_QUEUE_EVENTS = 1024


def iso(unix_s: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC with milliseconds (`2026-01-01T12:00:00.000Z`)."""
    if unix_s is None:
        return None
    return (
        dt.datetime.fromtimestamp(unix_s, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def track_json(track: TrackDescription) -> dict[str, Any]:
    info = track.info
    out: dict[str, Any] = {
        "trackId": track.track_id,
        "media": track.media.value,
        "codec": track.codec,
    }
    if info is not None:
        for key, value in (
            ("width", info.width),
            ("height", info.height),
            ("frameRate", info.frame_rate),
            ("sampleRate", info.sample_rate),
            ("channels", info.channels),
            ("profile", info.profile),
        ):
            if value is not None:
                out[key] = value
    return out


def _tracks(tracks: Any) -> list[dict[str, Any]]:
    return [track_json(t) for t in tracks if t.media.value != "data"]


def event_json(event: object, *, wall_origin_s: float) -> tuple[str, dict[str, Any]]:
    """(event name, JSON payload) for a bundle event; times are ISO strings."""
    if isinstance(event, Active):
        return "active", {
            "stream": event.stream_path,
            "sourceId": event.source_id,
            "feedId": event.feed_id,
            "tracks": _tracks(event.tracks),
            "timelineOrigin": iso(event.timeline_origin_wall_s),
        }
    if isinstance(event, Updated):
        return "updated", {
            "stream": event.stream_path,
            "sourceId": event.source_id,
            "feedId": event.feed_id,
            "tracks": _tracks(event.tracks),
        }
    if isinstance(event, Superseded):
        return "superseded", {
            "stream": event.stream_path,
            "sourceId": event.source_id,
            "feedId": event.feed_id,
            "byFeedId": event.by_feed_id,
        }
    if isinstance(event, Reconnecting):
        return "reconnecting", {
            "stream": event.stream_path,
            "sourceId": event.source_id,
            "feedId": event.feed_id,
            "reason": event.reason.value,
            "deadline": iso(wall_origin_s + event.deadline_s),
        }
    if isinstance(event, Inactive):
        return "inactive", {"stream": event.stream_path, "sourceId": event.source_id}
    if isinstance(event, Stopped):
        return "stopped", {"stream": event.stream_path}
    raise TypeError(f"not a bundle event: {event!r}")


class Subscription:
    """One subscriber's queue of (name, payload) pairs."""

    def __init__(self, hub: EventHub, stream_filter: str | None, internal: bool = False) -> None:
        self.stream_filter = stream_filter
        self.internal = internal
        self._send, self.receive = trio.open_memory_channel[tuple[str, dict[str, Any]]](
            SUBSCRIBER_QUEUE_EVENTS
        )
        self._hub = hub

    def offer(self, name: str, payload: dict[str, Any]) -> bool:
        """Queues one event; False when the subscriber is too far behind (or closed)."""
        if self.stream_filter is not None and payload.get("stream") != self.stream_filter:
            return True
        try:
            self._send.send_nowait((name, payload))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def close(self) -> None:
        """Leaves the hub and ends the subscriber's channel (idempotent)."""
        self._hub._remove(self)
        self._send.close()


class EventHub:
    """Fan-out of bundle events to subscribers; the JSON is made once per event."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._internal = 0  #: of them, legs of another worker's merge
        self.dropped_subscribers = 0
        self.published = 0

    def subscribe(
        self, stream_filter: str | None = None, *, internal: bool = False
    ) -> Subscription:
        """`internal`: a leg of another worker's merged stream (api/defs.py
        `INTERNAL_LEG_SCOPE`), counted apart from the clients."""
        subscription = Subscription(self, stream_filter, internal)
        self._subscriptions.add(subscription)
        self._internal += internal
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.discard(subscription)
            self._internal -= subscription.internal

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions) - self._internal

    @property
    def internal_subscribers(self) -> int:
        return self._internal

    def publish(self, event: object, *, wall_origin_s: float) -> None:
        name, payload = event_json(event, wall_origin_s=wall_origin_s)
        self.published += 1
        for subscription in list(self._subscriptions):
            if not subscription.offer(name, payload):
                self.dropped_subscribers += 1
                subscription.close()

    async def aclose(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.close()

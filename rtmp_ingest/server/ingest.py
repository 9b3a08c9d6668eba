"""What the daemon needs from any ingest session: RTMP today, SRT and WHIP beside it.

A driver turns its protocol's publish into a `PublishAttempt` for the auth policy,
asks the bundle registry for a feed, pushes frames and ends the feed; the daemon
keeps the sessions that publish (`feed_started` / `end_feed`) so it can tell one
why it must go (`kick`: supersede in disconnect mode, an operator's kick, shutdown).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rtmp_ingest.bundle import EndReason, Feed


class IngestSession(Protocol):
    """One publishing connection of any protocol."""

    #: "rtmp", "rtmps", "srt", "webrtc": in log lines and the API
    protocol: str
    #: the client's address, "IP:PORT"
    remote: str
    #: the bundle feed while it publishes
    feed: Feed | None
    #: whether its feed is recorded (app setting or token claim)
    record: bool

    @property
    def malformed(self) -> int:
        """Media messages dropped as malformed so far in this feed."""
        ...

    def kick(self, reason: EndReason, description: str) -> None:
        """Ends the session, telling the client `description` in its protocol's way."""
        ...

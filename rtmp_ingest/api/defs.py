"""What the HTTP API needs from the rest of the server, as narrow `typing.Protocol`s.

The API (control endpoints, events, metrics, HLS over HTTP, the multiview page)
never imports `rtmp_ingest.server`: the composition root hands it one object
that satisfies `ApiServer` (today the `Daemon`, structurally), and the unit
tests hand it a fake (tests/api/fake.py). Every member here is one the API
really uses; read-only members are properties so any attribute satisfies them.

Members the daemon does not have yet are marked NEW in their docstring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import Any, Protocol

import trio

from rtmp_ingest.auth.tokens import TokenClaims
from rtmp_ingest.bundle import RegistryStatistics, SourceStatistics, StreamStatistics
from rtmp_ingest.config import Config
from rtmp_ingest.outputs.hls import HlsSettings
from rtmp_ingest.outputs.hls_source import SourceHls
from rtmp_ingest.outputs.record import SourceRecording


class RegistryView(Protocol):
    """The bundle registry's read side."""

    @property
    def wall_origin_s(self) -> float:
        """Unix time of the registry clock's zero (monotonic times + this = wall time)."""
        ...

    def stream_paths(self) -> Iterable[str]: ...

    def stream_statistics(self, stream_path: str, *, now_s: float) -> StreamStatistics | None: ...

    def source_statistics(
        self, stream_path: str, source_id: str, *, now_s: float
    ) -> SourceStatistics | None: ...

    def statistics(self) -> RegistryStatistics: ...


class Subscription(Protocol):
    """One event-stream subscriber: (event name, JSON payload) pairs, then end of channel."""

    @property
    def receive(self) -> trio.MemoryReceiveChannel[tuple[str, dict[str, Any]]]: ...

    def close(self) -> None: ...


#: ASGI scope key: true on a request another worker of this machine makes for its own
#: merge (cluster/forward.py sets it), so the event stream it follows is a leg of another
#: worker's subscriber, not a subscriber of its own
INTERNAL_LEG_SCOPE = "rtmp_ingest.internal_leg"


class EventSource(Protocol):
    """Where bundle events come from, already as JSON (api/events.py's `EventHub`)."""

    def subscribe(
        self, stream_filter: str | None = None, *, internal: bool = False
    ) -> Subscription: ...

    @property
    def subscribers(self) -> int:
        """Event-stream clients (with workers: those whose merge this worker runs)."""
        ...

    @property
    def internal_subscribers(self) -> int:
        """Legs of another worker's merge (cluster/machine.py) this worker feeds."""
        ...


class BoundView(Protocol):
    """The addresses the listeners are bound to (ports resolved when 0 was asked)."""

    @property
    def rtmp(self) -> tuple[str, int]: ...

    @property
    def http(self) -> tuple[str, int] | None:
        """None when HTTP is off (then the API is not served at all)."""
        ...


class TrackView(Protocol):
    @property
    def bytes(self) -> int: ...


class PlayerView(Protocol):
    """One connected player (RTMP or HTTP-FLV)."""

    @property
    def kind(self) -> str: ...

    @property
    def track(self) -> TrackView: ...

    def dropped(self) -> int: ...

    def skips(self) -> int: ...


class HlsView(Protocol):
    """The LL-HLS service: packagers by (stream, sourceId), request counters, change waits."""

    @property
    def enabled(self) -> bool: ...

    @property
    def settings(self) -> HlsSettings: ...

    @property
    def sources(self) -> Mapping[tuple[str, str], SourceHls]: ...

    @property
    def requests(self) -> dict[str, int]:
        """Request counters by kind; the HTTP handlers count into it."""
        ...

    #: bytes served (segments, parts, inits); the HTTP handlers count into it
    bytes_out: int

    @property
    def errors(self) -> int: ...

    def frames_unused(self) -> int:
        """Frames that reached no playlist (skipped or cut), gone sources included."""
        ...

    def has_stream(self, stream_path: str) -> bool: ...

    def multivariant(self, stream_path: str) -> str | None: ...

    def stream_sources(self, stream_path: str) -> list[SourceHls]: ...

    async def wait_change(self, key: tuple[str, str]) -> None: ...

    def viewer_seen(self, stream_path: str) -> bool:
        """A request for `stream_path` (a viewer); True if a source of it is on its way."""
        ...

    async def wait_any_change(self) -> None:
        """Returns at the next change of any source's HLS."""
        ...


class RecorderView(Protocol):
    @property
    def recordings(self) -> Mapping[tuple[str, str], SourceRecording]: ...

    def statistics(self) -> Mapping[str, int]:
        """recording, bytesWritten, filesDeleted, errors."""
        ...


class MetricsView(Protocol):
    """The daemon's counters (gauges are read live)."""

    @property
    def connections_total(self) -> int: ...

    @property
    def connections_refused(self) -> int: ...

    @property
    def protocol_errors(self) -> int: ...

    @property
    def publishes(self) -> int: ...

    @property
    def supersedes(self) -> int: ...

    @property
    def budget_drops(self) -> int: ...

    @property
    def bytes_in_ended(self) -> int: ...

    @property
    def refused(self) -> Mapping[str, int]: ...

    @property
    def output_errors(self) -> Mapping[str, int]: ...


class TokenKeyring(Protocol):
    """The auth keyring: signs tokens and revokes them (both may block on the disk)."""

    def mint(self, claims: TokenClaims, *, via: str = "") -> str:
        """The signed token (TokenClaimsError if unmintable), recorded as issued `via`."""
        ...

    def revoke(self, token_id: str, *, now_s: float | None = None) -> bool:
        """Persists the revocation; False if it was revoked already."""
        ...


class RtmpView(Protocol):
    @property
    def pending_total(self) -> int:
        """Bytes of partially received RTMP messages held, all connections."""
        ...


class FeedSessionView(Protocol):
    """One publishing connection: its protocol ("rtmp", "rtmps", "srt", "webrtc")."""

    @property
    def protocol(self) -> str: ...


class ApiServer(Protocol):
    """Everything the API uses from the server."""

    @property
    def config(self) -> Config: ...

    @property
    def registry(self) -> RegistryView: ...

    @property
    def hub(self) -> EventSource: ...

    @property
    def bound(self) -> BoundView | None: ...

    @property
    def metrics(self) -> MetricsView: ...

    @property
    def sessions(self) -> Sized:
        """Open RTMP connections (only their number is read)."""
        ...

    @property
    def hls(self) -> HlsView: ...

    @property
    def recorder(self) -> RecorderView: ...

    @property
    def keyring(self) -> TokenKeyring | None:
        """None until the server has loaded it."""
        ...

    @property
    def rtmp(self) -> RtmpView: ...

    @property
    def publishers(self) -> Mapping[int, FeedSessionView]:
        """The ingest session of every live feed, by feed id (any protocol)."""
        ...

    def players_of(self, stream_path: str, source_id: str) -> Sequence[PlayerView]: ...

    def output_statistics(self) -> Mapping[str, int]:
        """players, bytes_out, frames_dropped over every output."""
        ...

    def kick_source(self, stream_path: str, source_id: str, *, ban_s: float = 0.0) -> bool:
        """Ends the feed on air of a source; False if none. With `ban_s` > 0 new publishes
        of that source from that feed's client address are refused for that long
        (ValueError for a ban the ban list refuses)."""
        ...

    def kick_feed(self, feed_id: int, *, ban_s: float = 0.0) -> bool:
        """Ends one feed by id, whatever its state (on air, pending, standby); False if
        there is no such feed. `ban_s` as for `kick_source`."""
        ...

    def listeners_up(self) -> Mapping[str, bool]:
        """NEW. Each listener ("rtmp", "rtmps", "http", …) → whether it is accepting now."""
        ...

"""An SRT publish whose stream another process serves: relayed there over RTMP.

docs/spec.md §9: a publisher that reaches a node (or, under `serve --workers N`,
the worker that serves SRT) which does not serve its stream gets to the owner
through one relay hop. RTMP connections are relayed by the RTMP driver
(server/rtmp.py); SRT ones by this module, with the same relay
(`server.placement.PublishRelay`, cluster/relay.py `RtmpRelay`).

libsrt decides accept or reject inside its listen callback, which cannot wait
for Redis or for the owner. So the callback runs the publish policy as for any
SRT publish and asks the placement only what it knows without waiting
(`remote_holder`): when another process is known to hold the stream, the
caller is accepted *without* a local feed, and its session (server/srt_session.py)
then asks the placement for real (`owner_of`, which may take a Redis round trip)
and either publishes locally after all (the stream came back here) or opens a
relay to the owner. The owner decides the publish exactly as if the encoder had
come to it (the relay vouches for the encoder's address); its refusal, its
goodbye, or a relay that cannot keep up ends the SRT connection — SRT has no
status message after the handshake, so the reason is in the operator's log.

`RelayedMedia` is the media side: the frames the TS demuxer makes (FLV tag
bodies, as an RTMP publisher sends them) wait in a bounded backlog until the
relay is open — the first configuration records must reach the owner, so
nothing is dropped meanwhile — and are then forwarded in order. RTMP carries one
video and one audio track without E-RTMP multitrack framing, so the relay
forwards the default tracks (`video0`, `audio0`), which are what RTMP players
and HLS of the feed show.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Protocol

from rtmp_ingest.bundle import Frame, Media
from rtmp_ingest.server.placement import Placement, PublishRelay

#: FLV/RTMP message types of the media the relay forwards
TYPE_AUDIO = 8
TYPE_VIDEO = 9
TYPE_DATA = 18
#: the tracks an RTMP relay carries (single-track tags; docs/spec.md §9)
RELAYED_TRACKS = {Media.VIDEO: "video0", Media.AUDIO: "audio0"}
_TYPE_OF = {Media.VIDEO: TYPE_VIDEO, Media.AUDIO: TYPE_AUDIO, Media.DATA: TYPE_DATA}

TOO_SLOW = "The stream's owner does not keep up; reconnect."


class SrtPlacement(Placement, Protocol):
    """What the SRT driver asks of a cluster node or of a worker: a `Placement` plus the
    answer its listen callback can have without waiting."""

    def remote_holder(self, stream_path: str) -> str | None:
        """The other node or worker that holds `stream_path` or may (None: served here)."""
        ...


#: `remote_holder` of a cluster stream this node does not own and knows no lease of yet
UNPLACED = "the cluster"


class ClusterView(SrtPlacement, Protocol):
    """What `ClusterSrt` uses of the cluster node (cluster/node.py `ClusterNode`)."""

    @property
    def owned(self) -> Container[str]: ...


class ClusterSrt:
    """A cluster node as the SRT driver's placement. The node's view of the leases others
    hold is refreshed every `renew_s`, so a stream it does not own may be held by a node
    it does not know of yet: every such publish is placed by the session (`owner_of`
    takes a free lease or names the holder), as RTMP publishes are, instead of being
    admitted here and ended once the claim finds the owner (docs/spec.md §9)."""

    def __init__(self, node: ClusterView) -> None:
        self.node = node
        self.owner_of = node.owner_of
        self.inbound = node.inbound
        self.open_relay = node.open_relay

    def remote_holder(self, stream_path: str) -> str | None:
        if stream_path in self.node.owned:
            return None
        return self.node.remote_holder(stream_path) or UNPLACED


def message_of(frame: Frame) -> tuple[int, int, bytes] | None:
    """(type, timestamp_ms, body) of a frame the relay carries, else None."""
    media = frame.media
    track = RELAYED_TRACKS.get(media)
    if track is not None and frame.track_id != track:
        return None
    return _TYPE_OF[media], frame.dts_ms, frame.payload


class RelayedMedia:
    """One SRT feed's frames on their way to the owner (see the module docstring)."""

    __slots__ = ("backlog", "backlog_bytes", "forwarded", "max_backlog_bytes", "relay")

    def __init__(self, *, max_backlog_bytes: int) -> None:
        self.max_backlog_bytes = max_backlog_bytes
        self.relay: PublishRelay | None = None
        self.backlog: list[Frame] = []
        self.backlog_bytes = 0
        self.forwarded = 0

    def push(self, frames: Iterable[Frame]) -> str | None:
        """Forwards (or, before the relay is open, keeps) `frames`; a reason when the
        connection must end (the backlog or the relay's buffer is full), else None."""
        relay = self.relay
        if relay is None:
            for frame in frames:
                self.backlog.append(frame)
                self.backlog_bytes += len(frame.payload)
            if self.backlog_bytes > self.max_backlog_bytes:
                return (
                    f"The stream's owner did not answer before {self.max_backlog_bytes} "
                    "bytes of media waited for it; reconnect."
                )
            return None
        return self._forward(relay, frames)

    def _forward(self, relay: PublishRelay, frames: Iterable[Frame]) -> str | None:
        for frame in frames:
            message = message_of(frame)
            if message is None:
                continue
            self.forwarded += 1
            if not relay.forward(*message):
                return TOO_SLOW
        return None

    def attach(self, relay: PublishRelay) -> str | None:
        """The relay is open: the backlog goes first, in order; as `push`."""
        self.relay = relay
        return self._forward(relay, self.take_backlog())

    def take_backlog(self) -> list[Frame]:
        """What waited (also for a publish that turned out to be served here after all)."""
        backlog, self.backlog, self.backlog_bytes = self.backlog, [], 0
        return backlog

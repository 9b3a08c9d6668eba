"""Who serves a stream: the seam between the ingest drivers and a cluster (docs/spec.md §9).

Without a cluster nothing here is used: a driver whose listener has no `placement`
admits every publish itself, as on one machine. With one, before a publish is
admitted the driver asks `owner_of(stream_path)`:

- `None` — this process serves the stream (it holds, or just took, its lease);
- a `RemoteOwner` — another node does: the RTMP driver relays the publisher there
  (`open_relay`), a WHIP endpoint redirects the client with `307`.

A connection that is itself a relay from another node carries internal credentials
in its query; `inbound` checks them, removes them, and gives what the relaying node
vouches for (`Vouched`): the encoder's address, and the protocol the encoder used (an
SRT publish is relayed over RTMP, and is shown as SRT on the owner). Such a publish is never relayed again (one hop): if
this node is not the owner (any more), `owner_of(..., relayed=True)` refuses it and
the encoder reconnects.

With workers (docs/spec.md §9) the worker ownership comes first: the RTMP driver
hands a connection to the stream's worker on this machine before it asks
`owner_of`, so a `Placement` is asked only by the process that serves the stream on
its machine (each worker is a cluster node of its own, cluster/node.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import attrs


class PlacementError(Exception):
    """The owner cannot be found or reached now; `str()` is the status text for the client."""


@attrs.frozen
class RemoteOwner:
    """The node that serves a stream, as this node reaches it."""

    node_id: str
    #: its RTMP listener
    rtmp_host: str
    rtmp_port: int
    #: its HTTP listener "HOST:PORT" ("" without HTTP)
    http: str


@attrs.frozen
class Vouched:
    """What a relay's valid internal credentials vouch for (docs/spec.md §9)."""

    #: the encoder's "IP:PORT"
    remote: str
    #: the protocol the encoder used ("srt", "rtmps", …); None: credentials that do not
    #: say (a relay of an older version), so the connection's own protocol
    protocol: str | None = None


class PublishRelay(Protocol):
    """One publisher's media on its way to the stream's owner (the RTMP driver's side)."""

    async def open(self) -> str | None:
        """Connects and publishes upstream; None when the owner accepted, else its refusal."""
        ...

    async def run(self) -> str:
        """Carries the connection until the owner ends it; returns why, for the encoder."""
        ...

    def forward(self, type_id: int, timestamp_ms: int, payload: bytes) -> bool:
        """Sends one media message (8 audio, 9 video, 18 data); False: the owner is too slow."""
        ...

    def close(self) -> None:
        """The encoder stopped: unpublish upstream and end `run`."""
        ...


class Placement(Protocol):
    """What a driver asks before it admits a publish (see the module docstring)."""

    async def owner_of(self, stream_path: str, *, relayed: bool = False) -> RemoteOwner | None:
        """None when this process serves `stream_path`; raises PlacementError."""
        ...

    def inbound(
        self, stream_path: str, query: Mapping[str, str], remote: str
    ) -> tuple[dict[str, str], Vouched | None]:
        """The query without internal credentials, and what they vouch for when they
        were valid (None: an ordinary client)."""
        ...

    def open_relay(
        self,
        owner: RemoteOwner,
        *,
        stream_path: str,
        query: Mapping[str, str],
        app: str,
        remote: str,
        protocol: str = "rtmp",
    ) -> PublishRelay:
        """A relay of one publisher (`remote`, publishing with `protocol`) of
        `stream_path` to `owner`."""
        ...

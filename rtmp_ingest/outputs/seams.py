"""What the output services (HLS, recorder) use of the rest of the server, as small protocols.

The composition root hands each service these few collaborators instead of the
whole daemon (a part gets what it uses): a way to
subscribe to a source in the bundle, the publishing feeds by id (the recorder
asks whether a feed may be recorded and where it comes from), and a metrics
sink that counts an output stopped for a stream because handling its event
failed. `OutputCounters` is the sink a service uses when it is given none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import attrs

from rtmp_ingest.bundle import OutputFrame, StartMode


class SourceReader(Protocol):
    """A bounded queue of one source's output frames (bundle `Reader`)."""

    def drain_nowait(self) -> list[OutputFrame]: ...

    def set_wakeup(self, wakeup: Callable[[], None] | None) -> None: ...

    def close(self) -> None: ...


class SourceSubscriber(Protocol):
    """Subscribes to one source of a stream (the bundle `Registry`)."""

    def subscribe(
        self,
        stream_path: str,
        source_id: str | None = None,
        *,
        max_frames: int | None = None,
        start: StartMode = StartMode.GOP,
    ) -> SourceReader: ...


class RecordedFeed(Protocol):
    """What the recorder asks of a publishing feed (an RTMP session today)."""

    @property
    def record(self) -> bool: ...

    @property
    def remote(self) -> str: ...


#: publishing feeds by feed id
Feeds = Mapping[int, RecordedFeed]


class OutputMetrics(Protocol):
    """Counts outputs stopped for a stream because handling one of its events failed."""

    def output_failed(self, output: str) -> None:
        """`output` is "hls", "hls-disk" or "record"."""


@attrs.define
class OutputCounters:
    """An OutputMetrics that only counts (the default; tests read it)."""

    failures: dict[str, int] = attrs.Factory(dict)

    def output_failed(self, output: str) -> None:
        self.failures[output] = self.failures.get(output, 0) + 1

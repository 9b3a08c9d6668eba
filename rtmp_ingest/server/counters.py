"""The counters every driver and output adds to; `/metrics` reads them."""

from __future__ import annotations

import attrs


@attrs.define
class Metrics:
    """Counters the Prometheus collector reads (gauges are read live from the services)."""

    connections_total: int = 0
    connections_refused: int = 0
    protocol_errors: int = 0
    publishes: int = 0
    supersedes: int = 0
    bytes_in_ended: int = 0  #: bytes of feeds that have ended (live feeds are added at scrape)
    player_bytes_ended: int = 0  #: bytes sent to players that have left
    player_dropped_ended: int = 0  #: frames dropped for players that have left
    #: connections dropped because all partial input exceeded rtmp.max_pending_bytes_total
    budget_drops: int = 0
    refused: dict[str, int] = attrs.Factory(dict)
    #: exceptions contained in one output's handling of a bundle event, per output
    output_errors: dict[str, int] = attrs.Factory(dict)

    def count_refusal(self, reason_code: str) -> None:
        self.refused[reason_code] = self.refused.get(reason_code, 0) + 1

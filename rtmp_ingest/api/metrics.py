"""Prometheus metrics, read live from the server at every scrape.

A custom collector (no per-event bookkeeping on the hot path): counters come
from the server's `metrics` record, gauges from the registry and sessions, the
HTTP listener's from its `ConnectionStats`; `rtmp_ingest_build_info` carries
the version as a label (value 1), as Prometheus exporters do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from rtmp_ingest import __version__
from rtmp_ingest.api.defs import ApiServer

if TYPE_CHECKING:
    from rtmp_ingest.api.serve import ConnectionStats


class ServerCollector:
    def __init__(self, server: ApiServer, *, http: ConnectionStats | None = None) -> None:
        self.server = server
        self.http = http

    def collect(self) -> Iterator[Metric]:
        server = self.server
        m = server.metrics
        build = GaugeMetricFamily(
            "rtmp_ingest_build_info", "The running version (value 1)", labels=["version"]
        )
        build.add_metric([__version__], 1)
        yield build
        registry = server.registry
        now = trio.current_time()
        yield GaugeMetricFamily(
            "rtmp_ingest_connections", "Open RTMP connections", value=len(server.sessions)
        )
        yield CounterMetricFamily(
            "rtmp_ingest_connections", "RTMP connections accepted", value=m.connections_total
        )
        yield CounterMetricFamily(
            "rtmp_ingest_connections_refused",
            "RTMP connections refused by connection limits",
            value=m.connections_refused,
        )
        yield CounterMetricFamily(
            "rtmp_ingest_protocol_errors", "RTMP protocol errors", value=m.protocol_errors
        )
        yield CounterMetricFamily(
            "rtmp_ingest_memory_budget_drops",
            "Connections dropped because all partial input exceeded rtmp.max_pending_bytes_total",
            value=m.budget_drops,
        )
        yield GaugeMetricFamily(
            "rtmp_ingest_pending_input_bytes",
            "Bytes of partially received RTMP messages held, all connections",
            value=server.rtmp.pending_total,
        )
        stats = registry.statistics()
        yield GaugeMetricFamily("rtmp_ingest_streams", "Live streams", value=stats.streams)
        yield GaugeMetricFamily(
            "rtmp_ingest_sources", "Sources of live streams", value=stats.sources
        )
        feeds = GaugeMetricFamily("rtmp_ingest_feeds", "Feeds by state", labels=["state"])
        by_state: Counter[str] = Counter()
        live_bytes = 0
        dropped_frames = 0
        for path in registry.stream_paths():
            stream = registry.stream_statistics(path, now_s=now)
            if stream is None:
                continue
            for source in stream.sources:
                for feed in source.feeds:
                    by_state[feed.state.value] += 1
                    live_bytes += feed.bytes_in
        for state in ("on-air", "pending", "standby"):
            feeds.add_metric([state], by_state.get(state, 0))
        yield feeds
        yield CounterMetricFamily(
            "rtmp_ingest_bytes_in",
            "Media bytes received from publishers",
            value=m.bytes_in_ended + live_bytes,
        )
        out = server.output_statistics()
        yield CounterMetricFamily(
            "rtmp_ingest_bytes_out", "Bytes sent to players", value=out.get("bytes_out", 0)
        )
        dropped_frames = out.get("frames_dropped", 0)
        yield CounterMetricFamily(
            "rtmp_ingest_reader_frames_dropped",
            "Frames slow readers lost (skipped to the next keyframe)",
            value=dropped_frames,
        )
        yield GaugeMetricFamily(
            "rtmp_ingest_players",
            "Connected players (RTMP and HTTP-FLV)",
            value=out.get("players", 0),
        )
        whep = getattr(server, "whep", None)
        if whep is not None:
            yield from _whep_metrics(whep.statistics())
        cluster = getattr(server, "cluster", None)
        if cluster is not None:
            yield from _cluster_metrics(cluster.statistics())
        yield CounterMetricFamily("rtmp_ingest_publishes", "Publishes admitted", value=m.publishes)
        refused = CounterMetricFamily(
            "rtmp_ingest_publishes_refused", "Publishes refused", labels=["reason"]
        )
        for reason, count in sorted(m.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        output_errors = CounterMetricFamily(
            "rtmp_ingest_output_errors",
            "Failures contained in one output's handling of a bundle event",
            labels=["output"],
        )
        for output, count in sorted(m.output_errors.items()):
            output_errors.add_metric([output], count)
        yield output_errors
        yield CounterMetricFamily(
            "rtmp_ingest_supersedes", "Feeds superseded by a newer feed", value=m.supersedes
        )
        yield GaugeMetricFamily(
            "rtmp_ingest_event_subscribers",
            "Event-stream subscribers (with workers: on the worker that merges for them)",
            value=server.hub.subscribers,
        )
        yield GaugeMetricFamily(
            "rtmp_ingest_event_internal_subscribers",
            "Event streams followed by another worker's merge (with workers)",
            value=server.hub.internal_subscribers,
        )
        hls = server.hls
        yield GaugeMetricFamily(
            "rtmp_ingest_hls_sources",
            "Sources packaged as LL-HLS",
            value=sum(1 for s in hls.sources.values() if not s.ended),
        )
        requests = CounterMetricFamily(
            "rtmp_ingest_hls_requests", "HLS requests by kind", labels=["kind"]
        )
        for kind, count in sorted(hls.requests.items()):
            requests.add_metric([kind], count)
        yield requests
        yield CounterMetricFamily(
            "rtmp_ingest_hls_bytes_out",
            "HLS segment, part and init bytes served",
            value=hls.bytes_out,
        )
        record = server.recorder.statistics()
        yield GaugeMetricFamily(
            "rtmp_ingest_record_sources", "Sources being recorded", value=record["recording"]
        )
        yield CounterMetricFamily(
            "rtmp_ingest_record_bytes", "Bytes written to recordings", value=record["bytesWritten"]
        )
        yield CounterMetricFamily(
            "rtmp_ingest_record_files_deleted",
            "Recordings deleted by retention",
            value=record["filesDeleted"],
        )
        yield CounterMetricFamily(
            "rtmp_ingest_record_errors", "Recording write errors", value=record["errors"]
        )
        yield CounterMetricFamily(
            "rtmp_ingest_hls_errors",
            "Frames the HLS packager could not use",
            value=hls.errors + hls.frames_unused(),
        )
        yield from self._http()

    def _http(self) -> Iterator[Metric]:
        stats = self.http
        if stats is None:
            return
        yield GaugeMetricFamily(
            "rtmp_ingest_http_connections", "Open HTTP connections", value=stats.open
        )
        yield CounterMetricFamily(
            "rtmp_ingest_http_connections", "HTTP connections accepted", value=stats.total
        )
        yield CounterMetricFamily(
            "rtmp_ingest_http_connections_refused",
            "HTTP connections refused by http.max_connections[_per_address]",
            value=stats.refused,
        )
        yield CounterMetricFamily(
            "rtmp_ingest_http_write_timeouts",
            "HTTP clients dropped for not reading within http.write_timeout_s",
            value=stats.write_timeouts,
        )


def make_registry(server: ApiServer, *, http: ConnectionStats | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server, http=http))
    return registry


def _whep_metrics(stats: dict[str, Any]) -> Iterator[Any]:
    """WHEP viewers (server/whep.py): `WhepService.statistics()` as metric families."""
    yield GaugeMetricFamily(
        "rtmp_ingest_whep_viewers", "Connected WHEP (WebRTC) viewers", value=stats["viewers"]
    )
    yield CounterMetricFamily(
        "rtmp_ingest_whep_viewers_started", "WHEP viewers answered", value=stats["viewers_total"]
    )
    refused = CounterMetricFamily(
        "rtmp_ingest_whep_refused", "WHEP offers refused", labels=["status"]
    )
    for status, count in sorted(stats["refused"].items()):
        refused.add_metric([str(status)], count)
    yield refused
    yield GaugeMetricFamily(
        "rtmp_ingest_whep_transcoders",
        "AAC to Opus transcoders running (one per source with WHEP viewers)",
        value=stats["transcoders"],
    )
    yield CounterMetricFamily(
        "rtmp_ingest_whep_transcode_cpu_seconds",
        "CPU time spent transcoding AAC to Opus for WHEP",
        value=stats["transcode_cpu_s"],
    )
    dropped = CounterMetricFamily(
        "rtmp_ingest_whep_dropped",
        "WHEP frames dropped by where (link: daemon to WebRTC process; queue: a viewer's)",
        labels=["where"],
    )
    dropped.add_metric(["link"], stats["link_frames_dropped"])
    dropped.add_metric(["queue"], stats["queue_frames_dropped"])
    yield dropped
    yield CounterMetricFamily(
        "rtmp_ingest_whep_queue_skips",
        "Times a WHEP viewer's send queue was full and skipped to the next keyframe",
        value=stats["queue_skips"],
    )
    plis = CounterMetricFamily(
        "rtmp_ingest_whep_keyframe_requests",
        "WHEP viewers' keyframe requests for WebRTC publishers, by outcome (forwarded to the "
        "publisher, or coalesced into one already sent within webrtc.whep_pli_interval_s)",
        labels=["outcome"],
    )
    plis.add_metric(["forwarded"], stats.get("plis_forwarded", 0))
    plis.add_metric(["coalesced"], stats.get("plis_coalesced", 0))
    yield plis


def _cluster_metrics(stats: dict[str, Any]) -> Iterator[Any]:
    """This node of a cluster (cluster/node.py, docs/spec.md §9), labelled with its id."""
    node = [stats["node"]]
    for name, kind, help_text, value in (
        ("streams_owned", GaugeMetricFamily, "Streams whose lease this node holds", "streams"),
        ("relays", GaugeMetricFamily, "Publishers relayed to their stream's owner now", "relays"),
        ("pulls", GaugeMetricFamily, "Sources pulled from their owner now", "pulls"),
        ("relay_bytes", CounterMetricFamily, "Bytes sent by relays that ended", "relay_bytes"),
        ("takeovers", CounterMetricFamily, "Streams taken over with a timeline", "takeovers"),
        ("leases_lost", CounterMetricFamily, "Leases another node took", "leases_lost"),
        ("events_dropped", CounterMetricFamily, "Bundle events not published", "events_dropped"),
    ):
        family = kind(f"rtmp_ingest_cluster_{name}", help_text, labels=["node"])
        family.add_metric(node, stats[value])
        yield family

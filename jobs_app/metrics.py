"""Prometheus metrics of the event pipeline, served at /metrics by each process.

Every process keeps its own series and `/metrics` labels each with `process`; Prometheus
scrapes every daphne process on its own port and PromQL sums (docs/operations.md "Metrics").
Not prometheus_client's multiprocess mode: it needs one directory shared by processes started
together, and the gauges of a process killed with -9 stay in it until someone cleans up.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

from django.conf import settings
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONNECTIONS_OPENED = Counter(
    "photobooth_stream_connections_opened", "Streams opened", ["transport", "scope"]
)
CONNECTIONS_REFUSED = Counter(
    "photobooth_stream_connections_refused", "Streams refused", ["transport", "reason"]
)
EVENTS_PUBLISHED = Counter("photobooth_events_published", "Events committed and announced")
ANNOUNCE_SECONDS = Histogram(
    "photobooth_event_announce_seconds",
    "From commit to the event's group messages handed to the channel layer",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
EVENTS_DELIVERED = Counter(
    "photobooth_events_delivered", "Events sent to stream clients", ["transport"]
)
REPLAYS = Counter("photobooth_stream_replays", "Replays from the event log", ["transport"])
RESETS = Counter("photobooth_stream_resets", "Reset events sent for unknown cursors", ["transport"])
SLOW_CONSUMER_CLOSES = Counter(
    "photobooth_stream_slow_consumer_closes",
    "Streams closed because their queue overflowed",
    ["transport"],
)
GAPS_REPAIRED = Counter(
    "photobooth_stream_gaps_repaired",
    "Lost channel-layer messages refilled from the log",
    ["transport"],
)
STREAM_REGISTRY_ERRORS = Counter(
    "photobooth_stream_registry_errors",
    "Calls to the Redis stream registry that failed (the cap then counts this process only)",
    ["operation"],
)

OPEN_STREAMS_HELP = "Streams this process holds open now"


class OpenStreamsCollector(Collector):
    """Read this process's open streams from the registry at scrape time.

    Counted, not kept up with inc()/dec(), so no error path can leave the gauge off.
    """

    def describe(self) -> list[Metric]:
        # Without describe() the registry would call collect() at import time.
        return [GaugeMetricFamily("photobooth_stream_connections_open", OPEN_STREAMS_HELP)]

    def collect(self) -> Iterator[Metric]:
        from jobs_app.stream_registry import TRANSPORTS, open_streams_here

        family = GaugeMetricFamily(
            "photobooth_stream_connections_open", OPEN_STREAMS_HELP, labels=["transport"]
        )
        counts = open_streams_here()
        for transport in TRANSPORTS:
            family.add_metric([transport], counts[transport])
        yield family


REGISTRY.register(OpenStreamsCollector())


def process_name() -> str:
    """Return this process's `process` label: METRICS_PROCESS_NAME, else host:pid."""
    return settings.METRICS_PROCESS_NAME or f"{socket.gethostname()}:{os.getpid()}"


class ProcessLabelled(Collector):
    """Add a `process` label to every sample of a registry."""

    def __init__(self, registry: Collector, process: str) -> None:
        self.registry = registry
        self.process = process

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            labelled.samples = [
                sample._replace(labels={**sample.labels, "process": self.process})
                for sample in metric.samples
            ]
            yield labelled

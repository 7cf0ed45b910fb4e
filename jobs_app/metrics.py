"""Prometheus counters of the event pipeline, served at /metrics (per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS_OPENED = Counter(
    "photobooth_stream_connections_opened", "Streams opened", ["transport", "scope"]
)
CONNECTIONS_OPEN = Gauge("photobooth_stream_connections_open", "Streams open now", ["transport"])
CONNECTIONS_REFUSED = Counter(
    "photobooth_stream_connections_refused", "Streams refused", ["transport", "reason"]
)
EVENTS_PUBLISHED = Counter("photobooth_events_published", "Events committed and announced")
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

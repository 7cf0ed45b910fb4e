"""Settings of the stream benchmark: the project's settings, with a channel-layer prefix of its own.

Everything else (heartbeat, capacity, queue sizes, per-session cap) stays at the project's
defaults. The own prefix (BENCH_CHANNEL_PREFIX) keeps the benchmark's Redis keys apart from
anything else using the same Redis database, so cleaning up never touches other keys.

BENCH_REDIS_SOCKET_TIMEOUT_FIX=1 (`bench/streams.py --redis-socket-timeout-fix`) passes
`socket_timeout=None` to the Redis connections of the channel layer. redis-py 8 reads with a
5 s socket timeout by default, the same 5 s that channels-redis blocks in BZPOPMIN when idle,
so an idle process loses a consumer every ~5 s (django/channels_redis#422). The project's
settings now set 15 s themselves; the option matters for checkouts from before that.

BENCH_REDIS_MAX_CONNECTIONS=<n> sets the Redis pool size of the channel layer (redis-py 8 allows
100 connections per pool and then raises MaxConnectionsError instead of waiting). Experiments only.

BENCH_DB_POOL_OFF=1 drops the PostgreSQL connection pool of the project's settings, so every
database_sync_to_async call opens a connection of its own again (the settings before the pool
was added). It exists for experiments (`--server-env BENCH_DB_POOL_OFF=1`), not for the
reported figures.
"""

from __future__ import annotations

import os

from photobooth.settings import *  # noqa: F403
from photobooth.settings import CHANNEL_LAYERS, DATABASES

_config = CHANNEL_LAYERS["default"].get("CONFIG")
if _config is not None:
    if prefix := os.environ.get("BENCH_CHANNEL_PREFIX"):
        _config["prefix"] = prefix
    hosts = [h if isinstance(h, dict) else {"address": h} for h in _config.get("hosts", [])]
    if os.environ.get("BENCH_REDIS_SOCKET_TIMEOUT_FIX") == "1":
        hosts = [dict(h, socket_timeout=None) for h in hosts]
    if max_connections := os.environ.get("BENCH_REDIS_MAX_CONNECTIONS"):
        hosts = [dict(h, max_connections=int(max_connections)) for h in hosts]
    _config["hosts"] = hosts

if os.environ.get("BENCH_DB_POOL_OFF") == "1":
    DATABASES["default"].get("OPTIONS", {}).pop("pool", None)

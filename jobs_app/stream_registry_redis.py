"""The stream registry in Redis: one per-session cap and one set of stats for every process.

Keys, under one prefix (`STREAM_REGISTRY_PREFIX`):
- `<prefix>:session:<sessionId>`: sorted set of the session's connection ids;
- `<prefix>:all`: sorted set of every open stream, as "<connectionId> <transport> <scope>
  <sessionId>".
Both are scored by the entry's expiry in milliseconds of Redis' own clock (TIME inside the
scripts), so the web hosts' clocks need not agree.

An entry lives ENTRY_TTL_SECONDS after its last refresh. Each process refreshes the entries
it holds every REFRESH_SECONDS (one refresher task per event loop), so the slots of a process
that dies without unregistering (kill -9, a lost host) free themselves within
ENTRY_TTL_SECONDS. Expired entries are removed when a session registers and by `stats()`;
each key also expires with its newest entry, so a session nobody comes back to leaves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field
from itertools import batched

from django.conf import settings
from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs_app import metrics
from jobs_app.redis_clients import close_redis_clients, lua_script, redis_client
from jobs_app.stream_registry import (
    OpenStream,
    StatsUnavailable,
    StreamRegistry,
    StreamStats,
    stats_of,
)

logger = logging.getLogger(__name__)

# Three refreshes fit in one TTL: an entry survives two missed ones (a stalled loop, a Redis
# fail-over), and a dead process's slots are free at most a minute after it died.
ENTRY_TTL_SECONDS = 60
REFRESH_SECONDS = 20
REFRESH_BATCH = 500  # entries per refresh script call, so one call never blocks Redis long

REDIS_ERRORS = (RedisError, OSError)  # OSError covers refused connections and TimeoutError

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
_EXPIRE_AT_NEWEST = """
local function expire_at_newest(key)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if newest[2] then redis.call('PEXPIREAT', key, newest[2]) end
end
"""
# KEYS: session set, all set. ARGV: connection id, member, cap, TTL in ms. Returns 1 or 0.
# One script, so checking the count and adding are one step for every process.
REGISTER = lua_script(
    _NOW_MS
    + _EXPIRE_AT_NEWEST
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
local expires = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], expires, ARGV[1])
redis.call('ZADD', KEYS[2], expires, ARGV[2])
expire_at_newest(KEYS[1])
expire_at_newest(KEYS[2])
return 1
"""
)
# KEYS: all set, then the session set of each stream. ARGV: TTL in ms, then connection id and
# member of each stream. Adds rather than updates: an entry Redis lost (a restart, a fail-over,
# a register made while Redis was down) is written back, because the stream is really open.
REFRESH = lua_script(
    _NOW_MS
    + _EXPIRE_AT_NEWEST
    + """
local expires = now + tonumber(ARGV[1])
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], expires, ARGV[2 * i - 2])
  redis.call('ZADD', KEYS[1], expires, ARGV[2 * i - 1])
  expire_at_newest(KEYS[i])
end
expire_at_newest(KEYS[1])
return #KEYS - 1
"""
)
# KEYS: all set. Drops the expired entries and returns the others.
STATS = lua_script(
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)


def _member(connection_id: str, stream: OpenStream) -> str:
    return f"{connection_id} {stream.transport} {stream.scope_kind} {stream.session_id}"


def _parse_member(member: str) -> OpenStream:
    _, transport, scope_kind, session_id = member.split(" ", 3)
    return OpenStream(transport=transport, scope_kind=scope_kind, session_id=session_id)


@dataclass(slots=True, kw_only=True)
class _LoopState:
    """What one event loop holds: its refresher task cannot cross loops (tests make many)."""

    streams: dict[str, OpenStream] = field(default_factory=dict)  # held by this process
    refresher: asyncio.Task | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when streams empties


class RedisStreamRegistry(StreamRegistry):
    """Count every process's streams in Redis, so the cap and the stats are deployment-wide.

    When Redis does not answer at register time, the stream is counted against the cap of
    this process alone (degraded, logged once per outage): refusing every stream would turn
    a Redis blip into an outage of all live updates, and admitting every stream would drop
    a security limit. Held streams are written back to Redis at the next refresh.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl_seconds: float = ENTRY_TTL_SECONDS,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.refresh_seconds = refresh_seconds
        self.degraded = False
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._loops_lock = threading.Lock()  # /metrics reads `_loops` from a worker thread

    # --- keys ------------------------------------------------------------------------------

    @property
    def _all_key(self) -> str:
        return f"{self.prefix}:all"

    def _session_key(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl_seconds * 1000)

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._loops_lock:
            state = self._loops.get(loop)
            if state is None:
                state = self._loops[loop] = _LoopState()
            return state

    def _redis(self) -> Redis:
        """Return the running loop's client (closed clients are replaced, see aclose)."""
        return redis_client(self.url)

    # --- the interface ---------------------------------------------------------------------

    async def register(self, connection_id: str, stream: OpenStream) -> bool:
        state = self._state()
        cap = settings.STREAM_MAX_PER_SESSION
        keys = [self._session_key(stream.session_id), self._all_key]
        args = [connection_id, _member(connection_id, stream), cap, self._ttl_ms]
        try:
            # Cancelled after Redis ran the script, the entry is not ours to refresh: it
            # expires within the TTL.
            added = await REGISTER(keys, args, client=self._redis())
        except REDIS_ERRORS as exc:
            self._failed("register", exc)
            held = sum(1 for s in state.streams.values() if s.session_id == stream.session_id)
            added = held < cap
        else:
            self._recovered()
        if not added:
            return False
        state.streams[connection_id] = stream
        state.idle.clear()
        if state.refresher is None or state.refresher.done():
            state.refresher = asyncio.create_task(
                self._refresh_while_open(state), name="stream-registry-refresher"
            )
        return True

    async def unregister(self, connection_id: str) -> None:
        with self._loops_lock:
            state = self._loops.get(asyncio.get_running_loop())
        stream = state.streams.pop(connection_id, None) if state is not None else None
        if stream is None:
            return
        if not state.streams:
            state.idle.set()
        await self._remove(state, [(connection_id, stream)])

    async def stats(self) -> StreamStats:
        try:
            members = await STATS([self._all_key], client=self._redis())
        except REDIS_ERRORS as exc:
            self._failed("stats", exc)
            raise StatsUnavailable() from exc
        self._recovered()
        return stats_of(_parse_member(member) for member in members)

    def open_here(self) -> Counter[str]:
        with self._loops_lock:
            states = list(self._loops.values())
        return Counter(s.transport for state in states for s in list(state.streams.values()))

    async def aclose(self) -> None:
        """Stop refreshing and close this event loop's Redis clients (tests, shutdown)."""
        with self._loops_lock:
            state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None and state.refresher is not None:
            state.refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.refresher
        # The clients are the loop's, shared with the upstream limits: this is for when the
        # loop is done with Redis (a later call would simply open a new client).
        await close_redis_clients()

    # --- upkeep ----------------------------------------------------------------------------

    async def _refresh_while_open(self, state: _LoopState) -> None:
        """Refresh this loop's entries until it holds no stream (then the task ends)."""
        while state.streams:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.idle.wait(), self.refresh_seconds)
            if not state.streams:
                return
            try:
                await self._refresh(state)
            except Exception:
                # Keep refreshing: a task that died here would let every held slot expire.
                logger.exception("stream_registry_refresh_failed prefix=%s", self.prefix)

    async def _refresh(self, state: _LoopState) -> None:
        """Push back the expiry of every entry this loop holds (and write back lost ones)."""
        held = list(state.streams.items())
        for chunk in batched(held, REFRESH_BATCH):
            keys = [self._all_key, *(self._session_key(s.session_id) for _, s in chunk)]
            args: list[str | int] = [self._ttl_ms]
            for connection_id, stream in chunk:
                args += [connection_id, _member(connection_id, stream)]
            try:
                await REFRESH(keys, args, client=self._redis())
            except REDIS_ERRORS as exc:
                self._failed("refresh", exc)
                return
        self._recovered()
        # A stream released while the refresh was on its way may have been written back.
        gone = [(cid, stream) for cid, stream in held if cid not in state.streams]
        if gone:
            await self._remove(state, gone)

    async def _remove(self, state: _LoopState, streams: list[tuple[str, OpenStream]]) -> None:
        try:
            async with self._redis().pipeline(transaction=True) as pipe:
                for connection_id, stream in streams:
                    pipe.zrem(self._session_key(stream.session_id), connection_id)
                    pipe.zrem(self._all_key, _member(connection_id, stream))
                await pipe.execute()
        except REDIS_ERRORS as exc:
            # Never raise from a release path: the entries expire within the TTL anyway.
            self._failed("unregister", exc)

    def _failed(self, operation: str, exc: BaseException) -> None:
        metrics.STREAM_REGISTRY_ERRORS.labels(operation).inc()
        if not self.degraded:
            self.degraded = True
            logger.warning(
                "stream_registry_unavailable operation=%s error=%r: the stream cap counts "
                "this process only until Redis answers",
                operation,
                exc,
            )

    def _recovered(self) -> None:
        if self.degraded:
            self.degraded = False
            logger.info("stream_registry_recovered prefix=%s", self.prefix)

"""Per-key limits shared by every gateway replica.

Three primitives, each one atomic step in the state backend so that replicas never race:

- a token bucket (request rate): ``N/period`` refills N tokens per period, holds at most N; a
  request takes ``request_cost`` tokens, proportional to its work;
- slots (work in flight, open streams): a set of members with expiry, admitted only below a limit;
- a counter reserved against a limit (the daily image quota): added to only if it stays within.

On Redis both are Lua scripts (time from the server's clock, so replicas on other machines
agree); embedded, they are methods of one named Ray actor, whose calls run one at a time.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from huabu.deployments.core.messages import ModelRequest
from huabu.deployments.core.settings import StateSettings
from huabu.deployments.core.state import detached_actor, redis_client
from huabu.sdk.types import RATE_LIMIT_PATTERN

_UNIT_S = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_UNIT_S |= {"d": 86400, "day": 86400}
# One token buys this much denoising work: one 512x512 image at 30 steps. Work is n x steps x
# pixels, so tokens spread as widely as requests' cost does (a 32x32 one-step image and four
# 2048x2048 100-step ones are 10^5 apart in work).
REFERENCE_WORK = 512 * 512 * 30
REFERENCE_WORK_TEXT = "(512 x 512 x 30)"  # the same, in messages


def request_cost(requests: Sequence[ModelRequest], capacity: int) -> int:
    """Tokens a request takes: ceil(sum of steps x width x height over its n images / REFERENCE_WORK),
    at least 1 and at most the bucket's capacity (so that any valid request can run, at most once
    per period, instead of waiting for a refill that can never come)."""
    work = sum(r.steps * r.width * r.height for r in requests)
    return max(1, min(capacity, math.ceil(work / REFERENCE_WORK)))


@dataclass(frozen=True)
class Rate:
    """``limit`` requests per ``period_s`` seconds, e.g. ``Rate.parse("60/min")``."""

    limit: int
    period_s: float
    text: str

    @classmethod
    def parse(cls, text: str) -> Rate:
        if not re.match(RATE_LIMIT_PATTERN, text):
            raise ValueError(f"rate must look like '60/min' (N/s, N/min, N/hour or N/day), got {text!r}")
        count, unit = text.split("/")
        return cls(int(count), float(_UNIT_S[unit]), text)

    @property
    def per_s(self) -> float:
        return self.limit / self.period_s


@dataclass(frozen=True)
class BucketResult:
    allowed: bool
    remaining: int  # whole tokens left after this request
    retry_after_s: float  # until the next token (0 when allowed)
    reset_s: float  # until the bucket is full again


@dataclass(frozen=True)
class Reservation:
    allowed: bool
    used: int  # the counter after this call (unchanged when refused)


@dataclass(frozen=True)
class SlotResult:
    acquired: bool
    members: list[str]  # the members holding slots (when refused: what to check for stale ones)


def bucket_step(
    tokens: float, last: float, now: float, rate: float, capacity: int, cost: int
) -> tuple[float, BucketResult]:
    """The token bucket's arithmetic, shared by the embedded actor (the Lua script mirrors it)."""
    tokens = min(float(capacity), tokens + max(0.0, now - last) * rate)
    allowed = tokens >= cost
    if allowed:
        tokens -= cost
    retry = 0.0 if allowed else (cost - tokens) / rate
    return tokens, BucketResult(allowed, int(tokens), retry, (capacity - tokens) / rate)


class LimitStore(Protocol):
    async def take(self, key: str, rate: Rate, cost: int = 1) -> BucketResult: ...
    async def acquire(self, key: str, member: str, limit: int, ttl_s: float) -> SlotResult: ...
    async def add(self, key: str, member: str, ttl_s: float) -> None: ...
    async def release(self, key: str, *members: str) -> None: ...
    async def reserve(self, key: str, amount: int, limit: int, ttl_s: float) -> Reservation:
        """Add ``amount`` to the counter if it stays within ``limit`` (a negative amount gives back,
        never below 0; 0 reads it); the counter expires ``ttl_s`` after the last addition."""
        ...


class _LimitState:
    """The embedded backend's data: buckets as (tokens, last refill), slots as member -> deadline,
    counters as (value, deadline)."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}
        self.slots: dict[str, dict[str, float]] = {}
        self.counters: dict[str, tuple[int, float]] = {}

    def reserve(self, key: str, amount: int, limit: int, ttl_s: float) -> Reservation:
        now = time.monotonic()
        used, deadline = self.counters.get(key, (0, now + ttl_s))
        used = used if deadline > now else 0
        if amount > 0 and used + amount > limit:
            return Reservation(False, used)
        if amount == 0 or (amount < 0 and used == 0):  # a read, or nothing to give back: nothing stored
            return Reservation(True, used)
        used = max(0, used + amount)
        if amount > 0:
            deadline = now + ttl_s
        self.counters[key] = (used, deadline)
        if len(self.counters) > 100_000:  # yesterday's counters
            self.counters = {k: v for k, v in self.counters.items() if v[1] > now}
        return Reservation(True, used)

    def take(self, key: str, per_s: float, capacity: int, cost: int) -> BucketResult:
        now = time.monotonic()
        tokens, last = self.buckets.get(key, (float(capacity), now))
        tokens, result = bucket_step(tokens, last, now, per_s, capacity, cost)
        self.buckets[key] = (tokens, now)
        if len(self.buckets) > 100_000:  # full buckets carry no information: drop them
            self.buckets = {k: v for k, v in self.buckets.items() if v[0] < capacity}
        return result

    def _live(self, key: str) -> dict[str, float]:
        now = time.monotonic()
        members = {m: d for m, d in self.slots.get(key, {}).items() if d > now}
        self.slots[key] = members
        return members

    def acquire(self, key: str, member: str, limit: int, ttl_s: float) -> SlotResult:
        members = self._live(key)
        if member in members or len(members) < limit:
            members[member] = time.monotonic() + ttl_s
            return SlotResult(True, sorted(members))
        return SlotResult(False, sorted(members))

    def add(self, key: str, member: str, ttl_s: float) -> None:
        self._live(key)[member] = time.monotonic() + ttl_s

    def release(self, key: str, *members: str) -> None:
        live = self._live(key)
        for member in members:
            live.pop(member, None)
        if not live:
            self.slots.pop(key, None)


class EmbeddedLimits:
    def __init__(self, namespace: str) -> None:
        self.actor: Any = detached_actor(_LimitState, f"{namespace}-limits")

    async def take(self, key: str, rate: Rate, cost: int = 1) -> BucketResult:
        return cast(BucketResult, await self.actor.take.remote(key, rate.per_s, rate.limit, cost))

    async def acquire(self, key: str, member: str, limit: int, ttl_s: float) -> SlotResult:
        return cast(SlotResult, await self.actor.acquire.remote(key, member, limit, ttl_s))

    async def add(self, key: str, member: str, ttl_s: float) -> None:
        await self.actor.add.remote(key, member, ttl_s)

    async def release(self, key: str, *members: str) -> None:
        await self.actor.release.remote(key, *members)

    async def reserve(self, key: str, amount: int, limit: int, ttl_s: float) -> Reservation:
        return cast(Reservation, await self.actor.reserve.remote(key, amount, limit, ttl_s))


# KEYS[1] bucket hash; ARGV: tokens per second, capacity, cost. Returns {allowed, tokens*1000}.
_TAKE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, capacity, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens, last = tonumber(state[1]) or capacity, tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - last) * rate)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity / rate + 1) * 1000))
return {allowed, math.floor(tokens * 1000)}
"""

# KEYS[1] sorted set member -> deadline; ARGV: member, limit, ttl seconds. Returns {acquired, members...}.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ttl = tonumber(ARGV[3])
local acquired = 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  acquired = 1
end
local ttl_ms = math.ceil(ttl * 1000)
if redis.call('PTTL', KEYS[1]) < ttl_ms then redis.call('PEXPIRE', KEYS[1], ttl_ms) end
local out = {acquired}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do table.insert(out, m) end
return out
"""

# KEYS[1] as above; ARGV: member, ttl seconds. Adds without a limit (a job taking over a request's slot).
_ADD_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
local ttl_ms = math.ceil(ttl * 1000)
if redis.call('PTTL', KEYS[1]) < ttl_ms then redis.call('PEXPIRE', KEYS[1], ttl_ms) end
return 1
"""


# KEYS[1] counter; ARGV: amount, limit, ttl seconds. Returns {allowed, value}.
_RESERVE_LUA = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if amount > 0 and used + amount > limit then return {0, used} end
local after = math.max(0, used + amount)
if amount > 0 then
  redis.call('SET', KEYS[1], after, 'PX', math.ceil(tonumber(ARGV[3]) * 1000))
elseif amount < 0 and used > 0 then  -- giving back to a counter that exists (a missing one holds nothing to give back)
  redis.call('SET', KEYS[1], after, 'KEEPTTL')
end
return {1, after}
"""


class RedisLimits:
    def __init__(self, url: str, namespace: str) -> None:
        self.client = redis_client(url)
        self.prefix = namespace + ":"
        self._take = self.client.register_script(_TAKE_LUA)
        self._acquire = self.client.register_script(_ACQUIRE_LUA)
        self._add = self.client.register_script(_ADD_LUA)
        self._reserve = self.client.register_script(_RESERVE_LUA)

    async def take(self, key: str, rate: Rate, cost: int = 1) -> BucketResult:
        allowed, milli = await self._take(keys=[self.prefix + key], args=[rate.per_s, rate.limit, cost])
        tokens = int(milli) / 1000
        retry = 0.0 if allowed else (cost - tokens) / rate.per_s
        return BucketResult(bool(allowed), int(tokens), retry, (rate.limit - tokens) / rate.per_s)

    async def acquire(self, key: str, member: str, limit: int, ttl_s: float) -> SlotResult:
        acquired, *members = await self._acquire(keys=[self.prefix + key], args=[member, limit, ttl_s])
        return SlotResult(bool(acquired), sorted(cast(bytes, m).decode() for m in members))

    async def add(self, key: str, member: str, ttl_s: float) -> None:
        await self._add(keys=[self.prefix + key], args=[member, ttl_s])

    async def release(self, key: str, *members: str) -> None:
        if members:
            await self.client.zrem(self.prefix + key, *members)

    async def reserve(self, key: str, amount: int, limit: int, ttl_s: float) -> Reservation:
        allowed, used = await self._reserve(keys=[self.prefix + key], args=[amount, limit, ttl_s])
        return Reservation(bool(allowed), int(used))


def open_limits(settings: StateSettings) -> LimitStore:
    if settings.backend == "redis":
        return RedisLimits(settings.redis_url, settings.namespace)
    return EmbeddedLimits(settings.namespace)


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1 (Retry-After has no fractions; 0 would invite a hot retry loop)."""
    return str(max(1, math.ceil(seconds)))

"""The state store behind jobs, cache index, rate limits and rollouts: a small Redis-like
key-value interface with two backends, a named Ray actor (embedded default) and Redis.

Only primitives live here; ``jobs.py`` and others build on them, so both backends behave the
same by construction."""

from __future__ import annotations

import fnmatch
import functools
import heapq
import time
from typing import Any, Protocol, cast

import ray

from huabu.deployments.core.settings import StateSettings


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the store cannot be reached: Redis down or slower than its socket
    timeout, or the embedded store's actor gone. Callers answer these 503 (retry), never 500."""
    import redis.exceptions
    from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

    outages = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, TimeoutError)
    return isinstance(exc, (*outages, RayActorError, ActorUnavailableError, GetTimeoutError))


class KeyValueStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def put(self, key: str, value: bytes, ttl_s: float | None = None, only_if_absent: bool = False) -> bool: ...
    async def delete(self, *keys: str) -> int: ...
    async def expire(self, key: str, ttl_s: float) -> bool: ...
    async def incr(self, key: str, amount: int = 1) -> int: ...
    async def incr_many(self, amounts: dict[str, int], ttl_s: float) -> None:
        """Add to several counters in one round trip; each then expires ``ttl_s`` after this write."""
        ...

    async def rpush(self, key: str, value: bytes) -> int: ...
    async def write_many(self, puts: dict[str, bytes], appends: dict[str, list[bytes]], ttl_s: float) -> None:
        """Set each of ``puts`` and append to each list of ``appends`` in one round trip (not
        atomically); every key written then expires ``ttl_s`` after this write."""
        ...

    async def lrange(self, key: str, start: int, end: int) -> list[bytes]: ...
    async def sadd(self, key: str, member: str) -> int: ...
    async def srem(self, key: str, member: str) -> int: ...
    async def smembers(self, key: str) -> set[str]: ...
    async def keys(self, pattern: str) -> list[str]: ...
    async def ping(self) -> bool: ...
    async def compare_and_set(self, key: str, expected: bytes | None, value: bytes, ttl_s: float | None = None) -> bool:
        """Atomically set ``key`` to ``value`` if it holds ``expected`` (None: absent), expiring
        ``ttl_s`` after this write (None: never)."""
        ...


class _MemoryState:
    """The embedded store's data and Redis-like semantics (TTL in monotonic seconds).

    Expired keys go when read, and also without a read: every write first drops a bounded number of
    keys whose deadline has passed (a heap of deadlines), so keys nobody reads again (finished jobs,
    idempotency records, yesterday's counters) do not pile up in the actor's memory."""

    SWEEP_PER_WRITE = 64  # keys dropped at most per write: a write's cost stays bounded

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.deadlines: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []  # (deadline, key); entries whose deadline changed are stale

    def _set_deadline(self, key: str, deadline: float) -> None:
        self.deadlines[key] = deadline
        heapq.heappush(self._expiry, (deadline, key))
        if len(self._expiry) > 2 * len(self.deadlines) + 1024:  # mostly stale (deadlines refreshed): rebuild
            self._expiry = [(d, k) for k, d in self.deadlines.items()]
            heapq.heapify(self._expiry)

    def _sweep(self) -> None:
        now = time.monotonic()
        for _ in range(self.SWEEP_PER_WRITE):
            if not self._expiry or self._expiry[0][0] > now:
                return
            deadline, key = heapq.heappop(self._expiry)
            if self.deadlines.get(key) == deadline:
                self.values.pop(key, None)
                del self.deadlines[key]

    def _alive(self, key: str) -> bool:
        deadline = self.deadlines.get(key)
        if deadline is not None and deadline <= time.monotonic():
            self.values.pop(key, None)
            self.deadlines.pop(key, None)
        return key in self.values

    def get(self, key: str) -> bytes | None:
        value = self.values.get(key) if self._alive(key) else None
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes, ttl_s: float | None = None, only_if_absent: bool = False) -> bool:
        self._sweep()
        if only_if_absent and self._alive(key):
            return False
        self.values[key] = value
        self.deadlines.pop(key, None)
        if ttl_s is not None:
            self._set_deadline(key, time.monotonic() + ttl_s)
        return True

    def delete(self, *keys: str) -> int:
        removed = sum(1 for k in keys if self._alive(k))
        for k in keys:
            self.values.pop(k, None)
            self.deadlines.pop(k, None)
        return removed

    def expire(self, key: str, ttl_s: float) -> bool:
        if not self._alive(key):
            return False
        self._set_deadline(key, time.monotonic() + ttl_s)
        return True

    def incr(self, key: str, amount: int = 1) -> int:
        current = int(self.get(key) or b"0") + amount
        deadline = self.deadlines.get(key)
        self.values[key] = str(current).encode()
        if deadline is not None:
            self.deadlines[key] = deadline
        return current

    def incr_many(self, amounts: dict[str, int], ttl_s: float) -> None:
        self._sweep()
        for key, amount in amounts.items():
            self.incr(key, amount)
            self._set_deadline(key, time.monotonic() + ttl_s)

    def rpush(self, key: str, value: bytes) -> int:
        self._sweep()
        if not self._alive(key):
            self.values[key] = []
        items = self.values[key]
        assert isinstance(items, list)
        items.append(value)
        return len(items)

    def write_many(self, puts: dict[str, bytes], appends: dict[str, list[bytes]], ttl_s: float) -> None:
        for key, value in puts.items():
            self.put(key, value, ttl_s)
        for key, values in appends.items():
            for value in values:
                self.rpush(key, value)
            self.expire(key, ttl_s)

    def lrange(self, key: str, start: int, end: int) -> list[bytes]:
        items = self.values.get(key) if self._alive(key) else None
        if not isinstance(items, list):
            return []
        stop = None if end == -1 else end + 1
        return list(items[start:stop])

    def sadd(self, key: str, member: str) -> int:
        self._sweep()
        if not self._alive(key):
            self.values[key] = set()
        members = self.values[key]
        assert isinstance(members, set)
        added = member not in members
        members.add(member)
        return int(added)

    def srem(self, key: str, member: str) -> int:
        members = self.values.get(key) if self._alive(key) else None
        if not isinstance(members, set) or member not in members:
            return 0
        members.discard(member)
        return 1

    def smembers(self, key: str) -> set[str]:
        members = self.values.get(key) if self._alive(key) else None
        return set(members) if isinstance(members, set) else set()

    def keys(self, pattern: str) -> list[str]:
        return [k for k in list(self.values) if self._alive(k) and fnmatch.fnmatchcase(k, pattern)]

    def ping(self) -> bool:
        return True

    def compare_and_set(self, key: str, expected: bytes | None, value: bytes, ttl_s: float | None = None) -> bool:
        # Atomic: the actor runs one method at a time.
        if self.get(key) != expected or (expected is None and self._alive(key)):
            return False
        self.values[key] = value
        self.deadlines.pop(key, None)
        if ttl_s is not None:
            self._set_deadline(key, time.monotonic() + ttl_s)
        return True


# The embedded backends (state, cache index, rate limits) each keep their data in one named actor
# per namespace and reach Redis the same way; both halves of that are here, once.


@functools.cache
def _actor_class(state_class: type) -> Any:
    return ray.remote(num_cpus=0, max_restarts=-1)(state_class)  # no CPU held; restarted when lost


def detached_actor(state_class: type, name: str, *args: Any) -> Any:
    """The named actor holding a ``state_class`` that every replica shares: created by the first that
    asks (with ``args``), detached so that it outlives the replica that created it."""
    options = _actor_class(state_class).options(name=name, namespace="huabu", lifetime="detached", get_if_exists=True)
    return options.remote(*args)


def redis_client(url: str, timeout_s: float = 5, connect_timeout_s: float = 2) -> Any:
    import redis.asyncio as redis

    return redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=connect_timeout_s)


class EmbeddedStore:
    """Client of the named Ray actor; every replica that asks gets the same actor."""

    def __init__(self, namespace: str) -> None:
        self.actor: Any = detached_actor(_MemoryState, f"{namespace}-state")

    async def get(self, key: str) -> bytes | None:
        return await self.actor.get.remote(key)

    async def put(self, key: str, value: bytes, ttl_s: float | None = None, only_if_absent: bool = False) -> bool:
        return await self.actor.put.remote(key, value, ttl_s, only_if_absent)

    async def delete(self, *keys: str) -> int:
        return await self.actor.delete.remote(*keys)

    async def expire(self, key: str, ttl_s: float) -> bool:
        return await self.actor.expire.remote(key, ttl_s)

    async def incr(self, key: str, amount: int = 1) -> int:
        return await self.actor.incr.remote(key, amount)

    async def incr_many(self, amounts: dict[str, int], ttl_s: float) -> None:
        await self.actor.incr_many.remote(amounts, ttl_s)

    async def rpush(self, key: str, value: bytes) -> int:
        return await self.actor.rpush.remote(key, value)

    async def write_many(self, puts: dict[str, bytes], appends: dict[str, list[bytes]], ttl_s: float) -> None:
        await self.actor.write_many.remote(puts, appends, ttl_s)

    async def lrange(self, key: str, start: int, end: int) -> list[bytes]:
        return await self.actor.lrange.remote(key, start, end)

    async def sadd(self, key: str, member: str) -> int:
        return await self.actor.sadd.remote(key, member)

    async def srem(self, key: str, member: str) -> int:
        return await self.actor.srem.remote(key, member)

    async def smembers(self, key: str) -> set[str]:
        return await self.actor.smembers.remote(key)

    async def keys(self, pattern: str) -> list[str]:
        return await self.actor.keys.remote(pattern)

    async def ping(self) -> bool:
        return await self.actor.ping.remote()

    async def compare_and_set(self, key: str, expected: bytes | None, value: bytes, ttl_s: float | None = None) -> bool:
        return await self.actor.compare_and_set.remote(key, expected, value, ttl_s)


class RedisStore:
    def __init__(self, url: str, namespace: str) -> None:
        self.client = redis_client(url)
        self.prefix = namespace + ":"

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def get(self, key: str) -> bytes | None:
        return cast(bytes | None, await self.client.get(self._k(key)))

    async def put(self, key: str, value: bytes, ttl_s: float | None = None, only_if_absent: bool = False) -> bool:
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        return bool(await self.client.set(self._k(key), value, px=px, nx=only_if_absent))

    async def delete(self, *keys: str) -> int:
        return int(await self.client.delete(*[self._k(k) for k in keys])) if keys else 0

    async def expire(self, key: str, ttl_s: float) -> bool:
        return bool(await self.client.pexpire(self._k(key), max(1, int(ttl_s * 1000))))

    async def incr(self, key: str, amount: int = 1) -> int:
        return int(await self.client.incrby(self._k(key), amount))

    async def incr_many(self, amounts: dict[str, int], ttl_s: float) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for key, amount in amounts.items():
                pipe.incrby(self._k(key), amount)
                pipe.pexpire(self._k(key), max(1, int(ttl_s * 1000)))
            await pipe.execute()

    async def rpush(self, key: str, value: bytes) -> int:
        return int(await self.client.rpush(self._k(key), value))

    async def write_many(self, puts: dict[str, bytes], appends: dict[str, list[bytes]], ttl_s: float) -> None:
        ttl_ms = max(1, int(ttl_s * 1000))
        async with self.client.pipeline(transaction=False) as pipe:
            for key, value in puts.items():
                pipe.set(self._k(key), value, px=ttl_ms)
            for key, values in appends.items():
                if values:
                    pipe.rpush(self._k(key), *values)
                    pipe.pexpire(self._k(key), ttl_ms)
            await pipe.execute()

    async def lrange(self, key: str, start: int, end: int) -> list[bytes]:
        return cast(list[bytes], await self.client.lrange(self._k(key), start, end))

    async def sadd(self, key: str, member: str) -> int:
        return int(await self.client.sadd(self._k(key), member))

    async def srem(self, key: str, member: str) -> int:
        return int(await self.client.srem(self._k(key), member))

    async def smembers(self, key: str) -> set[str]:
        return {cast(bytes, m).decode() for m in await self.client.smembers(self._k(key))}

    async def keys(self, pattern: str) -> list[str]:
        n = len(self.prefix)
        return [cast(bytes, k).decode()[n:] async for k in self.client.scan_iter(match=self._k(pattern))]

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    # GET, compare and SET in one server-side step (ARGV[1] = "1" when a value is expected;
    # ARGV[4]: the expiry in ms, "0" for none).
    _CAS = """
    local current = redis.call('GET', KEYS[1])
    if ARGV[1] == '1' then
      if current ~= ARGV[2] then return 0 end
    elseif current then return 0 end
    if ARGV[4] == '0' then
      redis.call('SET', KEYS[1], ARGV[3])
    else
      redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
    end
    return 1
    """

    async def compare_and_set(self, key: str, expected: bytes | None, value: bytes, ttl_s: float | None = None) -> bool:
        flag = b"0" if expected is None else b"1"
        ttl_ms = 0 if ttl_s is None else max(1, int(ttl_s * 1000))
        result = await self.client.eval(self._CAS, 1, self._k(key), flag, expected or b"", value, str(ttl_ms))
        return bool(result)


async def hold_lease(kv: KeyValueStore, key: str, owner: str, ttl_s: float) -> bool:
    """Renew the lease ``key`` if ``owner`` holds it, else take it if it is free. -> whether
    ``owner`` holds it now. One store command while held (a compare-and-set with expiry): the
    leader loops of every replica renew theirs all the time, idle or not."""
    held = owner.encode()
    if await kv.compare_and_set(key, held, held, ttl_s=ttl_s):
        return True
    return await kv.put(key, held, ttl_s=ttl_s, only_if_absent=True)


def open_store(settings: StateSettings) -> KeyValueStore:
    if settings.backend == "redis":
        return RedisStore(settings.redis_url, settings.namespace)
    return EmbeddedStore(settings.namespace)

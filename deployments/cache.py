"""The prompt cache: content-addressed results with single flight.

Key = SHA-256 of the canonical request (operation, prompt, negative prompt, size, steps,
guidance, strength, seed, input image and mask hashes) plus the model version that serves it,
so traffic served by another version never gets this version's image. An unseeded request gets
a seed derived from the key without the seed: the same prompt returns the same (cached) image.

The index holds references (storage key and metadata); image bytes stay in storage. Backends:
an embedded LRU index with a byte budget (a detached Ray actor) and Redis (TTL plus a size bound
by least-recent use). If the index is unreachable, requests are served uncached (counted and
logged), never failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, cast

import numpy as np
import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from huabu.deployments import metrics, telemetry
from huabu.deployments.messages import ModelRequest, ModelResult
from huabu.deployments.settings import CacheSettings, Settings
from huabu.deployments.state import detached_actor
from huabu.deployments.storage import open_storage

logger = logging.getLogger("huabu.cache")
STAT_NAMES = ("hits", "misses", "coalesced", "bypassed", "refreshed", "errors")


def _array_hash(array: np.ndarray | None) -> str:
    if array is None:
        return ""
    return hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()


def canonical_request(request: ModelRequest, with_seed: bool = True) -> str:
    fields: dict[str, Any] = {
        "operation": request.operation,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "size": [request.height, request.width],
        "steps": request.steps,
        "guidance": request.guidance,
        "strength": request.strength,
        "image": _array_hash(request.image),
        "mask": _array_hash(request.mask),
        "model": request.model,
    }
    if with_seed:
        fields["seed"] = request.seed
    return json.dumps(fields, sort_keys=True, ensure_ascii=False)


def cache_key(request: ModelRequest) -> str:
    return hashlib.sha256(canonical_request(request).encode()).hexdigest()


def derived_seed(request: ModelRequest) -> int:
    """The seed of an unseeded request: a function of everything else it asks for."""
    digest = hashlib.sha256(canonical_request(request, with_seed=False).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class CacheEntry:
    storage_key: str
    seed: int
    model: str
    prompt_truncated: bool
    generation_s: float
    size_bytes: int
    variant: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> CacheEntry:
        return cls(**json.loads(raw))


class CacheIndex(Protocol):
    async def get(self, key: str) -> CacheEntry | None: ...
    async def put(self, key: str, entry: CacheEntry) -> None: ...
    async def count(self, name: str, amount: float = 1) -> None: ...
    async def stats(self) -> dict[str, float]: ...


class _LRUIndex:
    """The embedded index's state: LRU by byte budget (the referenced image bytes) and count."""

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        self.entries: OrderedDict[str, bytes] = OrderedDict()
        self.sizes: dict[str, int] = {}
        self.total_bytes = 0
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.counters: dict[str, float] = dict.fromkeys((*STAT_NAMES, "saved_s", "evictions"), 0.0)

    def get(self, key: str) -> bytes | None:
        raw = self.entries.get(key)
        if raw is not None:
            self.entries.move_to_end(key)
        return raw

    def put(self, key: str, raw: bytes, size: int) -> None:
        if key in self.entries:
            self.total_bytes -= self.sizes[key]
        self.entries[key] = raw
        self.entries.move_to_end(key)
        self.sizes[key] = size
        self.total_bytes += size
        while self.entries and (self.total_bytes > self.max_bytes or len(self.entries) > self.max_entries):
            old, _ = self.entries.popitem(last=False)
            self.total_bytes -= self.sizes.pop(old)
            self.counters["evictions"] += 1

    def count(self, name: str, amount: float) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + amount

    def stats(self) -> dict[str, float]:
        return {**self.counters, "entries": len(self.entries), "bytes": self.total_bytes}


EmbeddedIndexActor: Any = ray.remote(num_cpus=0, max_restarts=-1)(_LRUIndex)


class EmbeddedCacheIndex:
    def __init__(self, namespace: str, settings: CacheSettings) -> None:
        self.actor: Any = detached_actor(
            EmbeddedIndexActor, f"{namespace}-cache", settings.max_bytes, settings.max_entries
        )

    async def get(self, key: str) -> CacheEntry | None:
        raw = await self.actor.get.remote(key)
        return None if raw is None else CacheEntry.from_json(raw)

    async def put(self, key: str, entry: CacheEntry) -> None:
        await self.actor.put.remote(key, entry.to_json(), entry.size_bytes)

    async def count(self, name: str, amount: float = 1) -> None:
        await self.actor.count.remote(name, amount)

    async def stats(self) -> dict[str, float]:
        return cast(dict[str, float], await self.actor.stats.remote())


class RedisCacheIndex:
    """Entries expire after ``ttl_s``; a sorted set by last use bounds their number."""

    def __init__(self, url: str, namespace: str, settings: CacheSettings) -> None:
        import redis.asyncio as redis

        # Short timeouts: a slow or dead Redis must turn into a bypass, not a slow request.
        self.client = redis.from_url(url, socket_timeout=settings.timeout_s, socket_connect_timeout=settings.timeout_s)
        self.prefix = f"{namespace}:cache:"
        self.ttl_s = settings.ttl_s
        self.max_entries = settings.max_entries

    async def get(self, key: str) -> CacheEntry | None:
        raw = await self.client.get(self.prefix + key)
        if raw is None:
            return None
        await self.client.zadd(self.prefix + "lru", {key: time.time()})
        return CacheEntry.from_json(cast(bytes, raw))

    async def put(self, key: str, entry: CacheEntry) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.prefix + key, entry.to_json(), ex=self.ttl_s)
            pipe.zadd(self.prefix + "lru", {key: time.time()})
            pipe.zcard(self.prefix + "lru")
            *_, size = await pipe.execute()
        if size > self.max_entries:
            evicted = await self.client.zpopmin(self.prefix + "lru", size - self.max_entries)
            if evicted:
                names = [cast(bytes, pair[0]).decode() for pair in cast(list[tuple[bytes, float]], evicted)]
                await self.client.delete(*[self.prefix + name for name in names])
                await self.client.incrbyfloat(self.prefix + "stat:evictions", len(evicted))

    async def count(self, name: str, amount: float = 1) -> None:
        await self.client.incrbyfloat(self.prefix + "stat:" + name, amount)

    async def stats(self) -> dict[str, float]:
        names = (*STAT_NAMES, "saved_s", "evictions")
        values = await self.client.mget([self.prefix + "stat:" + n for n in names])
        stats = {n: float(v or 0) for n, v in zip(names, values, strict=True)}
        stats["entries"] = float(await self.client.zcard(self.prefix + "lru"))
        return stats


def open_cache_index(settings: Settings) -> CacheIndex:
    if settings.cache.backend == "redis":
        return RedisCacheIndex(
            settings.cache.redis_url or settings.state.redis_url, settings.state.namespace, settings.cache
        )
    return EmbeddedCacheIndex(settings.state.namespace, settings.cache)


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
class Cache:
    """Between the prompt filter and the router: hits answer at once; identical concurrent
    misses share one model call; results are stored before they are indexed."""

    def __init__(self, next_stage: DeploymentHandle, settings: Settings) -> None:
        telemetry.configure(settings, "cache")
        self.ratio = metrics.CacheRatio()
        self.next_stage = next_stage  # the image filter, or the router when it is off
        self.index = open_cache_index(settings)
        self.storage = open_storage(settings.storage)
        self.inflight: dict[str, asyncio.Future[ModelResult]] = {}
        self.counting: set[asyncio.Task[None]] = set()  # counter updates in flight
        self.local_errors = 0  # index failures, also counted here when the index itself is down

    async def stats(self) -> dict[str, float]:
        if self.counting:
            await asyncio.wait(list(self.counting), timeout=1.0)  # include the counts in flight
        try:
            stats = await self.index.stats()
        except Exception:
            stats = {"available": 0.0}
        return {**stats, "local_errors": float(self.local_errors)}

    def _count(self, name: str, amount: float = 1) -> None:
        """Count in the background: metering must not add a round trip to a hit."""
        self.ratio.count(name, amount)
        task = asyncio.get_running_loop().create_task(self._send_count(name, amount))
        self.counting.add(task)
        task.add_done_callback(self.counting.discard)

    async def _send_count(self, name: str, amount: float) -> None:
        try:
            await self.index.count(name, amount)
        except Exception:
            self.local_errors += 1

    async def generate(self, request: ModelRequest) -> ModelResult:
        with telemetry.hop("cache", request, cache_mode=request.cache) as hop:
            result = await self._generate(request)
            hop.set(cache_hit=result.cached)
            return result

    async def _generate(self, request: ModelRequest) -> ModelResult:
        if request.cache == "bypass":
            self._count("bypassed")
            return await self._produce(request, None)
        key = cache_key(request)
        if request.cache == "use":
            entry = await self._lookup(key)
            if entry is not None:
                self._count("hits")
                self._count("saved_s", entry.generation_s)
                return self._hit(entry)
        else:
            self._count("refreshed")
        leader = self.inflight.get(key)
        if leader is not None:
            self._count("coalesced")
            shared = await asyncio.shield(leader)
            if not shared.cancelled:
                return self._shared(shared)
            # The leader's job was cancelled; this request still wants its image.
        self._count("misses")
        future: asyncio.Future[ModelResult] = asyncio.get_running_loop().create_future()
        self.inflight[key] = future
        try:
            result = await self._produce(request, key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: followers re-raise it, nobody else must
            raise
        else:
            future.set_result(result)
        finally:
            self.inflight.pop(key, None)
        return result

    async def _lookup(self, key: str) -> CacheEntry | None:
        try:
            with telemetry.work("cache.lookup") as lookup:
                entry = await self.index.get(key)
                lookup.set(cache_hit=entry is not None)
                return entry
        except Exception:
            self.local_errors += 1
            logger.warning("cache index unavailable: serving uncached", exc_info=True)
            return None

    async def _produce(self, request: ModelRequest, key: str | None) -> ModelResult:
        result: ModelResult = await self.next_stage.generate.remote(request)
        if result.cancelled:
            return result
        result.storage_key = await self.storage.put(result.png)
        if key is not None:
            entry = CacheEntry(
                storage_key=result.storage_key,
                seed=result.seed,
                model=result.model,
                prompt_truncated=result.prompt_truncated,
                generation_s=result.generation_s,
                size_bytes=len(result.png),
                variant=result.variant,
            )
            try:
                with telemetry.work("cache.write"):
                    await self.index.put(key, entry)
            except Exception:
                self.local_errors += 1
                logger.warning("cache index unavailable: result not cached", exc_info=True)
        return result

    @staticmethod
    def _hit(entry: CacheEntry) -> ModelResult:
        return ModelResult(
            png=b"",
            seed=entry.seed,
            model=entry.model,
            prompt_truncated=entry.prompt_truncated,
            variant=entry.variant,
            generation_s=0.0,
            cached=True,
            storage_key=entry.storage_key,
        )

    @staticmethod
    def _shared(result: ModelResult) -> ModelResult:
        return replace(result, cached=True)

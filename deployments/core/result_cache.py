"""The result cache as a library: keys, derived seeds, the index backends and ``ResultCache``.

Key = SHA-256 of the canonical request (operation, prompt, negative prompt, size, steps,
guidance, strength, seed, input image and mask hashes) plus the model version that serves it,
so traffic served by another version never gets this version's image. An unseeded request gets
a seed derived from the key without the seed: the same prompt returns the same (cached) image.

Results are keyed by the screening policy too (``screening_policy``): an entry exists only for a
request whose prompt and image passed the screens of that policy, so a hit needs neither screen
again. That is what lets the gateway answer hits itself (``ResultCache``), before any other
deployment; the cache stage (``huabu.deployments.cache.CacheStage``) handles what the gateway could
not (misses, single flight, ``refresh``). It does not read the index again for a request the gateway
just missed: a result that completed after that lookup is still in the stage's short memory of
recent results (``RecentResults``), and index writes leave the request path (they run behind the
answer). The gateway keeps the same memory of the results it answered, PNG included, so a hot
prompt is answered with no index or storage round trip at all.

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
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from huabu.deployments.core import metrics, telemetry
from huabu.deployments.core.messages import ModelRequest, ModelResult
from huabu.deployments.core.settings import CacheSettings, SafetySettings, Settings
from huabu.deployments.core.state import detached_actor, redis_client
from huabu.filters.image import bundled_model_path

logger = logging.getLogger("huabu.cache")
STAT_NAMES = ("hits", "misses", "coalesced", "bypassed", "refreshed", "errors")
INDEX_RETRY_S = 2.0
COUNT_FLUSH_S = 0.5


def screening_policy(settings: SafetySettings) -> str:
    """A digest of everything that decides whether a prompt or an image passes: the settings and
    the bytes of every block list, exemplar file and classifier they name. A cached result was
    screened under one policy; keyed by it, a hit can skip both screens, and any policy change
    makes every older entry a miss."""
    digest = hashlib.sha256(settings.model_dump_json().encode())

    def add_file(path: str | Path, bundled: str) -> None:
        local = Path(path)
        if local.suffix in (".yaml", ".yml", ".json") or local.exists():
            digest.update(local.read_bytes())
        else:
            digest.update(resources.files("huabu.filters").joinpath(bundled.format(path)).read_bytes())

    for name in settings.prompt.blocklists:
        add_file(name, "data/blocklist_{}.yaml")
    for name in settings.prompt.exemplars:
        add_file(name, "data/exemplars_{}.yaml")
    if settings.prompt.enable_intent:  # the intent layer's lexicons and classifier weights (issue #32)
        for name in settings.prompt.intent_lexicons:
            add_file(name, "data/intent_{}.yaml")
        add_file(settings.prompt.intent_classifier or "intent_classifier", "data/{}.npz")
    classifier = Path(settings.image.model_path or bundled_model_path())
    digest.update(f"{classifier}:{classifier.stat().st_size}".encode())
    return digest.hexdigest()[:16]


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
    if request.cache_threshold:  # step caching changes the image (a little)
        fields["cache_threshold"] = request.cache_threshold
    if with_seed:
        fields["seed"] = request.seed
    return json.dumps(fields, sort_keys=True, ensure_ascii=False)


def cache_key(request: ModelRequest, policy: str) -> str:
    """The entry of a request screened under ``policy`` (a ``screening_policy`` digest)."""
    return hashlib.sha256(f"{canonical_request(request)}\n{policy}".encode()).hexdigest()


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
    async def count_many(self, counts: dict[str, float]) -> None: ...
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

    def count_many(self, counts: dict[str, float]) -> None:
        for name, amount in counts.items():
            self.counters[name] = self.counters.get(name, 0.0) + amount

    def stats(self) -> dict[str, float]:
        return {**self.counters, "entries": len(self.entries), "bytes": self.total_bytes}


class EmbeddedCacheIndex:
    def __init__(self, namespace: str, settings: CacheSettings) -> None:
        self.actor: Any = detached_actor(_LRUIndex, f"{namespace}-cache", settings.max_bytes, settings.max_entries)

    async def get(self, key: str) -> CacheEntry | None:
        raw = await self.actor.get.remote(key)
        return None if raw is None else CacheEntry.from_json(raw)

    async def put(self, key: str, entry: CacheEntry) -> None:
        await self.actor.put.remote(key, entry.to_json(), entry.size_bytes)

    async def count_many(self, counts: dict[str, float]) -> None:
        await self.actor.count_many.remote(counts)

    async def stats(self) -> dict[str, float]:
        return cast(dict[str, float], await self.actor.stats.remote())


class RedisCacheIndex:
    """Entries expire after ``ttl_s``; a sorted set by last use bounds their number."""

    def __init__(self, url: str, namespace: str, settings: CacheSettings) -> None:
        # Short timeouts: a slow or dead Redis must turn into a bypass, not a slow request.
        self.client = redis_client(url, settings.timeout_s, settings.timeout_s)
        self.prefix = f"{namespace}:cache:"
        self.ttl_s = settings.ttl_s
        self.max_entries = settings.max_entries

    async def get(self, key: str) -> CacheEntry | None:
        # One round trip: the read and the touch of its last use (XX: a miss adds nothing).
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.prefix + key)
            pipe.zadd(self.prefix + "lru", {key: time.time()}, xx=True)
            raw, _ = await pipe.execute()
        return None if raw is None else CacheEntry.from_json(cast(bytes, raw))

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

    async def count_many(self, counts: dict[str, float]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for name, amount in counts.items():
                pipe.incrbyfloat(self.prefix + "stat:" + name, amount)
            await pipe.execute()

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


class RecentResults:
    """Results seen moments ago, kept in this process: least recently used first out, bounded in
    count and in PNG bytes, each for at most ``ttl_s``. Keys carry the screening policy, so an entry
    never answers under another policy; the TTL bounds how long a ``cache=refresh`` served by another
    replica goes unseen here (the older image is still a screened result of the same request)."""

    def __init__(self, settings: CacheSettings) -> None:
        self.ttl_s = settings.recent_s
        self.max_entries = settings.recent_entries
        self.max_bytes = settings.recent_bytes
        self.entries: OrderedDict[str, tuple[float, ModelResult]] = OrderedDict()  # key -> (expiry, result)
        self.size_bytes = 0

    def get(self, key: str) -> ModelResult | None:
        remembered = self.entries.get(key)
        if remembered is None:
            return None
        if remembered[0] < time.monotonic():
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return remembered[1]

    def put(self, key: str, result: ModelResult) -> None:
        if self.ttl_s <= 0 or len(result.png) > self.max_bytes:
            return
        if key in self.entries:
            self._drop(key)
        self.entries[key] = (time.monotonic() + self.ttl_s, result)
        self.size_bytes += len(result.png)
        while len(self.entries) > self.max_entries or self.size_bytes > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def _drop(self, key: str) -> None:
        _, result = self.entries.pop(key)
        self.size_bytes -= len(result.png)


class ResultCache:
    """The cache as a library: lookups, writes and counters against the index. The gateway holds
    one to answer hits without another hop; the ``Cache`` stage holds one for everything else.
    Counts are gathered here and sent in one call every ``COUNT_FLUSH_S`` (a hit must not wait
    for, nor pay for, a counter round trip), and before statistics are read. An unreachable index
    is a miss, never an error, and is left alone for a while (``INDEX_RETRY_S``) so that an outage
    does not add a timeout to every request."""

    def __init__(self, settings: Settings) -> None:
        self.index = open_cache_index(settings)
        self.policy = screening_policy(settings.safety)
        self.pending: dict[str, float] = {}  # counts not yet sent to the index
        self.flusher: asyncio.Task[None] | None = None
        self.local_errors = 0  # index failures, also counted here when the index itself is down
        self.unavailable_until = 0.0  # monotonic time before which the index is not tried
        self.recent = RecentResults(settings.cache)

    def key(self, request: ModelRequest) -> str:
        return cache_key(request, self.policy)

    async def hit(self, request: ModelRequest, key: str | None = None, *, indexed: bool = True) -> ModelResult | None:
        """The result of a ``cache=use`` request (under ``key``, when the caller already has it),
        counted as a hit: from this process's recent results, else (``indexed``) from the index,
        whose answer carries no PNG (``png=b""``; the storage key says where it is). None otherwise
        (the ``Cache`` stage counts the miss)."""
        if request.cache != "use":
            return None
        key = key or self.key(request)
        if not indexed:
            result = self.recent.get(key)
        else:
            with telemetry.work("cache.lookup") as lookup:
                result, source = self.recent.get(key), "recent"
                if result is None:
                    result, source = await self._indexed(key), "index"
                lookup.set(cache_hit=result is not None, cache_source=source if result is not None else None)
        if result is None:
            return None
        self.count_hit(result.generation_s)
        return replace(result, cached=True, generation_s=0.0)

    def attach_png(self, key: str, png: bytes) -> None:
        """Keep the PNG a caller read from storage with the recent result it belongs to."""
        remembered = self.recent.get(key)
        if remembered is not None and not remembered.png and png:
            self.recent.put(key, replace(remembered, png=png))

    def remember(self, key: str, result: ModelResult) -> None:
        """Keep a screened, stored result for the next identical request (see ``RecentResults``)."""
        if result.storage_key and not result.cancelled:
            self.recent.put(key, result)

    def _available(self) -> bool:
        if time.monotonic() < self.unavailable_until:
            self.local_errors += 1
            return False
        return True

    def _failed(self, what: str) -> None:
        self.local_errors += 1
        self.unavailable_until = time.monotonic() + INDEX_RETRY_S
        logger.warning("cache index unavailable: %s for %.0f s", what, INDEX_RETRY_S, exc_info=True)

    async def _indexed(self, key: str) -> ModelResult | None:
        """The index's entry as a result without its PNG (remembered for the next request)."""
        entry = await self.lookup(key)
        if entry is None:
            return None
        result = ModelResult(
            png=b"",
            seed=entry.seed,
            model=entry.model,
            prompt_truncated=entry.prompt_truncated,
            variant=entry.variant,
            generation_s=entry.generation_s,
            storage_key=entry.storage_key,
        )
        self.remember(key, result)
        return result

    async def lookup(self, key: str) -> CacheEntry | None:
        if not self._available():
            return None
        try:
            return await self.index.get(key)
        except Exception:
            self._failed("serving uncached")
            return None

    async def store(self, key: str, entry: CacheEntry) -> None:
        if not self._available():
            return
        try:
            with telemetry.work("cache.write"):
                await self.index.put(key, entry)
        except Exception:
            self._failed("results not cached")

    def count_hit(self, generation_s: float) -> None:
        """A request answered without generating: it saved the seconds its image once took."""
        self.count("hits")
        self.count("saved_s", generation_s)

    def count(self, name: str, amount: float = 1) -> None:
        metrics.cache_outcome(name, amount)
        self.pending[name] = self.pending.get(name, 0.0) + amount
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(COUNT_FLUSH_S)
        await self.flush()

    async def flush(self) -> None:
        counts, self.pending = self.pending, {}
        if counts:
            try:
                await self.index.count_many(counts)
            except Exception:  # the index is down: these counts are lost, and that is counted
                self.local_errors += 1

    async def stats(self) -> dict[str, float]:
        await self.flush()
        try:
            stats = await self.index.stats()
        except Exception:
            stats = {"available": 0.0}
        return {**stats, "local_errors": float(self.local_errors)}

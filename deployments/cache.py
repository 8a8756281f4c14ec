"""The cache stage: between the prompt filter and the image filter (or the router). Identical
concurrent misses share one model call (single flight); results are stored, then indexed behind
the answer. Lookups, keys and the index are the result cache library
(``huabu.deployments.core.result_cache``), which the gateway also holds to answer hits itself.

The stage does not read the index again for a request the gateway just missed
(``ModelRequest.looked_up``): a result that completed after that lookup is still in its short
memory of recent results (``result_cache.RecentResults``, the same memory the gateway keeps).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from ray import serve
from ray.serve.handle import DeploymentHandle

from huabu.deployments.core import telemetry
from huabu.deployments.core.handles import Answering, call, connect
from huabu.deployments.core.messages import ModelRequest, ModelResult
from huabu.deployments.core.result_cache import CacheEntry, ResultCache
from huabu.deployments.core.settings import Settings
from huabu.deployments.core.storage import open_storage


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
class CacheStage(Answering):
    """Between the prompt filter and the router: identical concurrent misses share one model
    call; results are stored before they are indexed."""

    def __init__(self, next_stage: DeploymentHandle, settings: Settings) -> None:
        telemetry.configure(settings, "cache")
        self.next_stage = connect(next_stage, settings)  # the image filter, or the router when it is off
        self.results = ResultCache(settings)
        self.storage = open_storage(settings.storage)
        self.inflight: dict[str, asyncio.Future[ModelResult]] = {}
        self.writes: set[asyncio.Task[None]] = set()  # index writes still running

    async def stats(self) -> dict[str, float]:
        return await self.results.stats()

    async def generate(self, request: ModelRequest) -> ModelResult:
        with telemetry.hop("cache", request, cache_mode=request.cache) as hop:
            result = await self._generate(request)
            hop.set(cache_hit=result.cached)
            return result

    async def _generate(self, request: ModelRequest) -> ModelResult:
        if request.cache == "bypass":
            self.results.count("bypassed")
            return await self._produce(request, None)
        key = self.results.key(request)
        if request.cache == "use":
            # A request the gateway just missed is not looked up in the index again; one of this
            # stage's recent results may have completed since.
            hit = await self.results.hit(request, key, indexed=not request.looked_up)
            if hit is not None:
                return hit
        else:
            self.results.count("refreshed")
        leader = None if request.retry else self.inflight.get(key)
        if leader is not None:
            self.results.count("coalesced")
            shared = await asyncio.shield(leader)
            if not shared.cancelled:
                return self._shared(shared)
            # The leader's job was cancelled; this request still wants its image.
        self.results.count("misses")
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
            if self.inflight.get(key) is future:  # a retry may have taken the key over meanwhile
                del self.inflight[key]
        return result

    async def _produce(self, request: ModelRequest, key: str | None) -> ModelResult:
        result: ModelResult = await call(self.next_stage, "generate", request)
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
            self.results.remember(key, result)
            write = asyncio.get_running_loop().create_task(self.results.store(key, entry))
            self.writes.add(write)
            write.add_done_callback(self.writes.discard)
        return result

    @staticmethod
    def _shared(result: ModelResult) -> ModelResult:
        return replace(result, cached=True)

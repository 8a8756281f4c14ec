"""Usage metering per API key and UTC day: images, cached images, denoising steps and generation
seconds, as counters in the state store (``usage:<key id>:<YYYY-MM-DD>:<metric>``), and
``GET /v1/usage``. The daily image quota reads the same counters.

Steps and seconds count model work only: a cache hit is an image but costs no GPU time. A
batch's generation time is shared equally by the requests in it."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query, Request

from huabu.deployments.core.messages import ModelRequest, ModelResult
from huabu.deployments.core.state import KeyValueStore
from huabu.deployments.gateway.auth import ADMIN, GENERATE, Principal, forbidden, require_scope
from huabu.deployments.gateway.errors import APIError
from huabu.sdk.types import UsageDay, UsageReport

METRICS = ("images", "cached_images", "steps", "generation_ms")
RETENTION_S = 400 * 86400  # a year of daily counters, and some
# Days one GET /v1/usage may ask for: each day is 4 store reads, so a year per call (1,464 reads,
# free of any rate limit) would let a key load the store at will.
MAX_DAYS = 31


def utc_day(now: float | None = None) -> str:
    return dt.datetime.fromtimestamp(time.time() if now is None else now, dt.timezone.utc).strftime("%Y-%m-%d")


def seconds_to_utc_midnight(now: float | None = None) -> float:
    now = time.time() if now is None else now
    return 86400 - now % 86400


class UsageMeter:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    @staticmethod
    def _key(key_id: str, day: str, metric: str) -> str:
        return f"usage:{key_id}:{day}:{metric}"

    async def record(self, key_id: str, pairs: Sequence[tuple[ModelRequest, ModelResult]]) -> None:
        fresh = [(req, res) for req, res in pairs if not res.cached]
        amounts = {
            "images": len(pairs),
            "cached_images": len(pairs) - len(fresh),
            "steps": sum(req.steps for req, _ in fresh),
            "generation_ms": round(sum(res.generation_s / max(1, res.batch_size) for _, res in fresh) * 1000),
        }
        day = utc_day()
        # One round trip: this runs on every request's path, hits included.
        await self.kv.incr_many({self._key(key_id, day, m): a for m, a in amounts.items() if a}, RETENTION_S)

    async def images_on(self, key_id: str, day: str | None = None) -> int:
        raw = await self.kv.get(self._key(key_id, day or utc_day(), "images"))
        return int(raw) if raw else 0

    async def day(self, key_id: str, day: str) -> UsageDay:
        values = await asyncio.gather(*(self.kv.get(self._key(key_id, day, m)) for m in METRICS))
        n = dict(zip(METRICS, (int(v) if v else 0 for v in values), strict=True))
        return UsageDay(
            date=day,
            images=n["images"],
            cached_images=n["cached_images"],
            steps=n["steps"],
            generation_s=n["generation_ms"] / 1000,
        )

    async def report(self, key_id: str, days: int) -> UsageReport:
        now = time.time()
        dates = [utc_day(now - 86400 * i) for i in range(days)]
        data = list(await asyncio.gather(*(self.day(key_id, d) for d in dates)))
        total = UsageDay(
            date="total",
            images=sum(d.images for d in data),
            cached_images=sum(d.cached_images for d in data),
            steps=sum(d.steps for d in data),
            generation_s=round(sum(d.generation_s for d in data), 3),
        )
        return UsageReport(key_id=key_id, data=data, total=total)


router = APIRouter(tags=["usage"])


@router.get("/v1/usage", response_model=UsageReport)
async def usage(
    request: Request,
    caller: Annotated[Principal, require_scope(GENERATE)],
    days: int = Query(7, ge=1, le=MAX_DAYS, description="UTC days back from today"),
    key_id: str | None = Query(None, max_length=64, description="another key's usage (admin scope)"),
) -> UsageReport:
    """The calling key's usage per UTC day (an admin key may name another key)."""
    if key_id is not None and key_id != caller.key_id and not caller.has(ADMIN):
        raise forbidden(ADMIN)
    meter: UsageMeter | None = getattr(getattr(request.app.state, "access", None), "usage", None)
    if meter is None:
        raise APIError("the gateway is starting; retry", "service_unavailable", status=503)
    return await meter.report(key_id or caller.key_id, days)

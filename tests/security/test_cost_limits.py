"""Limits that follow the work asked for (#25 hole 8), through the deployed app (two gateway
replicas sharing the store): rate-limit tokens proportional to n x steps x pixels, the daily
quota reserved atomically, bounded usage reads and open event streams per key; and, on a real
redis-server, an A/B controller tick that lists its keys without scanning the keyspace."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from security_helpers import bearer
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from huabu.ab_testing import Assignment, MetricsBuffer, load_metrics
from huabu.deployments.core.state import RedisStore, _MemoryState
from huabu.deployments.gateway.access import STREAMS_PER_SLOT
from huabu.deployments.gateway.experiments import KVStateStore, build_index
from huabu.deployments.gateway.ratelimit import REFERENCE_WORK, EmbeddedLimits, RedisLimits
from huabu.deployments.gateway.usage import MAX_DAYS

pytestmark = pytest.mark.serve
CHEAP = {"kind": "generate", "prompt": "a red circle", "size": "32x32", "steps": 1}
# 4 x 100 x 256 x 256 = 26.2M of work: ceil(26.2M / 7.86M) = 4 tokens.
COSTLY = {"kind": "generate", "prompt": "a red circle", "size": "256x256", "steps": 100, "n": 4, "cache": "bypass"}
COSTLY_TOKENS = math.ceil(4 * 100 * 256 * 256 / REFERENCE_WORK)


def cancel(c: httpx.Client, key: str, response: httpx.Response) -> None:
    if response.status_code == 202:
        c.delete(f"/v1/jobs/{response.json()['id']}", headers=bearer(key))


def test_tokens_are_proportional_to_work(secure_app: Any, make_key: Any) -> None:
    assert COSTLY_TOKENS == 4
    key = make_key(rate="6/min")["key"]
    with secure_app.client() as c:
        first = c.post("/v1/jobs", json=COSTLY, headers=bearer(key))
        cancel(c, key, first)
        assert first.status_code == 202, first.text
        assert first.headers["x-ratelimit-remaining-requests"] == str(6 - COSTLY_TOKENS)
        second = c.post("/v1/jobs", json=COSTLY, headers=bearer(key))  # 2 left (1 after admission), costs 4
        cancel(c, key, second)
        assert second.status_code == 429, second.text
        error = second.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and f"costs {COSTLY_TOKENS} rate-limit tokens" in error["message"]
        assert int(second.headers["retry-after"]) >= 1
        cheap = c.post("/v1/jobs", json=CHEAP, headers=bearer(key))  # one token: still in
        assert cheap.status_code == 202, cheap.text
        assert cheap.headers["x-ratelimit-remaining-requests"] == "0"
    # A request worth more than the whole bucket costs the bucket, once per period (never a
    # 429 that no wait can cure).
    small = make_key(rate="3/min")["key"]
    with secure_app.client() as c:
        capped = c.post("/v1/jobs", json=COSTLY, headers=bearer(small))
        cancel(c, small, capped)
        assert capped.status_code == 202 and capped.headers["x-ratelimit-remaining-requests"] == "0"


def test_daily_quota_is_reserved_atomically(secure_app: Any, make_key: Any) -> None:
    key = make_key(daily_images=3)["key"]

    def submit(i: int) -> int:
        with secure_app.client() as c:
            return c.post("/v1/jobs", json={**CHEAP, "prompt": f"a red circle {i}"}, headers=bearer(key)).status_code

    with ThreadPoolExecutor(8) as pool:  # all at once, to both gateway replicas
        codes = sorted(pool.map(submit, range(8)))
    assert codes == [202] * 3 + [429] * 5, codes
    # A replayed submission (same Idempotency-Key) is the same job: its images are reserved once.
    replayed = make_key(daily_images=2)["key"]
    with secure_app.client() as c:
        headers = {**bearer(replayed), "Idempotency-Key": "once"}
        first, again = (c.post("/v1/jobs", json={**CHEAP, "n": 1}, headers=headers) for _ in range(2))
        assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
        other = c.post("/v1/jobs", json=CHEAP, headers=bearer(replayed))
        assert other.status_code == 202, other.text
        over = c.post("/v1/jobs", json=CHEAP, headers=bearer(replayed))
        assert over.status_code == 429 and over.json()["error"]["code"] == "daily_quota_exceeded"


def test_usage_days_are_capped(secure_app: Any, make_key: Any) -> None:
    key = make_key()["key"]
    with secure_app.client() as c:
        assert c.get("/v1/usage", params={"days": MAX_DAYS}, headers=bearer(key)).status_code == 200
        over = c.get("/v1/usage", params={"days": MAX_DAYS + 1}, headers=bearer(key))
        assert over.status_code == 400 and over.json()["error"]["param"] == "days", over.text


def test_open_event_streams_are_capped_per_key(secure_app: Any, make_key: Any) -> None:
    key = make_key(max_concurrent=1)["key"]
    limit = STREAMS_PER_SLOT * 1
    with secure_app.client() as c:
        job = c.post("/v1/jobs", json={**COSTLY, "steps": 200}, headers=bearer(key))  # runs for a while
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        try:
            with contextlib.ExitStack() as streams:
                for _ in range(limit):
                    r = streams.enter_context(c.stream("GET", f"/v1/jobs/{job_id}/events", headers=bearer(key)))
                    assert r.status_code == 200
                over = c.get(f"/v1/jobs/{job_id}/events", headers=bearer(key))
                assert over.status_code == 429, over.text
                assert (
                    over.json()["error"]["code"] == "too_many_streams" and str(limit) in over.json()["error"]["message"]
                )
                ws_url = secure_app.base_url.replace("http://", "ws://") + f"/v1/jobs/{job_id}/ws"
                with pytest.raises(InvalidStatus), connect(ws_url, open_timeout=30, additional_headers=bearer(key)):
                    pass  # refused before the handshake completes
                # Other keys are not affected.
                other = make_key()["key"]
                assert c.get(f"/v1/jobs/{job_id}", headers=bearer(other)).status_code == 404
            # Closed streams free their slots.
            deadline = time.monotonic() + 10
            while (r := c.get(f"/v1/jobs/{job_id}", headers=bearer(key))).status_code == 200:
                with c.stream("GET", f"/v1/jobs/{job_id}/events", headers=bearer(key)) as again:
                    if again.status_code == 200:
                        break
                assert time.monotonic() < deadline, "a closed stream kept its slot"
                time.sleep(0.2)
        finally:
            c.delete(f"/v1/jobs/{job_id}", headers=bearer(key))


# --- the stores -----------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "embedded"])
def limits(request: Any, redis_url: str, serve_port: int) -> Any:
    namespace = f"cost-{uuid.uuid4().hex[:6]}"
    return RedisLimits(redis_url, namespace) if request.param == "redis" else EmbeddedLimits(namespace)


def test_reservations_never_overdraw(limits: Any) -> None:
    async def scenario() -> None:
        results = await asyncio.gather(*(limits.reserve("q", 2, 7, 60) for _ in range(6)))
        assert sum(r.allowed for r in results) == 3 and (await limits.reserve("q", 0, 7, 60)).used == 6
        assert not (await limits.reserve("q", 2, 7, 60)).allowed
        assert (await limits.reserve("q", 1, 7, 60)).allowed  # exactly to the limit
        assert (await limits.reserve("q", -4, 7, 60)).used == 3  # given back
        assert (await limits.reserve("q", -10, 7, 60)).used == 0  # never below zero
        assert (await limits.reserve("absent", -1, 7, 60)).used == 0

    asyncio.run(scenario())


def test_controller_lists_ab_keys_without_scanning_redis(redis_url: str) -> None:
    namespace = f"ab-{uuid.uuid4().hex[:6]}"

    async def scans(kv: RedisStore) -> int:
        stats = await kv.client.info("commandstats")
        return int(stats.get("cmdstat_scan", {}).get("calls", 0))

    async def scenario() -> None:
        kv = RedisStore(redis_url, namespace)
        # Written before the index existed: found by the one scan of build_index, then indexed.
        await kv.put("huabu:ab:rollout:old", b'{"legacy": true}')
        before = await scans(kv)
        assert await build_index(kv) == 1 and await scans(kv) > before
        assert await build_index(kv) == 0  # once per deployment
        store = KVStateStore(kv, asyncio.get_running_loop())
        assignment = Assignment(
            experiment_id="exp", version=0, variant="canary", model="m@v2", bucket=12, forced=False, reason="hash"
        )

        def tick() -> tuple[list[str], int, list[str]]:
            buffer = MetricsBuffer("replica-1")
            buffer.record_request(assignment, latency_ms=5.0)
            buffer.flush(store)  # creates its key by compare-and-set
            store.set("huabu:ab:rollout:new", {"x": 1})
            metrics = load_metrics(store, "exp")
            listed = sorted(store.keys("huabu:ab:rollout:"))
            store.delete("huabu:ab:rollout:new")
            return listed, metrics.totals()["canary"].requests, sorted(store.keys("huabu:ab:rollout:"))

        scans_before = await scans(kv)
        listed, requests, after_delete = await asyncio.to_thread(tick)
        assert listed == ["huabu:ab:rollout:new", "huabu:ab:rollout:old"] and requests == 1
        assert after_delete == ["huabu:ab:rollout:old"]
        assert await scans(kv) == scans_before  # no SCAN (nor KEYS) on the tick's path
        with pytest.raises(ValueError):
            store.keys("elsewhere:")

    asyncio.run(scenario())


def test_embedded_keys_expire_without_a_read() -> None:
    state = _MemoryState()
    for i in range(100):
        state.put(f"job:{i}", b"x", ttl_s=0.01)
    state.incr_many({"usage:a": 1}, ttl_s=3600)
    time.sleep(0.05)
    for i in range(3):  # writes to other keys sweep the expired ones, 64 at most per write
        state.put(f"other:{i}", b"y")
    assert not any(k.startswith("job:") for k in state.values) and "usage:a" in state.values
    for _ in range(5000):  # deadlines refreshed over and over do not grow the heap without bound
        state.incr_many({"usage:a": 1}, ttl_s=3600)
    assert len(state._expiry) <= 2 * len(state.deadlines) + 1024

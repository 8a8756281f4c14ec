"""Per-key limits through the real gateway (two replicas sharing the store): rate (429 with
Retry-After and rate-limit headers), concurrent jobs, daily image quota; and the two atomic
primitives on each backend (Lua scripts on a real redis-server, the embedded Ray actor)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from security_helpers import bearer

from huabu.deployments.gateway.ratelimit import EmbeddedLimits, Rate, RedisLimits

pytestmark = pytest.mark.serve
BAD = {"prompt": "x", "size": "33x32"}  # costs a token, but never reaches the model


def test_rate_limit_429_with_retry_after_and_headers(secure_app, make_key) -> None:
    key = make_key(rate="3/min")["key"]
    with secure_app.client() as c:
        answers = [c.post("/v1/images/generations", json=BAD, headers=bearer(key)) for _ in range(4)]
        assert [r.status_code for r in answers] == [400, 400, 400, 429]
        assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["2", "1", "0", "0"]
        assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in answers)
        limited = answers[-1]
        error = limited.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert "3/min" in error["message"]
        assert 1 <= int(limited.headers["retry-after"]) <= 20  # one token refills in 20 s
        assert int(limited.headers["x-ratelimit-reset-requests"]) >= 1
        # Reads are not rate limited; another key has its own bucket.
        assert c.get("/v1/models", headers=bearer(key)).status_code == 200
        assert c.post("/v1/images/generations", json=BAD, headers=bearer(make_key()["key"])).status_code == 400


def test_concurrent_jobs_limit(secure_app, make_key) -> None:
    key = make_key(max_concurrent=1)["key"]
    long_job = {"kind": "generate", "prompt": "a blue square", "size": "32x32", "steps": 200, "cache": "bypass"}
    with secure_app.client() as c:
        first = c.post("/v1/jobs", json=long_job, headers=bearer(key))
        assert first.status_code == 202, first.text
        second = c.post("/v1/jobs", json=long_job, headers=bearer(key))
        assert second.status_code == 429, second.text
        assert second.json()["error"]["code"] == "concurrency_limit_exceeded" and second.headers["retry-after"]
        sync = c.post("/v1/images/generations", json={"prompt": "x", "size": "32x32"}, headers=bearer(key))
        assert sync.status_code == 429
        # Once the job has finished (here: cancelled), its slot is free again.
        c.delete(f"/v1/jobs/{first.json()['id']}", headers=bearer(key))
        for _ in range(300):
            if c.get(f"/v1/jobs/{first.json()['id']}", headers=bearer(key)).json()["status"] in (
                "canceled",
                "succeeded",
            ):
                break
        third = c.post("/v1/jobs", json={**long_job, "steps": 1}, headers=bearer(key))
        assert third.status_code == 202, third.text


def test_daily_image_quota(secure_app, make_key) -> None:
    key = make_key(daily_images=2)["key"]
    body = {"prompt": "a red circle", "size": "32x32", "n": 2, "steps": 1}
    with secure_app.client() as c:
        assert c.post("/v1/images/generations", json=body, headers=bearer(key)).status_code == 200
        over = c.post("/v1/images/generations", json=body, headers=bearer(key))
    assert over.status_code == 429 and over.json()["error"]["code"] == "daily_quota_exceeded"
    assert 1 <= int(over.headers["retry-after"]) <= 86400


@pytest.fixture(params=["redis", "embedded"])
def limits(request, redis_url, serve_port):
    namespace = f"limits-{uuid.uuid4().hex[:6]}"
    return RedisLimits(redis_url, namespace) if request.param == "redis" else EmbeddedLimits(namespace)


def test_token_bucket_and_slots_are_atomic(limits) -> None:
    async def scenario() -> None:
        rate = Rate.parse("5/min")
        takes = await asyncio.gather(*(limits.take("b", rate) for _ in range(8)))
        assert sum(t.allowed for t in takes) == 5  # concurrent callers never overdraw the bucket
        refused = next(t for t in takes if not t.allowed)
        assert 0 < refused.retry_after_s <= 12 and refused.remaining == 0
        slots = await asyncio.gather(*(limits.acquire("s", f"m{i}", 3, 60) for i in range(6)))
        assert sum(s.acquired for s in slots) == 3
        held = [f"m{i}" for i, s in enumerate(slots) if s.acquired]
        again = await limits.acquire("s", held[0], 3, 60)  # a holder may renew its own slot
        assert again.acquired and sorted(again.members) == sorted(held)
        await limits.release("s", held[0])
        assert (await limits.acquire("s", "late", 3, 60)).acquired
        await limits.add("s", "job", 60)  # added past the limit: a job taking over a request's slot
        assert not (await limits.acquire("s", "more", 3, 60)).acquired
        assert (await limits.acquire("expiring", "a", 1, 0.2)).acquired
        await asyncio.sleep(0.4)
        assert (await limits.acquire("expiring", "b", 1, 60)).acquired  # expired slots free themselves

    asyncio.run(scenario())


@pytest.mark.parametrize("text", ["60/min", "1/s", "1000/day", "5/hour"])
def test_rate_parse(text: str) -> None:
    rate = Rate.parse(text)
    assert rate.limit == int(text.split("/")[0]) and rate.per_s > 0


@pytest.mark.parametrize("text", ["", "0/min", "ten/min", "5/fortnight", "5/min/extra"])
def test_rate_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="60/min"):
        Rate.parse(text)

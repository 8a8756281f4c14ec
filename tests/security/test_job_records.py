"""Job records are created owner-first and atomically enough that a store error at any step leaves
nothing observable (#25 hole 5): no queued job that never runs, no ownerless job, no idempotency
key naming a half-made job; a job whose owner record is gone is nobody's (404 to every key)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import httpx
import pytest
import redis
from security_helpers import bearer

from huabu.deployments.core.settings import JobSettings
from huabu.deployments.core.state import _MemoryState
from huabu.deployments.gateway import jobs
from huabu.deployments.gateway.auth import key_hash, key_id_of, new_key
from huabu.deployments.gateway.jobs import ACTIVE, IdempotencyConflict, JobRunner, JobStore, job_owner_key
from huabu.sdk import Client
from huabu.sdk.types import ImagesResponse, JobStatus


class StoreDown(ConnectionError):
    """What a store call raises when the store fails (an outage: the gateway answers 503)."""


class FailingKV:
    """The embedded store's semantics (``_MemoryState``) behind the async interface; the call
    numbered ``fail_at`` (1-based, counting every method) raises instead of running."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.state = _MemoryState()
        self.fail_at = fail_at
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.state, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.fail_at:
                raise StoreDown(f"store failed at call {self.calls} ({name})")
            return method(*args, **kwargs)

        return call

    def job_keys(self) -> list[str]:
        """Every live key a creation writes (the active set aside)."""
        prefixes = ("job:", "jobowner:", "idem:")  # unit: is the A/B unit's own, left to expire
        return sorted(k for k in list(self.state.values) if k.startswith(prefixes) and self.state.get(k) is not None)


CONFIG = JobSettings(poll_interval_s=0.01, lease_s=5.0)


async def create(store: JobStore, kv: FailingKV, idem: str = "retry-me") -> tuple[Any, bool]:
    async def on_created(job_id: str) -> None:  # as the A/B unit of the submitting request
        await kv.put(f"unit:{job_id}", b"u", ttl_s=60)

    return await store.create("generate", '{"prompt": "x"}', idem, model="m", on_created=on_created, owner="key_a")


async def run_to_end(store: JobStore, job_id: str) -> JobStatus:
    async def execute(job_id: str, request_json: str, attempt: int) -> tuple[ImagesResponse, str | None]:
        return ImagesResponse(created=0, data=[]), "stable"

    runner = JobRunner(store, execute, CONFIG, owner="test")
    runner.start()
    try:
        async with asyncio.timeout(20):
            while not (job := await store.get(job_id)) or not job.status.is_terminal:
                await asyncio.sleep(0.02)
    finally:
        await runner.stop()
    return job.status


async def test_a_store_error_at_any_step_of_creation_leaves_nothing_and_a_retry_creates_a_runnable_job() -> None:
    probe = FailingKV()
    await create(JobStore(probe, CONFIG), probe)  # type: ignore[arg-type]
    steps = probe.calls
    # claim, owner, the job's parts (request, record, first event: one round trip), unit, active,
    # commit (with the key's expiry)
    assert steps >= 6, steps
    for fail_at in range(1, steps + 1):
        kv = FailingKV(fail_at)
        store = JobStore(kv, CONFIG)  # type: ignore[arg-type]
        with pytest.raises(StoreDown):
            await create(store, kv)
        # Nothing a reader, a runner or a retry could see: no record, owner, key or active id.
        assert kv.job_keys() == [], (fail_at, kv.job_keys())
        assert await kv.smembers(ACTIVE) == set(), fail_at
        job, created = await create(store, kv)  # the client's retry, same Idempotency-Key
        assert created, fail_at
        assert await kv.smembers(ACTIVE) == {job.id}, fail_at
        assert await kv.get(job_owner_key(job.id)) == b"key_a"
        assert await kv.get("idem:retry-me") == job.id.encode()
        again, created_again = await create(store, kv)
        assert (again.id, created_again) == (job.id, False)  # the key now names the complete job
        assert await run_to_end(store, job.id) == JobStatus.succeeded, fail_at
    print(f"store failed at each of {steps} creation steps: no partial state; every retry ran")


async def test_the_owner_is_written_before_the_job_and_outlives_it() -> None:
    kv = FailingKV()
    store = JobStore(kv, CONFIG)  # type: ignore[arg-type]
    order: list[str] = []
    put = kv.__getattr__("put")

    async def recording_put(key: str, *args: Any, **kwargs: Any) -> bool:
        order.append(key)
        return bool(await put(key, *args, **kwargs))

    kv.put = recording_put  # type: ignore[method-assign]
    job, _ = await store.create("generate", "{}", owner="key_a")
    assert order[0] == job_owner_key(job.id), order
    owner_deadline = kv.state.deadlines[job_owner_key(job.id)]
    assert owner_deadline >= kv.state.deadlines[f"job:{job.id}"] + CONFIG.result_ttl_s - 5


async def test_a_concurrent_creation_with_the_key_is_a_conflict_and_an_abandoned_one_is_taken_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kv = FailingKV()
    store = JobStore(kv, CONFIG)  # type: ignore[arg-type]
    # A creation under way (its claim is fresh): the retry waits for it rather than making a second job.
    await kv.put("idem:busy", jobs.PENDING + jobs.new_job_id().encode(), ttl_s=60)
    with pytest.raises(IdempotencyConflict) as conflict:
        await store.create("generate", "{}", "busy", owner="key_a")
    # It says when a retry could take the key over, should that creation have died.
    assert jobs.ABANDONED_AFTER_S - 1 <= conflict.value.retry_after_s <= jobs.ABANDONED_AFTER_S
    # A creation that died half-way and could not undo (the store was down): never active, so
    # nothing runs; once it looks abandoned the retry takes the key over.
    monkeypatch.setattr(jobs, "ABANDONED_AFTER_S", 0.0)
    await asyncio.sleep(0.01)
    job, created = await store.create("generate", "{}", "busy", owner="key_a")
    assert created and await kv.get("idem:busy") == job.id.encode()
    assert await kv.smembers(ACTIVE) == {job.id}


# --- the deployed app --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records_admin() -> str:
    return new_key()[1]


@pytest.fixture(scope="module")
def on_redis(deploy_app: Any, redis_url: str, records_admin: str) -> Any:
    return deploy_app(
        auth={"enabled": True, "admin_key_sha256": key_hash(records_admin), "default_rate": "1000/min"},
        state={"backend": "redis", "redis_url": redis_url},
        cache={"enabled": False},
        gateway={"default_steps": 2},
    )


def tenant(app: Any, admin: str) -> str:
    r = httpx.post(
        f"{app.base_url}/v1/admin/keys", json={"name": f"t-{time.monotonic_ns()}"}, headers=bearer(admin), timeout=30
    )
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


@pytest.mark.serve
def test_a_job_whose_owner_record_is_gone_is_nobodys(on_redis: Any, records_admin: str, redis_url: str) -> None:
    owner, other = tenant(on_redis, records_admin), tenant(on_redis, records_admin)
    with on_redis.client() as c:
        body = {"kind": "generate", "prompt": "a blue square", "size": "32x32", "seed": 3}
        r = c.post("/v1/jobs", json=body, headers={**bearer(owner), "Idempotency-Key": "owner-gone"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert c.get(f"/v1/jobs/{job_id}", headers=bearer(owner)).status_code == 200
        assert c.get(f"/v1/jobs/{job_id}", headers=bearer(other)).status_code == 404
        client = redis.Redis.from_url(redis_url)
        assert client.delete(f"{on_redis.settings.state.namespace}:{job_owner_key(job_id)}") == 1
        for key in (owner, other):  # fail closed: an ownerless job is readable by no tenant
            for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events"):
                r = c.get(path, headers=bearer(key))
                assert r.status_code == 404, (path, r.text)
                assert r.json()["error"]["param"] == "job_id"
            assert c.delete(f"/v1/jobs/{job_id}", headers=bearer(key)).status_code == 404
        # The job record itself is still there (operators with the admin scope see every job).
        assert c.get(f"/v1/jobs/{job_id}", headers=bearer(records_admin)).status_code == 200


@pytest.mark.serve
def test_a_claim_left_by_a_lost_gateway_is_taken_over_within_the_sdks_retries(
    on_redis: Any, records_admin: str, redis_url: str
) -> None:
    """A gateway lost mid-creation leaves its key's claim pending (seen in CI after a node loss:
    the SDK's retries all got 409 while the claim waited to count as abandoned). The 409 says when
    the claim will be taken over, so the SDK's default retries end with the job, not a 409."""
    owner = tenant(on_redis, records_admin)
    key = f"lost-gateway-{time.monotonic_ns()}"
    # The lost creation began 5 s short of abandoned: more than the SDK's retries wait by backoff alone.
    started = time.time() - (jobs.ABANDONED_AFTER_S - 5)
    orphan = f"job_{int(started * 1000):012x}{'0' * 12}"
    store = redis.Redis.from_url(redis_url)
    # Keys are scoped to the API key (gateway/access.py check_idempotency).
    scoped = f"{on_redis.settings.state.namespace}:idem:{key_id_of(owner)}:{hashlib.sha256(key.encode()).hexdigest()}"
    store.set(scoped, jobs.PENDING + orphan.encode(), ex=600)

    with on_redis.client() as c:  # what the SDK's first attempt meets
        body = {"kind": "generate", "prompt": "a blue square", "size": "32x32", "seed": 3}
        r = c.post("/v1/jobs", json=body, headers={**bearer(owner), "Idempotency-Key": key})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "idempotency_key_in_use"
        assert 3 <= float(r.headers["retry-after"]) <= 5, r.headers

    with Client(base_url=on_redis.base_url, api_key=owner) as sdk:
        job = sdk.jobs.submit("a blue square", size="32x32", seed=3, idempotency_key=key).wait(timeout=120)
    assert job.status == JobStatus.succeeded, job
    assert store.get(scoped) == job.id.encode()  # the key names the retry's job now

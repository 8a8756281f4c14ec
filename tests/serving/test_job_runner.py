"""The job runner's retry rules, on an in-memory store (no Ray): a started job whose progress
stalls is abandoned and retried; a job still waiting for its first step is left alone, unless a
replica was lost meanwhile."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import MemoryKV

from huabu.deployments.core.handles import ReplicaLost
from huabu.deployments.core.settings import JobSettings
from huabu.deployments.gateway import jobs
from huabu.deployments.gateway.errors import APIError
from huabu.deployments.gateway.jobs import JobRunner, JobStore
from huabu.sdk.types import ImagesResponse, JobStatus


async def run_one_job(make_execute: Any, **settings: Any) -> tuple[str, JobStore]:
    """Submit one job, run it with ``make_execute(store)``, return once it is terminal."""
    config = JobSettings(poll_interval_s=0.01, lease_s=5.0, **settings)
    store = JobStore(MemoryKV(), config)  # type: ignore[arg-type]
    job, _ = await store.create("generate", "{}")
    runner = JobRunner(store, make_execute(store), config, owner="test")
    runner.start()
    try:
        async with asyncio.timeout(20):
            while not (await store.get(job.id)).status.is_terminal:  # type: ignore[union-attr]
                await asyncio.sleep(0.02)
    finally:
        await runner.stop()
    return job.id, store


async def test_a_started_job_whose_progress_stalls_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "STALL_POLL_S", 0.05)
    attempts: list[int] = []

    def make_execute(store: JobStore) -> Any:
        async def execute(job_id: str, request_json: str, attempt: int) -> tuple[ImagesResponse, str | None]:
            attempts.append(attempt)  # the runner numbers its attempts
            if len(attempts) == 1:  # a replica that reports two steps, then is gone without a word
                for step in (1, 2):
                    await store.record_progress(job_id, step, 10)
                await asyncio.Event().wait()
            return ImagesResponse(created=0, data=[]), "stable"

        return execute

    job_id, store = await run_one_job(make_execute, stall_timeout_s=0.3)
    job = await store.get(job_id)
    assert job is not None and job.status == JobStatus.succeeded and attempts == [1, 2]


async def test_a_job_waiting_for_its_first_step_is_not_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "STALL_POLL_S", 0.05)
    attempts: list[int] = []

    async def execute(job_id: str, request_json: str, attempt: int) -> tuple[ImagesResponse, str | None]:
        attempts.append(1)
        await asyncio.sleep(1.0)  # queued behind other batches: no progress yet
        return ImagesResponse(created=0, data=[]), "stable"

    job_id, store = await run_one_job(lambda store: execute, stall_timeout_s=0.2)
    job = await store.get(job_id)
    assert job is not None and job.status == JobStatus.succeeded and attempts == [1]


async def test_a_job_waiting_when_another_attempt_loses_its_replica_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Job "lost" fails on a dead replica; job "queued" waits with no step and no error (its call sits
    on the lost replica in a way that never fails): it is retried requeue_after_loss_s after the loss,
    long before its attempt timeout."""
    monkeypatch.setattr(jobs, "STALL_POLL_S", 0.05)
    config = JobSettings(poll_interval_s=0.01, lease_s=5.0, requeue_after_loss_s=0.3, attempt_timeout_s=60)
    store = JobStore(MemoryKV(), config)  # type: ignore[arg-type]
    queued, _ = await store.create("generate", '"queued"')
    lost, _ = await store.create("generate", '"lost"')
    calls: list[tuple[str, int]] = []

    async def execute(job_id: str, request_json: str, attempt: int) -> tuple[ImagesResponse, str | None]:
        calls.append((request_json, attempt))
        if attempt == 1 and request_json == '"lost"':
            await asyncio.sleep(0.2)
            raise ReplicaLost("replica actor ab12 died before answering")
        if attempt == 1:
            await asyncio.Event().wait()
        return ImagesResponse(created=0, data=[]), "stable"

    runner = JobRunner(store, execute, config, owner="test")
    runner.start()
    try:
        async with asyncio.timeout(20):
            for job_id in (queued.id, lost.id):
                while not (await store.get(job_id)).status.is_terminal:  # type: ignore[union-attr]
                    await asyncio.sleep(0.02)
    finally:
        await runner.stop()
    for job_id in (queued.id, lost.id):
        job = await store.get(job_id)
        assert job is not None and job.status == JobStatus.succeeded
    assert sorted(calls) == [('"lost"', 1), ('"lost"', 2), ('"queued"', 1), ('"queued"', 2)]


async def test_an_attempt_past_its_time_limit_is_retried_then_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "STALL_POLL_S", 0.05)

    async def execute(job_id: str, request_json: str, attempt: int) -> tuple[ImagesResponse, str | None]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    job_id, store = await run_one_job(lambda store: execute, attempt_timeout_s=0.2, max_attempts=2)
    job = await store.get(job_id)
    assert job is not None and job.status == JobStatus.failed
    assert job.error is not None and "2 attempts" in job.error.message


async def test_a_stale_runner_never_reopens_a_finished_job() -> None:
    """Runner A finishes the job between runner B's read and B's write of "running" (two runners
    can hold one job when a lease lapses while its runner stalls): the job stays finished."""
    config = JobSettings()
    kv = MemoryKV()
    store = JobStore(kv, config)  # type: ignore[arg-type]
    job, _ = await store.create("generate", "{}")
    await store.transition(job.id, JobStatus.running)
    read = kv.state.get
    raced = False

    async def read_then_race(key: str) -> bytes | None:
        nonlocal raced
        value = read(key)
        if key == store._key(job.id) and not raced:
            raced = True
            await store.transition(job.id, JobStatus.succeeded, result=ImagesResponse(created=0, data=[]))
        return value

    kv.get = read_then_race  # type: ignore[method-assign]
    await store.transition(job.id, JobStatus.running)  # runner B, on what it read before A finished
    final = await store.get(job.id)
    assert raced and final is not None and final.status == JobStatus.succeeded
    assert job.id not in await store.kv.smembers(jobs.ACTIVE)


async def test_a_runner_whose_lease_was_taken_over_stops_and_writes_nothing() -> None:
    config = JobSettings(poll_interval_s=0.01, lease_s=0.3)
    store = JobStore(MemoryKV(), config)  # type: ignore[arg-type]
    job, _ = await store.create("generate", "{}")
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def execute(job_id: str, request_json: str, attempt: int) -> tuple[ImagesResponse, str | None]:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    runner = JobRunner(store, execute, config, owner="stalled")
    runner.start()
    try:
        async with asyncio.timeout(10):
            await started.wait()
            await store.kv.put(store._key(job.id, "lease"), b"other", ttl_s=60)  # another runner holds it now
            await cancelled.wait()
            await asyncio.sleep(0.1)
    finally:
        await runner.stop()
    assert await store.kv.get(store._key(job.id, "lease")) == b"other"  # not released by the stale runner
    current = await store.get(job.id)
    assert current is not None and current.status == JobStatus.running


async def test_a_job_held_long_is_reported_with_where_it_waits(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A job that holds a runner slot for long says in the logs which await it is stuck in, and so
    does an attempt abandoned by a backstop (the attempt timeout here)."""
    monkeypatch.setattr(jobs, "STALL_POLL_S", 0.05)
    monkeypatch.setattr(jobs, "LONG_RUN_S", 0.2)
    monkeypatch.setattr(jobs, "IDLE_POLL_MAX_S", 0.05)  # the runner's loop, which reports, turns often
    attempts: list[int] = []

    async def wait_for_a_replica_that_never_answers() -> None:
        await asyncio.Event().wait()

    async def execute(job_id: str, request_json: str, attempt: int) -> tuple[ImagesResponse, str | None]:
        attempts.append(attempt)
        if attempt == 1:
            await wait_for_a_replica_that_never_answers()
        return ImagesResponse(created=0, data=[]), "stable"

    with caplog.at_level("WARNING", logger="huabu.jobs"):
        job_id, _ = await run_one_job(lambda store: execute, attempt_timeout_s=1.0)
    assert attempts == [1, 2]
    held = [r.getMessage() for r in caplog.records if " held by test for " in r.getMessage()]
    # While the call hangs, the report names the hanging await; a report that lands between the
    # attempts (the job given back) names the store call it waits in, never only the runner's loop.
    assert any(job_id in m and "wait_for_a_replica_that_never_answers" in m for m in held), held
    assert all(job_id in m and "waiting in _run (" not in m for m in held), held
    abandoned = [r.getMessage() for r in caplog.records if "it was waiting in" in r.getMessage()]
    assert len(abandoned) == 1 and "attempt still running after" in abandoned[0]
    assert "execute (test_job_runner.py" in abandoned[0] and "wait_for_a_replica_that_never_answers" in abandoned[0]


class LeaseReadSwallowsCancel(MemoryKV):
    """A store whose lease renewals (compare-and-set) take a while and swallow a cancellation that
    arrives meanwhile, as a store call whose own timeout fires together with the cancel can on
    Python 3.11. ``reading`` is set while such a call waits (one at a time)."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.state, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            # One slow renewal at a time: the release's own calls, made meanwhile, go straight through.
            if name == "compare_and_set" and str(args[0]).endswith(":lease") and not self.reading.is_set():
                self.reading.set()
                try:
                    await asyncio.sleep(0.3)
                except asyncio.CancelledError:
                    pass  # swallowed: the caller goes on as if nothing happened
                finally:
                    self.reading.clear()
            return method(*args, **kwargs)

        return call


async def test_a_lease_renewal_racing_the_release_never_holds_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen in a multinode run: an attempt failed on a lost replica and released its lease while its
    keeper was in a lease read; the keeper's cancellation was swallowed, its renewal wrote the lease
    back, and it renewed it for good: the job stayed `running`, unclaimed. Now a renewal never takes
    a released lease back (it is one compare-and-set of the holder), and the keeper stops by a flag
    as well as by cancellation."""
    monkeypatch.setattr(jobs, "STALL_POLL_S", 0.05)
    config = JobSettings(poll_interval_s=0.01, lease_s=0.6)
    kv = LeaseReadSwallowsCancel()
    store = JobStore(kv, config)  # type: ignore[arg-type]
    job, _ = await store.create("generate", "{}")
    attempts: list[int] = []

    async def execute(job_id: str, request_json: str, attempt: int) -> tuple[ImagesResponse, str | None]:
        attempts.append(attempt)
        if attempt == 1:
            await kv.reading.wait()  # fail while the keeper is inside a lease read
            raise ReplicaLost("replica actor gone")
        return ImagesResponse(created=0, data=[]), "stable"

    runner = JobRunner(store, execute, config, owner="test")
    runner.start()
    try:
        async with asyncio.timeout(20):
            while not (await store.get(job.id)).status.is_terminal:  # type: ignore[union-attr]
                await asyncio.sleep(0.02)
    finally:
        await runner.stop()
    finished = await store.get(job.id)
    assert finished is not None and finished.status == JobStatus.succeeded and attempts == [1, 2]


async def test_store_outages_and_unavailable_filters_do_not_use_up_a_jobs_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """#25 finding 4: in a soak, a Redis outage failed jobs "after 3 attempts" that would have run
    once it was over. Attempts ended by the store or a filter that cannot screen are retried without
    counting; failures of the job's own run still count, and everything is bounded."""
    import redis.exceptions

    monkeypatch.setattr(jobs, "STALL_POLL_S", 0.05)
    calls: list[int] = []

    async def outages_then_success(job_id: str, request_json: str, attempt: int) -> tuple[ImagesResponse, str | None]:
        calls.append(attempt)
        if attempt <= 3:
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        if attempt <= 5:
            retry = {"Retry-After": "0.05"}
            raise APIError(
                "the prompt filter is unavailable", "service_unavailable", None, "filter_unavailable", 503, retry
            )
        return ImagesResponse(created=0, data=[]), "stable"

    job_id, store = await run_one_job(lambda store: outages_then_success, max_attempts=2)
    job = await store.get(job_id)
    assert job is not None and job.status == JobStatus.succeeded, job
    assert calls == [1, 2, 3, 4, 5, 6]

    calls.clear()

    async def always_fails(job_id: str, request_json: str, attempt: int) -> tuple[ImagesResponse, str | None]:
        calls.append(attempt)
        raise RuntimeError("the model raised")

    job_id, store = await run_one_job(lambda store: always_fails, max_attempts=2)
    job = await store.get(job_id)
    assert job is not None and job.status == JobStatus.failed and job.error is not None
    assert calls == [1, 2] and "after 2 attempts" in job.error.message

    calls.clear()

    async def store_always_down(job_id: str, request_json: str, attempt: int) -> tuple[ImagesResponse, str | None]:
        calls.append(attempt)
        raise redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:6379")

    job_id, store = await run_one_job(lambda store: store_always_down, max_attempts=2)
    job = await store.get(job_id)
    assert job is not None and job.status == JobStatus.failed and job.error is not None
    assert len(calls) == 2 * jobs.UNCOUNTED_ATTEMPTS_FACTOR, calls  # bounded all the same
    assert "outages" in job.error.message

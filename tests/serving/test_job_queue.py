"""Queue positions and ETAs as the queue tracker computes them (deployments/gateway/job_queue.py), on
the embedded store's semantics: positions are global (runners claim oldest first), ETAs per model
(each model's replicas work through its own jobs, at their own measured speed)."""

from __future__ import annotations

import asyncio

from helpers import MemoryKV

from huabu.deployments.core.settings import JobSettings
from huabu.deployments.gateway.job_queue import QueueTracker
from huabu.deployments.gateway.jobs import JobStore


async def test_etas_use_each_models_own_speed_and_queue() -> None:
    store = JobStore(MemoryKV(), JobSettings())  # type: ignore[arg-type]
    await store.record_speed("replica-slow", 1.0, "big-model@v1")  # 1 s per image-step
    await store.record_speed("replica-fast-1", 0.01, "tiny-mmdit@v1")
    await store.record_speed("replica-fast-2", 0.01, "tiny-mmdit@v1")
    submitted = []
    for model, work in (("big-model@v1", 50), ("tiny-mmdit@v1", 20), ("tiny-mmdit@v1", 20), (None, 10)):
        submitted.append((await store.create("generate", "{}", model=model, work_steps=work))[0])
        await asyncio.sleep(0.002)  # ids are ordered by their millisecond
    slow, fast, fast_too, default = submitted

    await QueueTracker(store, "gateway-a", interval_s=1.0).update()

    places = {job.id: await store.queue_place(job.id) for job in (slow, fast, fast_too, default)}
    assert [places[j.id][0] for j in (slow, fast, fast_too, default)] == [0, 1, 2, 3]  # type: ignore[index]
    assert places[slow.id] == (0, 50.0)  # 50 image-steps at 1 s on one replica
    # Not behind the slow model's 50 s: 20 then 40 image-steps at 0.01 s over two replicas.
    assert places[fast.id] == (1, 0.1)
    assert places[fast_too.id] == (2, 0.2)
    # No model named: the median speed of every replica (0.01 s, 3 replicas).
    assert places[default.id] == (3, 0.0)


async def test_a_model_with_no_speed_yet_falls_back_to_every_replicas() -> None:
    store = JobStore(MemoryKV(), JobSettings())  # type: ignore[arg-type]
    await store.record_speed("replica-1", 0.5, "tiny-mmdit@v1")
    new, _ = await store.create("generate", "{}", model="tiny-mmdit@v2", work_steps=8)
    await QueueTracker(store, "gateway-a", interval_s=1.0).update()
    assert await store.queue_place(new.id) == (0, 4.0)

"""Where each waiting job stands: its queue position and an ETA, for ``GET /v1/jobs/{id}`` and its events.

A job waits from submission until the model reports its first step: unclaimed (``queued``) or
claimed by a runner whose call waits for a model replica (``running`` without progress). Runners
claim active jobs oldest first, so the jobs that will start before a waiting job are the waiting
jobs submitted before it: its ``queue_position`` is their number (0: next to start). ``eta_s`` is
the work ahead of it (the rest of the jobs of its model being computed, the waiting jobs of its
model before it, its own steps; images x steps) times the measured seconds per image-step of that
model's replicas, divided by how many of them reported a speed in the last hour
(``JobStore.model_speeds``; all replicas for a job that names no model, or whose model has not
reported yet).

One gateway replica at a time computes this (a lease), every ``jobs.queue_update_s``, and writes
a ``status`` event with the new position and ETA only when the position changed or the ETA moved
by more than 20 % (and a second), so event streams are not flooded.
"""

from __future__ import annotations

import asyncio
import logging

from huabu.deployments.core.state import hold_lease
from huabu.deployments.gateway.jobs import ACTIVE, JobStore

logger = logging.getLogger("huabu.jobs")
LEASE = "jobs:queue:lease"


def eta_moved(old: float | None, new: float | None) -> bool:
    if old is None or new is None:
        return old != new
    return abs(new - old) > max(1.0, 0.2 * old)


class QueueTracker:
    def __init__(self, store: JobStore, owner: str, interval_s: float) -> None:
        self.store = store
        self.owner = owner
        self.interval_s = interval_s
        self._sent: dict[str, tuple[int, float | None]] = {}  # job id -> the place last sent
        self._work: dict[str, int] = {}  # job id -> images x steps (it never changes)
        self._models: dict[str, str | None] = {}  # job id -> the model it asked for (None: the default)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                # Idle (no active job): nothing to place, and no lease to hold; one read a tick.
                active = sorted(await self.store.kv.smembers(ACTIVE))
                if active and await self._lead():
                    await self.update(active)
            except asyncio.CancelledError:
                raise
            except Exception:  # the store briefly unavailable: positions wait for the next tick
                logger.warning("could not update queue positions", exc_info=True)

    async def _lead(self) -> bool:
        if await hold_lease(self.store.kv, LEASE, self.owner, 3 * self.interval_s + 1):
            return True
        self._sent.clear()  # another replica leads; if this one takes over, it sends every place afresh
        return False

    async def _model_of(self, job_id: str) -> str | None:
        if job_id not in self._models:
            job = await self.store.get(job_id)
            self._models[job_id] = None if job is None else job.model
        return self._models[job_id]

    async def _work_of(self, job_id: str) -> int:
        if job_id not in self._work:
            self._work[job_id] = await self.store.work_steps(job_id) or 1
        return self._work[job_id]

    async def update(self, active: list[str] | None = None) -> None:
        """Send every waiting job's place; ``active``: the active ids, sorted, when just read."""
        store = self.store
        if active is None:
            active = sorted(await store.kv.smembers(ACTIVE))
        speeds = await store.model_speeds()
        # Per model asked for (None: the default route): its replicas work through its own jobs.
        ahead_work: dict[str | None, float] = {}
        position = 0
        for job_id in active:
            work = await self._work_of(job_id)
            mark = await store.progress_mark(job_id)
            if mark:  # being computed: only what is left of it is ahead of the waiting jobs
                step, total = (int(x) for x in mark.decode().split("/"))
                model = await self._model_of(job_id)
                ahead_work[model] = ahead_work.get(model, 0.0) + (work * (1 - step / total) if total else 0)
                self._sent.pop(job_id, None)
                continue
            job = await store.get(job_id)
            if job is None or job.status.is_terminal:
                continue
            self._models[job_id] = job.model
            ahead_work[job.model] = ahead_work.get(job.model, 0.0) + work
            speed = speeds.get(job.model) or speeds.get(None)
            eta = None if speed is None else round(ahead_work[job.model] * speed[0] / speed[1], 1)
            last = self._sent.get(job_id)
            if last is None or last[0] != position or eta_moved(last[1], eta):
                await store.record_queue(job_id, job.status, position, eta)
                self._sent[job_id] = (position, eta)
            position += 1
        alive = set(active)
        for gone in [j for j in self._work if j not in alive]:
            self._work.pop(gone, None)
            self._sent.pop(gone, None)
            self._models.pop(gone, None)

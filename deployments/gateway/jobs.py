"""Durable jobs on the state store.

A job is durable once ``POST /v1/jobs`` returns: its record and request are in the store and its
id is in the active set. Runners in every gateway replica claim active jobs with an expiring
lease and renew it while they work; a job whose runner dies (gateway replica killed) is taken
over when the lease lapses, and a job whose model replica dies is retried. Generation is
deterministic, so running a job twice is safe (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable

from huabu.deployments.core import metrics, telemetry
from huabu.deployments.core.settings import JobSettings
from huabu.deployments.core.state import KeyValueStore, is_outage
from huabu.deployments.gateway.errors import APIError, invalid
from huabu.sdk.types import (
    MAX_PREFER_WAIT_S,
    ErrorBody,
    EventType,
    ImagesResponse,
    Job,
    JobEvent,
    JobKind,
    JobPreview,
    JobProgress,
    JobStatus,
)

logger = logging.getLogger("huabu.jobs")
ACTIVE = "jobs:active"
DEADLINES = "jobs:deadlines"  # ids of active jobs with a timeout_s, swept by every runner
DEADLINE_SWEEP_S = 0.5
DEADLINE_GRACE_S = 10.0  # a model that has not stopped this long after the deadline is left behind
SPEEDS = "modelspeed"  # replicas that reported their speed; each under modelspeed:<replica>
SPEED_TTL_S = 3600.0  # a replica silent this long no longer counts as available
DEADLINE_EXCEEDED, REQUESTED = "deadline_exceeded", "requested"  # why a job was canceled
IDLE_POLL_MAX_S = 1.0
STALL_POLL_S = 1.0
LONG_RUN_S = 30.0  # a job held this long by one runner is reported with where it waits
UNCOUNTED_ATTEMPTS_FACTOR = 4  # attempts in all, per counted one, before a job is given up
TRANSITION_TRIES = 8  # compare-and-set attempts before a status change gives up (and the job is retried)
PENDING = b"pending:"  # an idempotency entry whose job is still being created
# A creation still pending this long died half-way (its gateway was lost): a retry takes its key
# over. A live creation is a dozen store writes; a slow one that is overtaken undoes itself.
ABANDONED_AFTER_S = 10.0
OWNER_TTL_FACTOR = 2  # the owner record lives this many times the job's TTL


class JobCancelled(Exception):
    """The job was cancelled between denoising steps."""


OnTerminal = Callable[[Job], Awaitable[None]]


class IdempotencyConflict(Exception):
    """Another request with this Idempotency-Key is creating its job right now. ``retry_after_s``:
    when a retry can take the key over if that creation died (its gateway lost mid-way), so a
    client that honours Retry-After gets its job within its retries instead of another 409."""

    def __init__(self, idem: str, retry_after_s: float = 1.0) -> None:
        super().__init__(idem)
        self.retry_after_s = retry_after_s


def job_owner_key(job_id: str) -> str:
    return f"jobowner:{job_id}"


def _until_abandoned(job_id: str) -> float:
    """Seconds until a creation that started ``job_id`` counts as abandoned (ids carry their time);
    <= 0 once it had time to finish."""
    try:
        started_ms = int(job_id.removeprefix("job_")[:12], 16)
    except ValueError:
        return 0.0
    return started_ms / 1000 + ABANDONED_AFTER_S - time.time()


class JobStalled(Exception):
    """An attempt stopped making progress, or ran out of time: it is abandoned and retried."""


def replica_lost(exc: BaseException) -> bool:
    """Whether an attempt failed because a replica on its path died (not because of the request)."""
    from ray.exceptions import ActorUnavailableError, RayActorError

    from huabu.deployments.core.handles import ReplicaLost

    return isinstance(exc, (ReplicaLost, RayActorError, ActorUnavailableError))


def awaiting(awaitable: object) -> str:
    """The chain of coroutines an unfinished task is suspended in, outermost first, down to the
    future it waits for (asyncio's own task stacks stop at the outermost coroutine)."""
    links: list[str] = []
    while awaitable is not None and len(links) < 64:
        if isinstance(awaitable, asyncio.Task):
            awaitable = awaitable.get_coro()
            continue
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            links.append(type(awaitable).__name__)
            break
        links.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno})")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return " > ".join(links)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Read a finished background task's outcome, so that asyncio does not report it as lost."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("a job task ended with an error", exc_info=task.exception())


def wait_seconds(value: str, param: str) -> int:
    """A wait-or-queue time in whole seconds (REST's ``Prefer: wait=N``, gRPC's ``wait_s``); 400 naming
    ``param`` when malformed or above MAX_PREFER_WAIT_S."""
    value = value.strip().strip('"')
    if not value.isdigit():
        raise invalid(f"{param}: wait must be whole seconds, e.g. 'wait=30' (got {value[:20]!r})", param)
    if int(value) > MAX_PREFER_WAIT_S:
        raise invalid(f"{param}: wait must be at most {MAX_PREFER_WAIT_S} seconds (got {value})", param)
    return int(value)


def prefer_wait(header: str | None, param: str = "Prefer") -> int | None:
    """The ``wait`` preference of a ``Prefer`` header (RFC 7240), or None. Other preferences are
    ignored, as the RFC allows."""
    for preference in (header or "").split(","):
        name, _, value = preference.split(";")[0].strip().partition("=")
        if name.strip().lower() == "wait":
            return wait_seconds(value, param)
    return None


def new_job_id() -> str:
    # Time-ordered, so runners take the oldest active job first.
    return f"job_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


class JobStore:
    def __init__(self, kv: KeyValueStore, settings: JobSettings) -> None:
        self.kv = kv
        self.settings = settings
        # Runs after a job's final status is written and before it leaves the active set (the
        # gateway writes webhook messages here): if it fails, the job stays active and the next
        # runner to see it calls it again (``JobRunner._attempt``).
        self.on_terminal: OnTerminal | None = None

    @staticmethod
    def _key(job_id: str, part: str = "") -> str:
        return f"job:{job_id}" + (f":{part}" if part else "")

    async def create(
        self,
        kind: JobKind,
        request_json: str,
        idempotency_key: str | None = None,
        model: str | None = None,
        on_created: Callable[[str], Awaitable[None]] | None = None,
        owner: str | None = None,
        *,
        webhook_json: str | None = None,
        timeout_s: float | None = None,
        work_steps: int | None = None,
        lease_owner: str | None = None,
    ) -> tuple[Job, bool]:
        """-> (job, created). A repeated Idempotency-Key returns the first job, not a new one.
        ``on_created(job_id)`` runs before any runner can see the job (e.g. to store its A/B unit).

        Owner first, the active set next to last, the idempotency entry last: a runner sees only
        complete jobs and a retry only a job that is complete and active. A store error on the
        way undoes what was written (the caller answers 503; a retry with the key starts afresh).
        ``webhook_json`` is the job's checked webhook, ``timeout_s`` its deadline from now and
        ``work_steps`` its denoising steps times images (for queue ETAs). With ``lease_owner`` the job
        is active already leased to that runner (it runs the first attempt itself, ``JobRunner.run_inline``)."""
        job_id = new_job_id()
        idem = f"idem:{idempotency_key}" if idempotency_key else None
        if idem is not None:
            existing = await self._claim(idem, job_id)
            if existing is not None:
                return existing, False
        ttl = self.settings.result_ttl_s
        try:
            if owner is not None:
                # Outlives the job (whose expiry each transition pushes back): access is denied
                # when the owner is missing, so it must never lapse first.
                await self.kv.put(job_owner_key(job_id), owner.encode(), ttl_s=OWNER_TTL_FACTOR * ttl)
            now = time.time()
            deadline = None if timeout_s is None else now + timeout_s
            job = Job(
                id=job_id,
                status=JobStatus.queued,
                kind=kind,
                created_at=now,
                updated_at=now,
                model=model,
                deadline_at=deadline,
            )
            # The job's parts in one round trip (in this order; none is seen before it is active).
            parts = {self._key(job_id, "request"): request_json.encode()}
            if webhook_json is not None:
                parts[self._key(job_id, "webhook")] = webhook_json.encode()
            if work_steps is not None:
                parts[self._key(job_id, "work")] = str(work_steps).encode()
            traceparent = telemetry.current_traceparent()
            if traceparent:  # the job's trace links back to the request that submitted it
                parts[self._key(job_id, "trace")] = traceparent.encode()
            parts[self._key(job_id)] = job.model_dump_json().encode()
            queued = JobEvent(type="status", job_id=job_id, seq=0, status=JobStatus.queued)
            await self.kv.write_many(parts, self._event_entry(job_id, queued), ttl)
            if on_created is not None:
                await on_created(job_id)
            if deadline is not None:
                await self.kv.sadd(DEADLINES, job_id)
            if lease_owner is not None:  # before it is active: no other runner can claim it first
                await self.kv.put(self._key(job_id, "lease"), lease_owner.encode(), ttl_s=self.settings.lease_s)
            await self.kv.sadd(ACTIVE, job_id)  # runners only see complete jobs
            # The commit: only now does the key name this job. Fails if a retry took the claim
            # over (this creation looked abandoned), and then this job is undone.
            if idem is not None and not await self.kv.compare_and_set(
                idem, PENDING + job_id.encode(), job_id.encode(), ttl_s=ttl
            ):
                raise IdempotencyConflict(idem)
        except BaseException:
            await self._undo(job_id, idem)
            raise
        return job, True

    async def _claim(self, idem: str, job_id: str) -> Job | None:
        """Claim the idempotency key for ``job_id`` (marked pending until the job is active).
        -> the job it already names when that job is complete; raises ``IdempotencyConflict``
        while another creation with the key is under way."""
        pending = PENDING + job_id.encode()
        ttl = self.settings.result_ttl_s
        for _ in range(TRANSITION_TRIES):
            if await self.kv.put(idem, pending, ttl_s=ttl, only_if_absent=True):
                return None
            existing = await self.kv.get(idem)
            if existing is None:
                continue  # expired or undone between the two calls: claim again
            if not existing.startswith(PENDING):
                job = await self.get(existing.decode())
                if job is not None:
                    return job
            elif (left := _until_abandoned(existing[len(PENDING) :].decode())) > 0:
                raise IdempotencyConflict(idem, retry_after_s=max(1.0, math.ceil(left)))
            # A committed key whose job expired, or a creation that died half-way (its writes
            # were never made active, so nothing runs): take the key over.
            if await self.kv.compare_and_set(idem, existing, pending):
                return None
        raise IdempotencyConflict(idem)

    async def _undo(self, job_id: str, idem: str | None) -> None:
        """Remove what a failed creation wrote, best effort (the store may be what failed)."""
        try:
            await self.kv.srem(ACTIVE, job_id)
            await self.kv.srem(DEADLINES, job_id)
            await self.kv.delete(
                self._key(job_id),
                self._key(job_id, "request"),
                self._key(job_id, "trace"),
                self._key(job_id, "events"),
                self._key(job_id, "webhook"),
                self._key(job_id, "work"),
                self._key(job_id, "lease"),
                job_owner_key(job_id),
            )
            if idem is not None and await self.kv.get(idem) == PENDING + job_id.encode():
                await self.kv.delete(idem)
        except Exception:
            # What is left is never active and its key stays pending: a retry takes the key over
            # once the creation looks abandoned (ABANDONED_AFTER_S).
            logger.warning("could not undo the partial creation of job %s", job_id, exc_info=True)

    async def get(self, job_id: str) -> Job | None:
        """The job with its latest progress, and a waiting job's place in the queue."""
        loaded = await self._load(job_id)
        if loaded is None:
            return None
        job = loaded[1]
        if not job.status.is_terminal and job.progress.step == 0:
            place = await self.queue_place(job_id)
            if place is not None:
                job.queue_position, job.eta_s = place
        return job

    async def _load(self, job_id: str) -> tuple[bytes, Job] | None:
        """-> (the stored record, the job with its latest progress)."""
        raw = await self.kv.get(self._key(job_id))
        if raw is None:
            return None
        job = Job.model_validate_json(raw)
        progress = await self.kv.get(self._key(job_id, "progress"))
        if progress and not job.status.is_terminal:
            step, total = (int(x) for x in progress.decode().split("/"))
            job.progress = JobProgress(step=step, total=total)
        return raw, job

    async def submitted_by(self, job_id: str) -> str | None:
        """The traceparent of the request that submitted the job, when it was traced."""
        raw = await self.kv.get(self._key(job_id, "trace"))
        return raw.decode() if raw else None

    async def request_json(self, job_id: str) -> str | None:
        raw = await self.kv.get(self._key(job_id, "request"))
        return raw.decode() if raw else None

    def _event_entry(self, job_id: str, event: JobEvent) -> dict[str, list[bytes]]:
        # The event's seq is its index in the list, assigned on read: writers never race on it.
        return {self._key(job_id, "events"): [event.model_dump_json(exclude={"seq"}).encode()]}

    async def _event(self, job_id: str, event: JobEvent) -> None:
        await self.kv.write_many({}, self._event_entry(job_id, event), self.settings.result_ttl_s)

    async def events_after(self, job_id: str, seq: int) -> list[JobEvent]:
        raw = await self.kv.lrange(self._key(job_id, "events"), seq + 1, -1)
        return [JobEvent.model_validate({**json.loads(r), "seq": seq + 1 + i}) for i, r in enumerate(raw)]

    async def transition(
        self,
        job_id: str,
        status: JobStatus,
        result: ImagesResponse | None = None,
        error: ErrorBody | None = None,
        variant: str | None = None,
    ) -> Job | None:
        # Compare-and-set: two runners may briefly hold one job (a lease that lapsed while its
        # runner stalled), and a stale "running" must never overwrite a finished job.
        reason = await self.cancel_reason(job_id) if status == JobStatus.canceled else None
        for _ in range(TRANSITION_TRIES):
            loaded = await self._load(job_id)
            if loaded is None:
                return None
            raw, job = loaded
            if job.status.is_terminal:
                return job
            job.status, job.updated_at = status, time.time()
            job.result, job.error = result, error
            job.cancel_reason = reason
            job.queue_position = job.eta_s = None
            if variant is not None:
                job.variant = variant
            if status == JobStatus.succeeded:
                job.progress = JobProgress(step=job.progress.total, total=job.progress.total)
            new = job.model_dump_json().encode()
            if await self.kv.compare_and_set(self._key(job_id), raw, new, ttl_s=self.settings.result_ttl_s):
                break
        else:
            raise RuntimeError(f"job {job_id} kept changing while it moved to {status.value}")
        kinds: dict[JobStatus, EventType] = {JobStatus.succeeded: "result", JobStatus.failed: "error"}
        kind = kinds.get(status, "status")
        await self._event(
            job_id,
            JobEvent(
                type=kind,
                job_id=job_id,
                seq=0,
                status=status,
                result=result,
                error=error,
                step=job.progress.step,
                total=job.progress.total,
                reason=reason,
            ),
        )
        telemetry.event(f"job.{status.value}")
        if status.is_terminal:
            metrics.job_finished(status.value)
            await self.finish(job)
        return job

    async def finish(self, job: Job) -> None:
        """What follows a final status: the terminal hook, then the job leaves the active set."""
        if self.on_terminal is not None:
            await self.on_terminal(job)
        await self.kv.srem(ACTIVE, job.id)
        await self.kv.srem(DEADLINES, job.id)
        await self.kv.delete(self._key(job.id, "lease"), self._key(job.id, "progress"), self._key(job.id, "queue"))

    async def record_progress(self, job_id: str, step: int, total: int, preview: JobPreview | None = None) -> None:
        await self.record_progress_many([(job_id, step, total, preview)])

    async def record_progress_many(self, updates: list[tuple[str, int, int, JobPreview | None]]) -> None:
        """Progress of any jobs, in order, in one store round trip: every step's event is kept (a
        watcher sees each step), and each job's progress key holds its latest step."""
        latest: dict[str, bytes] = {}
        events: dict[str, list[bytes]] = {}
        for job_id, step, total, preview in updates:
            latest[self._key(job_id, "progress")] = f"{step}/{total}".encode()
            event = JobEvent(
                type="progress", job_id=job_id, seq=0, status=JobStatus.running, step=step, total=total, preview=preview
            )
            for key, encoded in self._event_entry(job_id, event).items():
                events.setdefault(key, []).extend(encoded)
        if updates:
            await self.kv.write_many(latest, events, self.settings.result_ttl_s)

    async def record_queue(self, job_id: str, status: JobStatus, position: int, eta_s: float | None) -> None:
        """A waiting job's place in the queue: kept for ``GET /v1/jobs/{id}`` and sent as a status event."""
        value = json.dumps({"position": position, "eta_s": eta_s}).encode()
        await self.kv.put(self._key(job_id, "queue"), value, ttl_s=self.settings.result_ttl_s)
        event = JobEvent(type="status", job_id=job_id, seq=0, status=status, queue_position=position, eta_s=eta_s)
        await self._event(job_id, event)

    async def queue_place(self, job_id: str) -> tuple[int, float | None] | None:
        raw = await self.kv.get(self._key(job_id, "queue"))
        if raw is None:
            return None
        place = json.loads(raw)
        return int(place["position"]), place["eta_s"]

    async def work_steps(self, job_id: str) -> int | None:
        raw = await self.kv.get(self._key(job_id, "work"))
        return int(raw) if raw else None

    async def record_speed(self, replica: str, image_step_s: float, model: str | None = None) -> None:
        """A model replica's measured seconds per image per step (for queue ETAs), and its model."""
        value = json.dumps({"image_step_s": image_step_s, "at": time.time(), "model": model}).encode()
        await self.kv.put(f"modelspeed:{replica}", value, ttl_s=SPEED_TTL_S)
        await self.kv.sadd(SPEEDS, replica)

    async def model_speeds(self) -> dict[str | None, tuple[float, int]]:
        """Model (None: every replica) -> (median seconds per image-step, replicas that reported
        within SPEED_TTL_S). Replicas of different models differ by orders of magnitude in speed."""
        by_model: dict[str | None, list[float]] = {None: []}
        for replica in await self.kv.smembers(SPEEDS):
            raw = await self.kv.get(f"modelspeed:{replica}")
            if raw is None:
                await self.kv.srem(SPEEDS, replica)
                continue
            reported = json.loads(raw)
            speed = float(reported["image_step_s"])
            by_model[None].append(speed)
            if reported.get("model"):
                by_model.setdefault(reported["model"], []).append(speed)
        return {model: (sorted(v)[len(v) // 2], len(v)) for model, v in by_model.items() if v}

    async def request_cancel(self, job_id: str, reason: str = REQUESTED) -> Job | None:
        job = await self.get(job_id)
        if job is None or job.status.is_terminal:
            return job
        # The flag says why: the transition to canceled (here, or by the runner once the model has
        # stopped between steps) reads it as the job's cancel_reason.
        await self.kv.put(self._key(job_id, "cancel"), reason.encode(), ttl_s=self.settings.result_ttl_s)
        if job.status == JobStatus.queued:
            return await self.transition(job_id, JobStatus.canceled)
        return job

    async def cancel_reason(self, job_id: str) -> str:
        raw = await self.kv.get(self._key(job_id, "cancel"))
        return raw.decode() if raw and raw != b"1" else REQUESTED

    async def cancel_overdue(self, now: float | None = None) -> int:
        """Cancel every job past its deadline (``deadline_exceeded``): a queued one at once, a running
        one between steps. -> how many were found overdue."""
        now = time.time() if now is None else now
        overdue = 0
        for job_id in await self.kv.smembers(DEADLINES):
            job = await self.get(job_id)
            if job is None or job.status.is_terminal:
                await self.kv.srem(DEADLINES, job_id)
                continue
            if job.deadline_at is not None and job.deadline_at <= now:
                overdue += 1
                if not await self.cancel_requested(job_id):
                    await self.request_cancel(job_id, DEADLINE_EXCEEDED)
        return overdue

    async def progress_mark(self, job_id: str) -> bytes | None:
        return await self.kv.get(self._key(job_id, "progress"))

    async def cancel_requested(self, job_id: str) -> bool:
        return await self.kv.get(self._key(job_id, "cancel")) is not None

    async def claim(self, owner: str) -> str | None:
        for job_id in sorted(await self.kv.smembers(ACTIVE)):
            if await self.kv.put(
                self._key(job_id, "lease"), owner.encode(), ttl_s=self.settings.lease_s, only_if_absent=True
            ):
                return job_id
        return None

    async def renew(self, job_id: str, owner: str) -> bool:
        """Extend the lease while ``owner`` holds it. A lease that is gone (released, or lapsed) is
        never taken back here: a renewal racing the release would hold the job, unclaimed, forever."""
        held = owner.encode()
        return await self.kv.compare_and_set(self._key(job_id, "lease"), held, held, ttl_s=self.settings.lease_s)

    async def release(self, job_id: str, owner: str, after_s: float = 0.0) -> None:
        """Give the job back for a retry (``after_s`` from now), unless another runner holds it by now."""
        holder = await self.kv.get(self._key(job_id, "lease"))
        if holder is not None and holder.decode() == owner:
            if after_s > 0:  # the lease, no longer renewed, lapses then
                await self.kv.put(self._key(job_id, "lease"), owner.encode(), ttl_s=after_s)
            else:
                await self.kv.delete(self._key(job_id, "lease"))

    async def next_attempt(self, job_id: str) -> tuple[int, int]:
        """-> (this attempt's number, how many earlier attempts failed through the job's own run)."""
        attempt = await self.kv.incr(self._key(job_id, "attempts"))
        await self.kv.expire(self._key(job_id, "attempts"), self.settings.result_ttl_s)
        failed = await self.kv.get(self._key(job_id, "failures"))
        return attempt, int(failed or 0)

    async def record_failed_attempt(self, job_id: str) -> None:
        await self.kv.incr_many({self._key(job_id, "failures"): 1}, self.settings.result_ttl_s)


# (job id, request json, attempt number from 1) -> result
Execute = Callable[[str, str, int], Awaitable[tuple[ImagesResponse, str | None]]]


class JobRunner:
    """Claims and runs active jobs; one per gateway replica."""

    def __init__(self, store: JobStore, execute: Execute, settings: JobSettings, owner: str) -> None:
        self.store = store
        self.execute = execute
        self.settings = settings
        self.owner = owner
        self.tasks: dict[asyncio.Task[None], tuple[str, float]] = {}  # -> (job id, monotonic start)
        self._reported_at = time.monotonic()
        self._executing: dict[str, asyncio.Future[tuple[ImagesResponse, str | None]]] = {}  # job id -> its call
        self._attempts: dict[str, asyncio.Task[None]] = {}  # job id -> its attempt, around the call
        self._loop_task: asyncio.Task[None] | None = None
        self._inline: set[asyncio.Task[None]] = set()  # attempts run for a waiting request (run_inline)
        self._wake = asyncio.Event()
        self.lost_at = -math.inf  # monotonic time an attempt here last failed on a lost replica
        self._swept_at = -math.inf
        # Called with a job's id when its progress moved (the gateway sends progress webhooks).
        self.on_progress: Callable[[str], Awaitable[None]] | None = None

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    def run_inline(self, job_id: str) -> asyncio.Task[None]:
        """Run an attempt of a job created leased to this runner (``JobStore.create(lease_owner=)``)
        now, in the caller's context: its stages' spans belong to the caller's trace, as a
        synchronous request's do. It goes on when the caller stops waiting (the job is durable); if
        this replica dies, the lease lapses and any runner takes the job over."""
        task = asyncio.get_running_loop().create_task(self._run(job_id, traced=False))
        self._inline.add(task)  # a strong reference until it ends
        task.add_done_callback(self._inline.discard)
        return task

    def wake(self) -> None:
        """A job was just submitted here: look now, not at the next idle poll."""
        self._wake.set()

    async def stop(self) -> None:
        for task in [self._loop_task, *self.tasks, *self._inline]:
            if task is not None:
                task.cancel()

    async def _loop(self) -> None:
        # An idle runner polls less and less often (up to IDLE_POLL_MAX_S): a dozen idle gateways
        # must not keep the store busy. Jobs submitted to this replica wake it at once; others'
        # are taken over within IDLE_POLL_MAX_S.
        idle_wait = self.settings.poll_interval_s
        while True:
            self._report_long_runs()
            await self._sweep_deadlines()
            job_id: str | None = None
            try:
                if len(self.tasks) < self.settings.concurrency:
                    job_id = await self.store.claim(self.owner)
            except Exception:  # store briefly unavailable: keep the runner alive
                logger.warning("job store unavailable; retrying", exc_info=True)
                job_id = None
            if job_id is None:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=idle_wait)
                idle_wait = min(IDLE_POLL_MAX_S, idle_wait * 2)
                continue
            idle_wait = self.settings.poll_interval_s
            task = asyncio.get_running_loop().create_task(self._run(job_id))
            self.tasks[task] = (job_id, time.monotonic())
            task.add_done_callback(lambda done: self.tasks.pop(done, None))
            task.add_done_callback(lambda _: self._wake.set())  # a slot is free again

    async def _sweep_deadlines(self) -> None:
        """Jobs past their deadline are canceled wherever they are (queued ones here at once)."""
        if time.monotonic() - self._swept_at < DEADLINE_SWEEP_S:
            return
        self._swept_at = time.monotonic()
        try:
            await self.store.cancel_overdue()
        except Exception:
            logger.warning("could not sweep job deadlines", exc_info=True)

    def _report_long_runs(self) -> None:
        """Every LONG_RUN_S, log the jobs held here longer than that and where each is waiting:
        a job that holds its lease (and a runner slot) for minutes says why in the logs."""
        now = time.monotonic()
        if now - self._reported_at < LONG_RUN_S:
            return
        self._reported_at = now
        for task, (job_id, started) in list(self.tasks.items()):
            if now - started > LONG_RUN_S:
                logger.warning(
                    "job %s held by %s for %.0f s (%d of %d slots busy), waiting in %s",
                    job_id,
                    self.owner,
                    now - started,
                    len(self.tasks),
                    self.settings.concurrency,
                    # The deepest await known: the model call, else the attempt (store calls around it).
                    awaiting(self._executing.get(job_id) or self._attempts.get(job_id) or task),
                )

    async def _keep_lease(self, job_id: str, finished: asyncio.Event) -> None:
        """Renew the lease until the attempt has ``finished``, or until the lease turns out to be
        gone or held by another runner (this one stalled past it): the job is theirs now. The flag,
        not only cancellation, ends it: a cancellation that arrives as a store call times out can be
        swallowed on its way (Python 3.11's timeouts), and a keeper that outlived its attempt held
        the job's lease, unclaimed, for good (issue #33, seen in a multinode run)."""
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            if finished.is_set():
                return
            try:
                if not await self.store.renew(job_id, self.owner):
                    if not finished.is_set():
                        logger.warning("job %s: lease lost or taken over by another runner; stopping here", job_id)
                    return
            except Exception:  # store briefly unavailable: try again at the next renewal
                logger.warning("job %s: could not renew the lease", job_id, exc_info=True)

    async def _run(self, job_id: str, *, traced: bool = True) -> None:
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()
        keeper = loop.create_task(self._keep_lease(job_id, finished))
        run = loop.create_task(self._traced_attempt(job_id) if traced else self._attempt(job_id))
        self._attempts[job_id] = run
        try:
            await asyncio.wait({keeper, run}, return_when=asyncio.FIRST_COMPLETED)
            if run.done() and not run.cancelled() and run.exception() is not None:
                logger.warning(
                    "job %s: the runner failed; the lease lapses for a retry", job_id, exc_info=run.exception()
                )
        finally:
            finished.set()
            if self._attempts.get(job_id) is run:
                del self._attempts[job_id]
            for task in (run, keeper):
                task.cancel()
            # Bounded: a task that swallowed its cancellation must not hold this runner's slot.
            _, stuck = await asyncio.wait({run, keeper}, timeout=self.settings.lease_s)
            for task in stuck:
                logger.warning("job %s: a task ignored its cancellation; left to end on its own", job_id)
                task.add_done_callback(_retrieve)

    async def _traced_attempt(self, job_id: str) -> None:
        submitted_by = await self.store.submitted_by(job_id) if telemetry.tracing_enabled() else None
        with telemetry.job(job_id, submitted_by):
            await self._attempt(job_id)

    async def _attempt(self, job_id: str) -> None:
        store = self.store
        job = await store.get(job_id)
        request_json = await store.request_json(job_id)
        if job is None or request_json is None:
            await store.kv.srem(ACTIVE, job_id)
            return
        if job.status.is_terminal:  # its runner stopped between the final status and leaving the set
            await store.finish(job)
            return
        if job.deadline_at is not None and job.deadline_at <= time.time():
            await store.request_cancel(job_id, DEADLINE_EXCEEDED)
        if await store.cancel_requested(job_id):
            await store.transition(job_id, JobStatus.canceled)
            return
        attempt, failed = await store.next_attempt(job_id)
        logger.info("job %s attempt %d started by %s", job_id, attempt, self.owner)
        # max_attempts counts the attempts that failed in the job's own run (its model call failed,
        # its replica was lost, it stalled). Infrastructure faults around it (the store unreachable,
        # a safety filter that cannot screen, a lease or gateway lost) do not use them up: a Redis
        # outage must not fail jobs that would run once it is over (#25 finding 4). They are bounded
        # all the same, by UNCOUNTED_ATTEMPTS_FACTOR times as many attempts in all.
        given_up = attempt > self.settings.max_attempts * UNCOUNTED_ATTEMPTS_FACTOR
        if failed >= self.settings.max_attempts or given_up:
            reason = "" if not given_up else " (most of them ended by store, filter or gateway outages)"
            await store.transition(
                job_id,
                JobStatus.failed,
                error=ErrorBody(
                    message=f"job failed after {failed if not given_up else attempt - 1} attempts{reason}",
                    type="server_error",
                ),
            )
            return
        await store.transition(job_id, JobStatus.running)
        try:
            result, variant = await self._watched(job_id, request_json, attempt, job.deadline_at)
        except JobCancelled:
            await store.transition(job_id, JobStatus.canceled)
        except APIError as exc:
            if exc.code == "filter_unavailable":
                # A safety filter that cannot screen now (503, Retry-After) is transient: the job waits
                # that long under this runner's lease, then any runner retries it (not counted against max_attempts).
                wait_s = float(exc.headers.get("Retry-After", self.settings.lease_s))
                logger.warning("job %s attempt %d: %s; retrying in %.0f s", job_id, attempt, exc.message, wait_s)
                await store.release(job_id, self.owner, after_s=wait_s)
            else:
                await store.transition(job_id, JobStatus.failed, error=exc.body())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A model replica died or the cluster hiccuped: let a runner (maybe this one) retry. The
            # cause's type leads the line, so that logs tell liveness (ReplicaLost) from backstops.
            cause = type(exc).__name__
            if replica_lost(exc):
                self.lost_at = time.monotonic()
            outage = is_outage(exc)
            logger.warning(
                "job %s attempt %d failed (%s%s); will retry",
                job_id,
                attempt,
                cause,
                ", a store outage: not counted" if outage else "",
                exc_info=True,
            )
            if not outage:
                try:
                    await store.record_failed_attempt(job_id)
                except Exception:  # the store failed meanwhile: this attempt goes uncounted (bounded)
                    logger.warning("job %s: could not count failed attempt %d", job_id, attempt, exc_info=True)
            await store.release(job_id, self.owner)
        else:
            await store.transition(job_id, JobStatus.succeeded, result=result, variant=variant)

    async def _watched(
        self, job_id: str, request_json: str, attempt_number: int, deadline_at: float | None = None
    ) -> tuple[ImagesResponse, str | None]:
        """Run one attempt, abandoning it when its progress stalls once started or it outlives
        ``attempt_timeout_s``. Before the first step a job may be queued behind others: no stall,
        unless a replica was lost since the attempt began (another attempt here failed on one) and
        ``requeue_after_loss_s`` passed without a first step. All three are backstops: a call whose
        replica died fails within seconds by that replica's liveness (``handles.call``), and the
        attempt is retried at once. Past ``deadline_at`` the job is canceled: a model working on it
        stops between steps; a call still waiting for the model is withdrawn."""
        attempt: asyncio.Future[tuple[ImagesResponse, str | None]] = asyncio.ensure_future(
            self.execute(job_id, request_json, attempt_number)
        )
        self._executing[job_id] = attempt
        started_at = quiet_since = time.monotonic()
        moving = False
        try:
            mark = await self.store.progress_mark(job_id)
            while True:
                poll = STALL_POLL_S if deadline_at is None else min(STALL_POLL_S, max(0.05, deadline_at - time.time()))
                done, _ = await asyncio.wait({attempt}, timeout=poll)
                if done:
                    return attempt.result()
                now = time.monotonic()
                if deadline_at is not None and time.time() >= deadline_at:
                    await self.store.request_cancel(job_id, DEADLINE_EXCEEDED)  # the model stops between steps
                    if not moving or time.time() > deadline_at + DEADLINE_GRACE_S:
                        raise JobCancelled
                latest = await self.store.progress_mark(job_id)
                if latest != mark:
                    mark, quiet_since, moving = latest, now, True
                    if self.on_progress is not None:
                        try:
                            await self.on_progress(job_id)
                        except Exception:  # a progress webhook is best effort; the job goes on
                            logger.warning("job %s: progress hook failed", job_id, exc_info=True)
                elif moving and now - quiet_since > self.settings.stall_timeout_s:
                    raise JobStalled(f"no progress for {now - quiet_since:.0f} s")
                elif not moving and started_at < self.lost_at < now - self.settings.requeue_after_loss_s:
                    raise JobStalled(f"no first step {now - self.lost_at:.0f} s after a replica was lost")
                if now - started_at > self.settings.attempt_timeout_s:
                    raise JobStalled(f"attempt still running after {now - started_at:.0f} s")
        except JobStalled as exc:
            # A backstop fired: say where the attempt was waiting, so that the hang can be fixed there.
            logger.warning("job %s attempt %d %s; it was waiting in %s", job_id, attempt_number, exc, awaiting(attempt))
            raise
        finally:
            attempt.cancel()
            self._executing.pop(job_id, None)

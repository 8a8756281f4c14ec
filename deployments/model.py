"""The model deployment: loads a variant's model through its backend (the own MMDiT for
``name@version``, diffusers for ``diffusers:...``; ``backends/loader.py``), batches requests with
``@serve.batch`` (the backend groups them by shape), reports per-step progress to the job store and
stops cancelled jobs between steps. A request whose caller is gone stops between steps too (``Caller``).
A GPU out of memory answers that batch 503; the replica goes on."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray import serve

from huabu.deployments.backends.fixed_latency import FixedLatencyPipeline
from huabu.deployments.backends.loader import load_backend
from huabu.deployments.backends.mmdit.png import encode_png
from huabu.deployments.core import metrics, telemetry
from huabu.deployments.core.handles import Answering
from huabu.deployments.core.messages import ModelRequest, ModelResult, OutOfMemory
from huabu.deployments.core.settings import Settings, VariantSettings
from huabu.deployments.core.state import open_store
from huabu.deployments.gateway.jobs import JobStore
from huabu.deployments.step_scheduler import StepHooks, step_scheduler
from huabu.sdk.types import JobPreview, encode_b64_image

logger = logging.getLogger("huabu.model")
MAX_COLLECT_S = 2.0  # never hold a request longer than this to grow a batch
# Progress is written at most this often per batch; steps faster than that are written together
# (every step's event is kept, in one store round trip), and cancellations are polled as often.
PROGRESS_FLUSH_S = 0.1
SPEED_RECORD_S = 2.0  # a replica's speed (for queue ETAs) is written at most this often


def compute_thread(torch_threads: int | None) -> ThreadPoolExecutor:
    """The one thread that runs the pipeline (batches run one at a time). OpenMP keeps its thread
    count per OS thread, so ``torch.set_num_threads`` must run in the thread that computes: called
    anywhere else, a new thread takes ``OMP_NUM_THREADS`` (Ray's) and ``torch_threads`` is lost."""

    def start() -> None:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)

    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmdit-compute", initializer=start)


def png_parameters(request: ModelRequest, model_id: str) -> dict[str, object]:
    return {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": request.seed,
        "steps": request.steps,
        "guidance_scale": request.guidance,
        "size": f"{request.width}x{request.height}",
        "operation": request.operation,
        "model": model_id,
    }


@dataclass
class Caller:
    """Whether the caller of one request still waits for it. Serve cancels the replica's request task
    when the client disconnects, its gRPC deadline passes or a calling stage's handle call is
    cancelled (``ray/serve/_private/replica.py`` cancels a cancelled request's child calls, and
    ``core/handles.call`` cancels its stream), so ``gone`` is set from that cancellation; the work
    then stops at the next step instead of running to its end. Read from the compute thread."""

    gone: bool = False
    steps: int = 0  # denoising steps its request has run
    steps_when_gone: int = 0

    def leave(self) -> None:
        self.gone, self.steps_when_gone = True, self.steps


class Abandoned:
    """The replica's count of requests whose caller left before their end, and of the steps they ran
    after that (at most the one in flight when the cancellation came): ``ModelStage.counters``."""

    def __init__(self) -> None:
        self.count = 0
        self.recent: deque[Caller] = deque(maxlen=256)  # still counting their in-flight step

    def add(self, caller: Caller) -> None:
        caller.leave()
        self.count += 1
        self.recent.append(caller)

    @property
    def steps_after(self) -> int:
        return sum(c.steps - c.steps_when_gone for c in self.recent)


class ProgressReports:
    """Per-step progress handed from the pipeline thread to the event loop. A plain list and an
    event, so that nothing can be lost between a timeout and a wake-up."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, int, int]] = []
        self.previews: dict[tuple[str, int], np.ndarray] = {}  # (job id, step) -> preview pixels
        self.ready = asyncio.Event()
        self.closing = asyncio.Event()  # the batch ended: flush now, not at the next interval
        self.closed = False

    def add(self, updates: list[tuple[str, int, int]]) -> None:
        self.pending.extend(updates)
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()
        self.closing.set()

    def take(self) -> list[tuple[str, int, int]]:
        taken, self.pending = self.pending, []
        self.ready.clear()
        return taken


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
class ModelStage(Answering):
    def __init__(self, variant: VariantSettings, settings: Settings) -> None:
        telemetry.configure(settings, "model")
        self.variant = telemetry.replica_variant()
        self.queue = metrics.ModelQueue(self.variant)
        self.job_stages: dict[str, telemetry.StageSpan] = {}  # job id -> its model span, for progress events
        self.compute = compute_thread(settings.model.torch_threads)
        self.pipeline = load_backend(variant, settings)
        self.model_id = self.pipeline.model_id
        self.model_name = variant.model
        self.jobs = JobStore(open_store(settings.state), settings.jobs)
        batch: Any = self.generate_batch  # type: ignore[misc]  # serve.batch's typing misses methods
        batch.set_max_batch_size(settings.model.max_batch_size)
        batch.set_batch_wait_timeout_s(settings.model.batch_wait_timeout_s)
        self.cancelled: set[str] = set()
        self.speed_recorded_at = -SPEED_RECORD_S  # the first batch's speed is written at once
        self.background: set[asyncio.Task[None]] = set()  # strong references until they end
        self.min_wait_s = settings.model.batch_wait_timeout_s
        self.busy_until = 0.0  # estimated end of the running batch (perf_counter seconds)
        self.seconds_per_step = 0.0  # moving average over recent batches
        self.png_compress_level = settings.model.png_compress_level
        self.retry_after_s = settings.model.retry_after_s
        self.replica = uuid.uuid4().hex  # names this replica's speed report
        self.steps_run = 0  # request-steps, every request counted in every step it ran
        self.computing = 0  # requests in the request-level batch the pipeline is running
        self.abandoned = Abandoned()
        self.steps = step_scheduler(self.pipeline, settings.model, self.compute, self._iteration)
        logger.info("loaded %s on %s (%s)", self.model_id, self.pipeline.device, settings.model.dtype)

    def describe(self) -> dict[str, Any]:
        """For the gateway's validation and ``GET /v1/models``: the served id, the reference it was
        asked for, the limits, and the backend's own details."""
        return {
            "model": self.model_id,
            "name": self.model_name,
            "limits": self.pipeline.limits.to_dict(),
            **self.pipeline.describe(),
        }

    def counters(self) -> dict[str, int]:
        """This replica's work counts (for operators and tests; a handle call, not a route): steps
        run, requests computing now, requests whose caller left and the steps they ran after it."""
        running = self.steps.running if self.steps is not None else self.computing
        return {
            "steps": self.steps_run,
            "running": running,
            "abandoned": self.abandoned.count,
            "steps_after_abandoned": self.abandoned.steps_after,
        }

    async def generate(self, request: ModelRequest) -> ModelResult:
        # The model span: queue wait, batch size and steps as attributes and child spans.
        with telemetry.hop("model", request) as hop, self.queue.holding():
            enqueued_ns = time.time_ns()
            if request.job_id:
                self.job_stages[request.job_id] = hop
            try:
                result = await self._generate(request)
            finally:
                self.job_stages.pop(request.job_id or "", None)
            telemetry.model_done(hop, request, result, self.variant, enqueued_ns)
            return result

    async def _generate(self, request: ModelRequest) -> ModelResult:
        caller = Caller()
        try:
            if self.steps is not None:
                return await self._generate_stepwise(request, caller)
            return await self._generate_batched(request, caller)
        except asyncio.CancelledError:  # the caller is gone: its work stops at the next step
            self.abandoned.add(caller)
            logger.info("caller gone after %d of %d steps: the request stops", caller.steps, request.steps)
            raise

    async def _generate_batched(self, request: ModelRequest, caller: Caller) -> ModelResult:
        # serve.batch drops a request cancelled before its batch starts; one cancelled while its
        # batch runs leaves the batch at the next step (is_cancelled), and a batch with no caller
        # left stops.
        batch: Any = self.generate_batch  # type: ignore[misc]
        # serve.batch forms a batch when its first request arrives, not when the model is free,
        # so while a batch runs, the next one keeps collecting until the running one should end.
        # An idle model starts a lone request at once.
        now = time.perf_counter()
        batch.set_batch_wait_timeout_s(min(MAX_COLLECT_S, max(self.min_wait_s, self.busy_until - now)))
        result: ModelResult = await batch(request, now, caller)
        return result

    @serve.batch  # type: ignore[arg-type]  # size and wait are set per replica in __init__
    async def generate_batch(  # type: ignore[misc]
        self, requests: list[ModelRequest], enqueued: list[float], callers: list[Caller]
    ) -> list[ModelResult]:
        started = time.perf_counter()
        self.queue.batch_started(len(requests))
        steps = max(r.steps for r in requests)
        self.busy_until = started + steps * self.seconds_per_step
        loop = asyncio.get_running_loop()
        reports = ProgressReports()
        job_ids = {i: r.job_id for i, r in enumerate(requests) if r.job_id}

        def on_step(indices: list[int], step: int, total: int) -> None:  # runs in the pipeline thread
            for i in indices:
                callers[i].steps += 1
            self.steps_run += len(indices)
            updates = [(job_ids[i], step, total) for i in indices if i in job_ids]
            if updates:
                loop.call_soon_threadsafe(reports.add, updates)

        def is_cancelled(i: int) -> bool:
            return callers[i].gone or job_ids.get(i) in self.cancelled

        def on_preview(i: int, step: int, pixels: np.ndarray) -> None:  # pipeline thread, before on_step
            if i in job_ids:
                loop.call_soon_threadsafe(reports.previews.__setitem__, (job_ids[i], step), pixels)

        compute = functools.partial(self.pipeline, on_step=on_step, is_cancelled=is_cancelled)
        if getattr(self.pipeline, "previews", False) and any(r.preview_every for r in requests):
            compute = functools.partial(compute, on_preview=on_preview)

        reporter = loop.create_task(self._report(reports, set(job_ids.values())))
        try:
            samples = [r.to_sample() for r in requests]
            self.computing = len(requests)
            try:
                results = await loop.run_in_executor(self.compute, compute, samples)
            except torch.OutOfMemoryError:
                raise self._out_of_memory(len(requests)) from None
            finally:
                self.computing = 0
            if isinstance(self.pipeline, FixedLatencyPipeline) and not all(c.gone for c in callers):
                await asyncio.sleep(self.pipeline.remaining_s(len(requests), started))
        finally:
            await asyncio.sleep(0)  # let the last call_soon_threadsafe callbacks land
            reports.close()
            await reporter  # it flushes everything before it returns: no event is lost
            self.cancelled -= set(job_ids.values())
        elapsed = time.perf_counter() - started
        per_step = elapsed / steps
        self.seconds_per_step = per_step if not self.seconds_per_step else 0.7 * self.seconds_per_step + 0.3 * per_step
        if job_ids:
            self._note_speed(self.seconds_per_step / len(requests))
        self.busy_until = 0.0
        pngs = await asyncio.gather(
            *(self._png(request, result.pixels) for request, result in zip(requests, results, strict=True))
        )
        return [
            ModelResult(
                png=png,
                seed=request.seed,
                model=self.model_id,
                prompt_truncated=result.prompt_truncated,
                cancelled=result.cancelled,
                batch_size=len(requests),
                queue_wait_s=started - queued,
                generation_s=elapsed,
                full_evaluations=result.full_evaluations,
            )
            for request, result, png, queued in zip(requests, results, pngs, enqueued, strict=True)
        ]

    def _out_of_memory(self, requests: int) -> OutOfMemory:
        # The batch did not fit on the card; the memory is freed and the replica serves on.
        logger.warning("out of GPU memory on a batch of %d", requests, exc_info=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return OutOfMemory(
            f"the model ran out of GPU memory on this batch; retry in {self.retry_after_s} s "
            "or ask for a smaller size or fewer images"
        )

    def _iteration(self, running: int) -> None:
        metrics.step_iteration(self.variant, running)

    async def _generate_stepwise(self, request: ModelRequest, caller: Caller) -> ModelResult:
        """``model.scheduler: step``: the request joins the running set (deployments/step_scheduler.py)."""
        assert self.steps is not None
        loop = asyncio.get_running_loop()
        reports = ProgressReports()
        job_id = request.job_id

        def on_step(step: int, total: int) -> None:
            caller.steps += 1
            self.steps_run += 1
            if job_id:
                reports.add([(job_id, step, total)])

        hooks = StepHooks(on_step=on_step, is_cancelled=lambda: caller.gone or (job_id or "") in self.cancelled)
        if job_id and request.preview_every:
            hooks.on_preview = lambda step, pixels: reports.previews.__setitem__((job_id, step), pixels)
        reporter = loop.create_task(self._report(reports, {job_id} if job_id else set()))
        try:
            result, timing = await self.steps.submit(request.to_sample(), request.priority, hooks)
        except torch.OutOfMemoryError:
            raise self._out_of_memory(self.steps.max_running) from None
        finally:
            reports.close()
            await reporter  # it flushes everything before it returns: no event is lost
            self.cancelled.discard(job_id or "")
        if job_id:
            self._note_speed(self.steps.seconds_per_iteration / max(1, timing.largest_batch))
        branches = 2 if request.guidance != 1.0 else 1
        metrics.step_result(self.variant, timing.first_step_s, timing.iterations, result.full_evaluations, branches)
        return ModelResult(
            png=await self._png(request, result.pixels),
            seed=request.seed,
            model=self.model_id,
            prompt_truncated=result.prompt_truncated,
            cancelled=result.cancelled,
            batch_size=timing.largest_batch,
            queue_wait_s=timing.queue_wait_s,
            generation_s=timing.generation_s,
            full_evaluations=result.full_evaluations if request.cache_threshold else None,
        )

    def _note_speed(self, image_step_s: float) -> None:
        """Seconds per image-step on this replica, for queue ETAs (gateway/job_queue.py): written at
        most every SPEED_RECORD_S, off the answer's path (it is a hint; a failed write is dropped)."""
        now = time.monotonic()
        if now - self.speed_recorded_at < SPEED_RECORD_S:
            return
        self.speed_recorded_at = now
        record = self.jobs.record_speed(self.replica, image_step_s, self.model_name)
        task = asyncio.get_running_loop().create_task(record)
        self.background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("could not record this replica's speed", exc_info=task.exception())

    async def _png(self, request: ModelRequest, pixels: np.ndarray | None) -> bytes:
        if pixels is None:  # cancelled
            return b""
        # In worker threads, the batch's images at once: a 1024x1024 PNG takes ~0.2 s, which the
        # event loop (progress, cancellations, the next requests) should not wait for.
        parameters = png_parameters(request, self.model_id)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, encode_png, pixels, parameters, self.png_compress_level)

    async def _flush(self, reports: ProgressReports) -> None:
        updates = []
        for job_id, step, total in reports.take():
            if job_id in self.job_stages:
                self.job_stages[job_id].event("progress", step=step, total=total)
            pixels = reports.previews.pop((job_id, step), None)
            preview = None
            if pixels is not None:
                png = encode_png(pixels, {}, self.png_compress_level)
                preview = JobPreview(width=pixels.shape[1], height=pixels.shape[0], b64_json=encode_b64_image(png))
            updates.append((job_id, step, total, preview))
        try:
            await self.jobs.record_progress_many(updates)
        except Exception:  # progress is best effort: the jobs themselves still complete
            logger.warning("could not record progress for %s", sorted({u[0] for u in updates}), exc_info=True)

    async def _report(self, reports: ProgressReports, job_ids: set[str]) -> None:
        """While a batch runs: write its progress to the store and poll for cancellations, at most
        every PROGRESS_FLUSH_S (a 20-step job of 0.2 s costs two round trips, not twenty); the
        batch's end flushes at once."""
        while job_ids:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(reports.ready.wait(), timeout=PROGRESS_FLUSH_S)
            closed = reports.closed
            await self._flush(reports)
            if closed:
                return
            for job_id in job_ids - self.cancelled:
                with contextlib.suppress(Exception):
                    if await self.jobs.cancel_requested(job_id):
                        self.cancelled.add(job_id)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(reports.closing.wait(), timeout=PROGRESS_FLUSH_S)

"""The MMDiT model deployment: loads ``name@version``, batches requests with ``@serve.batch``
(the pipeline groups them by shape), reports per-step progress to the job store and stops
cancelled jobs between steps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import torch
from ray import serve

from huabu.deployments.jobs import JobStore
from huabu.deployments.messages import ModelRequest, ModelResult
from huabu.deployments.mmdit.checkpoint import load_checkpoint
from huabu.deployments.mmdit.pipeline import Pipeline
from huabu.deployments.mmdit.png import encode_png
from huabu.deployments.settings import Settings
from huabu.deployments.state import open_store

logger = logging.getLogger("huabu.model")


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


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
class MMDiTModel:
    def __init__(self, model_id: str, settings: Settings) -> None:
        if settings.model.torch_threads:
            torch.set_num_threads(settings.model.torch_threads)
        device = "cuda" if settings.model.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.pipeline = Pipeline(load_checkpoint(model_id, [Path(p) for p in settings.model_dirs]), device=device)
        self.model_id = self.pipeline.model_id
        self.jobs = JobStore(open_store(settings.state), settings.jobs)
        batch: Any = self.generate_batch  # type: ignore[misc]  # serve.batch's typing misses methods
        batch.set_max_batch_size(settings.model.max_batch_size)
        batch.set_batch_wait_timeout_s(settings.model.batch_wait_timeout_s)
        self.cancelled: set[str] = set()
        logger.info("loaded %s on %s", self.model_id, device)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_id, "config": self.pipeline.config.to_dict()}

    def check_health(self) -> None:
        if self.pipeline is None:
            raise RuntimeError("model not loaded")

    async def generate(self, request: ModelRequest) -> ModelResult:
        batch: Any = self.generate_batch  # type: ignore[misc]
        result: ModelResult = await batch(request, time.perf_counter())
        return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)  # type: ignore[arg-type]
    async def generate_batch(  # type: ignore[misc]
        self, requests: list[ModelRequest], enqueued: list[float]
    ) -> list[ModelResult]:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        progress: asyncio.Queue[tuple[str, int, int]] = asyncio.Queue()
        job_ids = {i: r.job_id for i, r in enumerate(requests) if r.job_id}

        def on_step(indices: list[int], step: int, total: int) -> None:  # runs in the pipeline thread
            for i in indices:
                if i in job_ids:
                    loop.call_soon_threadsafe(progress.put_nowait, (job_ids[i], step, total))

        def is_cancelled(i: int) -> bool:
            return job_ids.get(i) in self.cancelled

        reporter = loop.create_task(self._report(progress, set(job_ids.values())))
        try:
            samples = [r.to_sample() for r in requests]
            results = await asyncio.to_thread(self.pipeline, samples, on_step, is_cancelled)
        finally:
            await progress.join()
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            self.cancelled -= set(job_ids.values())
        elapsed = time.perf_counter() - started
        return [
            ModelResult(
                png=b"" if result.pixels is None else encode_png(result.pixels, png_parameters(request, self.model_id)),
                seed=request.seed,
                model=self.model_id,
                prompt_truncated=result.prompt_truncated,
                cancelled=result.cancelled,
                batch_size=len(requests),
                queue_wait_s=started - queued,
                generation_s=elapsed,
            )
            for request, result, queued in zip(requests, results, enqueued, strict=True)
        ]

    async def _report(self, progress: asyncio.Queue[tuple[str, int, int]], job_ids: set[str]) -> None:
        """Write progress to the store and poll for cancellations while a batch runs."""
        if not job_ids:
            return
        poll_every = 0.1
        next_poll = 0.0
        while True:
            try:
                job_id, step, total = await asyncio.wait_for(progress.get(), timeout=poll_every)
                try:
                    await self.jobs.record_progress(job_id, step, total)
                finally:
                    progress.task_done()
            except asyncio.TimeoutError:
                pass
            except Exception:  # progress is best effort: the job itself still completes
                logger.warning("could not record progress", exc_info=True)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + poll_every
                for job_id in job_ids - self.cancelled:
                    with contextlib.suppress(Exception):
                        if await self.jobs.cancel_requested(job_id):
                            self.cancelled.add(job_id)

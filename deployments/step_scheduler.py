"""Iteration-level (continuous) batching in a model replica (``model.scheduler: step``).

Requests join a running set and leave it between denoising steps instead of waiting for a whole
batch: every iteration starts the new arrivals, picks one size bucket and advances up to
``max_running`` of its requests by one step in one transformer forward (``Stepper.step``; each
request keeps its own schedule, seed, guidance and step count), then retires the finished ones.
Within a bucket, interactive requests go before batch jobs and then the oldest first; a request
left out of an iteration keeps its state and goes on later (a batch job yields its slot to an
interactive arrival). The bucket stepped is the one holding the most urgent request. Cancelled
requests are removed between iterations. Every image is the same bits as alone
(``mmdit/stepping.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from huabu.deployments.backends.contract import SampleResult
from huabu.deployments.backends.mmdit.stepping import Stepper, StepState
from huabu.deployments.backends.requests import SampleRequest
from huabu.deployments.core.settings import ModelDeploymentSettings
from huabu.sdk.types import Priority

logger = logging.getLogger("huabu.model")

PRIORITY_RANK: dict[str, int] = {"interactive": 0, "batch": 1}


@dataclass
class StepHooks:
    """What the replica hears about one request; each runs on the event loop."""

    on_step: Callable[[int, int], None] | None = None  # (step, total) after each of its steps
    is_cancelled: Callable[[], bool] | None = None  # checked before every iteration
    on_preview: Callable[[int, np.ndarray], None] | None = None  # (step, pixels) when due


@dataclass
class StepTiming:
    """One request's way through the scheduler (perf_counter seconds and counts)."""

    arrived: float
    first_step_started: float | None = None
    first_step_done: float | None = None
    finished: float | None = None
    iterations: int = 0  # iterations it took part in (= its steps)
    largest_batch: int = 0  # the most requests in one of its iterations

    @property
    def queue_wait_s(self) -> float:
        return (self.first_step_started or self.arrived) - self.arrived

    @property
    def first_step_s(self) -> float:
        return (self.first_step_done or self.arrived) - self.arrived

    @property
    def generation_s(self) -> float:
        return (self.finished or self.arrived) - (self.first_step_started or self.arrived)


@dataclass
class _Entry:
    request: SampleRequest
    rank: tuple[int, int]  # (priority, arrival order): smaller is served first
    hooks: StepHooks
    future: asyncio.Future[tuple[SampleResult, StepTiming]]
    timing: StepTiming
    state: StepState | None = None
    previews: list[tuple[int, np.ndarray]] = field(default_factory=list)  # filled in the compute thread

    def add_preview(self, step: int, pixels: np.ndarray) -> None:
        self.previews.append((step, pixels))


class StepScheduler:
    """The running set of one replica; ``submit`` returns when the request is done or cancelled."""

    def __init__(
        self,
        stepper: Stepper,
        compute: Executor,
        max_running: int,
        on_iteration: Callable[[int], None] | None = None,  # (requests stepped) after each iteration
    ) -> None:
        self.stepper = stepper
        self.compute = compute
        self.max_running = max_running
        self.on_iteration = on_iteration
        self.entries: list[_Entry] = []  # arrived, not finished: started or not
        self.arrivals = itertools.count()
        self.loop_task: asyncio.Task[None] | None = None
        self.iterations = 0
        self.seconds_per_iteration = 0.0  # moving average, for ETAs and the request-level estimate

    @property
    def running(self) -> int:
        return len(self.entries)

    async def submit(
        self, request: SampleRequest, priority: Priority = "interactive", hooks: StepHooks | None = None
    ) -> tuple[SampleResult, StepTiming]:
        request.validate(self.stepper.pipeline.limits)  # InvalidRequest here, before it joins
        loop = asyncio.get_running_loop()
        entry = _Entry(
            request=request,
            rank=(PRIORITY_RANK[priority], next(self.arrivals)),
            hooks=hooks or StepHooks(),
            future=loop.create_future(),
            timing=StepTiming(arrived=time.perf_counter()),
        )
        self.entries.append(entry)
        if self.loop_task is None or self.loop_task.done():
            self.loop_task = loop.create_task(self._loop())
        try:
            return await asyncio.shield(entry.future)
        except asyncio.CancelledError:  # the caller went away: its request leaves at the next iteration
            entry.hooks.is_cancelled = lambda: True
            raise

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self.entries:
            self._drop_cancelled()
            if not self.entries:
                return
            chosen = self._choose()
            started = time.perf_counter()
            try:
                finished = await loop.run_in_executor(self.compute, self._iterate, chosen)
            except BaseException as exc:  # e.g. out of GPU memory: those requests fail, the loop goes on
                for entry in chosen:
                    self._retire(entry, exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            now = time.perf_counter()
            elapsed = now - started
            self.iterations += 1
            self.seconds_per_iteration = (
                elapsed if not self.seconds_per_iteration else 0.8 * self.seconds_per_iteration + 0.2 * elapsed
            )
            if self.on_iteration is not None:
                self.on_iteration(len(chosen))
            for entry in chosen:
                self._stepped(entry, started, now, len(chosen))
            for entry, result in finished:
                entry.timing.finished = now
                self._retire(entry, result)

    def _choose(self) -> list[_Entry]:
        """The entries of the next iteration: the bucket of the most urgent entry, most urgent first.
        Entries not started yet count with the bucket of their size."""
        best = min(self.entries, key=lambda e: e.rank)
        bucket = (best.request.height, best.request.width)
        same = [e for e in self.entries if (e.request.height, e.request.width) == bucket]
        return sorted(same, key=lambda e: e.rank)[: self.max_running]

    def _iterate(self, chosen: list[_Entry]) -> list[tuple[_Entry, SampleResult]]:
        """In the compute thread: start the chosen entries that need it, step them, decode the done."""
        for entry in chosen:
            if entry.state is None:
                entry.state = self.stepper.start(entry.request)
        states = [e.state for e in chosen if e.state is not None]
        previews = {
            i: e.add_preview for i, e in enumerate(chosen) if e.hooks.on_preview is not None and e.request.preview_every
        }
        self.stepper.step(states, previews)
        done = [e for e in chosen if e.state is not None and e.state.done]
        return list(zip(done, self.stepper.finish([e.state for e in done if e.state]), strict=True))

    def _stepped(self, entry: _Entry, started: float, now: float, size: int) -> None:
        timing, state = entry.timing, entry.state
        if timing.first_step_started is None:
            timing.first_step_started, timing.first_step_done = started, now
        timing.iterations += 1
        timing.largest_batch = max(timing.largest_batch, size)
        hooks = entry.hooks
        if hooks.on_preview is not None:
            for step, pixels in entry.previews:
                hooks.on_preview(step, pixels)
        entry.previews.clear()
        if hooks.on_step is not None and state is not None:
            hooks.on_step(state.step, state.total)

    def _drop_cancelled(self) -> None:
        for entry in list(self.entries):
            if entry.hooks.is_cancelled is not None and entry.hooks.is_cancelled():
                truncated = entry.state.truncated if entry.state is not None else False
                entry.timing.finished = time.perf_counter()
                self._retire(entry, SampleResult(pixels=None, prompt_truncated=truncated, cancelled=True))

    def _retire(self, entry: _Entry, outcome: SampleResult | BaseException) -> None:
        if entry in self.entries:
            self.entries.remove(entry)
        if entry.future.done():
            return
        if isinstance(outcome, BaseException):
            entry.future.set_exception(outcome)
        else:
            entry.future.set_result((outcome, entry.timing))


def step_scheduler(
    backend: Any, settings: ModelDeploymentSettings, compute: Executor, on_iteration: Callable[[int], None] | None
) -> StepScheduler | None:
    """The replica's scheduler when ``model.scheduler`` is step and the backend can step (the own
    MMDiT); None: request-level batching."""
    if settings.scheduler != "step":
        return None
    if not callable(getattr(backend, "stepper", None)):
        logger.warning("model.scheduler step: this backend has no step function; batching requests instead")
        return None
    return StepScheduler(backend.stepper(), compute, settings.max_batch_size, on_iteration)

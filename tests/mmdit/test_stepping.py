"""Iteration-level sampling (mmdit/stepping.py) and the replica's step scheduler
(deployments/step_scheduler.py), without Ray: the scheduler's own loop and compute thread."""

import asyncio
import dataclasses

import numpy as np
import pytest

from huabu.deployments.backends import requests as R
from huabu.deployments.backends.mmdit.pipeline import Pipeline
from huabu.deployments.backends.mmdit.stepping import StepState
from huabu.deployments.model import compute_thread
from huabu.deployments.step_scheduler import StepHooks, StepScheduler


def gen(
    prompt: str, seed: int, steps: int = 4, guidance: float = 1.0, size: tuple[int, int] = (32, 32)
) -> R.SampleRequest:
    return R.generation(prompt, seed=seed, size=size, steps=steps, guidance=guidance, negative_prompt="blurry")


MIXED = [gen(f"prompt {i} 蓝色", seed=i, steps=2 + i % 4, guidance=1.0 + (i % 3)) for i in range(6)] + [
    gen("wide", seed=9, steps=3, guidance=4.0, size=(32, 48))
]


def test_requests_joining_a_running_batch_mid_way_give_the_bits_they_give_alone(pipeline: Pipeline) -> None:
    """One new request joins every iteration (different step counts, guidance, sizes): each image
    is the same bits as the request alone and as in a request-level batch."""
    alone = [pipeline([r])[0].pixels for r in MIXED]
    batched = [r.pixels for r in pipeline(MIXED)]
    stepper = pipeline.stepper()
    running: list[tuple[int, StepState]] = []
    pending, joined = list(range(len(MIXED))), {}
    while pending or running:
        if pending:
            i = pending.pop(0)
            running.append((i, stepper.start(MIXED[i])))
        buckets: dict[tuple[int, int], list[StepState]] = {}
        for _, state in running:
            buckets.setdefault(state.bucket, []).append(state)
        for states in buckets.values():
            stepper.step(states)
        done = [(i, s) for i, s in running if s.done]
        for (i, _), result in zip(done, stepper.finish([s for _, s in done]), strict=True):
            joined[i] = result.pixels
        running = [(i, s) for i, s in running if not s.done]
    for i in range(len(MIXED)):
        assert np.array_equal(alone[i], batched[i]) and np.array_equal(alone[i], joined[i]), i


def test_step_caching_counts_full_evaluations_and_threshold_zero_changes_nothing(pipeline: Pipeline) -> None:
    base = gen("a red circle", seed=3, steps=12, guidance=5.0)
    plain = pipeline([base])[0]
    results = pipeline([dataclasses.replace(base, cache_threshold=t) for t in (1e-9, 0.3, 1.0)])
    exact, some, most = results
    assert np.array_equal(exact.pixels, plain.pixels)  # type: ignore[arg-type]
    assert exact.full_evaluations == 24  # 12 steps x (cond + uncond): nothing skipped
    # Each branch evaluates in full at least on its first step; the threshold 1 skips the most.
    assert most.full_evaluations is not None and some.full_evaluations is not None
    assert 2 <= most.full_evaluations <= some.full_evaluations < 24
    assert not np.array_equal(some.pixels, plain.pixels)  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_bad_cache_threshold_names_the_field(pipeline: Pipeline, threshold: float) -> None:
    with pytest.raises(R.InvalidRequest) as info:
        dataclasses.replace(gen("x", 1), cache_threshold=threshold).validate(pipeline.limits)
    assert info.value.param == "cache_steps.threshold"


def test_scheduler_admits_between_steps_prioritises_and_cancels(pipeline: Pipeline) -> None:
    """Through the scheduler's loop: a request that arrives while another runs joins it (same
    bits as alone), an interactive request overtakes batch jobs, and a cancelled one leaves."""

    async def scenario() -> None:
        with compute_thread(None) as compute:
            scheduler = StepScheduler(pipeline.stepper(), compute, max_running=2)
            steps_seen: dict[str, list[int]] = {"long": [], "cancel": []}
            cancel_now = asyncio.Event()
            long = asyncio.create_task(
                scheduler.submit(
                    gen("long", 1, steps=12), "batch", StepHooks(on_step=lambda s, _: steps_seen["long"].append(s))
                )
            )
            while len(steps_seen["long"]) < 2:
                await asyncio.sleep(0.01)
            join = await scheduler.submit(MIXED[2])  # joins the running batch
            result, timing = join
            assert np.array_equal(result.pixels, pipeline([MIXED[2]])[0].pixels)  # type: ignore[arg-type]
            assert timing.largest_batch == 2 and timing.iterations == MIXED[2].steps
            # Two batch jobs fill the running set; an interactive arrival goes first.
            cancelled = asyncio.create_task(
                scheduler.submit(
                    gen("cancel", 5, steps=8),
                    "batch",
                    StepHooks(on_step=lambda s, _: steps_seen["cancel"].append(s), is_cancelled=cancel_now.is_set),
                )
            )
            await asyncio.sleep(0)
            urgent, urgent_timing = await scheduler.submit(gen("urgent", 7, steps=2), "interactive")
            assert urgent.pixels is not None and urgent_timing.iterations == 2
            assert not long.done() and steps_seen["cancel"] == []  # the later batch job waited for it
            cancel_now.set()
            gone, _ = await cancelled
            assert gone.cancelled and gone.pixels is None and len(steps_seen["cancel"]) < 8
            assert scheduler.running == 1
            first, _ = await long
            assert np.array_equal(first.pixels, pipeline([gen("long", 1, steps=12)])[0].pixels)  # type: ignore[arg-type]
            assert steps_seen["long"] == list(range(1, 13))

    asyncio.run(scenario())

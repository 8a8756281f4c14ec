"""Serving benchmarks on a real local Ray Serve, each against a baseline in the same run:

1. latency of one uncached generation over HTTP through every deployment vs the same pipeline
   called in-process (same model, size, steps and torch threads), interleaved; target <= 1.05x;
2. throughput of 8 concurrent clients with batching on vs off (max_batch_size 8 vs 1),
   interleaved rounds; target >= 1.5x.

Usage: python bench/bench_serving.py [--rounds N] [--size 64x64] [--steps 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def deploy(name: str, port: int, telemetry: dict[str, object] | None = None, **model: object) -> str:
    from ray import serve

    from huabu.deployments.app import build_app
    from huabu.deployments.settings import Settings

    base = f"http://127.0.0.1:{port}/{name}"
    settings = Settings.load(
        environ={},
        app_name=name,
        state={"namespace": name},
        storage={"local_dir": tempfile.mkdtemp(), "public_base_url": base},
        model={"torch_threads": 1, "autoscaling": {"min_replicas": 1, "max_replicas": 1}, **model},
        telemetry=telemetry or {},
        auth={"enabled": False},  # benchmarks measure serving, not key checks
    )
    serve.run(build_app(settings), name=name, route_prefix=f"/{name}", blocking=False)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=2)
    args = parser.parse_args()

    import ray
    import torch
    from ray import serve

    from huabu.deployments.mmdit import requests as R
    from huabu.deployments.mmdit.checkpoint import load_checkpoint
    from huabu.deployments.mmdit.png import encode_png

    width, height = (int(v) for v in args.size.split("x"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = 8765
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    batched = deploy("batched", port, max_batch_size=8, max_ongoing_requests=16)
    unbatched = deploy("unbatched", port, max_batch_size=1, max_ongoing_requests=16)

    from huabu.deployments.mmdit.pipeline import Pipeline

    torch.set_num_threads(1)  # the replicas run one torch thread too (Ray's OMP_NUM_THREADS=1)
    pipeline = Pipeline(load_checkpoint("random-init@v0"))
    body = {"prompt": "a red circle on the left", "size": args.size, "steps": args.steps}

    def in_process(seed: int) -> float:
        start = time.perf_counter()
        result = pipeline([R.generation(body["prompt"], seed=seed, size=(height, width), steps=args.steps)])[0]
        assert result.pixels is not None
        encode_png(result.pixels, {"prompt": body["prompt"], "seed": seed})
        return time.perf_counter() - start

    def over_http(client: httpx.Client, base: str, seed: int) -> float:
        start = time.perf_counter()
        r = client.post(f"{base}/v1/images/generations", json={**body, "seed": seed})
        r.raise_for_status()
        return time.perf_counter() - start

    with httpx.Client(timeout=300) as client:
        for seed in range(2):  # warm-up
            in_process(seed), over_http(client, batched, seed), over_http(client, unbatched, seed)
        local, remote = [], []
        for i in range(args.rounds):
            local.append(in_process(1000 + i))
            remote.append(over_http(client, batched, 2000 + i))

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

    ml, mr = statistics.median(local), statistics.median(remote)
    print(f"settings: size={args.size} steps={args.steps} torch threads=1 model=random-init@v0")
    print(
        f"latency  in-process median {ml * 1e3:8.1f} ms | HTTP through gateway->router->model median "
        f"{mr * 1e3:8.1f} ms | overhead {(mr - ml) * 1e3:6.1f} ms | ratio {mr / ml:.3f} (target <= 1.05)"
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

"""Cache benchmark on a real local Ray Serve: p50 latency of a cache hit over HTTP against a
miss (cache=refresh forces a generation with the same request), interleaved in one run, and
against the cheapest request the same front end and gateway can answer (``GET /healthz``: Serve's
proxy and one replica call, no store, no other deployment), the floor a hit can approach.
Targets: hit p50 <= 20 ms and <= 5 % of the miss p50 (at 256x256, 30 steps).

It runs twice, each in a fresh Ray: behind Serve's own HTTP proxy (the default) and behind
HAProxy (HUABU_HA_PROXY=1, see cluster/local.py), and prints both.

Usage: python bench/bench_cache.py [--rounds N] [--size 256x256] [--steps 30] [--front-end serve|haproxy]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_serving import deploy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--front-end", choices=("serve", "haproxy"), help="one run only (default: both)")
    args = parser.parse_args()
    if args.front_end is None:
        for front_end in ("serve", "haproxy"):
            extra = ["--rounds", str(args.rounds), "--size", args.size, "--steps", str(args.steps)]
            subprocess.run([sys.executable, __file__, *extra, "--front-end", front_end], check=True)
        return
    if args.front_end == "haproxy":
        from huabu.cluster.local import serve_proxy_env

        os.environ.update(serve_proxy_env(Path(tempfile.mkdtemp()), stop_after_s=5, environ={"HUABU_HA_PROXY": "1"}))

    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = 8767
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = deploy("cachebench", port)
    body = {"prompt": "科技蓝风格封面", "size": args.size, "steps": args.steps}

    def timed(client: httpx.Client, **extra: object) -> tuple[float, bool]:
        start = time.perf_counter()
        r = client.post(f"{base}/v1/images/generations", json={**body, **extra})
        r.raise_for_status()
        return time.perf_counter() - start, bool(r.json()["data"][0]["cached"])

    def floor(client: httpx.Client) -> float:
        start = time.perf_counter()
        client.get(f"{base}/healthz").raise_for_status()
        return time.perf_counter() - start

    hits: dict[str, list[float]] = {"b64_json": [], "url": []}
    misses, floors = [], []
    with httpx.Client(timeout=300) as client:
        timed(client), timed(client), floor(client)  # warm-up: the first call fills the cache
        for _ in range(args.rounds):
            elapsed, cached = timed(client, cache="refresh")
            assert not cached
            misses.append(elapsed)
            for _ in range(3):  # a few of each per miss, interleaved
                floors.append(floor(client))
                for fmt in hits:
                    elapsed, cached = timed(client, response_format=fmt)
                    assert cached
                    hits[fmt].append(elapsed)
    miss, proxy = statistics.median(misses), statistics.median(floors)
    print(f"front end: {args.front_end} | settings: size={args.size} steps={args.steps} rounds={args.rounds}")
    print(f"miss p50 {miss * 1e3:7.1f} ms")
    print(f"GET /healthz p50 {proxy * 1e3:7.1f} ms (the front end's and gateway's floor)")
    for fmt, values in hits.items():
        hit = statistics.median(values)
        print(
            f"hit  p50 {hit * 1e3:7.1f} ms ({fmt}) | {hit / miss:6.1%} of the miss (targets <= 20 ms, <= 5 %)"
            f" | {hit / proxy:4.2f}x the floor"
        )
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()

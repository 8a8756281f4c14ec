"""What a hop between stages costs as ``handles.call`` makes it (deployments/core/handles.py): a
one-item stream, so that the replica's acceptance arrives before the answer and its liveness can be
watched, against the plain unary handle call that it replaced (whose replica Serve names only with
the answer). Two empty chains of the same depth on one local Ray Serve, over the same gRPC
transport, each hop returning a PNG-sized payload; requests alternate between them (each goes
first in turn); medians and the median of the paired ratios are printed.

Usage: python bench/bench_hops.py [--rounds 200] [--depth 5] [--payload-kb 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ray import serve

from huabu.deployments.core.handles import Answering, call, connect
from huabu.deployments.core.settings import Settings


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class Hop(Answering):
    """One stage: forwards to the next (answered or unary), the last one answers with the payload."""

    def __init__(self, next_stage: Any, payload: bytes, answered: bool) -> None:
        self.next_stage = None if next_stage is None else connect(next_stage, Settings.load(environ={}))
        self.payload, self.answered = payload, answered

    async def generate(self, seed: int) -> bytes:
        if self.next_stage is None:
            return self.payload
        if self.answered:
            return await call(self.next_stage, "generate", seed)  # type: ignore[no-any-return]
        return await self.next_stage.generate.remote(seed)  # type: ignore[no-any-return]


def deploy_chain(name: str, depth: int, payload: bytes, answered: bool) -> Any:
    stage: Any = Hop.bind(None, payload, answered)
    for _ in range(depth - 1):
        stage = Hop.bind(stage, payload, answered)
    return serve.run(stage, name=name, route_prefix=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--depth", type=int, default=5, help="deployments in each chain (hops = depth)")
    parser.add_argument("--payload-kb", type=int, default=8, help="the answer's size (a small PNG)")
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    payload = os.urandom(args.payload_kb * 1024)
    chains = {
        "unary": deploy_chain("hops-unary", args.depth, payload, answered=False),
        "answered": deploy_chain("hops-answered", args.depth, payload, answered=True),
    }

    async def once(name: str, seed: int) -> float:
        start = time.perf_counter()
        handle = chains[name]
        # The driver's own call into the chain is answered the same way for both, so only the hops differ.
        assert await call(handle, "generate", seed) == payload
        return time.perf_counter() - start

    async def run() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {name: [] for name in chains}
        order = list(chains)
        for seed in range(20):  # warm-up
            for name in order:
                await once(name, seed)
        for seed in range(args.rounds):
            for name in order[seed % 2 :] + order[: seed % 2]:
                times[name].append(await once(name, seed))
        return times

    times = asyncio.run(run())
    unary, answered = (statistics.median(times[k]) * 1e3 for k in ("unary", "answered"))
    ratios = [a / u for a, u in zip(times["answered"], times["unary"], strict=True)]
    print(f"empty chain of {args.depth} deployments, {args.payload_kb} KB answer, {args.rounds} interleaved rounds")
    print(f"unary handle calls          median {unary:7.2f} ms")
    print(f"answered (stream + watch)   median {answered:7.2f} ms")
    hops = args.depth - 1
    print(
        f"answered/unary: median of paired ratios {statistics.median(ratios):.3f}; "
        f"{(answered - unary) / hops:+.2f} ms per hop ({hops} hops between deployments)"
    )
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()

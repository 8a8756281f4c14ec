"""The capacity model (huabu.cluster.capacity) against a measurement on the local multi-node cluster.

A head and two worker nodes with two logical GPUs each (``huabu cluster up``); two applications of
the fixed-latency model (``model.fixed_latency``: per-image latency, batching efficiency), one with
one replica and one with two, each replica holding one GPU. Each is driven at saturation (enough
concurrent clients to keep every replica's batches full) in interleaved rounds, and the measured
images per second are compared with what the model predicts for that many replicas:

    ratio = measured / predicted      (1.0: the model is exact; below: serving overhead it ignores)

The default latency (2 s per image) keeps the HTTP front end (proxy, gateway, router: CPU work on
this machine) far from its own limit, so the model replicas are what is measured.
    scaling = measured(2) / measured(1)  vs  2.0

Then the plan for 80 % of two replicas' predicted rate (two replicas at 80 % use) is checked against
the rate two replicas were measured to serve, once assuming full batches and once with the mean
batch size the serving layer actually reached (reported per image in the response's metadata).

Usage: python bench/bench_capacity.py [--latency 2] [--efficiency 0.75] [--batch 4] [--seconds 25]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from huabu.cluster.capacity import ModelProfile, plan

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def deploy(name: str, port: int, replicas: int, args: argparse.Namespace, files: Path) -> str:
    from huabu.cluster.local import deploy as submit
    from huabu.deployments.app import build_app
    from huabu.deployments.core.settings import Settings

    base = f"http://127.0.0.1:{port}/{name}"
    settings = Settings.load(
        environ={},
        app_name=name,
        state={"namespace": name},
        storage={"local_dir": str(files / name), "public_base_url": base},
        auth={"enabled": False},
        development=True,  # a local benchmark may sign file URLs with the public development secret
        cache={"enabled": False},  # every request reaches a model replica
        safety={"prompt_enabled": False, "image": {"enabled": False}},
        gateway={"default_steps": 1},
        model={
            "num_gpus": 1,
            "max_batch_size": args.batch,
            "max_ongoing_requests": 2 * args.batch,
            "max_queued_requests": 1000,
            "fixed_latency": {"seconds": args.latency, "batching_efficiency": args.efficiency},
            "autoscaling": {"min_replicas": replicas, "max_replicas": replicas},
        },
    )
    submit(build_app(settings), name, f"/{name}")
    return base


def wait_ready(base: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{base} not ready")


@dataclass
class Round:
    rate: float  # images per second in the measured window
    batch_sizes: list[int]  # of each image's batch (the response's metadata)
    batch_costs: list[float]  # generation_s / the cost law's batch_seconds: 1.0 when the model holds


def saturate(base: str, clients: int, seconds: float, profile: ModelProfile) -> Round:
    """``clients`` closed-loop clients for ``seconds`` after a 2 s warm-up."""
    done: list[tuple[float, dict[str, str]]] = []
    errors: list[str] = []
    stop = time.monotonic() + 2 + seconds
    lock = threading.Lock()

    def loop(index: int) -> None:
        seed = index * 1_000_000
        with httpx.Client(base_url=base, timeout=120) as http:
            while time.monotonic() < stop:
                seed += 1
                body = {"prompt": "a red circle", "size": "16x16", "seed": seed}
                response = http.post("/v1/images/generations", json=body)
                with lock:
                    if response.status_code == 200:
                        done.append((time.monotonic(), response.json()["data"][0].get("metadata") or {}))
                    else:
                        errors.append(response.text[:200])

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        print(f"  ({len(errors)} failed requests: {errors[0]})")
    window = [meta for t, meta in done if start + 2 <= t <= stop]
    sizes = [int(m.get("batch_size", 0)) for m in window]
    costs = [float(m["generation_s"]) / profile.batch_seconds(n) for m, n in zip(window, sizes, strict=True) if n]
    return Round(len(window) / seconds, sizes, costs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per image alone")
    parser.add_argument("--efficiency", type=float, default=0.75, help="batching efficiency")
    parser.add_argument("--batch", type=int, default=4, help="max batch size")
    parser.add_argument("--seconds", type=float, default=25, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from huabu.cluster.local import LocalCluster, free_port, start_serve
    from huabu.cluster.multinode import MultiNodeCluster

    home = Path(tempfile.mkdtemp(prefix="hbb-"))
    cluster = MultiNodeCluster(LocalCluster(home))
    profile = ModelProfile(args.latency, args.efficiency, args.batch, num_gpus=1)
    try:
        started = time.monotonic()
        state, _ = cluster.up(workers=2, gpus_per_node=2)
        cluster.local.connect(state)
        port = free_port()
        start_serve("127.0.0.1", port, state.proxy_location)
        print(f"cluster: head + 2 workers x 2 GPUs up in {time.monotonic() - started:.0f} s")
        bases = {r: deploy(f"cap{r}", port, r, args, home / "files") for r in (1, 2)}
        for base in bases.values():
            wait_ready(base)
        rounds: dict[int, list[Round]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for replicas, base in bases.items():  # interleaved: machine load drifts alike for both
                clients = 2 * args.batch * replicas  # one batch running and one collecting per replica
                rounds[replicas].append(saturate(base, clients, args.seconds, profile))
        print(
            f"model: {args.latency} s per image, batching efficiency {args.efficiency}, batch {args.batch}: "
            f"{profile.replica_throughput():.2f} images/s per replica at full batches"
        )
        print(
            f"{'replicas':>8} {'predicted':>10} {'measured':>9} {'ratio':>6} {'mean batch':>11} "
            f"{'predicted at that batch':>24} {'ratio':>6} {'batch cost / law':>17}"
        )
        medians: dict[int, float] = {}
        fills: dict[int, float] = {}
        for replicas, results in rounds.items():
            medians[replicas] = rate = statistics.median(r.rate for r in results)
            sizes = [n for r in results for n in r.batch_sizes]
            # Per batch, not per image (each image reports its batch's size): images / batches. The cost
            # law is affine in n, so this mean predicts the throughput of the batches that actually ran.
            fills[replicas] = mean_batch = len(sizes) / sum(1 / n for n in sizes) if sizes and all(sizes) else 0.0
            at_fill = replicas * profile.replica_throughput(mean_batch) if mean_batch else float("nan")
            cost = statistics.median(c for r in results for c in r.batch_costs) if sizes else float("nan")
            predicted = replicas * profile.replica_throughput()
            print(
                f"{replicas:>8} {predicted:>10.2f} {rate:>9.2f} {rate / predicted:>6.2f} {mean_batch:>11.2f} "
                f"{at_fill:>24.2f} {rate / at_fill:>6.2f} {cost:>17.2f}"
            )
        print(f"scaling 1 -> 2 replicas: {medians[2] / medians[1]:.2f}x (model: 2.00x)")
        for label, fill in (("full batches", None), (f"the measured mean batch {fills[2]:.2f}", fills[2])):
            target = 0.8 * 2 * profile.replica_throughput(fill)
            advice = plan(target, profile, gpus_per_node=2, utilization=0.8, batch_size=fill)
            verdict = "holds" if medians[advice.replicas] >= target else "does NOT hold"
            print(
                f"plan at {label} for {target:.2f} images/s at 80 % use: {advice.replicas} replicas; measured "
                f"{medians[advice.replicas]:.2f} images/s with {advice.replicas}: the plan {verdict}"
            )
    finally:
        import ray

        ray.shutdown()
        cluster.down()
        shutil.rmtree(cluster.local.temp_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Capacity planning: how many model replicas (and GPUs) serve a target load.

The model of one replica:

- a batch of ``n`` images takes ``batch_seconds(t, n, e) = t * (1 + (n - 1) * (1 - e))``, where
  ``t`` is the latency of one image alone and ``e`` the batching efficiency (1: a batch costs
  what one image costs, as when a GPU is far from saturated; 0: batching gains nothing);
- under sustained load a replica runs full batches back to back, so its throughput is
  ``n / batch_seconds(t, n, e)`` images per second at batch size ``n``;
- replicas are kept below full use (``utilization``, default 0.8): queueing delay grows without
  bound as utilisation approaches 1, and autoscaling needs headroom to react.

``plan()`` turns a target rate into replicas, GPUs and nodes, and the Serve autoscaling numbers
that keep that many replicas busy (``target_ongoing_requests``). ``bench/bench_capacity.py``
checks the throughput it predicts against a measurement on the local multi-node cluster with a
fixed-latency model (``model.fixed_latency``), which applies this same cost law to each batch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass


def batch_seconds(per_image_s: float, batch_size: float, batching_efficiency: float) -> float:
    """Time for one batch of ``batch_size`` images (the cost law above; a mean batch size may be fractional)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    return per_image_s * (1.0 + (batch_size - 1) * (1.0 - batching_efficiency))


@dataclass(frozen=True)
class ModelProfile:
    """What one replica costs: measured per-image latency and batching efficiency on its GPU."""

    per_image_s: float
    batching_efficiency: float = 1.0
    max_batch_size: int = 8
    num_gpus: float = 1.0  # per replica (model.num_gpus)

    def __post_init__(self) -> None:
        if self.per_image_s <= 0:
            raise ValueError("per_image_s must be positive")
        if not 0 <= self.batching_efficiency <= 1:
            raise ValueError("batching_efficiency must be between 0 and 1")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.num_gpus < 0:
            raise ValueError("num_gpus must not be negative")

    def batch_seconds(self, batch_size: float) -> float:
        return batch_seconds(self.per_image_s, batch_size, self.batching_efficiency)

    def replica_throughput(self, batch_size: float | None = None) -> float:
        """Images per second of one replica running batches of ``batch_size`` (default: the maximum)."""
        n = self.max_batch_size if batch_size is None else batch_size
        return n / self.batch_seconds(n)


@dataclass(frozen=True)
class CapacityPlan:
    target_rps: float
    replicas: int
    gpus: float
    nodes: int  # GPU nodes of ``gpus_per_node``
    replica_throughput: float  # images/s of one replica at full batches
    capacity_rps: float  # replicas * replica_throughput: what the plan serves at 100 % use
    utilization: float  # target_rps / capacity_rps
    batch_latency_s: float  # one full batch; a request waits up to one more batch in the queue
    target_ongoing_requests: float  # Serve autoscaling target per replica that keeps batches full

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def plan(
    target_rps: float,
    profile: ModelProfile,
    gpus_per_node: float = 1.0,
    utilization: float = 0.8,
    batch_size: float | None = None,
) -> CapacityPlan:
    """Replicas, GPUs and nodes to serve ``target_rps`` images per second at ``utilization``.
    ``batch_size``: the mean batch the serving layer reaches under load (default: the maximum)."""
    if target_rps < 0:
        raise ValueError("target_rps must not be negative")
    if not 0 < utilization <= 1:
        raise ValueError("utilization must be in (0, 1]")
    n = profile.max_batch_size if batch_size is None else batch_size
    per_replica = profile.replica_throughput(n)
    replicas = math.ceil(target_rps / (per_replica * utilization) - 1e-9) if target_rps > 0 else 0
    gpus = replicas * profile.num_gpus
    # A replica cannot span nodes: count how many fit on one node, not just total GPUs.
    per_node = math.floor(gpus_per_node / profile.num_gpus + 1e-9) if profile.num_gpus > 0 else replicas or 1
    if profile.num_gpus > 0 and per_node < 1:
        raise ValueError(f"a replica needs {profile.num_gpus} GPUs but a node has {gpus_per_node}")
    nodes = math.ceil(replicas / per_node) if replicas else 0
    capacity = replicas * per_replica
    return CapacityPlan(
        target_rps=target_rps,
        replicas=replicas,
        gpus=gpus,
        nodes=nodes,
        replica_throughput=per_replica,
        capacity_rps=capacity,
        utilization=target_rps / capacity if capacity else 0.0,
        batch_latency_s=profile.batch_seconds(n),
        # One batch running and one collecting: twice the batch size in flight keeps the GPU busy.
        target_ongoing_requests=float(2 * profile.max_batch_size),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rps", type=float, required=True, help="target images per second")
    parser.add_argument("--latency", type=float, required=True, help="seconds for one image alone on one replica")
    parser.add_argument("--efficiency", type=float, default=1.0, help="batching efficiency, 0..1 (default 1)")
    parser.add_argument("--batch", type=int, default=8, help="max batch size (default 8)")
    parser.add_argument(
        "--mean-batch",
        type=float,
        help="batch size the serving layer actually reaches under load (default: --batch); "
        "bench/bench_capacity.py measures it",
    )
    parser.add_argument("--gpus-per-replica", type=float, default=1.0)
    parser.add_argument("--gpus-per-node", type=float, default=1.0)
    parser.add_argument("--utilization", type=float, default=0.8, help="planned use of each replica (default 0.8)")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    """``huabu cluster capacity``: print the plan for the parsed arguments."""
    try:
        profile = ModelProfile(args.latency, args.efficiency, args.batch, args.gpus_per_replica)
        result = plan(args.rps, profile, args.gpus_per_node, args.utilization, args.mean_batch)
    except ValueError as exc:
        print(f"huabu: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(
        f"{result.replicas} replicas on {result.gpus:g} GPUs ({result.nodes} nodes of {args.gpus_per_node:g} GPUs) "
        f"serve {args.rps:g} images/s at {result.utilization:.0%} use; one replica does "
        f"{result.replica_throughput:.2f} images/s in batches of {args.mean_batch or args.batch:g} "
        f"({result.batch_latency_s:.2f} s each)."
    )
    print(
        f"autoscaling: min_replicas >= {result.replicas} for steady load at this rate; "
        f"target_ongoing_requests ~ {result.target_ongoing_requests:g}"
    )
    return 0

"""``huabu cluster ...``: the local multi-node cluster (``cluster/multinode.py``) and capacity planning.

    huabu cluster up --nodes 2 --gpus-per-node 2   # head + 2 GPU worker nodes on this machine
    huabu up --settings gpu.yaml                   # deploys onto it (model.num_gpus: 1)
    huabu cluster status [--json] [--watch 0.5]    # nodes, free GPUs, where each replica runs
    huabu cluster kill-node worker-1               # a GPU machine lost mid-load
    huabu cluster down
    huabu cluster capacity --rps 20 --latency 2.5 --efficiency 0.7 --batch 4

Only argparse is imported at module level: ``huabu --help`` must not pay for ray.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from huabu.cluster.output import fail, say


def cmd_up(args: argparse.Namespace) -> int:
    from huabu.cluster.local import ClusterError
    from huabu.cluster.multinode import MultiNodeCluster

    started = time.monotonic()
    cluster = MultiNodeCluster()
    say(f"Starting a head and {args.nodes} worker nodes with {args.gpus_per_node} GPUs each ...")
    try:
        state, record = cluster.up(
            args.nodes, args.gpus_per_node, cpus_per_node=args.cpus_per_node, head_gpus=args.head_gpus
        )
    except ClusterError as exc:
        return fail(str(exc))
    for node in record.nodes:
        say(f"  {node.name:<9} raylet pid {node.raylet_pid:<7} GPUs {node.num_gpus}  CPUs {node.num_cpus}")
    say(f"Ray is up at {state.address} with {len(record.nodes)} nodes ({time.monotonic() - started:.1f} s).")
    say("Deploy onto it with `huabu up --settings FILE` (model.num_gpus > 0 places replicas on GPU nodes);")
    say("`huabu cluster status` shows where replicas run; `huabu cluster down` stops every node.")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from huabu.cluster.local import ClusterError
    from huabu.cluster.multinode import MultiNodeCluster

    cluster = MultiNodeCluster()
    state = cluster.local.running_state()
    if state is not None:
        try:
            cluster.local.connect(state)
            import ray
            from ray import serve

            serve.shutdown()  # replicas exit cleanly before their nodes go
            ray.shutdown()
        except ClusterError as exc:
            say(f"Could not reach Serve ({exc}); stopping the processes.")
    if state is None and cluster.load() is None:
        say("No local huabu cluster is recorded; nothing to stop.")
        return 0
    stopped = cluster.down(state or cluster.local.load_state())
    say(f"Stopped the local Ray cluster ({stopped} processes).")
    return 0


def _print_status(report: dict[str, Any]) -> None:
    names = {n["node_id"]: n["name"] for n in report["nodes"]}
    say(f"Ray cluster {report['address']}")
    say(f"  {'node':<10} {'alive':<6} {'GPUs':>5} {'free':>5} {'CPUs':>5}")
    for node in sorted(report["nodes"], key=lambda n: n["name"]):
        say(
            f"  {node['name']:<10} {'yes' if node['alive'] else 'DEAD':<6} {node['gpus']:>5g} "
            f"{node['gpus_free']:>5g} {node['cpus']:>5g}"
        )
    if not report["replicas"]:
        say("No Serve replicas.")
        return
    say(f"  {'application':<12} {'deployment':<16} {'state':<10} node")
    for r in sorted(report["replicas"], key=lambda r: (r["app"], r["deployment"], r["replica_id"])):
        node = names.get(r["node_id"], (r["node_id"] or "-")[:8])
        say(f"  {r['app']:<12} {r['deployment']:<16} {r['state']:<10} {node}")


def cmd_status(args: argparse.Namespace) -> int:
    from huabu.cluster.local import ClusterError
    from huabu.cluster.multinode import MultiNodeCluster

    cluster = MultiNodeCluster()
    state = cluster.local.running_state()
    if state is None:
        return fail("no local huabu cluster is running: start one with `huabu cluster up`")
    try:
        while True:
            report = cluster.describe(state)
            if args.json:
                say(json.dumps({"t": time.time(), **report}, separators=(",", ":") if args.watch else None))
            else:
                _print_status(report)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except ClusterError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 0


def cmd_kill_node(args: argparse.Namespace) -> int:
    from huabu.cluster.local import ClusterError
    from huabu.cluster.multinode import MultiNodeCluster

    try:
        killed = MultiNodeCluster().kill_node(args.name, freeze=args.freeze)
    except ClusterError as exc:
        return fail(str(exc))
    say(f"{'Froze' if args.freeze else 'Killed'} {args.name} ({killed} processes).")
    return 0


def cmd_capacity(args: argparse.Namespace) -> int:
    from huabu.cluster.capacity import run

    return run(args)


def add_cluster_commands(sub: Any) -> None:
    """Register ``huabu cluster ...`` on the server CLI's subparsers."""
    cluster = sub.add_parser("cluster", help="a local multi-node Ray cluster with GPU nodes; capacity planning")
    commands = cluster.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")

    p = commands.add_parser("up", help="start a head and worker nodes on this machine, each with logical GPUs")
    p.add_argument("--nodes", type=int, default=2, help="worker nodes besides the head (default 2)")
    p.add_argument("--gpus-per-node", type=int, default=1, help="logical GPUs per worker node (default 1)")
    p.add_argument("--cpus-per-node", type=int, default=1, help="logical CPUs per worker node (default 1)")
    p.add_argument("--head-gpus", type=int, default=0, help="logical GPUs on the head (default 0)")
    p.set_defaults(func=cmd_up)

    p = commands.add_parser("down", help="shut Serve down and stop every node, by PID")
    p.set_defaults(func=cmd_down)

    p = commands.add_parser("status", help="nodes, free GPUs and where each replica runs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="repeat every SECONDS (JSON: one line each)")
    p.set_defaults(func=cmd_status)

    p = commands.add_parser("kill-node", help="SIGKILL a worker node's processes, as if its machine died")
    p.add_argument("name", help="worker-1, worker-2, ...")
    p.add_argument(
        "--freeze",
        action="store_true",
        help="SIGSTOP instead: a machine gone from the network, no connection reset (`cluster down` cleans up)",
    )
    p.set_defaults(func=cmd_kill_node)

    from huabu.cluster.capacity import add_arguments  # stdlib only

    p = commands.add_parser("capacity", help="replicas and GPUs for a target load (images per second)")
    add_arguments(p)
    p.set_defaults(func=cmd_capacity)

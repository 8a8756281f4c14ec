"""``huabu rollout start|status|list|pause|resume|promote|rollback|report``: canary rollouts from the
command line, through ``client.rollouts`` (an admin API key in ``HUABU_API_KEY``).

``report`` prints the table and writes ``traffic.png``, ``latency.png`` and ``quality.png``;
with ``--watch SECONDS`` it redraws until the rollout is promoted or rolled back.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from huabu.cluster.rollout_report import table, write_plots
from huabu.sdk import Client, HuabuError
from huabu.sdk.types import RolloutInfo

TERMINAL = ("promoted", "rolled_back")


def _summary(info: RolloutInfo) -> str:
    last = info.last_decision
    why = f"\n  last decision: {last.action} ({last.code}) {last.reason}" if last else ""
    return (
        f"rollout {info.id}: {info.status}, canary {info.canary_model} at {info.canary_percent:g}% "
        f"(stable {info.stable_model}){why}"
    )


def _policy(args: argparse.Namespace) -> dict[str, Any] | None:
    policy: dict[str, Any] = json.loads(args.policy) if args.policy else {}
    if args.steps:
        policy["steps"] = [float(s) for s in args.steps.split(",")]
    if args.min_samples is not None:
        policy["min_samples_per_step"] = args.min_samples
    if args.min_step_seconds is not None:
        policy["min_step_seconds"] = args.min_step_seconds
    return policy or None


def run(args: argparse.Namespace, client: Client) -> int:
    rollouts = client.rollouts
    if args.action == "start":
        info = rollouts.start(
            canary_model=args.canary, stable_model=args.stable, rollout_id=args.id, policy=_policy(args)
        )
        print(_summary(info))
    elif args.action == "list":
        for info in rollouts.list().data:
            print(_summary(info).splitlines()[0] + ("  <- active" if info.active else ""))
    elif args.action == "status":
        info = rollouts.status(args.id)
        print(info.model_dump_json(indent=2) if args.json else _summary(info))
    elif args.action in ("pause", "resume", "promote", "rollback"):
        info = getattr(rollouts, args.action)(args.id, reason=args.reason)
        print(_summary(info))
    else:  # report
        out = Path(args.out)
        while True:
            info = rollouts.status(args.id)
            paths = write_plots(info, out)
            if args.watch and sys.stdout.isatty():
                print("\x1b[2J\x1b[H", end="")  # redraw in place on a terminal
            print(table(info))
            print(f"\n  plots: {', '.join(str(p) for p in paths)}", flush=True)
            if not args.watch or info.status in TERMINAL:
                break
            time.sleep(args.watch)
    return 0


def build_parser() -> argparse.ArgumentParser:
    server = argparse.ArgumentParser(add_help=False)  # accepted before or after the action
    server.add_argument("--base-url", default=argparse.SUPPRESS, help="server URL (default: HUABU_BASE_URL)")
    server.add_argument("--api-key", default=argparse.SUPPRESS, help="admin API key (default: HUABU_API_KEY)")
    parser = argparse.ArgumentParser(
        prog="huabu rollout", description="canary rollouts (needs an admin API key)", parents=[server]
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("start", help="start moving traffic to the canary, step by step", parents=[server])
    p.add_argument("--canary", help="canary model name@version (default: the served canary variant)")
    p.add_argument("--stable", help="stable model name@version (default: the served stable variant)")
    p.add_argument("--id", help="rollout id (default: derived from the canary and the time)")
    p.add_argument("--steps", help="canary percents, e.g. 1,5,10,25,50,100")
    p.add_argument("--min-samples", type=int, help="canary requests per step before it may advance")
    p.add_argument("--min-step-seconds", type=float, help="minimum time per step")
    p.add_argument("--policy", help='more policy fields as JSON, e.g. \'{"quality": {"margin": 0.05}}\'')
    sub.add_parser("list", help="every rollout", parents=[server])
    for name, text in (
        ("status", "where a rollout stands"),
        ("pause", "hold the traffic split; the policy stops acting"),
        ("resume", "let the policy act again (a new phase)"),
        ("promote", "send all traffic to the canary now"),
        ("rollback", "send all traffic to the stable model now"),
        ("report", "the table and PNG plots"),
    ):
        p = sub.add_parser(name, help=text, parents=[server])
        p.add_argument("id", nargs="?", help="rollout id (default: the active rollout)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="the full status as JSON")
        elif name == "report":
            p.add_argument("--out", default="rollout-report", help="folder for the PNGs (default: rollout-report)")
            p.add_argument("--watch", type=float, metavar="SECONDS", help="redraw every SECONDS until it ends")
        else:
            p.add_argument("--reason", help="why (kept in the rollout's history)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with Client(base_url=getattr(args, "base_url", None), api_key=getattr(args, "api_key", None)) as client:
            return run(args, client)
    except (HuabuError, ValueError) as exc:  # API errors carry the server's message; bad JSON in --policy
        print(f"huabu rollout: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``huabu rollout start|traffic|status|list|pause|resume|promote|rollback|report``: canary rollouts
from the command line, through ``client.rollouts`` (an admin API key: ``--api-key``, ``HUABU_API_KEY``,
or on a local ``huabu up`` server its development key).

``start`` builds the policy with ``huabu.ab_testing.build_policy``, the same function the example
script uses, so ``--min-samples`` reaches every guardrail's minimum. ``traffic`` sends simulated
users' requests (and simulated feedback) until the rollout ends. ``report`` prints the table and
writes ``traffic.png``, ``latency.png`` and ``quality.png``; with ``--watch SECONDS`` it redraws
until the rollout is promoted or rolled back.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from huabu.cluster.rollout_report import table, write_plots
from huabu.cluster.rollout_traffic import Traffic
from huabu.sdk import Client, HuabuError
from huabu.sdk.types import RolloutInfo

TERMINAL = ("promoted", "rolled_back")
STOPPED = (*TERMINAL, "paused")  # a paused rollout needs a person, not more traffic


def summary(info: RolloutInfo) -> str:
    last = info.last_decision
    why = f"\n  last decision: {last.action} ({last.code}) {last.reason}" if last else ""
    return (
        f"rollout {info.id}: {info.status}, canary {info.canary_model} at {info.canary_percent:g}% "
        f"(stable {info.stable_model}){why}"
    )


def _steps(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected percents like 5,25,50,100, got {text!r}") from None


def _policy(args: argparse.Namespace) -> dict[str, object]:
    from pydantic import ValidationError

    from huabu.ab_testing import build_policy

    try:
        overrides = json.loads(args.policy) if args.policy else None
        policy = build_policy(
            args.preset,
            steps=args.steps,
            min_samples=args.min_samples,
            min_step_seconds=args.min_step_seconds,
            overrides=overrides,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"policy.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return policy.model_dump(mode="json")


def run_traffic(client: Client, rollout_id: str | None, args: argparse.Namespace) -> RolloutInfo:
    """Simulated users until the rollout stops (or --requests are sent); a progress line every --every s."""
    info = client.rollouts.status(rollout_id)
    print(summary(info).splitlines()[0], flush=True)
    with Traffic(
        client,
        workers=args.workers,
        users=args.users,
        denoise_steps=args.denoise_steps,
        size=args.size,
        max_requests=args.requests,
    ) as traffic:
        while info.status not in STOPPED and not traffic.done.wait(args.every):
            info = client.rollouts.status(info.id)
            print(f"  {traffic.stats.line()}; canary at {info.canary_percent:g}% ({info.status})", flush=True)
    if traffic.stats.fatal:
        raise ValueError(f"traffic stopped: {traffic.stats.fatal}")
    info = client.rollouts.status(info.id)
    print(f"{traffic.stats.line()}\n{summary(info)}", flush=True)
    return info


def run(args: argparse.Namespace, client: Client) -> int:
    rollouts = client.rollouts
    if args.action == "start":
        info = rollouts.start(
            canary_model=args.canary, stable_model=args.stable, rollout_id=args.id, policy=_policy(args)
        )
        print(info.model_dump_json(indent=2) if args.json else summary(info))
    elif args.action == "traffic":
        info = run_traffic(client, args.id, args)
        return 0 if info.status in TERMINAL or args.requests else 1
    elif args.action == "list":
        listing = rollouts.list()
        if args.json:
            print(listing.model_dump_json(indent=2))
        for info in [] if args.json else listing.data:
            print(summary(info).splitlines()[0] + ("  <- active" if info.active else ""))
    elif args.action == "status":
        info = rollouts.status(args.id)
        print(info.model_dump_json(indent=2) if args.json else summary(info))
    elif args.action in ("pause", "resume", "promote", "rollback"):
        info = getattr(rollouts, args.action)(args.id, reason=args.reason)
        print(info.model_dump_json(indent=2) if args.json else summary(info))
    else:  # report
        out = Path(args.out)
        while True:
            info = rollouts.status(args.id)
            paths = write_plots(info, out, simulated_feedback=args.simulated_feedback)
            if args.json:
                print(info.model_dump_json(), flush=True)
            else:
                if args.watch and sys.stdout.isatty():
                    print("\x1b[2J\x1b[H", end="")  # redraw in place on a terminal
                print(table(info))
                print(f"\n  plots: {', '.join(str(p) for p in paths)}", flush=True)
            if not args.watch or info.status in STOPPED:
                break
            time.sleep(args.watch)
    return 0


def build_parser() -> argparse.ArgumentParser:
    server = argparse.ArgumentParser(add_help=False)  # accepted before or after the action
    server.add_argument("--base-url", default=argparse.SUPPRESS, help="server URL (default: HUABU_BASE_URL)")
    server.add_argument("--api-key", default=argparse.SUPPRESS, help="admin API key (default: HUABU_API_KEY)")
    server.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    parser = argparse.ArgumentParser(
        prog="huabu rollout", description="canary rollouts (needs an admin API key)", parents=[server]
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("start", help="start moving traffic to the canary, step by step", parents=[server])
    p.add_argument("--canary", help="canary model name@version (default: the served canary variant)")
    p.add_argument("--stable", help="stable model name@version (default: the served stable variant)")
    p.add_argument("--id", help="rollout id (default: derived from the canary and the time)")
    p.add_argument(
        "--preset",
        choices=["default", "demo"],
        default="default",
        help="default: production sizes (200 requests and 5 minutes per step); demo: a walkthrough's "
        "(tens of requests per step, wider margins; huabu.ab_testing.policy.PRESETS)",
    )
    p.add_argument("--steps", type=_steps, help="canary percents ending at 100, e.g. 5,25,50,100")
    p.add_argument(
        "--min-samples",
        type=int,
        help="canary requests per step before it may advance, and every guardrail's minimum per arm "
        "(p95 latency: at least 20)",
    )
    p.add_argument("--min-step-seconds", type=float, help="minimum time per step")
    p.add_argument("--policy", help='more policy fields as JSON, e.g. \'{"quality": {"margin": 0.05}}\'')
    p = sub.add_parser(
        "traffic",
        help="simulated users' requests and feedback until the rollout is promoted, rolled back or paused",
        parents=[server],
    )
    p.add_argument("id", nargs="?", help="rollout id (default: the active rollout)")
    p.add_argument("--requests", type=int, help="stop after this many requests instead")
    p.add_argument("--workers", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--users", type=int, default=200, help="simulated users, each sticky to a variant (default 200)")
    p.add_argument("--denoise-steps", type=int, default=8, help="denoising steps per image (default 8)")
    p.add_argument("--size", help="WIDTHxHEIGHT (default: the server's)")
    p.add_argument("--every", type=float, default=5.0, help="seconds between progress lines (default 5)")
    sub.add_parser("list", help="every rollout", parents=[server])
    for name, text in (
        ("status", "where a rollout stands"),
        ("pause", "hold the traffic split; the policy stops acting"),
        ("resume", "let the policy act again (a new phase)"),
        ("promote", "send all traffic to the canary now"),
        ("rollback", "send all traffic to the stable model now"),
        ("report", "the table and PNG plots (needs matplotlib: pip install 'huabu[report]')"),
    ):
        p = sub.add_parser(name, help=text, parents=[server])
        p.add_argument("id", nargs="?", help="rollout id (default: the active rollout)")
        if name == "report":
            p.add_argument("--out", default="rollout-report", help="folder for the PNGs (default: rollout-report)")
            p.add_argument("--watch", type=float, metavar="SECONDS", help="redraw every SECONDS until it ends")
            p.add_argument(
                "--simulated-feedback",
                action="store_true",
                help="label the acceptance rate as simulated (the feedback came from `huabu rollout traffic`)",
            )
        elif name != "status":
            p.add_argument("--reason", help="why (kept in the rollout's history)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
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

"""Roll tiny-mmdit@v2 out over tiny-mmdit@v1 with live traffic and a live report.

Simulated users (each a sticky ``user`` id) generate images from the synthetic caption language
and answer for some of them with simulated feedback (``huabu.cluster.rollout_traffic``, the same
traffic as ``huabu rollout traffic``); meanwhile the gateway's rollout controller moves the canary
through its steps, or rolls it back if a guardrail fails. Every few seconds this prints the rollout
table and redraws ``traffic.png``, ``latency.png`` and ``quality.png``. The policy comes from
``huabu.ab_testing.build_policy("demo", ...)``, as ``huabu rollout start --preset demo`` makes it.

    huabu up --settings examples/canary_rollout/settings.yaml
    python examples/canary_rollout/canary_rollout.py --out outputs/canary-report
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from huabu.ab_testing import build_policy
from huabu.cluster.rollout_cli import STOPPED, summary
from huabu.cluster.rollout_report import table, write_plots
from huabu.cluster.rollout_traffic import Traffic
from huabu.sdk import Client, HuabuError
from huabu.sdk.types import RolloutInfo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="server URL (default: HUABU_BASE_URL, else the local server)")
    parser.add_argument("--api-key", help="an admin API key (default: HUABU_API_KEY, else the local dev key)")
    parser.add_argument("--canary", help="the canary model (default: the server's canary variant)")
    parser.add_argument("--steps", help="canary percents (default: the demo preset's 20,50,100)")
    parser.add_argument("--min-samples", type=int, help="per step and guardrail (default: the demo preset's 10)")
    parser.add_argument("--users", type=int, default=200, help="simulated users (default 200)")
    parser.add_argument("--workers", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--denoise-steps", type=int, default=8, help="denoising steps per image (default 8)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between reports (default 5)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--out", default="outputs/canary-report", help="folder for the PNG plots")
    args = parser.parse_args(argv)

    steps = [float(s) for s in args.steps.split(",")] if args.steps else None
    policy = build_policy("demo", steps=steps, min_samples=args.min_samples)
    out = Path(args.out)
    try:
        with Client(base_url=args.base_url, api_key=args.api_key, timeout=120) as client:
            info: RolloutInfo = client.rollouts.start(canary_model=args.canary, policy=policy.model_dump(mode="json"))
            print(f"started {summary(info)}", flush=True)
            deadline = time.monotonic() + args.timeout
            with Traffic(client, workers=args.workers, users=args.users, denoise_steps=args.denoise_steps) as traffic:
                while not traffic.done.wait(args.every):
                    info = client.rollouts.status(info.id)
                    write_plots(info, out, simulated_feedback=True)
                    print(f"\n{table(info)}\n  traffic: {traffic.stats.line()}; plots in {out}/", flush=True)
                    if info.status in STOPPED or time.monotonic() > deadline:
                        break
            if traffic.stats.fatal:
                raise ValueError(f"traffic stopped at the first request that cannot succeed: {traffic.stats.fatal}")
            info = client.rollouts.status(info.id)
            write_plots(info, out, simulated_feedback=True)
    except (HuabuError, ValueError) as exc:  # a model the server does not serve, no admin key, no server
        print(f"canary_rollout: {exc}", file=sys.stderr)
        return 1
    verdict = {"promoted": "the canary now serves all traffic", "rolled_back": "the stable model serves everything"}
    print(f"\nrollout {info.id} ended {info.status}: {verdict.get(info.status, 'a person should look')}")
    return 0 if info.status in ("promoted", "rolled_back") else 1


if __name__ == "__main__":
    sys.exit(main())

"""Roll tiny-mmdit@v2 out over tiny-mmdit@v1 with live traffic and a live report.

Simulated users (each a sticky ``user`` id) generate images from the synthetic caption language
and keep about 60 % of them (``client.feedback``); meanwhile the gateway's rollout controller moves
the canary through its steps, or rolls it back if a guardrail fails. Every few seconds this
prints the rollout table and redraws ``traffic.png``, ``latency.png`` and ``quality.png``.

    huabu up --settings examples/canary_rollout/settings.yaml
    python examples/canary_rollout/canary_rollout.py --out outputs/canary-report
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path

from huabu.cluster.rollout_report import table, write_plots
from huabu.sdk import Client, HuabuError
from huabu.sdk.types import RolloutInfo

COLORS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle"]
POSITIONS = ["on the left", "on the right", "at the top", "at the bottom"]
ZH = ["左边一个红色圆形", "右边一个蓝色正方形", "上面一个绿色三角形"]


def prompt(rng: random.Random) -> str:
    if rng.random() < 0.25:
        return rng.choice(ZH)
    return f"a {rng.choice(COLORS)} {rng.choice(SHAPES)} {rng.choice(POSITIONS)}"


def traffic(client: Client, stop: threading.Event, worker: int, users: int, steps: int, errors: list[str]) -> None:
    """One simulated client: random users, each keeping ~60 % of their images."""
    rng = random.Random(worker)
    while not stop.is_set():
        user = f"user-{rng.randrange(users)}"
        try:
            image = client.images.generate(prompt(rng), user=user, steps=steps, seed=rng.randrange(2**31))[0]
            if image.id and rng.random() < 0.5:  # not everyone answers
                client.feedback.create(image_id=image.id, accepted=rng.random() < 0.6)
        except HuabuError as exc:  # a failing canary shows up here until it is rolled back
            errors.append(str(exc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="server URL (default: HUABU_BASE_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="an admin API key (default: HUABU_API_KEY)")
    parser.add_argument("--canary", default="tiny-mmdit@v2", help="the canary model (default tiny-mmdit@v2)")
    parser.add_argument("--steps", default="5,25,50,100", help="canary percents (default 5,25,50,100)")
    parser.add_argument("--min-samples", type=int, default=20, help="canary requests per step (default 20)")
    parser.add_argument("--users", type=int, default=200, help="simulated users (default 200)")
    parser.add_argument("--workers", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--denoise-steps", type=int, default=8, help="denoising steps per image (default 8)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between reports (default 5)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--out", default="outputs/canary-report", help="folder for the PNG plots")
    args = parser.parse_args(argv)

    # A demo-sized policy: small samples per step, no minimum time, decisions on point estimates
    # until 50 % and on anytime-valid evidence of non-inferiority from there on.
    policy = {
        "steps": [float(s) for s in args.steps.split(",")],
        "min_samples_per_step": args.min_samples,
        "min_step_seconds": 0,
        "evidence_from_percent": 50,
        "planned_samples": 200,
        "error_rate": {"margin": 0.05, "min_samples": args.min_samples},
        "filter_block_rate": {"margin": 0.05, "min_samples": args.min_samples},
        "quality": {"margin": 0.1, "min_samples": args.min_samples},
        "latency": {"max_p95_ratio": 1.5, "min_samples": max(20, args.min_samples)},
    }
    out = Path(args.out)
    with Client(base_url=args.base_url, api_key=args.api_key, timeout=120) as client:
        info: RolloutInfo = client.rollouts.start(canary_model=args.canary, policy=policy)
        print(f"started rollout {info.id}: {info.stable_model} -> {info.canary_model} at {info.canary_percent:g}%")
        stop, errors = threading.Event(), list[str]()
        workers = [
            threading.Thread(target=traffic, args=(client, stop, k, args.users, args.denoise_steps, errors))
            for k in range(args.workers)
        ]
        for w in workers:
            w.start()
        deadline = time.monotonic() + args.timeout
        try:
            while True:
                time.sleep(args.every)
                info = client.rollouts.status(info.id)
                write_plots(info, out)
                print(f"\n{table(info)}\n  failed requests so far: {len(errors)}; plots in {out}/", flush=True)
                if info.status in ("promoted", "rolled_back", "paused") or time.monotonic() > deadline:
                    break
        finally:
            stop.set()
            for w in workers:
                w.join()
    verdict = {"promoted": "the canary now serves all traffic", "rolled_back": "the stable model serves everything"}
    print(f"\nrollout {info.id} ended {info.status}: {verdict.get(info.status, 'a person should look')}")
    return 0 if info.status in ("promoted", "rolled_back") else 1


if __name__ == "__main__":
    sys.exit(main())

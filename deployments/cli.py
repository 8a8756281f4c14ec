"""Server-side CLI commands (``huabu demo``, ``huabu up``, ...). The SDK's CLI delegates here so
that the client install never imports ray or torch."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

DEMO_PROMPTS = ["a red circle on the left", "左边一个蓝色正方形", "右边有个 yellow triangle"]


def demo(args: argparse.Namespace) -> int:
    """Generate, inpaint and outpaint with the default model and write PNGs."""
    from huabu.deployments.mmdit import requests as R
    from huabu.deployments.mmdit.checkpoint import load_checkpoint
    from huabu.deployments.mmdit.pipeline import Pipeline
    from huabu.deployments.mmdit.png import encode_png

    pipeline = Pipeline(load_checkpoint(args.model))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = pipeline.config.default_size
    started = time.perf_counter()
    jobs: list[tuple[str, R.SampleRequest]] = [
        (f"generate-{i}", R.generation(p, seed=args.seed + i, size=size, steps=args.steps))
        for i, p in enumerate(DEMO_PROMPTS)
    ]
    first = pipeline([jobs[0][1]])[0].pixels
    assert first is not None
    mask = np.zeros(size, dtype=bool)
    mask[:, size[1] // 2 :] = True
    jobs.append(("inpaint", R.inpainting("a green square on the right", first, mask, seed=args.seed, steps=args.steps)))
    jobs.append(("outpaint", R.outpainting(DEMO_PROMPTS[0], first, right=16, seed=args.seed, steps=args.steps)))
    for (name, request), result in zip(jobs, pipeline([r for _, r in jobs])):
        assert result.pixels is not None
        path = out / f"{name}.png"
        path.write_bytes(encode_png(result.pixels, {"prompt": request.prompt, "seed": request.seed,
                                                     "steps": request.steps, "model": pipeline.model_id}))
        print(f"wrote {path} ({request.width}x{request.height}) prompt={request.prompt!r}")
    print(f"{len(jobs)} images from {pipeline.model_id} in {time.perf_counter() - started:.1f} s -> {out.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="huabu", description="huabu server commands")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="generate, inpaint and outpaint sample images and write PNGs")
    p.add_argument("--out", default="outputs", help="folder for the PNGs (default: outputs)")
    p.add_argument("--model", default="random-init@v0", help="checkpoint name@version")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

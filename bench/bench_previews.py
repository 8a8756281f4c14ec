"""What previews cost (#26): the bundled model with and without ``preview_every``, in-process, interleaved.

Each round runs the same request (same seed) twice, once without previews and once with a preview
every k steps (the x0 estimate decoded and reduced to <= 64 px, then PNG-encoded as the model stage
does), alternating which goes first; the result is the median of the per-round ratios.

    python bench/bench_previews.py --rounds 15 --size 256 --steps 30 --every 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from huabu.deployments.backends.mmdit.checkpoint import load_checkpoint
from huabu.deployments.backends.mmdit.pipeline import Pipeline
from huabu.deployments.backends.mmdit.png import encode_png
from huabu.deployments.backends.requests import SampleRequest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-mmdit@v1")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipeline = Pipeline(load_checkpoint(args.model))
    sizes: list[int] = []

    def on_preview(index: int, step: int, pixels: np.ndarray) -> None:
        sizes.append(len(encode_png(pixels, {}, 1)))  # the model stage encodes each preview so

    def run(every: int) -> float:
        request = SampleRequest(
            prompt="a red circle", seed=1, height=args.size, width=args.size, steps=args.steps, preview_every=every
        )
        started = time.perf_counter()
        pipeline([request], on_preview=on_preview if every else None)
        return time.perf_counter() - started

    run(0), run(args.every)  # warm-up
    ratios, plain, previewed = [], [], []
    for i in range(args.rounds):
        order = (0, args.every) if i % 2 == 0 else (args.every, 0)
        times = {every: run(every) for every in order}
        plain.append(times[0])
        previewed.append(times[args.every])
        ratios.append(times[args.every] / times[0])
    print(
        f"{args.model} {args.size}x{args.size} x {args.steps} steps, preview every {args.every}, {args.rounds} rounds: "
        f"without {statistics.median(plain) * 1000:.1f} ms, with {statistics.median(previewed) * 1000:.1f} ms, "
        f"median ratio {statistics.median(ratios):.4f}; previews {statistics.median(sizes)} bytes (median PNG)"
    )


if __name__ == "__main__":
    main()

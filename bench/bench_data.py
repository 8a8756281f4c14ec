"""What drawing a training batch costs against the training step it feeds, in one run.

The synthetic dataset is drawn on the fly (``synthetic.sample_batch``): it must stay a small
fraction of a step or it, not the model, sets the training speed. Interleaved rounds: draw a batch,
then run the bundled model's forward and backward on it (``train.flow_loss``); prints the medians
and their ratio (target <= 0.10 on CPU, where a step is cheapest relative to drawing).

Usage: python bench/bench_data.py [--rounds 21] [--batch 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from huabu.deployments.backends.mmdit.checkpoint import load_checkpoint
from huabu.deployments.backends.mmdit.training import synthetic
from huabu.deployments.backends.mmdit.training.train import flow_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--model", default="tiny-mmdit@v1")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = load_checkpoint(args.model)
    bundle.train()
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    draw_s, step_s = [], []
    for i in range(args.rounds + 2):  # two warm-up rounds
        start = time.perf_counter()
        batch = synthetic.sample_batch(rng, args.batch)
        drawn = time.perf_counter()
        height, width = batch.images.shape[1:3]
        f = bundle.config.codec.downsample
        noise = torch.randn(args.batch, bundle.config.latent_channels, height // f, width // f, generator=gen)
        t = torch.rand(args.batch, generator=gen)
        loss = flow_loss(bundle, batch.images, list(batch.captions), t, noise, torch.device("cpu"))
        loss.backward()
        bundle.zero_grad(set_to_none=True)
        if i >= 2:
            draw_s.append(drawn - start)
            step_s.append(time.perf_counter() - drawn)
    draw, step = statistics.median(draw_s), statistics.median(step_s)
    print(
        f"batch {args.batch}: draw {draw * 1e3:.1f} ms | forward+backward {step * 1e3:.1f} ms | "
        f"ratio {draw / step:.3f} (target <= 0.10), medians of {args.rounds} rounds"
    )


if __name__ == "__main__":
    main()

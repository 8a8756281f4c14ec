"""Our MMDiT forward pass against diffusers' QwenImageTransformer2DModel with the identical
configuration, interleaved in one process, with each one's FLOP/s against a matmul peak
measured in the same run. Usage: python bench/bench_transformer.py [--rounds N]"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from huabu.deployments.backends.mmdit.config import CodecConfig, MMDiTConfig, TextEncoderConfig
from huabu.deployments.backends.mmdit.model import MMDiT


def bench_config(depth: int, width: int, heads: int) -> MMDiTConfig:
    head_dim = width // heads
    rope_axes = (head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8)
    return MMDiTConfig(
        depth=depth,
        width=width,
        num_heads=heads,
        patch_size=2,
        text_width=width,
        rope_axes=rope_axes,
        pooled_text=False,
        prediction="velocity",
        codec=CodecConfig(kind="external", latent_channels=16, downsample=8),
        text=TextEncoderConfig(width=width, depth=1, num_heads=heads),
        default_size=(256, 256),
    )


def matmul_peak(seconds: float = 1.0, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    rates = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - start))
    return statistics.median(rates)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--grid", type=int, default=16, help="image tokens = grid^2")
    parser.add_argument("--text-tokens", type=int, default=24)
    args = parser.parse_args()

    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    cfg = bench_config(args.depth, args.width, args.heads)
    ours = MMDiT(cfg).eval()
    theirs = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=cfg.patch_dim,
        out_channels=cfg.latent_channels,
        num_layers=cfg.depth,
        attention_head_dim=cfg.head_dim,
        num_attention_heads=cfg.num_heads,
        joint_attention_dim=cfg.text_width,
        axes_dims_rope=cfg.rope_axes,
    ).eval()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())

    b, n_img, n_txt = args.batch, args.grid**2, args.text_tokens
    tokens = torch.randn(b, n_img, cfg.patch_dim)
    text = torch.randn(b, n_txt, cfg.text_width)
    text_mask = torch.ones(b, n_txt, dtype=torch.bool)
    t = torch.full((b,), 0.5)
    img_shapes = [[(1, args.grid, args.grid)]] * b

    def run_ours() -> object:
        return ours(tokens, text, text_mask, t, (args.grid, args.grid))

    def run_theirs() -> object:
        return theirs(
            hidden_states=tokens, encoder_hidden_states=text, timestep=t, img_shapes=img_shapes, return_dict=False
        )

    flops = ours.flops_per_forward(b, n_img, n_txt)
    with torch.inference_mode():
        for _ in range(2):
            run_ours(), run_theirs()
        peaks, t_ours, t_theirs = [], [], []
        for _ in range(args.rounds):  # interleaved so that machine noise hits both alike
            peaks.append(matmul_peak(0.2))
            t_ours.append(timed(run_ours))
            t_theirs.append(timed(run_theirs))
    peak = statistics.median(peaks)
    mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
    print(
        f"config: depth={cfg.depth} width={cfg.width} heads={cfg.num_heads} batch={b} tokens={n_img}+{n_txt} "
        f"threads={torch.get_num_threads()} params ours={n_ours:,} diffusers={n_theirs:,}"
    )
    print(f"matmul peak (median): {peak / 1e9:.1f} GFLOP/s; forward FLOPs {flops / 1e9:.2f} G")
    print(f"ours      median {mo * 1e3:7.1f} ms  {flops / mo / 1e9:6.1f} GFLOP/s  {flops / mo / peak:6.1%} of peak")
    print(f"diffusers median {mt * 1e3:7.1f} ms  {flops / mt / 1e9:6.1f} GFLOP/s  {flops / mt / peak:6.1%} of peak")
    print(f"time ratio ours/diffusers: {mo / mt:.3f} (target <= 0.75); ours of peak target >= 70%")


if __name__ == "__main__":
    main()

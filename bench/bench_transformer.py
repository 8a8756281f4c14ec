"""Our MMDiT forward pass against diffusers' QwenImageTransformer2DModel on identical weights
(diffusers' random init, converted into ours by ``convert.py``; the outputs are checked to agree),
interleaved in one process, with each one's FLOP/s against a matmul peak measured in the same run.
Usage: python bench/bench_transformer.py [--rounds N]; a Qwen-Image-like token mix (long text,
1024 image tokens): --grid 32 --text-tokens 256 --batch 1"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from huabu.deployments.backends.mmdit.convert import config_from_diffusers, state_dict_from_diffusers
from huabu.deployments.backends.mmdit.model import MMDiT


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
    head_dim = args.width // args.heads
    theirs = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=args.depth,
        attention_head_dim=head_dim,
        num_attention_heads=args.heads,
        joint_attention_dim=args.width,
        axes_dims_rope=(head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8),
    ).eval()
    cfg = config_from_diffusers(dict(theirs.config))
    ours = MMDiT(cfg).eval()
    ours.load_state_dict(state_dict_from_diffusers(theirs.state_dict()), strict=True)  # identical weights
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
        out, ref = run_ours(), run_theirs()[0]  # type: ignore[index]
        error = (out - ref).abs().max().item()  # type: ignore[operator]
        assert error <= 1e-4, f"the two models disagree by {error}: not the same function"
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
    print(f"max abs difference of the outputs: {error:.1e}")
    print(f"matmul peak (median): {peak / 1e9:.1f} GFLOP/s; forward FLOPs {flops / 1e9:.2f} G")
    print(f"ours      median {mo * 1e3:7.1f} ms  {flops / mo / 1e9:6.1f} GFLOP/s  {flops / mo / peak:6.1%} of peak")
    print(f"diffusers median {mt * 1e3:7.1f} ms  {flops / mt / 1e9:6.1f} GFLOP/s  {flops / mt / peak:6.1%} of peak")
    print(f"time ratio ours/diffusers: {mo / mt:.3f} (target <= 0.75); ours of peak target >= 70%")


if __name__ == "__main__":
    main()

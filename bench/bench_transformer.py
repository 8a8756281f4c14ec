"""Our MMDiT forward pass against diffusers' QwenImageTransformer2DModel on identical weights
(diffusers' random init, converted into ours by ``convert.py``; the outputs are checked to agree),
interleaved in one process, with each one's FLOP/s against a matmul peak measured in the same run.

The peak is the rate of plain ``torch.matmul`` on exactly the matmuls of one forward (every
linear's (rows, in, out) and the attention's batched q k^T and weights v, with their counts), in
float32 and in the model dtype, the faster of the two; FLOPs are counted from the same shapes.
"Of peak" is therefore the share of the forward's time that a bare GEMM of its shapes would need.

Timing is CPU time of the process (``time.process_time``): with ``--threads 1`` on a shared machine
it does not count the time other work holds the core; wall time is printed beside it.

Configs (Qwen-Image's block structure: head dim 128, rotary axes (16, 56, 56), tanh GELU, QK
RMSNorm, its rotary layout and timestep rounding; only the width, depth and text width are small):
  small: depth 4, width 256 (2 heads), batch 2, 256 image + 32 text tokens
  mid:   depth 2, width 768 (6 heads), batch 1, 1024 image + 256 text tokens (matmuls dominate)
Usage: python bench/bench_transformer.py [--config small|mid] [--dtype float32|bfloat16]
       [--rounds N] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from huabu.deployments.backends.mmdit.convert import config_from_diffusers, state_dict_from_diffusers
from huabu.deployments.backends.mmdit.model import MMDiT

CONFIGS = {
    "small": dict(depth=4, width=256, heads=2, batch=2, grid=16, text_tokens=32),
    "mid": dict(depth=2, width=768, heads=6, batch=1, grid=32, text_tokens=256),
}


@dataclass(frozen=True)
class MatmulShape:
    """``count`` matmuls of (batch, m, k) @ (batch, k, n) in one forward."""

    batch: int
    m: int
    k: int
    n: int
    count: int

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n * self.count


def forward_matmuls(model: MMDiT, batch: int, n_image: int, n_text: int) -> list[MatmulShape]:
    """Every matmul of ``MMDiT.forward``; the modulation and timestep linears run on 8 rows
    (``RowStableLinear``)."""
    cfg = model.config
    d, hidden, s = cfg.width, int(cfg.width * cfg.mlp_ratio), n_image + n_text
    rows = max(batch, 8)
    shapes = [
        MatmulShape(1, batch * n_image, cfg.patch_dim, d, 1),  # image_in
        MatmulShape(1, batch * n_text, cfg.text_width, d, 1),  # text_in
        MatmulShape(1, batch * n_image, d, cfg.patch_dim, 1),  # final
        MatmulShape(1, rows, 256, d, 1),  # timestep MLP
        MatmulShape(1, rows, d, d, 1),
        MatmulShape(1, rows, d, 2 * d, 1),  # final modulation
        MatmulShape(1, rows, d, 6 * d, 2 * cfg.depth),  # block modulation, both streams
        MatmulShape(batch * cfg.num_heads, s, cfg.head_dim, s, cfg.depth),  # q k^T
        MatmulShape(batch * cfg.num_heads, s, s, cfg.head_dim, cfg.depth),  # weights v
    ]
    for tokens in (n_image, n_text):
        for k, n in ((d, 3 * d), (d, d), (d, hidden), (hidden, d)):  # qkv, out, fc1, fc2
            shapes.append(MatmulShape(1, batch * tokens, k, n, cfg.depth))
    return shapes


def matmul_time(shapes: list[MatmulShape], dtype: torch.dtype, clock: Callable[[], float]) -> float:
    """Seconds plain torch.matmul takes for all of ``shapes`` (each timed once, times its count)."""
    total = 0.0
    for sh in shapes:
        a = torch.randn(sh.batch, sh.m, sh.k, dtype=dtype)
        b = torch.randn(sh.batch, sh.k, sh.n, dtype=dtype)
        torch.matmul(a, b)  # warm: the first call of a shape allocates
        start = clock()
        torch.matmul(a, b)
        total += (clock() - start) * sh.count
    return total


def build(args: argparse.Namespace, dtype: torch.dtype) -> tuple[MMDiT, torch.nn.Module]:
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    head_dim = args.width // args.heads
    axes = (16, 56, 56) if head_dim == 128 else (head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8)
    theirs = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=args.depth,
        attention_head_dim=head_dim,
        num_attention_heads=args.heads,
        joint_attention_dim=args.width,
        axes_dims_rope=axes,
    ).eval()
    ours = MMDiT(config_from_diffusers(dict(theirs.config))).eval()
    ours.load_state_dict(state_dict_from_diffusers(theirs.state_dict()), strict=True)  # identical weights
    return ours.to(dtype), theirs.to(dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    for name in ("depth", "width", "heads", "batch", "grid", "text_tokens"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"override the config's {name}")
    args = parser.parse_args()
    for name, value in CONFIGS[args.config].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    ours, theirs = build(args, dtype)
    cfg = ours.config
    b, n_img, n_txt = args.batch, args.grid**2, args.text_tokens
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(b, n_img, cfg.patch_dim, generator=g).to(dtype)
    text = torch.randn(b, n_txt, cfg.text_width, generator=g).to(dtype)
    text_mask = torch.ones(b, n_txt, dtype=torch.bool)
    t = torch.full((b,), 0.5)
    img_shapes = [[(1, args.grid, args.grid)]] * b

    def run_ours() -> torch.Tensor:
        return ours(tokens, text, text_mask, t, (args.grid, args.grid))

    def run_theirs() -> torch.Tensor:
        out = theirs(
            hidden_states=tokens, encoder_hidden_states=text, timestep=t, img_shapes=img_shapes, return_dict=False
        )
        return out[0]  # type: ignore[no-any-return]

    shapes = forward_matmuls(ours, b, n_img, n_txt)
    flops = sum(sh.flops for sh in shapes)
    clocks = {"cpu": time.process_time, "wall": time.perf_counter}
    times: dict[str, dict[str, list[float]]] = {c: {"ours": [], "diffusers": []} for c in clocks}
    peaks: dict[str, list[float]] = {"float32": [], args.dtype: []}
    with torch.inference_mode():
        out, ref = run_ours().float(), run_theirs().float()
        error = (out - ref).abs().max().item()
        bound = 1e-4 if dtype == torch.float32 else 2**-5 * ref.abs().max().item()
        assert error <= bound, f"the two models disagree by {error}: not the same function"
        run_ours(), run_theirs()
        arms = {"ours": run_ours, "diffusers": run_theirs}
        for i in range(args.rounds):  # interleaved, order alternating, so machine noise hits both alike
            for name in ("ours", "diffusers") if i % 2 == 0 else ("diffusers", "ours"):
                wall, cpu = time.perf_counter(), time.process_time()
                arms[name]()
                times["cpu"][name].append(time.process_time() - cpu)
                times["wall"][name].append(time.perf_counter() - wall)
            for name in peaks:
                # A dtype whose matmuls are far slower than float32's (bfloat16 without native support)
                # cannot be the peak: measured once, not every round (it would take minutes).
                if i == 0 or max(peaks[name]) * 2 > max(peaks["float32"]):
                    peaks[name].append(flops / matmul_time(shapes, getattr(torch, name), time.process_time))

    peak_by_dtype = {name: statistics.median(v) for name, v in peaks.items()}
    peak = max(peak_by_dtype.values())
    load = os.getloadavg()[0]
    print(
        f"config {args.config}: depth={cfg.depth} width={cfg.width} heads={cfg.num_heads}x{cfg.head_dim} "
        f"batch={b} tokens={n_img} image + {n_txt} text, {args.dtype}, threads={torch.get_num_threads()}, "
        f"{args.rounds} rounds, load average {load:.1f}"
    )
    print(f"max abs difference of the outputs: {error:.1e} (bound {bound:.1e})")
    print(
        f"forward FLOPs {flops / 1e9:.2f} G (model's own count {ours.flops_per_forward(b, n_img, n_txt) / 1e9:.2f} G); "
        + ", ".join(f"matmul peak {k} {v / 1e9:.1f} GFLOP/s" for k, v in peak_by_dtype.items())
    )
    for clock in ("cpu", "wall"):
        mo, mt = statistics.median(times[clock]["ours"]), statistics.median(times[clock]["diffusers"])
        print(f"{clock} time medians:")
        for name, m in (("ours", mo), ("diffusers", mt)):
            print(f"  {name:<9} {m * 1e3:8.1f} ms  {flops / m / 1e9:6.1f} GFLOP/s  {flops / m / peak:6.1%} of peak")
        print(f"  ratio ours/diffusers {mo / mt:.3f} (target <= 0.75); ours of peak target >= 70%")


if __name__ == "__main__":
    main()

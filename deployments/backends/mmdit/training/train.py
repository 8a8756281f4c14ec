"""Train the bundled MMDiT (and its byte-level text encoder) on fresh synthetic batches.

``huabu train`` / ``python -m huabu.deployments.backends.mmdit.training.train``. Rectified flow, x_t
= (1 - t) x0 + t noise, the network predicts x0 ("sample") or the velocity. Every step draws a new
batch from the synthetic dataset (never a held-out triple), so there is no epoch and no overfitting
to a fixed set; the data stream, the noise and the timesteps come from generators seeded by
``--seed``, so a run is a pure function of its arguments on one machine (``--minutes`` only cuts it
short, and the record says so).

Checkpoints hold the EMA weights in float16. ``--save-at STEP:name@version`` writes snapshots mid-run;
``--state`` keeps the full training state (weights, EMA, optimizer, generators) so ``--resume``
continues a run exactly where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from huabu.deployments.backends.mmdit.checkpoint import (
    BUNDLED_ROOT,
    ModelBundle,
    load_checkpoint,
    parse_model_id,
    save_checkpoint,
)
from huabu.deployments.backends.mmdit.config import MMDiTConfig, TextEncoderConfig, tiny_config
from huabu.deployments.backends.mmdit.eval.adherence import evaluate
from huabu.deployments.backends.mmdit.model import patchify
from huabu.deployments.backends.mmdit.pipeline import Pipeline, to_unit_range
from huabu.deployments.backends.mmdit.sampler import shift_mu
from huabu.deployments.backends.mmdit.training import grammar, synthetic
from huabu.deployments.backends.requests import generation

# Mostly the default 32x32, sometimes wider or taller: outpainting grows the canvas, and a model that
# never saw a wide canvas leaves the new strip empty.
CANVASES: tuple[tuple[int, int], ...] = ((32, 32), (32, 48), (48, 32), (32, 64), (64, 32))
EVAL_STEPS = 20
EVAL_GUIDANCE = 3.0


@dataclass
class TrainArgs:
    model_id: str = "tiny-mmdit@v1"
    out: Path = BUNDLED_ROOT
    seed: int = 0
    steps: int = 3000
    minutes: float | None = None
    until: int | None = None  # stop after this step; the schedule still spans ``steps`` (resume later)
    batch_size: int = 32
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.05
    warmup: int = 150
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.998
    cond_dropout: float = 0.1
    t_mean: float = 0.0  # logit-normal location before the resolution shift
    t_std: float = 1.0
    t_uniform: float = 0.0  # share of timesteps drawn uniformly instead (covers t near 1, where sampling starts)
    wide_fraction: float = 0.2  # share of steps on a non-square canvas
    width: int = 128
    depth: int = 4
    num_heads: int = 4
    text_width: int = 128
    text_depth: int = 2
    prediction: str = "sample"
    device: str = "auto"
    threads: int | None = None
    log_every: int = 25
    eval_every: int = 250
    eval_repeats: int = 1
    curve: Path | None = None
    state: Path | None = None
    resume: Path | None = None
    restart: bool = False  # on resume: a new warmup + cosine cycle from the resumed step to ``steps``
    cycle_start: int = 0  # step where the current LR cycle began (0, or where --restart resumed)
    save_at: list[tuple[int, str]] = field(default_factory=list)
    dtype: str = "float16"
    init_from: str | None = None  # fine-tune: start from this checkpoint's weights (and config)
    grammar_share: float = 0.0  # share of captions drawn from the caption grammar (grammar.py)
    sampling_steps: int | None = None  # recommended sampling written into the checkpoint's config
    sampling_guidance: float | None = None
    argv: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Pieces


def rope_axes_for(head_dim: int) -> tuple[int, int, int]:
    """(text, row, column) rotary split of a head: ~1/4 for the text index, rows = columns."""
    text = max(2, head_dim // 4 // 2 * 2)
    if (head_dim - text) % 4:
        text += 2
    side = (head_dim - text) // 2
    return (text, side, side)


def model_config(args: TrainArgs) -> MMDiTConfig:
    return tiny_config(
        width=args.width,
        depth=args.depth,
        num_heads=args.num_heads,
        rope_axes=rope_axes_for(args.width // args.num_heads),
        text_width=args.text_width,
        text=TextEncoderConfig(width=args.text_width, depth=args.text_depth, num_heads=4),
        prediction=args.prediction,
    )


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(step: int, args: TrainArgs) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the peak at ``args.steps`` (one cycle,
    starting at ``args.cycle_start``: 0, or the step a ``--restart`` resume continued from)."""
    step, total = step - args.cycle_start, args.steps - args.cycle_start
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def sample_t(n: int, n_tokens: int, config: MMDiTConfig, args: TrainArgs, gen: torch.Generator) -> Tensor:
    """Logit-normal times, shifted towards noise as the sampler's schedule is for this resolution,
    so training spends its steps where sampling evaluates the model (layout is decided at high t)."""
    u = torch.sigmoid(args.t_mean + args.t_std * torch.randn(n, generator=gen))
    if args.t_uniform > 0:
        # The logit-normal almost never draws t > 0.93, yet sampling starts at t = 1 and decides the
        # layout (colour, position) there: a uniform share trains those first steps.
        uniform = torch.rand(n, generator=gen)
        u = torch.where(torch.rand(n, generator=gen) < args.t_uniform, uniform, u)
    shift = math.exp(shift_mu(config, n_tokens))
    return shift * u / (1 + (shift - 1) * u)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class EMA:
    """Exponential moving average of a bundle's floating-point tensors, with a warm start."""

    def __init__(self, bundle: ModelBundle, decay: float) -> None:
        self.bundle = copy.deepcopy(bundle).eval()
        self.bundle.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, bundle: ModelBundle) -> None:
        self.updates += 1
        # Early on the average would remember the random init: ramp the decay up (DiT-style warmup).
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema: list[torch.Tensor] = list(self.bundle.parameters())
        live = [p.detach() for p in bundle.parameters()]
        torch._foreach_lerp_(ema, live, 1.0 - decay)


def encode_text(bundle: ModelBundle, prompts: list[str], device: torch.device) -> tuple[Tensor, Tensor]:
    """Encode prompts cropped to the longest in the batch: trailing pads are masked everywhere,
    so cropping changes no real token's output and saves most of the text compute."""
    tokens = bundle.text_encoder.tokenizer(prompts)
    length = int(tokens.mask.sum(1).max())
    ids, mask = tokens.ids[:, :length].to(device), tokens.mask[:, :length].to(device)
    return bundle.text_encoder(ids, mask), mask


def flow_loss(
    bundle: ModelBundle, images: np.ndarray, prompts: list[str], t: Tensor, noise: Tensor, device: torch.device
) -> Tensor:
    """Rectified-flow loss of one batch: MSE of the prediction (x0 or velocity) in latent space."""
    cfg = bundle.config
    x0 = bundle.codec.encode(to_unit_range(images).to(device))  # (B, C, h, w)
    noise = noise.to(device)
    tt = t.to(device).view(-1, 1, 1, 1)
    x_t = (1 - tt) * x0 + tt * noise
    p = cfg.patch_size
    grid = (x0.shape[2] // p, x0.shape[3] // p)
    text, mask = encode_text(bundle, prompts, device)
    out = bundle.transformer(patchify(x_t, p), text, mask, t.to(device), grid)  # (B, N, P)
    target = x0 if cfg.prediction == "sample" else noise - x0
    return F.mse_loss(out, patchify(target, p))


@torch.no_grad()
def quick_eval(bundle: ModelBundle, device: torch.device, repeats: int = 1, grammar: bool = False) -> dict[str, float]:
    """Adherence of ``bundle`` on the held-out triples (every language) at the default sampling settings;
    with ``grammar`` also on the caption grammar's held-out templates (``t_`` metrics)."""
    metrics = _adherence(bundle, device, synthetic.eval_items(held_out=True, seed=0, per_triple=repeats))
    if grammar:
        items = synthetic.grammar_eval_items("held-out templates", seed=0, per_triple=repeats)
        metrics |= {f"t_{k}": v for k, v in _adherence(bundle, device, items).items()}
    return metrics


def _adherence(bundle: ModelBundle, device: torch.device, items: list[synthetic.EvalItem]) -> dict[str, float]:
    pipe = Pipeline(bundle, device=device)
    requests = [
        generation(it.prompt, seed=1000 + i, size=(32, 32), steps=EVAL_STEPS, guidance=EVAL_GUIDANCE)
        for i, it in enumerate(items)
    ]
    results = pipe(requests)
    scores = [evaluate(r.pixels, it.spec) for r, it in zip(results, items, strict=True) if r.pixels is not None]
    n = max(1, len(scores))
    return {
        "color": sum(s.color for s in scores) / n,
        "position": sum(s.position for s in scores) / n,
        "color_position": sum(s.color_position for s in scores) / n,
        "shape": sum(s.shape for s in scores) / n,
    }


# --------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainResult:
    bundle: ModelBundle  # live weights
    ema: ModelBundle
    step: int
    curve: list[dict[str, Any]]
    wall_s: float
    stopped_by: str
    saved: list[Path]


def _state(
    bundle: ModelBundle,
    ema: EMA,
    opt: torch.optim.Optimizer,
    step: int,
    data_rng: np.random.Generator,
    gen: torch.Generator,
    curve: list[dict[str, Any]],
    wall_s: float,
    config: MMDiTConfig,
    cycle_start: int,
) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "model": bundle.state_dict(),
        "ema": ema.bundle.state_dict(),
        "ema_updates": ema.updates,
        "optimizer": opt.state_dict(),
        "step": step,
        "data_rng": data_rng.bit_generator.state,
        "torch_gen": gen.get_state(),
        "curve": curve,
        "wall_s": wall_s,
        "cycle_start": cycle_start,
    }


def train(args: TrainArgs, log: Any = print) -> TrainResult:
    parse_model_id(args.model_id)
    for _, snap_id in args.save_at:
        parse_model_id(snap_id)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    # Deterministic kernels cost nothing on the CPU; on CUDA some ops would need a workspace env var.
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    torch.manual_seed(args.seed)  # module construction (init) draws from the global generator
    resumed = torch.load(args.resume, map_location="cpu", weights_only=False) if args.resume else None
    init = load_checkpoint(args.init_from) if args.init_from and not resumed else None
    config = MMDiTConfig.from_dict(resumed["config"]) if resumed else init.config if init else model_config(args)
    if args.sampling_steps is not None or args.sampling_guidance is not None:
        config = dataclasses.replace(
            config,
            sampling=dataclasses.replace(
                config.sampling,
                steps=args.sampling_steps or config.sampling.steps,
                guidance=config.sampling.guidance if args.sampling_guidance is None else args.sampling_guidance,
            ),
        )
    bundle = ModelBundle(config, args.model_id).to(device)
    if init is not None:  # fine-tuning: the checkpoint's (EMA) weights are the start of both copies
        bundle.load_state_dict(init.state_dict())
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in bundle.parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.99),
    )
    ema = EMA(bundle, args.ema_decay)
    data_rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    curve: list[dict[str, Any]] = []
    step, wall_before = 0, 0.0
    if resumed:
        bundle.load_state_dict(resumed["model"])
        ema.bundle.load_state_dict(resumed["ema"])
        ema.updates = resumed["ema_updates"]
        opt.load_state_dict(resumed["optimizer"])
        step, curve, wall_before = resumed["step"], resumed["curve"], resumed["wall_s"]
        data_rng.bit_generator.state = resumed["data_rng"]
        gen.set_state(resumed["torch_gen"])
        # A restart begins a fresh LR cycle here (the optimizer moments and EMA carry over).
        args.cycle_start = step if args.restart else resumed.get("cycle_start", 0)
        log(f"resumed {args.resume} at step {step}")
    n_params = sum(p.numel() for p in bundle.parameters())
    log(
        f"training {args.model_id}: {n_params / 1e6:.2f} M params on {device}, "
        f"threads {torch.get_num_threads()}, batch {args.batch_size}, steps {args.steps}"
    )

    start = time.monotonic()
    window_t, window_loss, window_steps = time.monotonic(), 0.0, 0
    saved: list[Path] = []
    snapshots = dict(args.save_at)
    stopped_by = "steps"

    def elapsed() -> float:
        return wall_before + time.monotonic() - start

    def checkpoint(model_id: str, metrics: dict[str, float] | None) -> Path:
        ema.bundle.model_id = model_id
        record = {
            "model_id": model_id,
            "command": " ".join(["huabu", "train", *args.argv]),
            "argv": args.argv,
            "seed": args.seed,
            "data_version": synthetic.DATA_VERSION
            + (f"+{grammar.GRAMMAR_VERSION} (share {args.grammar_share})" if args.grammar_share else ""),
            "init_from": args.init_from,
            "sampling": dataclasses.asdict(config.sampling),
            "steps": step,
            "planned_steps": args.steps,
            "batch_size": args.batch_size,
            "wall_time_s": round(elapsed(), 1),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "params": n_params,
            "weights": "EMA",
            "stopped_by": stopped_by,
            "lr_cycle_start": args.cycle_start,
            "resumed_from": str(args.resume) if args.resume else None,
            "final_metrics": metrics or {},
            "git_commit": git_commit(),
            "torch": torch.__version__,
        }
        path = save_checkpoint(ema.bundle, args.out, record, dtype=getattr(torch, args.dtype))
        if args.curve is None:
            _write_curve(path / "curve.csv", curve)
        log(f"saved {path}")
        saved.append(path)
        return path

    bundle.train()
    last = min(args.steps, args.until) if args.until is not None else args.steps
    while step < last:
        if args.minutes is not None and elapsed() >= args.minutes * 60:
            stopped_by = "minutes"
            break
        # One canvas per step (a batch is one tensor); mostly the default size.
        canvas = CANVASES[0]
        if data_rng.random() < args.wide_fraction:
            canvas = CANVASES[1 + int(data_rng.integers(len(CANVASES) - 1))]
        batch = synthetic.sample_batch(data_rng, args.batch_size, canvas, grammar_share=args.grammar_share)
        # Conditioning dropout: the empty prompt is what the sampler's unconditional pass encodes.
        drop = data_rng.random(args.batch_size) < args.cond_dropout
        prompts = ["" if d else c for c, d in zip(batch.captions, drop, strict=True)]
        n_tokens = (canvas[0] // config.pixel_multiple) * (canvas[1] // config.pixel_multiple)
        t = sample_t(args.batch_size, n_tokens, config, args, gen)
        noise = torch.randn(
            args.batch_size,
            config.latent_channels,
            canvas[0] // config.codec.downsample,
            canvas[1] // config.codec.downsample,
            generator=gen,
        )
        lr = lr_at(step, args)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = flow_loss(bundle, batch.images, prompts, t, noise, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bundle.parameters(), args.grad_clip)
        opt.step()
        ema.update(bundle)
        step += 1
        window_loss += loss.item()
        window_steps += 1

        if step % args.log_every == 0 or step == last:
            now = time.monotonic()
            rate = window_steps / max(now - window_t, 1e-9)
            row: dict[str, Any] = {
                "step": step,
                "loss": round(window_loss / window_steps, 5),
                "lr": lr,
                "it_s": round(rate, 3),
                "wall_s": round(elapsed(), 1),
            }
            curve.append(row)
            log(f"step {step:6d}  loss {row['loss']:.4f}  lr {lr:.2e}  {rate:.2f} it/s  {row['wall_s']:.0f} s")
            window_t, window_loss, window_steps = now, 0.0, 0
        if args.eval_every and (step % args.eval_every == 0 or step in snapshots):
            metrics = quick_eval(ema.bundle, device, args.eval_repeats, args.grammar_share > 0)
            curve.append({"step": step, "wall_s": round(elapsed(), 1), **{k: round(v, 4) for k, v in metrics.items()}})
            log(f"eval  {step:6d}  " + "  ".join(f"{k} {v:.0%}" for k, v in metrics.items()))
            if args.curve is not None:
                _write_curve(args.curve, curve)
            bundle.train()
        if step in snapshots:
            checkpoint(snapshots[step], _last_eval(curve))
        if args.state is not None and args.eval_every and step % args.eval_every == 0:
            torch.save(
                _state(bundle, ema, opt, step, data_rng, gen, curve, elapsed(), config, args.cycle_start), args.state
            )

    if stopped_by == "steps" and step < args.steps:
        stopped_by = "until"
    final: dict[str, float] | None = _last_eval(curve)
    if args.eval_every and (final is None or curve[-1].get("step") != step or "color" not in curve[-1]):
        final = quick_eval(ema.bundle, device, args.eval_repeats, args.grammar_share > 0)
        curve.append({"step": step, "wall_s": round(elapsed(), 1), **{k: round(v, 4) for k, v in final.items()}})
        log(f"eval  {step:6d}  " + "  ".join(f"{k} {v:.0%}" for k, v in final.items()))
    if args.curve is not None:
        _write_curve(args.curve, curve)
    if args.state is not None:
        torch.save(
            _state(bundle, ema, opt, step, data_rng, gen, curve, elapsed(), config, args.cycle_start), args.state
        )
    if args.model_id not in snapshots.values():
        checkpoint(args.model_id, final)
    log(f"done: {step} steps in {elapsed():.0f} s ({stopped_by})")
    return TrainResult(bundle, ema.bundle, step, curve, elapsed(), stopped_by, saved)


def _last_eval(curve: list[dict[str, Any]]) -> dict[str, float] | None:
    evals = [r for r in curve if "color" in r]
    return {k: v for k, v in evals[-1].items() if k not in ("step", "wall_s")} if evals else None


def _write_curve(path: Path, curve: list[dict[str, Any]]) -> None:
    """CSV with one row per log line or eval (empty cells where a row has no such column)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = ["color", "position", "color_position", "shape"]
    columns = ["step", "wall_s", "loss", "lr", "it_s", *metrics, *(f"t_{m}" for m in metrics)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(curve)


# --------------------------------------------------------------------------------------------
# CLI


def _snapshot(value: str) -> tuple[int, str]:
    step, _, model_id = value.partition(":")
    if not step.isdigit() or not model_id:
        raise argparse.ArgumentTypeError(f"--save-at wants STEP:name@version, got {value!r}")
    parse_model_id(model_id)
    return int(step), model_id


def build_parser() -> argparse.ArgumentParser:
    d = TrainArgs()
    p = argparse.ArgumentParser(prog="huabu train", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-id", default=d.model_id, help="name@version of the checkpoint to write")
    p.add_argument("--out", type=Path, default=d.out, help="checkpoint root (default: the bundled weights)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--steps", type=int, default=d.steps, help="planned steps (the LR schedule spans them)")
    p.add_argument("--minutes", type=float, default=None, help="stop early after this much wall time")
    p.add_argument("--until", type=int, default=None, help="stop after this step (resume later with --resume)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--ema-decay", type=float, default=d.ema_decay)
    p.add_argument("--cond-dropout", type=float, default=d.cond_dropout, help="share of empty prompts (for CFG)")
    p.add_argument("--t-mean", type=float, default=d.t_mean, help="logit-normal timestep location")
    p.add_argument("--t-std", type=float, default=d.t_std)
    p.add_argument("--t-uniform", type=float, default=d.t_uniform, help="share of uniformly drawn timesteps")
    p.add_argument("--wide-fraction", type=float, default=d.wide_fraction, help="share of non-square canvases")
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--depth", type=int, default=d.depth)
    p.add_argument("--num-heads", type=int, default=d.num_heads)
    p.add_argument("--text-width", type=int, default=d.text_width)
    p.add_argument("--text-depth", type=int, default=d.text_depth)
    p.add_argument("--prediction", choices=("sample", "velocity"), default=d.prediction)
    p.add_argument("--device", default=d.device, help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="quick held-out eval period; 0: never")
    p.add_argument("--eval-repeats", type=int, default=d.eval_repeats, help="scenes per held-out triple")
    p.add_argument("--curve", type=Path, default=None, help="learning curve CSV (default: in the checkpoint)")
    p.add_argument("--state", type=Path, default=None, help="write the resumable training state here")
    p.add_argument("--resume", type=Path, default=None, help="continue from a --state file")
    p.add_argument(
        "--restart",
        action="store_true",
        help="with --resume: start a new warmup + cosine LR cycle from the resumed step to --steps",
    )
    p.add_argument(
        "--save-at",
        type=_snapshot,
        action="append",
        default=[],
        metavar="STEP:name@version",
        help="also write a checkpoint of the EMA weights at this step",
    )
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default=d.dtype)
    p.add_argument("--init-from", default=None, metavar="name@version", help="fine-tune from this checkpoint")
    p.add_argument(
        "--grammar-share", type=float, default=d.grammar_share, help="share of captions from the caption grammar"
    )
    p.add_argument("--sampling-steps", type=int, default=None, help="recommended steps, stored in the checkpoint")
    p.add_argument(
        "--sampling-guidance", type=float, default=None, help="recommended guidance, stored in the checkpoint"
    )
    return p


def parse_args(argv: Sequence[str]) -> TrainArgs:
    ns = build_parser().parse_args(list(argv))
    values = {k: v for k, v in vars(ns).items()}
    return TrainArgs(**values, argv=list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    result = train(args, log=lambda msg: print(msg, flush=True))
    print(
        json.dumps(
            {
                "steps": result.step,
                "wall_s": round(result.wall_s, 1),
                "stopped_by": result.stopped_by,
                "saved": [str(p) for p in result.saved],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

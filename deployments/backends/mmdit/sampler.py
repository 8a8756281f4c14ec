"""Rectified-flow sampling: x_t = (1 - t) x_0 + t noise, integrated from t = 1 to 0 by Euler
steps on a timestep schedule shifted by resolution (SD3 / Flux)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from huabu.deployments.backends.mmdit.config import MMDiTConfig


def shift_mu(config: MMDiTConfig, n_tokens: int) -> float:
    """Log shift, linear in the image token count between base_tokens and max_tokens."""
    span = config.max_tokens - config.base_tokens
    frac = min(max((n_tokens - config.base_tokens) / span, 0.0), 1.0)
    return config.base_shift + frac * (config.max_shift - config.base_shift)


def timesteps(steps: int, mu: float) -> Tensor:
    """steps + 1 times from 1 to 0; larger images spend more steps at high noise."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    shifted = math.exp(mu) / (math.exp(mu) + (1.0 / t[:-1] - 1.0))
    return torch.cat([shifted, t[-1:]]).float()


def velocity_from_output(output: Tensor, x_t: Tensor, t: Tensor, prediction: str) -> Tensor:
    """The network predicts either the velocity (noise - x_0) or the clean sample x_0."""
    if prediction == "velocity":
        return output
    # t is never 0 here: the schedule evaluates the model only at t > 0.
    return (x_t - output) / t.view(-1, *([1] * (x_t.dim() - 1)))


def guided(v_cond: Tensor, v_uncond: Tensor, guidance: Tensor) -> Tensor:
    """Classifier-free guidance per request. guidance == 1 returns v_cond exactly, so a request
    gives the same bits whether or not its batch computes an unconditional pass."""
    g = guidance.view(-1, *([1] * (v_cond.dim() - 1)))
    mixed = v_uncond + g * (v_cond - v_uncond)
    return torch.where(g == 1.0, v_cond, mixed)


def euler_sample(
    velocity: Callable[[Tensor, Tensor], Tensor],  # (x_t, t (B,)) -> v
    x: Tensor,  # starting latents at times[0]
    times: Tensor,  # (K + 1,) descending
    after_step: Callable[[int, int, Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """Integrate dx/dt = v from times[0] to times[-1]. ``after_step(step, total, x, t_next)``
    may replace x (inpainting blends the known region back) or raise to stop the integration."""
    total = len(times) - 1
    for i in range(total):
        t, t_next = times[i], times[i + 1]
        v = velocity(x, t.expand(x.shape[0]))
        x = x + (t_next - t) * v
        if after_step is not None:
            x = after_step(i + 1, total, x, t_next)
    return x

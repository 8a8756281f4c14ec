"""Denoising one step at a time over requests that are each at their own step: the own MMDiT's
iteration-level sampling (the replica's scheduler, ``deployments/step_scheduler.py``, drives it).

A ``StepState`` is one request between steps: its text, noise, schedule, latents and step
counter. ``Stepper.step`` advances any states of one size by one step with one transformer
forward (the model takes a time per sample), so requests may join and leave between steps. Every
row computes what it computes alone (the layers are row-stable, ``layers.RowStableLinear``), so an
image is the same bits alone, request-batched (``Pipeline.__call__``) or joined mid-way.

Step caching (``SampleRequest.cache_threshold``, First-Block-Cache): the first block always runs;
when its residual changed less than the threshold (mean absolute change relative to its mean
magnitude) since the branch's last full evaluation, the other blocks are skipped and their cached
residual is added instead. The conditional and unconditional (CFG) branches of a request keep
their own caches and decide separately, so caching works with guidance on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from huabu.deployments.backends.contract import PreviewCallback, SampleResult
from huabu.deployments.backends.mmdit.model import MMDiT, patchify, unpatchify
from huabu.deployments.backends.mmdit.pipeline import Pipeline, to_uint8
from huabu.deployments.backends.mmdit.sampler import guided, shift_mu, timesteps, velocity_from_output
from huabu.deployments.backends.requests import SampleRequest

StepPreview = Callable[[int, np.ndarray], None]  # (step, (h, w, 3) uint8 x0 estimate)


def for_one(callback: StepPreview) -> PreviewCallback:
    """A batch's preview callback (request index first) for a lone request."""
    return lambda _index, step, pixels: callback(step, pixels)


@dataclass
class BranchCache:
    """One branch's (conditional or unconditional) residuals at its last full evaluation."""

    first: Tensor | None = None  # the first block's image residual (N, D)
    rest: Tensor | None = None  # what the other blocks added to the image stream (N, D)


@dataclass
class StepState:
    """One request between steps (see the module docstring)."""

    request: SampleRequest
    text: Tensor  # (1 or 2, L, Dt): conditional, then unconditional when guided
    text_mask: Tensor  # (1 or 2, L)
    truncated: bool
    noise: Tensor  # (C, h, w)
    known: Tensor | None  # (C, h, w) latents of the image being edited
    latent_mask: Tensor | None  # (1, h, w) bool, True = repaint
    times: Tensor  # (steps + 1,) the request's schedule from its first step
    x: Tensor  # (C, h, w) the current latents
    step: int = 0  # steps done
    caches: list[BranchCache] = field(default_factory=list)  # one per branch when caching
    full_evaluations: int = 0  # branch evaluations that ran every block

    @property
    def total(self) -> int:
        return len(self.times) - 1

    @property
    def done(self) -> bool:
        return self.step >= self.total

    @property
    def guided(self) -> bool:
        return self.text.shape[0] == 2

    @property
    def bucket(self) -> tuple[int, int]:
        """States of one bucket step together: one size (the schedules may differ)."""
        return (self.request.height, self.request.width)


class Stepper:
    """Starts, steps and finishes ``StepState``s on a ``Pipeline``'s model (one thread at a time)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.config = pipeline.config
        self.device = pipeline.device
        self.dtype = pipeline.dtype

    @torch.inference_mode()
    def start(self, request: SampleRequest) -> StepState:
        """Validate a request and make its state before the first step (InvalidRequest if bad)."""
        request.validate(self.pipeline.limits)
        cfg, bundle = self.config, self.pipeline.bundle
        height, width, steps, start = request.shape_key
        lat_h, lat_w = height // cfg.codec.downsample, width // cfg.codec.downsample
        grid = (lat_h // cfg.patch_size, lat_w // cfg.patch_size)
        text, text_mask, truncated = bundle.text_encoder.encode([request.prompt])
        if request.guidance != 1.0:
            negative, negative_mask, _ = bundle.text_encoder.encode([request.negative_prompt])
            text, text_mask = torch.cat([text, negative]), torch.cat([text_mask, negative_mask])
        generator = torch.Generator().manual_seed(request.seed)
        noise = torch.randn(cfg.latent_channels, lat_h, lat_w, generator=generator).to(self.device)
        known, latent_mask = self.pipeline._edit_inputs([request], lat_h, lat_w)
        times = timesteps(steps, shift_mu(cfg, grid[0] * grid[1])).to(self.device)[start:]
        x = noise if known is None else (1 - times[0]) * known[0] + times[0] * noise
        return StepState(
            request=request,
            text=text,
            text_mask=text_mask,
            truncated=truncated[0],
            noise=noise,
            known=None if known is None else known[0],
            latent_mask=None if latent_mask is None else latent_mask[0],
            times=times,
            x=x,
            caches=[BranchCache() for _ in range(text.shape[0])] if request.cache_threshold > 0 else [],
        )

    @torch.inference_mode()
    def step(self, states: list[StepState], previews: Mapping[int, StepPreview] | None = None) -> None:
        """One Euler step for each state (all of one bucket, none done), in one forward: the
        conditional rows of all states, then the unconditional rows of the guided ones.
        ``previews``: index in ``states`` -> callback for those due a preview at this step."""
        cfg, p = self.config, self.config.patch_size
        guided_ix = [i for i, s in enumerate(states) if s.guided]
        x = torch.stack([s.x for s in states])  # (B, C, h, w)
        t = torch.stack([s.times[s.step] for s in states])  # (B,)
        t_next = torch.stack([s.times[s.step + 1] for s in states])
        tokens = patchify(x, p)
        rows = list(range(len(states))) + guided_ix  # the state of each forward row
        branches = [(s, 0) for s in states] + [(states[i], 1) for i in guided_ix]
        text = torch.cat([s.text[:1] for s in states] + [states[i].text[1:] for i in guided_ix])
        text_mask = torch.cat([s.text_mask[:1] for s in states] + [states[i].text_mask[1:] for i in guided_ix])
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        out = self._forward(tokens[rows].to(self.dtype), text, text_mask, t[rows], grid, branches).float()
        b = len(states)
        v = velocity_from_output(out[:b], tokens, t, cfg.prediction)
        if guided_ix:
            ix = torch.tensor(guided_ix, device=v.device)
            uncond = velocity_from_output(out[b:], tokens[ix], t[ix], cfg.prediction)
            guidance = torch.tensor([states[i].request.guidance for i in guided_ix], device=v.device)
            v[ix] = guided(v[ix], uncond, guidance)
        v = unpatchify(v, p, cfg.latent_channels, *grid)
        x_next = x + (t_next - t).view(-1, 1, 1, 1) * v
        for i, state in enumerate(states):
            state.step += 1
            new = x_next[i]
            if state.known is not None and state.latent_mask is not None:
                # Inpainting: the known region follows the forward process of the input image.
                tn = state.times[state.step]
                new = torch.where(state.latent_mask, new, (1 - tn) * state.known + tn * state.noise)
            state.x = new
            if previews and i in previews and not state.done:  # rectified flow: x0 = x_t - t v
                x0 = x[i : i + 1] - t[i] * v[i : i + 1]
                self.pipeline._previews([state.request], state.step, x0, for_one(previews[i]))

    def _forward(
        self,
        tokens: Tensor,
        text: Tensor,
        text_mask: Tensor,
        t: Tensor,
        grid: tuple[int, int],
        branches: list[tuple[StepState, int]],
    ) -> Tensor:
        """The transformer over the rows; rows whose branch caches may skip all blocks but the first."""
        model: MMDiT = self.pipeline.bundle.transformer
        caching = [bool(s.caches) for s, _ in branches]
        if not any(caching):
            for state, _ in branches:
                state.full_evaluations += 1
            return model(tokens, text, text_mask, t, grid)
        e = model.embed(tokens, text, text_mask, t, grid)
        blocks = list(model.blocks)
        img, txt = blocks[0](e.img, e.txt, e.c, e.rope, e.attn_mask)
        first = img - e.img
        full: list[int] = []
        for row, (state, branch) in enumerate(branches):
            cache = state.caches[branch] if caching[row] else None
            if cache is None or cache.first is None or cache.rest is None:
                full.append(row)
                continue
            change = (first[row] - cache.first).abs().mean() / cache.first.abs().mean().clamp_min(1e-12)
            if float(change) >= state.request.cache_threshold:
                full.append(row)
        out = img.clone()
        skipped = [row for row in range(len(branches)) if row not in full]
        for row in skipped:
            state, branch = branches[row]
            rest = state.caches[branch].rest
            assert rest is not None
            out[row] = img[row] + rest
        if full:
            ix = torch.tensor(full, device=img.device)
            sub_img, sub_txt = img[ix], txt[ix]
            c, mask = e.c[ix], None if e.attn_mask is None else e.attn_mask[ix]
            for block in blocks[1:]:
                sub_img, sub_txt = block(sub_img, sub_txt, c, e.rope, mask)
            out[ix] = sub_img
            for k, row in enumerate(full):
                state, branch = branches[row]
                state.full_evaluations += 1
                if caching[row]:
                    state.caches[branch] = BranchCache(first=first[row].clone(), rest=sub_img[k] - img[row])
        return model.final(out, e.c)

    @torch.inference_mode()
    def finish(self, states: list[StepState]) -> list[SampleResult]:
        """Decode states that are done (any sizes) into their images."""
        results = []
        for state in states:
            image = to_uint8(self.pipeline.bundle.codec.decode(state.x[None].to(self.dtype)))[0]
            request = state.request
            if request.mask is not None and request.init_image is not None:
                # Outside the mask the output is the input, exactly.
                image = np.where(request.mask[..., None], image, request.init_image)
            results.append(
                SampleResult(pixels=image, prompt_truncated=state.truncated, full_evaluations=state.full_evaluations)
            )
        return results

    def cancelled(self, state: StepState) -> SampleResult:
        return SampleResult(pixels=None, prompt_truncated=state.truncated, cancelled=True)

    def run(
        self,
        requests: list[SampleRequest],
        on_step: Callable[[list[int], int, int], None] | None = None,
        is_cancelled: Callable[[int], bool] | None = None,
        on_preview: PreviewCallback | None = None,
    ) -> list[SampleResult]:
        """Requests to the end in lockstep: request-level batching of step-cached requests
        (``Pipeline.__call__``'s arguments)."""
        states = [self.start(r) for r in requests]
        live = list(range(len(states)))
        results: dict[int, SampleResult] = {}
        while live:
            if is_cancelled is not None:
                for i in [i for i in live if is_cancelled(i)]:
                    results[i] = self.cancelled(states[i])
                    live.remove(i)
            buckets: dict[tuple[int, int], list[int]] = {}
            for i in live:
                buckets.setdefault(states[i].bucket, []).append(i)
            for ix in buckets.values():
                due = {k: functools.partial(on_preview, i) for k, i in enumerate(ix)} if on_preview else None
                self.step([states[i] for i in ix], due)
                if on_step is not None:
                    for i in ix:
                        on_step([i], states[i].step, states[i].total)
            done = [i for i in live if states[i].done]
            for i, result in zip(done, self.finish([states[i] for i in done]), strict=True):
                results[i] = result
            live = [i for i in live if not states[i].done]
        return [results[i] for i in range(len(states))]

"""Text-to-image pipeline over a batch of requests: generate, inpaint, outpaint, img2img.

Each request keeps its own prompt, negative prompt and seed; requests of the same shape
(``SampleRequest.shape_key``) are sampled together. Noise comes from a per-request generator so
a request's result does not depend on what else is in its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from huabu.deployments.backends.contract import (
    PREVIEW_MAX_SIDE,
    CancelCheck,
    ModelLimits,
    PreviewCallback,
    ProgressCallback,
    SampleResult,
)
from huabu.deployments.backends.mmdit.checkpoint import ModelBundle
from huabu.deployments.backends.mmdit.model import patchify, unpatchify
from huabu.deployments.backends.mmdit.sampler import euler_sample, guided, shift_mu, timesteps, velocity_from_output
from huabu.deployments.backends.requests import SampleRequest

if TYPE_CHECKING:
    from huabu.deployments.backends.mmdit.stepping import Stepper


class _AllCancelled(Exception):
    pass


def to_unit_range(images: np.ndarray) -> Tensor:
    # (B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1]
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(pixels: Tensor) -> np.ndarray:
    # (B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8
    return ((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Pipeline:
    """Text (and an image to edit) -> pixels: the own MMDiT backend (backends/contract.py). The
    networks run in ``dtype``; the sampler's state (latents, timesteps, guidance) stays float32, so
    that half-precision steps still add up."""

    previews = True  # takes on_preview (backends/contract.py)

    def __init__(self, bundle: ModelBundle, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.bundle = bundle.to(device=device, dtype=dtype).eval()
        self.config = bundle.config
        self.limits: ModelLimits = bundle.config.limits()
        self._device = torch.device(device)
        self.dtype = dtype
        self.model_id = bundle.model_id

    @property
    def device(self) -> torch.device:
        return self._device

    def describe(self) -> dict[str, Any]:
        return {"backend": "mmdit", "dtype": str(self.dtype).removeprefix("torch."), "config": self.config.to_dict()}

    def stepper(self) -> Stepper:
        """Step-at-a-time sampling on this model (the replica's step scheduler, step caching)."""
        from huabu.deployments.backends.mmdit.stepping import Stepper  # it builds on this module

        return Stepper(self)

    @torch.inference_mode()
    def __call__(
        self,
        requests: list[SampleRequest],
        on_step: ProgressCallback | None = None,
        is_cancelled: CancelCheck | None = None,
        on_preview: PreviewCallback | None = None,
    ) -> list[SampleResult]:
        for request in requests:
            request.validate(self.limits)
        results: list[SampleResult | None] = [None] * len(requests)
        groups: dict[tuple[int, int, int, int], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.shape_key, []).append(index)
        for indices in groups.values():
            check = None if is_cancelled is None else (lambda i, _ix=indices: is_cancelled(_ix[i]))
            progress = None if on_step is None else (lambda step, total, _ix=indices: on_step(_ix, step, total))
            preview = None if on_preview is None else (lambda i, step, px, _ix=indices: on_preview(_ix[i], step, px))
            group = [requests[i] for i in indices]
            if any(r.cache_threshold for r in group):  # step caching lives in the stepper (mmdit/stepping.py)
                per_request = (
                    None
                    if on_step is None
                    else (lambda ix, step, total, _ix=indices: on_step([_ix[i] for i in ix], step, total))
                )
                sampled = self.stepper().run(group, per_request, check, preview)
            else:
                sampled = self._sample(group, progress, check, preview)
            for index, result in zip(indices, sampled, strict=True):
                results[index] = result
        return [r for r in results if r is not None]

    def _sample(
        self,
        requests: list[SampleRequest],
        on_step: Callable[[int, int], None] | None,
        is_cancelled: CancelCheck | None,
        on_preview: PreviewCallback | None = None,
    ) -> list[SampleResult]:
        cfg, bundle = self.config, self.bundle
        first = requests[0]
        height, width, steps, start = first.shape_key
        f, p = cfg.codec.downsample, cfg.patch_size
        lat_h, lat_w = height // f, width // f
        grid = (lat_h // p, lat_w // p)
        b = len(requests)

        text, text_mask, truncated = bundle.text_encoder.encode([r.prompt for r in requests])
        guidance = torch.tensor([r.guidance for r in requests], device=self.device)
        use_cfg = bool((guidance != 1.0).any())
        if use_cfg:
            negative, negative_mask, _ = bundle.text_encoder.encode([r.negative_prompt for r in requests])
            text, text_mask = torch.cat([text, negative]), torch.cat([text_mask, negative_mask])

        noise = torch.stack(
            [
                torch.randn(cfg.latent_channels, lat_h, lat_w, generator=torch.Generator().manual_seed(r.seed))
                for r in requests
            ]
        ).to(self.device)  # (B, C, h, w)

        known, latent_mask = self._edit_inputs(requests, lat_h, lat_w)
        times = timesteps(steps, shift_mu(cfg, grid[0] * grid[1])).to(self.device)[start:]
        x = noise if known is None else (1 - times[0]) * known + times[0] * noise

        wants_preview = on_preview is not None and any(r.preview_every > 0 for r in requests)
        x0_estimate: list[Tensor] = []  # the last step's prediction of the clean latents

        def transformer(tokens: Tensor, t: Tensor) -> Tensor:
            return bundle.transformer(tokens.to(self.dtype), text, text_mask, t, grid).float()

        def velocity(x_t: Tensor, t: Tensor) -> Tensor:
            tokens = patchify(x_t, p)
            if use_cfg:
                out_c, out_u = transformer(torch.cat([tokens, tokens]), torch.cat([t, t])).chunk(2)
                v = guided(
                    velocity_from_output(out_c, tokens, t, cfg.prediction),
                    velocity_from_output(out_u, tokens, t, cfg.prediction),
                    guidance,
                )
            else:
                v = velocity_from_output(transformer(tokens, t), tokens, t, cfg.prediction)
            v = unpatchify(v, p, cfg.latent_channels, *grid)
            if wants_preview:  # rectified flow: x_t = (1 - t) x0 + t noise and v = noise - x0
                x0_estimate[:] = [x_t - t.view(-1, 1, 1, 1) * v]
            return v

        def after_step(step: int, total: int, x_next: Tensor, t_next: Tensor) -> Tensor:
            if known is not None and latent_mask is not None:
                # Inpainting: the known region follows the forward process of the input image.
                x_next = torch.where(latent_mask, x_next, (1 - t_next) * known + t_next * noise)
            if wants_preview and step < total:  # before on_step: its progress event carries the preview
                self._previews(requests, step, x0_estimate[0], on_preview)
            if on_step is not None:
                on_step(step, total)
            if is_cancelled is not None and all(is_cancelled(i) for i in range(b)):
                raise _AllCancelled
            return x_next

        try:
            latents = euler_sample(velocity, x, times, after_step)
        except _AllCancelled:
            return [SampleResult(pixels=None, prompt_truncated=t, cancelled=True) for t in truncated]
        images = to_uint8(bundle.codec.decode(latents.to(self.dtype)))
        results = []
        for i, request in enumerate(requests):
            image = images[i]
            if request.mask is not None and request.init_image is not None:
                # Outside the mask the output is the input, exactly.
                image = np.where(request.mask[..., None], image, request.init_image)
            cancelled = is_cancelled is not None and is_cancelled(i)
            results.append(
                SampleResult(pixels=None if cancelled else image, prompt_truncated=truncated[i], cancelled=cancelled)
            )
        return results

    def _previews(
        self, requests: list[SampleRequest], step: int, x0: Tensor, on_preview: PreviewCallback | None
    ) -> None:
        """Decode the x0 estimate of the requests due a preview at this step, at most PREVIEW_MAX_SIDE a side."""
        due = [i for i, r in enumerate(requests) if r.preview_every > 0 and step % r.preview_every == 0]
        if not due or on_preview is None:
            return
        height, width = requests[0].height, requests[0].width
        scale = min(1.0, PREVIEW_MAX_SIDE / max(height, width))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        pixels = self.bundle.codec.decode(x0[due].to(self.dtype)).float()
        if pixels.shape[-2:] != size:
            pixels = F.interpolate(pixels, size=size, mode="area")
        for i, image in zip(due, to_uint8(pixels), strict=True):
            on_preview(i, step, image)

    def _edit_inputs(
        self, requests: list[SampleRequest], lat_h: int, lat_w: int
    ) -> tuple[Tensor | None, Tensor | None]:
        """Latents of the input images and the repaint mask at latent resolution, when editing."""
        if all(r.init_image is None for r in requests):
            return None, None
        h, w = requests[0].height, requests[0].width
        images = np.stack(
            [r.init_image if r.init_image is not None else np.zeros((h, w, 3), np.uint8) for r in requests]
        )
        known = self.bundle.codec.encode(to_unit_range(images).to(self.device, self.dtype)).float()
        # A request without a mask (generation or img2img) repaints everything.
        masks = np.stack([r.mask if r.mask is not None else np.ones((h, w), bool) for r in requests])
        mask = torch.from_numpy(masks).to(self.device, torch.float32)[:, None]
        # Any repainted pixel inside a latent cell repaints the whole cell. A boolean mask keeps
        # rows that repaint everything bit-identical to plain generation.
        latent_mask = F.adaptive_max_pool2d(mask, (lat_h, lat_w)) > 0.5
        for i, r in enumerate(requests):
            if r.init_image is None:
                known[i] = 0.0
        return known, latent_mask

"""Batches of ``SampleRequest`` through diffusers pipelines, under the same replica contract as the own
MMDiT (``backends/contract.py``):

- requests that agree on operation, size, steps, guidance and strength run as one pipeline call, each
  with its own prompt, negative prompt and CPU ``torch.Generator`` (the same seed gives the same
  noise on any device, and a request's noise does not depend on its batch);
- ``callback_on_step_end`` reports every step and, once every request of the call is cancelled, sets
  the pipeline's interrupt flag, so the remaining steps are skipped; pipelines that only take the
  older ``callback``/``callback_steps`` (PixArt) report through it and are stopped by an exception;
- the size asked for is the size rendered: pipelines that would snap it to a trained aspect-ratio bin
  and resize the result (``use_resolution_binning``) are told not to;
- inpainting answers the input's pixels outside the mask byte-exact (the VAE round trip would change
  them); outpainting arrives here already padded and masked (``backends/requests.py``);
- with ``model.transformer: own`` a Qwen-Image pipeline denoises with huabu's MMDiT on the same
  weights (``own_transformer.py``); everything else here is the same.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from huabu.deployments.backends.contract import (
    CancelCheck,
    Capability,
    ModelLimits,
    PreviewCallback,
    ProgressCallback,
    SampleResult,
)
from huabu.deployments.backends.diffusers.loading import DiffusionPipeline, LoadedPipelines, load_pipelines
from huabu.deployments.backends.diffusers.previews import LatentPreviewer
from huabu.deployments.backends.requests import SampleRequest, first_step
from huabu.deployments.core.settings import ModelDeploymentSettings, VariantSettings

# Qwen-Image's reference sampling turns true classifier-free guidance on only with a negative
# prompt; a blank one is what its examples pass when the user gives none.
BLANK_NEGATIVE = " "


@dataclass(frozen=True)
class CallKey:
    """Requests with equal keys share one pipeline call (its scalar arguments)."""

    capability: Capability
    height: int
    width: int
    steps: int
    guidance: float
    strength: float


def call_key(request: SampleRequest) -> CallKey:
    return CallKey(request.capability, request.height, request.width, request.steps, request.guidance, request.strength)


def truncate_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    data = text.encode()
    if len(data) <= max_bytes:
        return text, False
    return data[:max_bytes].decode(errors="ignore"), True


class Interrupted(Exception):
    """Raised from a pipeline's legacy ``callback``, which has no interrupt flag to set."""


def call_parameters(pipeline: DiffusionPipeline) -> set[str]:
    return set(inspect.signature(pipeline.__call__).parameters)


def default_side(main: DiffusionPipeline, vae_scale: int) -> int:
    """The pipeline's own default side in pixels: its ``default_sample_size`` where it keeps one,
    else the denoiser's trained ``sample_size`` (what PixArt's and SD's calls fall back to), in latents."""
    sample = getattr(main, "default_sample_size", None)
    if not isinstance(sample, int):
        denoiser = getattr(main, "transformer", None) or getattr(main, "unet", None)
        sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    return (sample if isinstance(sample, int) and sample > 0 else 128) * vae_scale


def call_defaults(pipeline: DiffusionPipeline) -> dict[str, Any]:
    """The keyword defaults of the pipeline's ``__call__`` (its recommended steps and guidance)."""
    return {
        name: p.default
        for name, p in inspect.signature(pipeline.__call__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


class DiffusersBackend:
    previews = True  # takes on_preview (backends/contract.py; diffusers/previews.py)

    def __init__(self, pipelines: LoadedPipelines, model_id: str, settings: ModelDeploymentSettings) -> None:
        self.pipelines = pipelines
        self.model_id = model_id
        main = pipelines.text_to_image
        self.pipeline_class = type(main).__name__
        self.dtype = main.dtype
        self.cpu_offload = settings.cpu_offload
        defaults = call_defaults(main)
        # Qwen-Image's guidance is true CFG (``true_cfg_scale``); SD3's and FLUX's is ``guidance_scale``.
        self.guidance_parameter = "true_cfg_scale" if "true_cfg_scale" in defaults else "guidance_scale"
        # Resolution binning renders at the nearest trained bucket (a 256x256 request at 1024x1024 on
        # PixArt) and resizes: the size checks, batching and cost all assume the requested size runs.
        self.fixed_arguments: dict[str, Any] = (
            {"use_resolution_binning": False} if "use_resolution_binning" in defaults else {}
        )
        self.limits = self._limits(main, defaults, settings)

    @classmethod
    def load(
        cls, variant: VariantSettings, settings: ModelDeploymentSettings, device: str, dtype: torch.dtype
    ) -> DiffusersBackend:
        pipelines = load_pipelines(
            variant.model,
            dtype,
            device,
            lora=variant.lora,
            cpu_offload=settings.cpu_offload,
            transformer=variant.transformer or settings.transformer,
        )
        return cls(pipelines, variant.model_id, settings)

    def _limits(
        self, main: DiffusionPipeline, defaults: dict[str, Any], settings: ModelDeploymentSettings
    ) -> ModelLimits:
        vae_scale = int(getattr(main, "vae_scale_factor", 8))
        transformer = getattr(main, "transformer", None)
        patch = int(getattr(getattr(transformer, "config", None), "patch_size", None) or 1)
        multiple = vae_scale * patch  # latents are vae_scale smaller, then packed patch x patch
        side = default_side(main, vae_scale)
        side = min(side - side % multiple, settings.max_side - settings.max_side % multiple)
        guidance = defaults.get(self.guidance_parameter)
        capabilities: tuple[Capability, ...] = ("generate",)
        if self.pipelines.inpaint is not None:
            capabilities += ("inpaint",)
        if self.pipelines.img2img is not None:
            capabilities += ("img2img",)
        return ModelLimits(
            default_size=(side, side),
            pixel_multiple=multiple,
            max_side=settings.max_side,
            steps=min(int(defaults.get("num_inference_steps") or 28), settings.max_steps),
            guidance=float(guidance) if guidance is not None else 1.0,
            max_steps=settings.max_steps,
            max_prompt_bytes=settings.max_prompt_bytes,
            capabilities=capabilities,
        )

    @property
    def device(self) -> torch.device:
        return torch.device(self.pipelines.text_to_image._execution_device)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "diffusers",
            "pipeline": self.pipeline_class,
            "dtype": str(self.dtype).removeprefix("torch."),
            "reference": self.pipelines.reference,
            "cpu_offload": self.cpu_offload,
            # "diffusers": the pipeline's own transformer; "own" / "own:<folder>": huabu's MMDiT
            "transformer": self.pipelines.transformer,
        }

    def __call__(
        self,
        requests: list[SampleRequest],
        on_step: ProgressCallback | None = None,
        is_cancelled: CancelCheck | None = None,
        on_preview: PreviewCallback | None = None,
    ) -> list[SampleResult]:
        for request in requests:
            request.validate(self.limits)
        groups: dict[CallKey, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(call_key(request), []).append(index)
        results: dict[int, SampleResult] = {}
        for key, indices in groups.items():
            for index, result in zip(
                indices,
                self._call(key, [requests[i] for i in indices], indices, on_step, is_cancelled, on_preview),
                strict=True,
            ):
                results[index] = result
        return [results[i] for i in range(len(requests))]

    def _pipeline_for(self, capability: Capability) -> DiffusionPipeline:
        pipeline = {
            "generate": self.pipelines.text_to_image,
            "inpaint": self.pipelines.inpaint,
            "img2img": self.pipelines.img2img,
        }[capability]
        assert pipeline is not None  # validate() refused what the model cannot do
        return pipeline

    @torch.inference_mode()
    def _call(
        self,
        key: CallKey,
        requests: list[SampleRequest],
        indices: list[int],
        on_step: ProgressCallback | None,
        is_cancelled: CancelCheck | None,
        on_preview: PreviewCallback | None = None,
    ) -> list[SampleResult]:
        pipeline = self._pipeline_for(key.capability)
        prompts = [truncate_utf8(r.prompt, self.limits.max_prompt_bytes) for r in requests]
        blank = BLANK_NEGATIVE if self.guidance_parameter == "true_cfg_scale" else ""
        negatives = [truncate_utf8(r.negative_prompt, self.limits.max_prompt_bytes)[0] or blank for r in requests]
        cancelled = [False] * len(requests)
        parameters = call_parameters(pipeline)
        # What the pipeline reports when it has no ``num_timesteps`` (img2img runs the last part).
        planned = key.steps - first_step(key.steps, key.strength)

        previewer = None
        if on_preview is not None and any(r.preview_every > 0 for r in requests):
            every = [r.preview_every for r in requests]
            previewer = LatentPreviewer(pipeline, key.height, key.width, every, indices, on_preview)

        def step_done(pipe: Any, step: int, latents: Any) -> bool:
            """Reports ``step`` (0-based) done; -> whether every request of the call is cancelled."""
            total = int(getattr(pipe, "num_timesteps", None) or planned)
            if previewer is not None and latents is not None:  # before on_step: its event carries it
                previewer(step + 1, total, latents)
            if on_step is not None:
                on_step(indices, step + 1, total)
            if is_cancelled is not None:
                cancelled[:] = [is_cancelled(i) for i in indices]
            return all(cancelled)

        def step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if step_done(pipe, step, tensors.get("latents")):
                pipe._interrupt = True  # the remaining steps are skipped
            return tensors

        def legacy_callback(step: int, timestep: Any, latents: Any) -> None:
            if step_done(pipeline, step, latents):
                raise Interrupted  # no interrupt flag in these pipelines' loops

        arguments: dict[str, Any] = {
            "prompt": [text for text, _ in prompts],
            "negative_prompt": negatives,
            self.guidance_parameter: key.guidance,
            "height": key.height,
            "width": key.width,
            "num_inference_steps": key.steps,
            "generator": [torch.Generator().manual_seed(r.seed) for r in requests],
            "output_type": "np",
            **self.fixed_arguments,
        }
        # Checked by name: pipelines with ``**kwargs`` would silently drop a callback they do not know.
        if "callback_on_step_end" in parameters:
            arguments["callback_on_step_end"] = step_end
        elif {"callback", "callback_steps"} <= parameters:
            arguments |= {"callback": legacy_callback, "callback_steps": 1}
        if key.capability != "generate":
            arguments["image"] = [Image.fromarray(r.init_image) for r in requests if r.init_image is not None]
            arguments["strength"] = key.strength
        if key.capability == "inpaint":  # white = repaint, as diffusers reads masks
            arguments["mask_image"] = [
                Image.fromarray(r.mask.astype(np.uint8) * 255) for r in requests if r.mask is not None
            ]
        try:
            images = pipeline(**arguments).images  # (B, H, W, 3) float in [0, 1]
        except Interrupted:
            return [SampleResult(pixels=None, prompt_truncated=t, cancelled=True) for _, t in prompts]
        pixels = (np.clip(images, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        results = []
        for i, request in enumerate(requests):
            image = pixels[i]
            if request.mask is not None and request.init_image is not None:
                image = np.where(request.mask[..., None], image, request.init_image)
            gone = cancelled[i] or (is_cancelled is not None and is_cancelled(indices[i]))
            results.append(SampleResult(pixels=None if gone else image, prompt_truncated=prompts[i][1], cancelled=gone))
        return results

"""Which backend serves a variant, chosen by its model reference: ``diffusers:<folder or hub id>`` ->
the diffusers backend; ``name@version`` -> the own MMDiT checkpoints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from huabu.deployments.backends.contract import Backend, ModelLimits
from huabu.deployments.backends.fixed_latency import FixedLatencyPipeline
from huabu.deployments.core.settings import DIFFUSERS_PREFIX, Settings, VariantSettings


def is_diffusers(model: str) -> bool:
    return model.startswith(DIFFUSERS_PREFIX)


def replica_device(settings: Settings) -> str:
    return "cuda" if settings.model.num_gpus > 0 and torch.cuda.is_available() else "cpu"


def load_backend(variant: VariantSettings, settings: Settings) -> Backend:
    """The variant's model on the replica's GPU when it has one, in ``model.dtype``, with the
    variant's default steps and guidance; held to ``model.fixed_latency`` where that is set."""
    device, dtype = replica_device(settings), getattr(torch, settings.model.dtype)
    backend: Backend
    if is_diffusers(variant.model):
        from huabu.deployments.backends.diffusers.backend import DiffusersBackend  # imports diffusers: seconds

        backend = DiffusersBackend.load(variant, settings.model, device, dtype)
    else:
        from huabu.deployments.backends.mmdit.checkpoint import load_checkpoint
        from huabu.deployments.backends.mmdit.pipeline import Pipeline

        backend = Pipeline(load_checkpoint(variant.model, [Path(p) for p in settings.model_dirs]), device, dtype)
    backend.limits = with_variant_defaults(backend.limits, variant)
    fixed = settings.model.fixed_latency
    if fixed is None:
        return backend
    return FixedLatencyPipeline(backend, fixed.seconds, fixed.batching_efficiency, fixed.memory_pixels)


def check_model(variant: VariantSettings, settings: Settings) -> None:
    """What can be told about a variant's model before anything is deployed (``huabu up`` fails on it
    at once rather than leaving a half-deployed application)."""
    if is_diffusers(variant.model):
        from huabu.deployments.backends.diffusers.loading import check_reference

        check_reference(variant.model)
    else:
        from huabu.deployments.backends.mmdit.checkpoint import find_checkpoint

        find_checkpoint(variant.model, [Path(p) for p in settings.model_dirs])


def with_variant_defaults(limits: ModelLimits, variant: VariantSettings) -> ModelLimits:
    """The variant's own default steps, guidance and step caching over the model's (e.g. a few-step LoRA)."""
    steps = variant.steps if variant.steps is not None else limits.steps
    guidance = variant.guidance if variant.guidance is not None else limits.guidance
    cache = variant.cache_steps.threshold if variant.cache_steps is not None else limits.cache_threshold
    return replace(limits, steps=min(steps, limits.max_steps), guidance=guidance, cache_threshold=cache)

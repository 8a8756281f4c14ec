"""From a ``diffusers:<folder or hub id>`` reference to loaded pipelines: the text-to-image pipeline
and, sharing its components (no second copy of the weights), the inpainting and image-to-image
pipelines diffusers pairs with it. LoRA adapters are fused into the weights at load, so they cost
nothing per step.

A hub id resolves through the Hugging Face cache (``HF_HOME``): on a cluster it downloads once per
machine; with ``HF_HUB_OFFLINE=1`` only what is cached loads.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import torch

from huabu.deployments.core.settings import DIFFUSERS_PREFIX, LoraSettings

# A diffusers pipeline. Its call, LoRA and device methods come from per-model classes and mixins
# that the base class does not declare, so it is typed loosely.
DiffusionPipeline: TypeAlias = Any

logger = logging.getLogger("huabu.model")


class ModelLoadError(RuntimeError):
    """A model reference that cannot be served; the message names it and says why."""


def reference_of(model: str) -> str:
    """``diffusers:Qwen/Qwen-Image`` -> ``Qwen/Qwen-Image``."""
    reference = model.removeprefix(DIFFUSERS_PREFIX).strip()
    if not reference:
        raise ModelLoadError(f"{model!r} names no pipeline: use {DIFFUSERS_PREFIX}<folder or hub id>")
    return reference


def looks_like_path(reference: str) -> bool:
    return reference.startswith(("/", "./", "../", "~")) or Path(reference).expanduser().exists()


def check_reference(model: str) -> None:
    """Fail before anything is deployed on what can be told without loading: a folder that is not a
    saved diffusers pipeline, or a string that is neither a folder nor a hub id."""
    reference = reference_of(model)
    if looks_like_path(reference):
        folder = Path(reference).expanduser()
        if not (folder / "model_index.json").is_file():
            raise ModelLoadError(
                f"{model!r}: {folder} is not a saved diffusers pipeline (no model_index.json); "
                "point at the folder `save_pretrained` wrote or give a hub id such as Qwen/Qwen-Image"
            )
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(reference)
    except HFValidationError as exc:
        raise ModelLoadError(f"{model!r} is neither a folder nor a valid hub id: {exc}") from None


@dataclass
class LoadedPipelines:
    text_to_image: DiffusionPipeline
    inpaint: DiffusionPipeline | None  # None: diffusers pairs no inpainting pipeline with it
    img2img: DiffusionPipeline | None
    reference: str
    transformer: str = "diffusers"  # model.transformer: "diffusers", "own" or "own:<folder>"


def load_pipelines(
    model: str,
    dtype: torch.dtype,
    device: str,
    *,
    lora: list[LoraSettings],
    cpu_offload: bool,
    transformer: str = "diffusers",
) -> LoadedPipelines:
    import diffusers

    check_reference(model)
    reference = reference_of(model)
    source = str(Path(reference).expanduser()) if looks_like_path(reference) else reference
    own = transformer != "diffusers"
    components: dict[str, Any] = {}
    if own:
        # The own transformer streams from the files: a hub id is resolved to its cached folder.
        source = _local_folder(model, source)
        check_own_transformer(model, transformer, Path(source))
        if lora and transformer.startswith("own:"):
            raise ModelLoadError(
                f"model.transformer {transformer!r} loads converted weights, which cannot take {model!r}'s "
                "LoRA adapters: use model.transformer: own (converts the LoRA-fused weights at load)"
            )
        if not lora:  # LoRA fuses into diffusers' transformer, so only then is it built at all
            components["transformer"] = None
    try:
        pipeline = diffusers.DiffusionPipeline.from_pretrained(source, dtype=dtype, **components)
    except Exception as exc:  # a missing file, an unknown class, no network for an uncached hub id ...
        raise ModelLoadError(f"cannot load {model!r}: {type(exc).__name__}: {exc}") from exc
    if "prompt" not in inspect.signature(pipeline.__call__).parameters:
        raise ModelLoadError(f"{model!r} is a {type(pipeline).__name__}, which takes no text prompt")
    fuse_loras(pipeline, model, lora)
    if own:
        pipeline.transformer = _own_transformer(model, transformer, Path(source), pipeline.transformer, dtype)
    # Diffusers' model offload keeps each component on the CPU until it runs (cards smaller than
    # the model); otherwise everything lives on the device.
    if cpu_offload and device != "cpu":
        pipeline.enable_model_cpu_offload(device=device)
    else:
        pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return LoadedPipelines(
        text_to_image=pipeline,
        inpaint=_paired(diffusers.AutoPipelineForInpainting, pipeline),
        img2img=_paired(diffusers.AutoPipelineForImage2Image, pipeline),
        reference=reference,
        transformer=transformer,
    )


def _local_folder(model: str, source: str) -> str:
    if Path(source).is_dir():
        return source
    import diffusers

    try:
        return str(diffusers.DiffusionPipeline.download(source))
    except Exception as exc:
        raise ModelLoadError(f"cannot load {model!r}: {type(exc).__name__}: {exc}") from exc


def check_own_transformer(model: str, transformer: str, folder: Path) -> None:
    """Before any weight is read: ``model.transformer: own`` needs a Qwen-Image pipeline."""
    from huabu.deployments.backends.diffusers.own_transformer import SUPPORTED_PIPELINES

    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load {model!r}: {exc}") from exc
    pipeline_class = index.get("_class_name")
    denoiser = (index.get("transformer") or [None, None])[1]
    if pipeline_class not in SUPPORTED_PIPELINES or denoiser != "QwenImageTransformer2DModel":
        raise ModelLoadError(
            f"model.transformer {transformer!r} runs huabu's MMDiT in place of a Qwen-Image transformer, but "
            f"{model!r} is a {pipeline_class} (transformer {denoiser}); "
            f"use model.transformer: diffusers or a pipeline of {', '.join(SUPPORTED_PIPELINES)}"
        )


def _own_transformer(model: str, transformer: str, folder: Path, loaded: Any, dtype: torch.dtype) -> torch.nn.Module:
    """The own MMDiT for the pipeline: from a converted folder, from diffusers' LoRA-fused module, or
    streamed from the pipeline's ``transformer/`` shards."""
    from huabu.deployments.backends.diffusers import own_transformer
    from huabu.deployments.backends.mmdit.checkpoint import CheckpointError

    try:
        if transformer.startswith("own:"):
            own = own_transformer.from_own_dir(Path(transformer.removeprefix("own:")).expanduser(), folder, dtype)
        elif loaded is not None:
            own = own_transformer.from_diffusers_module(loaded)
        else:
            own = own_transformer.from_diffusers_dir(folder / "transformer", dtype)
    except (CheckpointError, own_transformer.OwnTransformerError, OSError, ValueError) as exc:
        raise ModelLoadError(f"model.transformer {transformer!r} cannot serve {model!r}: {exc}") from exc
    logger.info("%s: huabu's MMDiT (%s) replaces %s's transformer", model, transformer, folder.name)
    return own


def _paired(auto_class: Any, pipeline: DiffusionPipeline) -> DiffusionPipeline | None:
    """The pipeline of ``auto_class``'s task over the same components, or None when there is none."""
    try:
        paired = auto_class.from_pipe(pipeline)
    except (ValueError, KeyError, AttributeError, TypeError):
        return None
    paired.set_progress_bar_config(disable=True)
    return paired


def fuse_loras(pipeline: DiffusionPipeline, model: str, lora: list[LoraSettings]) -> None:
    if not lora:
        return
    if not hasattr(pipeline, "load_lora_weights"):
        raise ModelLoadError(f"{model!r} ({type(pipeline).__name__}) cannot load LoRA adapters")
    names = []
    for index, adapter in enumerate(lora):
        path = Path(adapter.path).expanduser()
        name = f"adapter{index}"
        try:
            if path.is_dir():
                pipeline.load_lora_weights(str(path), adapter_name=name)
            else:
                pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        except Exception as exc:
            raise ModelLoadError(f"cannot load LoRA {adapter.path!r} into {model!r}: {exc}") from exc
        names.append(name)
    pipeline.set_adapters(names, adapter_weights=[adapter.scale for adapter in lora])
    pipeline.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipeline.unload_lora_weights()  # the fused weights stay; the adapter layers go
    logger.info("fused %d LoRA adapter(s) into %s", len(names), model)

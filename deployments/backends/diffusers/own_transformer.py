"""huabu's own MMDiT in place of diffusers' ``QwenImageTransformer2DModel`` inside a Qwen-Image pipeline
(``model.transformer: own``): the pipeline keeps diffusers' text encoder, VAE, scheduler and sampling
loop, and every denoising step runs our transformer (fused q/k/v, one complex multiply for rotary
positions, fused bias+GELU), which computes the same function (tests/mmdit/test_qwen_parity.py).

Where its weights come from:

- the pipeline's own ``transformer/`` shards, converted at load one tensor at a time as ``convert.py``
  does, straight into the model (diffusers' transformer is never built: peak memory is one
  transformer plus one pending q/k/v triple);
- with LoRA adapters, diffusers' transformer after ``fuse_lora`` (the adapters need diffusers'
  modules), converted in memory: every tensor but the fused q/k/v is shared, not copied;
- ``own:<folder>``: a directory ``huabu convert`` wrote, checked against the pipeline's config.

``OwnQwenImageTransformer`` is the thin adapter: the forward signature, ``config``, ``dtype``,
``device`` and ``cache_context`` that the Qwen-Image pipelines use, translated to ``MMDiT.forward``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from huabu.deployments.backends.mmdit import convert
from huabu.deployments.backends.mmdit.config import MMDiTConfig
from huabu.deployments.backends.mmdit.model import MMDiT

# Pipelines whose transformer calls the own MMDiT can take: one image per sample (Qwen-Image-Edit
# adds a reference image to the sequence, which the own MMDiT does not model). The inpainting and
# image-to-image pipelines the backend pairs with QwenImagePipeline share its transformer.
SUPPORTED_PIPELINES = ("QwenImagePipeline", "QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline")
# Fields of MMDiTConfig that define the function; a converted directory must agree on all of them.
ARCHITECTURE_FIELDS = (
    "depth",
    "width",
    "num_heads",
    "mlp_ratio",
    "patch_size",
    "text_width",
    "rope_axes",
    "rope_theta",
    "rope_layout",
    "time_embedding",
    "gelu_approximate",
    "pooled_text",
    "image_pos_embed",
    "latent_channels",
)


class OwnTransformerError(ValueError):
    """The own MMDiT cannot stand in for this pipeline's transformer; the message says why."""


def diffusers_defaults() -> dict[str, Any]:
    """``QwenImageTransformer2DModel``'s constructor defaults: a config.json need not list them all,
    but pipelines read some (``guidance_embeds``)."""
    from diffusers import QwenImageTransformer2DModel

    return {
        name: p.default
        for name, p in inspect.signature(QwenImageTransformer2DModel.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


class OwnQwenImageTransformer(nn.Module):
    """What a Qwen-Image pipeline calls as its ``transformer``, computed by an ``MMDiT``.

    B batch, N image tokens (packed 2x2 latents), L text tokens, C latent channels.
    """

    def __init__(self, model: MMDiT, diffusers_config: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        from diffusers.configuration_utils import FrozenDict

        # Pipelines read ``config.in_channels``, ``config.guidance_embeds`` and ``config.patch_size``
        # as attributes, as diffusers' own transformer exposes them.
        self.config = FrozenDict({**diffusers_defaults(), **diffusers_config})

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @contextlib.contextmanager
    def cache_context(self, name: str) -> Iterator[None]:
        # diffusers' step caches (first-block cache and the like) hook its own blocks; the own MMDiT
        # has none, so every step computes in full.
        yield

    def forward(
        self,
        hidden_states: Tensor,  # (B, N, C 2 2) packed noisy latents
        encoder_hidden_states: Tensor,  # (B, L, Dt) text encoder output
        encoder_hidden_states_mask: Tensor | None = None,  # (B, L) 1 = token, 0 = padding; None = no padding
        timestep: Tensor | None = None,  # (B,) flow time in [0, 1] (the pipeline divides by 1000)
        img_shapes: Sequence[Any] | None = None,  # per sample [(frames, rows, columns)] in patches
        txt_seq_lens: Sequence[int] | None = None,  # older diffusers: text lengths instead of a mask
        guidance: Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        controlnet_block_samples: Any = None,
        additional_t_cond: Tensor | None = None,
        return_dict: bool = True,
    ) -> Any:
        # The pipeline passes guidance only for guidance-distilled configs, which conversion refuses;
        # the rest are diffusers-only features: refusing beats silently ignoring them.
        for name, value in (
            ("guidance", guidance),
            ("controlnet_block_samples", controlnet_block_samples),
            ("additional_t_cond", additional_t_cond),
            ("attention_kwargs", attention_kwargs or None),
        ):
            if value is not None:
                raise OwnTransformerError(f"the own MMDiT (model.transformer: own) does not take {name}")
        if timestep is None:
            raise OwnTransformerError("the own MMDiT needs a timestep")
        b, n, _ = hidden_states.shape
        grid = image_grid(img_shapes, b, n)
        text_mask = text_padding_mask(encoder_hidden_states, encoder_hidden_states_mask, txt_seq_lens)
        out = self.model(hidden_states, encoder_hidden_states, text_mask, timestep, grid)  # (B, N, C 2 2)
        if not return_dict:
            return (out,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=out)


def image_grid(img_shapes: Sequence[Any] | None, batch: int, tokens: int) -> tuple[int, int]:
    """The one (rows, columns) grid of patches shared by the batch. diffusers >= 0.35 passes
    ``[[(1, h, w)]] * B``, older versions ``[(1, h, w)] * B``."""
    if img_shapes is None or len(img_shapes) != batch:
        raise OwnTransformerError(f"img_shapes must give one image shape per sample ({batch}), got {img_shapes!r}")
    grids = set()
    for sample in img_shapes:
        shapes = list(sample) if isinstance(sample, list) else [sample]
        if len(shapes) != 1 or int(shapes[0][0]) != 1:
            raise OwnTransformerError(
                f"the own MMDiT takes one single-frame image per sample, got img_shapes {sample!r} "
                "(reference images, as Qwen-Image-Edit adds, need model.transformer: diffusers)"
            )
        grids.add((int(shapes[0][1]), int(shapes[0][2])))
    if len(grids) != 1:
        raise OwnTransformerError(f"every sample of a batch must share one image size, got {sorted(grids)}")
    (grid,) = grids
    if grid[0] * grid[1] != tokens:
        raise OwnTransformerError(f"img_shapes grid {grid} does not hold the {tokens} image tokens given")
    return grid


def text_padding_mask(text: Tensor, mask: Tensor | None, lengths: Sequence[int] | None) -> Tensor:
    """(B, L) bool, True for real tokens: the pipeline's mask (None when nothing is padded) or,
    from older diffusers, the lengths of left-aligned prompts."""
    b, length = text.shape[:2]
    if mask is not None:
        return mask.to(device=text.device, dtype=torch.bool)
    if lengths is not None:
        return torch.arange(length, device=text.device)[None] < torch.as_tensor(lengths, device=text.device)[:, None]
    return torch.ones(b, length, dtype=torch.bool, device=text.device)


# --- weights ------------------------------------------------------------------------------------


def from_diffusers_dir(path: Path, dtype: torch.dtype) -> OwnQwenImageTransformer:
    """Stream a diffusers ``transformer/`` directory (sharded safetensors as published) into the own
    MMDiT, casting to ``dtype`` as each tensor arrives: q/k/v are fused as soon as their three parts
    were read, so memory holds one transformer plus at most a pending q/k/v triple."""
    path = convert.resolve_dir(path, convert.DIFFUSERS_WEIGHTS)
    data = json.loads((path / "config.json").read_text())
    config = convert.config_from_diffusers(data)
    expected = convert.diffusers_shapes(config)
    tensors: dict[str, Tensor] = {}
    pending: dict[str, list[Tensor | None]] = {}
    seen: set[str] = set()
    for file, name, tensor in convert.iter_tensors(convert.shard_files(path, convert.DIFFUSERS_WEIGHTS)):
        convert.check_shape(file, name, tensor, expected)
        seen.add(name)
        ours, slot = convert.own_name(name)
        if slot is None:
            tensors[ours] = tensor.to(dtype)
            continue
        parts = pending.setdefault(ours, [None, None, None])
        parts[slot] = tensor.to(dtype)
        if all(p is not None for p in parts):
            tensors[ours] = torch.cat([p for p in parts if p is not None], dim=0)
            del pending[ours]
    convert.check_complete(path, seen, expected)
    return OwnQwenImageTransformer(assemble(config, tensors), data)


def from_diffusers_module(transformer: Any) -> OwnQwenImageTransformer:  # a QwenImageTransformer2DModel
    """diffusers' (LoRA-fused) transformer -> the own MMDiT in memory. Every tensor but the fused
    q/k/v is the same storage, so the two coexist only until the caller drops diffusers' module."""
    data = dict(transformer.config)
    config = convert.config_from_diffusers(data)
    expected = convert.diffusers_shapes(config)
    state = transformer.state_dict()
    source = Path(f"<{type(transformer).__name__}>")
    for name, tensor in state.items():
        convert.check_shape(source, name, tensor, expected)
    convert.check_complete(source, set(state), expected)
    return OwnQwenImageTransformer(assemble(config, convert.state_dict_from_diffusers(state)), data)


def from_own_dir(path: Path, diffusers_dir: Path, dtype: torch.dtype) -> OwnQwenImageTransformer:
    """A directory ``huabu convert`` wrote, for the pipeline whose ``transformer/config.json`` is in
    ``diffusers_dir``: its architecture must be that transformer's."""
    data = json.loads((convert.resolve_dir(diffusers_dir, convert.DIFFUSERS_WEIGHTS) / "config.json").read_text())
    wanted = convert.config_from_diffusers(data)
    model = convert.load_own(path, dtype)
    for name in ARCHITECTURE_FIELDS:
        ours, theirs = getattr(model.config, name), getattr(wanted, name)
        if ours != theirs:
            raise OwnTransformerError(
                f"{path} was converted from another transformer: {name} is {ours!r}, the pipeline's is {theirs!r}"
            )
    return OwnQwenImageTransformer(model, data)


def assemble(config: MMDiTConfig, tensors: dict[str, Tensor]) -> MMDiT:
    """Built on the meta device and given the tensors only once all were checked: no random init
    to pay for, and never a partially initialised model."""
    with torch.device("meta"):
        model = MMDiT(config)
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()

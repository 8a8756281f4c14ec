"""Qwen-Image transformer weights <-> our MMDiT, both ways, one shard at a time.

diffusers publishes ``transformer/config.json`` + ``diffusion_pytorch_model-0000i-of-0000n.safetensors``
+ ``diffusion_pytorch_model.safetensors.index.json``. Ours is the same shape of directory:
``config.json`` (an ``MMDiTConfig``) + ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``.
Conversion reads one input shard, renames (and fuses or splits q/k/v), writes output shards as
they fill: peak memory is about one input shard plus one output shard, never two models.

Every tensor is checked against the shapes the config implies before anything is written or
loaded: a mismatch names the tensor and both shapes, a missing shard names the file, and a model
is only returned once every one of its tensors was loaded.

Usage: huabu convert SRC DST [--to own|diffusers] [--max-shard-size 5GB]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from huabu.deployments.backends.mmdit.checkpoint import CheckpointError
from huabu.deployments.backends.mmdit.config import (
    CodecConfig,
    MMDiTConfig,
    TextEncoderConfig,
    qwen_image_config,
)
from huabu.deployments.backends.mmdit.model import MMDiT

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
OWN_WEIGHTS = "model"
DIFFUSERS_CLASS = "QwenImageTransformer2DModel"
# diffusers config switches that change the computation in ways our model does not implement.
UNSUPPORTED_SWITCHES = ("guidance_embeds", "use_additional_t_cond", "use_layer3d_rope")

# diffusers name (inside transformer_blocks.<i>.) -> (our name inside blocks.<i>., q/k/v slot or None)
BLOCK_NAMES: dict[str, tuple[str, int | None]] = {}
for _stream, _theirs in (("image", "img"), ("text", "txt")):
    BLOCK_NAMES[f"{_theirs}_mod.1"] = (f"{_stream}.modulation.linear", None)
    BLOCK_NAMES[f"{_theirs}_mlp.net.0.proj"] = (f"{_stream}.mlp.fc1", None)
    BLOCK_NAMES[f"{_theirs}_mlp.net.2"] = (f"{_stream}.mlp.fc2", None)
for _slot, _x in enumerate("qkv"):
    BLOCK_NAMES[f"attn.to_{_x}"] = ("image.qkv", _slot)
    BLOCK_NAMES[f"attn.add_{_x}_proj"] = ("text.qkv", _slot)
BLOCK_NAMES.update(
    {
        "attn.norm_q": ("image.q_norm", None),
        "attn.norm_k": ("image.k_norm", None),
        "attn.norm_added_q": ("text.q_norm", None),
        "attn.norm_added_k": ("text.k_norm", None),
        "attn.to_out.0": ("image.out", None),
        "attn.to_add_out": ("text.out", None),
    }
)
TOP_NAMES = {
    "img_in": "image_in",
    "txt_in": "text_in",
    "txt_norm": "text_norm",
    "time_text_embed.timestep_embedder.linear_1": "time_embed.mlp.0",
    "time_text_embed.timestep_embedder.linear_2": "time_embed.mlp.2",
    "norm_out.linear": "final.modulation.linear",
    "proj_out": "final.linear",
}
_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)\.(weight|bias)$")
_TOP = re.compile(r"^(.+)\.(weight|bias)$")
_OWN_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


class ConversionError(CheckpointError):
    """A checkpoint cannot be converted or loaded; the message names the file or tensor."""


def own_name(theirs: str) -> tuple[str, int | None]:
    """diffusers tensor name -> (our tensor name, q/k/v slot within our fused tensor or None)."""
    if match := _BLOCK.match(theirs):
        index, module, kind = match.groups()
        if module in BLOCK_NAMES:
            ours, slot = BLOCK_NAMES[module]
            return f"blocks.{index}.{ours}.{kind}", slot
    elif (match := _TOP.match(theirs)) and match[1] in TOP_NAMES:
        return f"{TOP_NAMES[match[1]]}.{match[2]}", None
    raise ConversionError(f"tensor {theirs!r} is not part of Qwen-Image's transformer")


_OWN_TO_BLOCK: dict[str, list[str]] = {}
for _theirs_name, (_ours_name, _slot_) in BLOCK_NAMES.items():
    _OWN_TO_BLOCK.setdefault(_ours_name, [""] * 3 if _slot_ is not None else [""])
    _OWN_TO_BLOCK[_ours_name][_slot_ or 0] = _theirs_name
_OWN_TO_TOP = {v: k for k, v in TOP_NAMES.items()}


def diffusers_names(ours: str) -> list[str]:
    """Our tensor name -> the diffusers names it holds, in q/k/v order for fused tensors."""
    if match := _OWN_BLOCK.match(ours):
        index, module, kind = match.groups()
        if module in _OWN_TO_BLOCK:
            return [f"transformer_blocks.{index}.{m}.{kind}" for m in _OWN_TO_BLOCK[module]]
    elif (match := _TOP.match(ours)) and match[1] in _OWN_TO_TOP:
        return [f"{_OWN_TO_TOP[match[1]]}.{match[2]}"]
    raise ConversionError(f"tensor {ours!r} has no counterpart in Qwen-Image's transformer")


# --- configs -----------------------------------------------------------------------------------


def config_from_diffusers(data: dict[str, Any]) -> MMDiTConfig:
    """A ``QwenImageTransformer2DModel`` config.json -> the ``MMDiTConfig`` computing the same function."""
    for switch in UNSUPPORTED_SWITCHES:
        if data.get(switch):
            raise ConversionError(f"{switch}=true is not supported by the own MMDiT (Qwen-Image has it false)")
    patch, in_channels = int(data.get("patch_size", 2)), int(data.get("in_channels", 64))
    out_channels = int(data.get("out_channels") or in_channels)
    if in_channels != patch * patch * out_channels:
        raise ConversionError(
            f"in_channels {in_channels} must be patch_size^2 x out_channels ({patch}^2 x {out_channels})"
        )
    heads, head_dim = int(data.get("num_attention_heads", 24)), int(data.get("attention_head_dim", 128))
    text_width = int(data.get("joint_attention_dim", 3584))
    # zero_cond_t only changes the modulation of reference-image tokens (Qwen-Image-Edit); with the
    # one image per sample that this model takes, its output equals zero_cond_t=false.
    return dataclasses.replace(
        qwen_image_config(),
        depth=int(data.get("num_layers", 60)),
        width=heads * head_dim,
        num_heads=heads,
        patch_size=patch,
        text_width=text_width,
        rope_axes=tuple(int(a) for a in data.get("axes_dims_rope", (16, 56, 56))),  # type: ignore[arg-type]
        # The text encoder is external (Qwen2.5-VL); this entry only records its width.
        text=TextEncoderConfig(width=text_width, depth=1, num_heads=math.gcd(text_width, 28), max_bytes=1024),
        codec=CodecConfig(kind="external", latent_channels=out_channels, downsample=8),
    )


def diffusers_config(config: MMDiTConfig) -> dict[str, Any]:
    if (config.rope_layout, config.time_embedding, config.gelu_approximate) != ("qwen", "qwen", "tanh") or (
        config.pooled_text or config.image_pos_embed or config.mlp_ratio != 4.0 or config.rope_theta != 10000.0
    ):
        raise ConversionError("only a Qwen-Image-layout MMDiT config (see qwen_image_config) converts to diffusers")
    return {
        "_class_name": DIFFUSERS_CLASS,
        "patch_size": config.patch_size,
        "in_channels": config.patch_dim,
        "out_channels": config.latent_channels,
        "num_layers": config.depth,
        "attention_head_dim": config.head_dim,
        "num_attention_heads": config.num_heads,
        "joint_attention_dim": config.text_width,
        "guidance_embeds": False,
        "axes_dims_rope": list(config.rope_axes),
    }


def own_shapes(config: MMDiTConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = MMDiT(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def diffusers_shapes(config: MMDiTConfig) -> dict[str, torch.Size]:
    shapes = {}
    for ours, shape in own_shapes(config).items():
        names = diffusers_names(ours)
        for name in names:
            shapes[name] = torch.Size([shape[0] // len(names), *shape[1:]])
    return shapes


# --- sharded safetensors -----------------------------------------------------------------------


def resolve_dir(path: Path, prefix: str) -> Path:
    """A pipeline root (with ``transformer/``) or the transformer directory itself."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "transformer" / "config.json").is_file():
        path = path / "transformer"
    if not (path / "config.json").is_file():
        raise ConversionError(f"{path} has no config.json")
    if not (path / f"{prefix}.safetensors.index.json").is_file() and not (path / f"{prefix}.safetensors").is_file():
        raise ConversionError(f"{path} has neither {prefix}.safetensors.index.json nor {prefix}.safetensors")
    return path


def shard_files(path: Path, prefix: str) -> list[Path]:
    """The shards named by the index (in order), each checked to exist before any is read."""
    index = path / f"{prefix}.safetensors.index.json"
    if not index.is_file():
        return [path / f"{prefix}.safetensors"]
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError) as exc:
        raise ConversionError(f"{index} is not a safetensors index: {exc}") from exc
    files = [path / name for name in dict.fromkeys(weight_map.values())]
    for file in files:
        if not file.is_file():
            raise ConversionError(f"shard {file.name} named by {index} is missing ({file})")
    return files


def iter_tensors(files: list[Path]) -> Iterator[tuple[Path, str, Tensor]]:
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                    yield file, name, handle.get_tensor(name)
        except (SafetensorError, OSError) as exc:
            raise ConversionError(f"{file} is not a readable safetensors file: {exc}") from exc


def check_shape(file: Path, name: str, tensor: Tensor, expected: dict[str, torch.Size]) -> None:
    if name not in expected:
        raise ConversionError(f"{file.name}: unexpected tensor {name} (not in the config's model)")
    if tensor.shape != expected[name]:
        raise ConversionError(
            f"{file.name}: tensor {name} has shape {tuple(tensor.shape)}, the config needs {tuple(expected[name])}"
        )


def check_complete(path: Path, seen: set[str], expected: dict[str, torch.Size]) -> None:
    missing = sorted(set(expected) - seen)
    if missing:
        raise ConversionError(f"{path} lacks {len(missing)} tensors the config needs, first {missing[0]}")


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)B?", text.strip().upper())
    if match is None:
        raise argparse.ArgumentTypeError(f"size {text!r} must look like 5GB, 200MB or 4096")
    return int(float(match[1]) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match[2]])


class ShardWriter:
    """Writes tensors into ``<prefix>-0000i-of-0000n.safetensors`` of at most ``max_bytes`` each
    (a larger single tensor gets its own shard), then the index."""

    def __init__(self, out: Path, prefix: str, max_bytes: int) -> None:
        self.out, self.prefix, self.max_bytes = out, prefix, max_bytes
        self.buffer: dict[str, Tensor] = {}
        self.buffered = 0
        self.parts: list[list[str]] = []
        self.total = 0
        out.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, tensor: Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.buffer and self.buffered + size > self.max_bytes:
            self.flush()
        self.buffer[name] = tensor.contiguous()
        self.buffered += size
        self.total += size

    def flush(self) -> None:
        if self.buffer:
            save_file(self.buffer, str(self.out / f"{self.prefix}.part{len(self.parts)}"), metadata={"format": "pt"})
            self.parts.append(list(self.buffer))
            self.buffer, self.buffered = {}, 0

    def close(self) -> None:
        self.flush()
        n = len(self.parts)
        weight_map: dict[str, str] = {}
        for i, names in enumerate(self.parts):
            final = f"{self.prefix}-{i + 1:05d}-of-{n:05d}.safetensors"
            (self.out / f"{self.prefix}.part{i}").replace(self.out / final)
            weight_map |= dict.fromkeys(names, final)
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out / f"{self.prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


# --- conversion --------------------------------------------------------------------------------


def diffusers_to_own(src: Path, dst: Path, max_shard_bytes: int = 5 << 30) -> MMDiTConfig:
    """diffusers Qwen-Image transformer directory -> our sharded MMDiT directory (dtypes kept)."""
    src = resolve_dir(src, DIFFUSERS_WEIGHTS)
    config = config_from_diffusers(json.loads((src / "config.json").read_text()))
    expected = diffusers_shapes(config)
    files = shard_files(src, DIFFUSERS_WEIGHTS)
    writer = ShardWriter(Path(dst), OWN_WEIGHTS, max_shard_bytes)
    pending: dict[str, list[Tensor | None]] = {}  # fused q/k/v waiting for parts in later shards
    seen: set[str] = set()
    for file, name, tensor in iter_tensors(files):
        check_shape(file, name, tensor, expected)
        seen.add(name)
        ours, slot = own_name(name)
        if slot is None:
            writer.add(ours, tensor)
            continue
        parts = pending.setdefault(ours, [None, None, None])
        parts[slot] = tensor
        if all(p is not None for p in parts):
            writer.add(ours, torch.cat([p for p in parts if p is not None], dim=0))
            del pending[ours]
    check_complete(src, seen, expected)
    writer.close()
    (Path(dst) / "config.json").write_text(config.to_json() + "\n")
    return config


def own_to_diffusers(src: Path, dst: Path, max_shard_bytes: int = 5 << 30) -> dict[str, Any]:
    """Our sharded MMDiT directory -> a diffusers ``QwenImageTransformer2DModel`` directory."""
    src = resolve_dir(src, OWN_WEIGHTS)
    config = read_own_config(src)
    data = diffusers_config(config)
    expected = own_shapes(config)
    writer = ShardWriter(Path(dst), DIFFUSERS_WEIGHTS, max_shard_bytes)
    seen: set[str] = set()
    for file, name, tensor in iter_tensors(shard_files(src, OWN_WEIGHTS)):
        check_shape(file, name, tensor, expected)
        seen.add(name)
        names = diffusers_names(name)
        for theirs, part in zip(names, tensor.chunk(len(names), dim=0), strict=True):
            writer.add(theirs, part.clone())  # a chunk is a view; save the part alone
    check_complete(src, seen, expected)
    writer.close()
    (Path(dst) / "config.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


def read_own_config(path: Path) -> MMDiTConfig:
    config_file = path / "config.json"
    try:
        return MMDiTConfig.from_dict(json.loads(config_file.read_text()))
    except (ValueError, TypeError) as exc:
        raise ConversionError(f"{config_file} is not a valid MMDiT config: {exc}") from exc


def load_own(path: Path, dtype: torch.dtype | None = None) -> MMDiT:
    """Load a converted (sharded) MMDiT directory. Every tensor is checked; the model is built on
    the meta device and takes the loaded tensors, so nothing is left at its random init."""
    path = resolve_dir(path, OWN_WEIGHTS)
    config = read_own_config(path)
    expected = own_shapes(config)
    tensors: dict[str, Tensor] = {}
    for file, name, tensor in iter_tensors(shard_files(path, OWN_WEIGHTS)):
        check_shape(file, name, tensor, expected)
        tensors[name] = tensor if dtype is None else tensor.to(dtype)
    check_complete(path, set(tensors), expected)
    with torch.device("meta"):
        model = MMDiT(config)
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def state_dict_from_diffusers(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """In memory: a diffusers state dict -> ours (for tests and the benchmark)."""
    out: dict[str, Tensor] = {}
    parts: dict[str, dict[int, Tensor]] = {}
    for name, tensor in state.items():
        ours, slot = own_name(name)
        if slot is None:
            out[ours] = tensor
        else:
            parts.setdefault(ours, {})[slot] = tensor
    for ours, slots in parts.items():
        out[ours] = torch.cat([slots[i] for i in range(3)], dim=0)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="huabu convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="a diffusers transformer (or pipeline) directory, or an own one")
    parser.add_argument("dst", type=Path, help="output directory")
    parser.add_argument("--to", choices=("own", "diffusers"), default="own")
    parser.add_argument("--max-shard-size", type=parse_size, default=5 << 30, help="e.g. 5GB (default)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.to == "own":
            config = diffusers_to_own(args.src, args.dst, args.max_shard_size)
            print(f"wrote {args.dst}: own MMDiT, depth {config.depth}, width {config.width}")
        else:
            own_to_diffusers(args.src, args.dst, args.max_shard_size)
            print(f"wrote {args.dst}: diffusers {DIFFUSERS_CLASS}")
    except (ConversionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checkpoints: ``<root>/<name>@<version>/`` holding ``config.json``, ``model.safetensors`` and
``record.json`` (how the weights were made). Errors say which file, tensor or shape is wrong."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from huabu.deployments.backends.mmdit.codec import build_codec
from huabu.deployments.backends.mmdit.config import MMDiTConfig, tiny_config
from huabu.deployments.backends.mmdit.model import MMDiT
from huabu.deployments.backends.mmdit.text import TextEncoder

BUNDLED_ROOT = Path(__file__).parent / "weights"
MODEL_ID = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._-]*)@(?P<version>[A-Za-z0-9][A-Za-z0-9._-]*)$")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
RANDOM_INIT_NAME = "random-init"


class CheckpointError(RuntimeError):
    pass


def parse_model_id(model_id: str) -> tuple[str, str]:
    match = MODEL_ID.match(model_id)
    if match is None:
        raise CheckpointError(f"model id {model_id!r} must look like 'name@version', e.g. 'tiny-mmdit@v1'")
    return match["name"], match["version"]


class ModelBundle(nn.Module):
    """Everything one checkpoint holds: text encoder, image codec and transformer."""

    def __init__(self, config: MMDiTConfig, model_id: str) -> None:
        super().__init__()
        parse_model_id(model_id)
        self.config = config
        self.model_id = model_id
        self.text_encoder = TextEncoder(config.text)
        self.codec = build_codec(config.codec)
        self.transformer = MMDiT(config)


def search_roots(extra: list[Path] | None = None) -> list[Path]:
    """Where ``name@version`` is looked up: explicit roots, ``HUABU_MODEL_DIR``, then the bundled weights."""
    roots = list(extra or [])
    env = os.environ.get("HUABU_MODEL_DIR")
    if env:
        roots += [Path(p) for p in env.split(os.pathsep) if p]
    return [*roots, BUNDLED_ROOT]


def available_models(roots: list[Path] | None = None) -> list[str]:
    found = {RANDOM_INIT_NAME + "@v0"}
    for root in search_roots(roots):
        if root.is_dir():
            found |= {p.name for p in root.iterdir() if MODEL_ID.match(p.name) and (p / "config.json").is_file()}
    return sorted(found)


def save_checkpoint(
    bundle: ModelBundle, root: Path, record: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32
) -> Path:
    path = Path(root) / bundle.model_id
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(bundle.config.to_json() + "\n")
    tensors = {k: v.detach().to(dtype).contiguous().cpu() for k, v in bundle.state_dict().items()}
    save_file(tensors, str(path / "model.safetensors"), metadata={"model_id": bundle.model_id})
    (path / "record.json").write_text(json.dumps(record or {}, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    return path


def find_checkpoint(model_id: str, roots: list[Path] | None = None) -> Path | None:
    """The folder of ``name@version`` in the first root that has it; None for ``random-init@vN``."""
    name, _ = parse_model_id(model_id)
    if name == RANDOM_INIT_NAME:
        return None
    for root in search_roots(roots):
        if (root / model_id).is_dir():
            return root / model_id
    raise CheckpointError(
        f"no checkpoint {model_id!r} in {[str(r) for r in search_roots(roots)]}; available: {available_models(roots)}"
    )


def load_checkpoint(model_id: str, roots: list[Path] | None = None) -> ModelBundle:
    """Load ``name@version`` from the first root that has it (``random-init@vN`` is built, seeded)."""
    path = find_checkpoint(model_id, roots)
    if path is None:
        return random_init(seed=int(parse_model_id(model_id)[1].lstrip("v") or 0))
    return load_checkpoint_dir(path)


def load_checkpoint_dir(path: Path) -> ModelBundle:
    config_file, weights_file = path / "config.json", path / "model.safetensors"
    for required in (config_file, weights_file):
        if not required.is_file():
            raise CheckpointError(f"checkpoint {path} is missing {required.name}")
    try:
        config = MMDiTConfig.from_dict(json.loads(config_file.read_text()))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{config_file} is not a valid MMDiT config: {exc}") from exc
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights_file} is not a readable safetensors file: {exc}") from exc
    bundle = ModelBundle(config, path.name)
    expected = bundle.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_file} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, tensor in tensors.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{weights_file}: tensor {key} has shape {tuple(tensor.shape)}, "
                f"the config needs {tuple(expected[key].shape)}"
            )
        if tensor.dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{weights_file}: tensor {key} has dtype {tensor.dtype}; weights must be float32, float16 or bfloat16"
            )
    bundle.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return bundle


def random_init(seed: int = 0, config: MMDiTConfig | None = None) -> ModelBundle:
    """A seeded, untrained model named as such (``random-init@v<seed>``). The zero-initialised
    output layers get small random weights so that images depend on prompt and seed."""
    config = config or tiny_config()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bundle = ModelBundle(config, f"{RANDOM_INIT_NAME}@v{seed}")
        for name, param in bundle.transformer.named_parameters():
            if "modulation" in name or name.startswith("final."):
                nn.init.normal_(param, std=0.05)
    return bundle.eval()

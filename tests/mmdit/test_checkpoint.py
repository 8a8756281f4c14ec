import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from huabu.deployments.backends import requests as R
from huabu.deployments.backends.mmdit.checkpoint import (
    CheckpointError,
    ModelBundle,
    available_models,
    load_checkpoint,
    parse_model_id,
    random_init,
    save_checkpoint,
)
from huabu.deployments.backends.mmdit.config import tiny_config
from huabu.deployments.backends.mmdit.pipeline import Pipeline


def render(bundle: ModelBundle) -> np.ndarray:
    pixels = Pipeline(bundle)([R.generation("green triangle", seed=3, size=(32, 32), steps=3)])[0].pixels
    assert pixels is not None
    return pixels


def test_save_and_load_give_the_same_images(tmp_path: Path) -> None:
    bundle = random_init(seed=4)
    bundle.model_id = "tiny-test@v7"
    save_checkpoint(bundle, tmp_path, record={"command": "test", "seed": 4})
    loaded = load_checkpoint("tiny-test@v7", roots=[tmp_path])
    assert loaded.model_id == "tiny-test@v7"
    assert np.array_equal(render(bundle), render(loaded))
    assert json.loads((tmp_path / "tiny-test@v7" / "record.json").read_text())["seed"] == 4
    assert "tiny-test@v7" in available_models([tmp_path])


def test_random_init_is_seeded_and_named_as_such() -> None:
    assert random_init(1).model_id == "random-init@v1"
    assert np.array_equal(render(random_init(1)), render(load_checkpoint("random-init@v1")))
    assert not np.array_equal(render(random_init(1)), render(random_init(2)))


def test_model_ids_must_be_name_at_version() -> None:
    assert parse_model_id("tiny-mmdit@v1") == ("tiny-mmdit", "v1")
    for bad in ("tiny-mmdit", "@v1", "../etc@v1", "a@b/c"):
        with pytest.raises(CheckpointError, match="name@version"):
            parse_model_id(bad)


def test_missing_checkpoint_lists_what_exists(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="available"):
        load_checkpoint("nope@v1", roots=[tmp_path])
    (tmp_path / "half@v1").mkdir()
    (tmp_path / "half@v1" / "config.json").write_text(tiny_config().to_json())
    with pytest.raises(CheckpointError, match=r"missing model\.safetensors"):
        load_checkpoint("half@v1", roots=[tmp_path])


def test_shape_mismatch_and_wrong_dtype_are_explained(tmp_path: Path) -> None:
    bundle = random_init(0)
    bundle.model_id = "broken@v1"
    path = save_checkpoint(bundle, tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    key = "transformer.image_in.weight"
    save_file({**tensors, key: torch.zeros(5, 5)}, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"transformer.image_in.weight has shape \(5, 5\)"):
        load_checkpoint("broken@v1", roots=[tmp_path])
    save_file({**tensors, key: tensors[key].to(torch.int32)}, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"dtype torch\.int32"):
        load_checkpoint("broken@v1", roots=[tmp_path])
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint("broken@v1", roots=[tmp_path])


def test_half_precision_checkpoints_load(tmp_path: Path) -> None:
    bundle = random_init(0)
    bundle.model_id = "half@v2"
    save_checkpoint(bundle, tmp_path, dtype=torch.float16)
    loaded = load_checkpoint("half@v2", roots=[tmp_path])
    assert next(loaded.parameters()).dtype == torch.float32

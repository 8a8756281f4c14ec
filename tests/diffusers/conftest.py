"""One tiny Qwen-Image pipeline (and a LoRA for it) per test session, built offline."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))  # helpers: PNG round trips, job waits

from tiny_pipelines import build_lora, build_qwen_image


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_qwen_image(tmp_path_factory.mktemp("tiny-qwen-image"))


@pytest.fixture(scope="session")
def tiny_lora(tiny_qwen: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lora(tiny_qwen, tmp_path_factory.mktemp("tiny-lora") / "style.safetensors")

"""Shared, expensive fixtures: each model is loaded once per test session."""

from __future__ import annotations

import pytest

from huabu.filters import ImageFilter, PromptFilter, PromptFilterSettings
from huabu.filters.semantic import TextEncoder


@pytest.fixture(scope="session")
def encoder() -> TextEncoder:
    enc = TextEncoder(threads=1)
    enc.warmup()
    return enc


@pytest.fixture(scope="session")
def prompt_filter(encoder: TextEncoder) -> PromptFilter:
    f = PromptFilter(PromptFilterSettings(), encoder=encoder)
    f.warmup()
    return f


@pytest.fixture(scope="session")
def image_filter() -> ImageFilter:
    f = ImageFilter()
    f.warmup()
    return f

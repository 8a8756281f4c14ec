"""Shared pydantic base and JSON helpers for the ab_testing models."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

# Identifiers become parts of state-store keys (``huabu:ab:metrics:<experiment>:...``), so they may
# not contain the ':' separator or whitespace; '@' is allowed for model names such as ``mmdit@v2``.
IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@/+-]{0,127}$")


def check_identifier(value: str, what: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-128 characters of letters, digits and . _ @ / + -, "
            "starting with a letter or digit"
        )
    return value


class FrozenModel(BaseModel):
    """Immutable, strict-field model whose JSON form survives infinities.

    One-sided confidence intervals have an infinite end; ``ser_json_inf_nan="strings"`` writes them
    as ``"Infinity"`` (valid JSON, unlike a bare ``Infinity``) and reads them back as floats.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")


class MutableModel(BaseModel):
    """Accumulator state: mutated in place on the hot path, forbids unknown fields."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False, ser_json_inf_nan="strings")


def to_json_value(model: BaseModel) -> Any:
    """A model as plain JSON data (dicts, lists, strings, finite numbers) for a state store."""
    return json.loads(model.model_dump_json())

"""Validation problems in the API's own words.

The SDK checks a call's arguments with the wire types before sending, and the gateway checks every
request with the same types; both describe a problem here, so the message a user reads names the
parameter (its dotted path) and what is allowed, whichever side caught it, and never pydantic's
internal wording ("Unable to extract tag using discriminator ...").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, get_args

import pydantic

from huabu.sdk.types import JobKind

__all__ = ["Problem", "describe", "first_problem"]

# Where a value lives is not part of its parameter name.
_LOCATIONS = frozenset({"body", "query", "path", "header", "form"})
_DISCRIMINATORS: dict[str, tuple[str, ...]] = {"kind": get_args(JobKind)}
_TAGS = frozenset(tag for tags in _DISCRIMINATORS.values() for tag in tags)
_MAX_SHOWN = 40  # characters of a rejected value repeated back in a message
_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "less_than_equal": ("<=", "le"),
    "greater_than": (">", "gt"),
    "less_than": ("<", "lt"),
}
_TYPES = {  # pydantic error type prefix -> what to send
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
    "dict": "a JSON object",
    "model": "a JSON object",
    "list": "a list",
}


class Problem(NamedTuple):
    param: str | None  # the dotted parameter path; None for the request body as a whole
    message: str


def _param(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in _LOCATIONS]
    if parts and parts[0] in _TAGS:  # a tagged union's errors are located under the tag's value
        parts = parts[1:]
    return ".".join(parts) or None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _choices(expected: str) -> str:
    return expected.replace(" or ", ", ")


def describe(error: Mapping[str, Any]) -> Problem:
    """One pydantic error (an item of ``ValidationError.errors()``) as a :class:`Problem`."""
    kind = str(error.get("type", ""))
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    param = _param(error.get("loc", ()))
    name = param or "the request body"
    got = f" (got {_shown(error['input'])})" if "input" in error and not isinstance(error["input"], dict) else ""

    if kind == "json_invalid":
        return Problem(None, f"request body is not valid JSON ({ctx.get('error', 'parse error')})")
    if kind in ("missing", "missing_argument"):
        return Problem(param, f"{name} is required")
    if kind == "extra_forbidden":
        return Problem(param, f"unknown parameter {param!r}; check its spelling against the API reference")
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        tag = str(ctx.get("discriminator", "'kind'")).strip("'")
        allowed = ", ".join(repr(t) for t in _DISCRIMINATORS.get(tag, ())) or str(ctx.get("expected_tags", ""))
        where = f"{param}.{tag}" if param else tag
        if kind == "union_tag_not_found":
            return Problem(where, f"{where} is required: one of {allowed}")
        return Problem(where, f"{where} must be one of {allowed} (got {_shown(ctx.get('tag'))})")
    if kind in ("literal_error", "enum"):
        return Problem(param, f"{name} must be one of {_choices(str(ctx.get('expected', '')))}{got}")
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return Problem(param, f"{name} must not be empty")
        return Problem(param, f"{name} must have at least {ctx.get('min_length')} characters")
    if kind == "string_too_long":
        length = f" (got {len(error['input'])})" if isinstance(error.get("input"), str) else ""
        return Problem(param, f"{name} must have at most {ctx.get('max_length')} characters{length}")
    if kind in ("too_short", "too_long"):
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        word = "at least" if kind == "too_short" else "at most"
        return Problem(param, f"{name} must have {word} {bound} items")
    if kind in _BOUNDS:
        symbol, key = _BOUNDS[kind]
        return Problem(param, f"{name} must be {symbol} {ctx.get(key)}{got}")
    for prefix, wanted in _TYPES.items():
        if kind.startswith(prefix + "_") or kind == f"{prefix}_type":
            if param is None:
                return Problem(None, f"the request body must be {wanted}{got}")
            return Problem(param, f"{name} must be {wanted}{got}")
    if kind == "model_attributes_type":
        return Problem(param, f"{name} must be a JSON object")
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if param and param not in message:
        message = f"{param}: {message}"
    return Problem(param, message)


def first_problem(exc: pydantic.ValidationError | Any) -> Problem:
    """The first of a validation exception's errors (pydantic's or FastAPI's ``RequestValidationError``)."""
    errors = exc.errors()
    return describe(errors[0]) if errors else Problem(None, "invalid request")

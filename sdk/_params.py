"""Keyword parameters of the resource methods, as TypedDicts shared by the sync and async surfaces.

``**params: Unpack[GenerateParams]`` keeps every method fully typed (mypy and IDEs check and complete
the keywords) without writing each long signature twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, TypeVar

import pydantic
from typing_extensions import Unpack

from huabu.sdk._base import RequestOptions, Timeouts
from huabu.sdk._errors import InvalidParameterError
from huabu.sdk._files import ImageInput
from huabu.sdk.types import CacheMode, ResponseFormat, WebhookSpec
from huabu.sdk.validation import first_problem

__all__ = [
    "CallOptions",
    "EditParams",
    "GenerateParams",
    "OutpaintParams",
    "SubmitEditParams",
    "SubmitGenerateParams",
    "SubmitOutpaintParams",
    "Unpack",
    "request_options",
    "split_params",
    "wire_request",
]

WireModel = TypeVar("WireModel", bound=pydantic.BaseModel)


def wire_request(wire_type: type[WireModel], /, **fields: Any) -> WireModel:
    """Build a request body with the wire type, so a bad argument fails here, before anything is sent,
    as :class:`InvalidParameterError` worded as the server would word it."""
    try:
        return wire_type(**fields)
    except pydantic.ValidationError as exc:
        problem = first_problem(exc)
        raise InvalidParameterError(problem.message, param=problem.param) from None


class CallOptions(TypedDict, total=False):
    timeout: float | Timeouts | None  # a number is the call's total deadline in seconds
    max_retries: int | None
    extra_headers: Mapping[str, str] | None


class _Generation(CallOptions, total=False):
    model: str | None
    n: int
    response_format: ResponseFormat
    user: str | None
    seed: int | None
    steps: int | None
    guidance_scale: float | None
    negative_prompt: str | None
    cache: CacheMode


class GenerateParams(_Generation, total=False):
    size: str | None


class EditParams(GenerateParams, total=False):
    mask: ImageInput | None
    strength: float | None


class OutpaintParams(_Generation, total=False):
    left: int
    right: int
    top: int
    bottom: int


class _Submit(TypedDict, total=False):
    idempotency_key: str | None  # default: a fresh uuid4 per call, reused by its retries
    # Prefer: wait=N: the call returns the finished job when it ends within N seconds (<= 60)
    wait: int | None
    webhook: WebhookSpec | Mapping[str, Any] | None  # {url, events?, secret_id?}, signed per key
    timeout_s: float | None  # the job is canceled (deadline_exceeded) when not done by then
    preview_every: int | None  # a low-resolution preview in every k-th progress event


class SubmitGenerateParams(GenerateParams, _Submit, total=False):
    pass


class SubmitEditParams(EditParams, _Submit, total=False):
    pass


class SubmitOutpaintParams(OutpaintParams, _Submit, total=False):
    pass


_CALL_KEYS = frozenset(CallOptions.__annotations__)


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], CallOptions]:
    """(wire fields, call options); unset keys stay unset so the server applies its defaults."""
    wire = {k: v for k, v in params.items() if k not in _CALL_KEYS}
    call: CallOptions = {k: v for k, v in params.items() if k in _CALL_KEYS}  # type: ignore[assignment]
    return wire, call


def request_options(method: str, path: str, operation: str, call: CallOptions, **kwargs: Any) -> RequestOptions:
    extra = dict(call.get("extra_headers") or {})
    extra.update(kwargs.pop("headers", {}))
    return RequestOptions(
        method=method,
        path=path,
        operation=operation,
        timeout=call.get("timeout"),
        max_retries=call.get("max_retries"),
        headers=extra,
        **kwargs,
    )

"""The replica contract: what the model deployment asks of a backend, whichever serves a variant.

A backend turns a batch of ``SampleRequest`` into one ``SampleResult`` each, in order: each request
keeps its own prompt, negative prompt and seed (its result does not depend on its batch), progress is
reported after every step, and the batch stops between steps once all its requests are cancelled.
Its ``ModelLimits`` travel to the gateway, which validates every request against them before anything
is queued, and to ``GET /v1/models``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

    from huabu.deployments.backends.requests import SampleRequest

ProgressCallback = Callable[[list[int], int, int], None]  # (request indices, step, total) after each step
CancelCheck = Callable[[int], bool]  # request index -> has it been cancelled?
# (request index, step, (h, w, 3) uint8 preview of its current x0 estimate) for requests with preview_every;
# backends that can make previews say so with ``previews = True`` and take it as ``on_preview``.
PreviewCallback = Callable[[int, int, np.ndarray], None]
PREVIEW_MAX_SIDE = 64  # a preview's longer side in pixels (a few KB as PNG)

# What a model can do with a request: text-to-image, repaint a masked region (outpainting is a
# padded inpaint), restyle a whole image.
Capability = Literal["generate", "inpaint", "img2img"]
ALL_CAPABILITIES: tuple[Capability, ...] = ("generate", "inpaint", "img2img")


@dataclass
class SampleResult:
    pixels: np.ndarray | None  # (H, W, 3) uint8; None when cancelled
    prompt_truncated: bool
    cancelled: bool = False
    full_evaluations: int | None = None  # transformer branch evaluations that ran every block (step caching)


@dataclass(frozen=True)
class ModelLimits:
    """What a served model accepts and what a request that leaves something out gets."""

    default_size: tuple[int, int]  # (height, width) in pixels
    pixel_multiple: int  # width and height must be multiples of this
    max_side: int  # largest width or height
    steps: int  # default denoising steps
    guidance: float  # default classifier-free guidance (1 = none)
    max_steps: int
    max_prompt_bytes: int  # UTF-8 bytes of the prompt the model reads
    capabilities: tuple[Capability, ...] = ALL_CAPABILITIES
    min_side: int = 0  # smallest side; 0 = one pixel multiple
    cache_threshold: float = 0.0  # step caching of requests without cache_steps (the variant's); 0 = off

    @property
    def smallest_side(self) -> int:
        return max(self.min_side, self.pixel_multiple)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelLimits:
        data = dict(data)
        data["default_size"] = tuple(data["default_size"])
        data["capabilities"] = tuple(data["capabilities"])
        return cls(**data)


class Backend(Protocol):
    """A loaded model that serves batches on one device (see the module docstring)."""

    model_id: str  # the served version: what the cache key and the router name
    limits: ModelLimits

    @property
    def device(self) -> torch.device: ...

    def describe(self) -> dict[str, Any]:
        """For ``GET /v1/models``: at least ``backend``; diffusers adds its pipeline class and dtype."""
        ...

    def __call__(
        self,
        requests: list[SampleRequest],
        on_step: ProgressCallback | None = None,
        is_cancelled: CancelCheck | None = None,
    ) -> list[SampleResult]: ...

"""Model-level requests: what one image needs, validated with messages that say what to fix.

The wire types (``huabu.sdk.types``) describe HTTP requests; the server turns them into these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from huabu.deployments.backends.contract import Capability, ModelLimits

MAX_GUIDANCE = 30.0
MAX_SEED = 2**63 - 1


class InvalidRequest(ValueError):
    """A request the model cannot serve; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class SampleRequest:
    prompt: str
    seed: int
    height: int
    width: int
    steps: int = 20
    guidance: float = 1.0
    negative_prompt: str = ""
    # Editing: ``init_image`` (H, W, 3) uint8; ``mask`` (H, W) bool, True = repaint.
    init_image: np.ndarray | None = field(default=None, compare=False, repr=False)
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    strength: float = 1.0  # img2img: 1 ignores the init image's content outside any mask
    preview_every: int = 0  # report a low-resolution preview every this many steps (0: none)
    # Step caching (mmdit/stepping.py): reuse the blocks' residual while the first block's output
    # changed less than this (relative) since the last full evaluation; 0 = every step in full.
    cache_threshold: float = 0.0

    @property
    def shape_key(self) -> tuple[int, int, int, int]:
        """Requests with equal keys run in one batch: same size and the same step schedule."""
        return (self.height, self.width, self.steps, first_step(self.steps, self.strength))

    @property
    def capability(self) -> Capability:
        if self.init_image is None:
            return "generate"
        return "inpaint" if self.mask is not None else "img2img"

    def validate(self, limits: ModelLimits) -> None:
        if not self.prompt.strip():
            raise InvalidRequest("prompt is empty: describe the image to generate", "prompt")
        if self.capability not in limits.capabilities:
            raise InvalidRequest(
                f"this model cannot {self.capability} (it can: {', '.join(limits.capabilities)}); "
                "choose a model that can or change the request",
                "mask" if self.capability == "inpaint" else "image",
            )
        multiple, smallest = limits.pixel_multiple, limits.smallest_side
        for name, value in (("height", self.height), ("width", self.width)):
            if value < multiple or value % multiple:
                raise InvalidRequest(f"{name} must be a positive multiple of {multiple} pixels, got {value}", "size")
            if value < smallest:
                raise InvalidRequest(f"{name} must be at least {smallest} pixels, got {value}", "size")
            if value > limits.max_side:
                raise InvalidRequest(f"{name} {value} is larger than {limits.max_side} pixels", "size")
        if not 1 <= self.steps <= limits.max_steps:
            raise InvalidRequest(f"steps must be between 1 and {limits.max_steps}, got {self.steps}", "steps")
        if not (math.isfinite(self.guidance) and 0.0 <= self.guidance <= MAX_GUIDANCE):
            raise InvalidRequest(
                f"guidance_scale must be a number from 0 to {MAX_GUIDANCE}, got {self.guidance}", "guidance_scale"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise InvalidRequest(f"seed must be between 0 and {MAX_SEED}, got {self.seed}", "seed")
        if not (math.isfinite(self.cache_threshold) and 0.0 <= self.cache_threshold <= 1.0):
            raise InvalidRequest(
                f"cache_steps.threshold must be from 0 to 1, got {self.cache_threshold}", "cache_steps.threshold"
            )
        if not (math.isfinite(self.strength) and 0.0 < self.strength <= 1.0):
            raise InvalidRequest(f"strength must be in (0, 1], got {self.strength}", "strength")
        if self.init_image is not None and (
            self.init_image.shape != (self.height, self.width, 3) or self.init_image.dtype != np.uint8
        ):
            raise InvalidRequest(
                f"image must be {self.width}x{self.height} RGB, got shape {self.init_image.shape}", "image"
            )
        if self.mask is not None:
            if self.init_image is None:
                raise InvalidRequest("a mask needs an image to edit", "mask")
            if self.mask.shape != (self.height, self.width):
                raise InvalidRequest(
                    f"mask is {self.mask.shape[1]}x{self.mask.shape[0]} but the image is "
                    f"{self.width}x{self.height}: they must be the same size",
                    "mask",
                )
            if not self.mask.any():
                raise InvalidRequest("mask marks no pixels to repaint (transparent or white = repaint)", "mask")


def first_step(steps: int, strength: float) -> int:
    """img2img runs only the last ``strength`` fraction of the schedule."""
    return steps - max(1, round(steps * strength))


def generation(
    prompt: str, *, seed: int, size: tuple[int, int], steps: int = 20, guidance: float = 1.0, negative_prompt: str = ""
) -> SampleRequest:
    height, width = size
    return SampleRequest(
        prompt=prompt,
        seed=seed,
        height=height,
        width=width,
        steps=steps,
        guidance=guidance,
        negative_prompt=negative_prompt,
    )


def inpainting(
    prompt: str,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    seed: int,
    steps: int = 20,
    guidance: float = 1.0,
    negative_prompt: str = "",
) -> SampleRequest:
    base = generation(
        prompt,
        seed=seed,
        size=(image.shape[0], image.shape[1]),
        steps=steps,
        guidance=guidance,
        negative_prompt=negative_prompt,
    )
    return replace(base, init_image=image, mask=mask.astype(bool))


def outpainting(
    prompt: str,
    image: np.ndarray,
    *,
    left: int = 0,
    right: int = 0,
    top: int = 0,
    bottom: int = 0,
    seed: int,
    steps: int = 20,
    guidance: float = 1.0,
    negative_prompt: str = "",
) -> SampleRequest:
    """Grow the canvas; the original pixels stay, the new border is masked for repainting."""
    for name, value in (("left", left), ("right", right), ("top", top), ("bottom", bottom)):
        if value < 0:
            raise InvalidRequest(f"{name} must be zero or more pixels, got {value}", name)
    if left + right + top + bottom == 0:
        raise InvalidRequest("outpaint needs at least one of left, right, top, bottom above zero", "left")
    h, w = image.shape[:2]
    canvas = np.zeros((h + top + bottom, w + left + right, 3), dtype=np.uint8)
    canvas[top : top + h, left : left + w] = image
    mask = np.ones(canvas.shape[:2], dtype=bool)
    mask[top : top + h, left : left + w] = False
    return inpainting(prompt, canvas, mask, seed=seed, steps=steps, guidance=guidance, negative_prompt=negative_prompt)


def img2img(
    prompt: str,
    image: np.ndarray,
    *,
    strength: float,
    seed: int,
    steps: int = 20,
    guidance: float = 1.0,
    negative_prompt: str = "",
) -> SampleRequest:
    base = generation(
        prompt,
        seed=seed,
        size=(image.shape[0], image.shape[1]),
        steps=steps,
        guidance=guidance,
        negative_prompt=negative_prompt,
    )
    return replace(base, init_image=image, strength=strength)

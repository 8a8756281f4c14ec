"""Mask and outpaint helpers (PIL only).

Masks follow OpenAI's convention: an RGBA PNG the size of the image, where **transparent pixels mark
the area to repaint** and opaque pixels are kept. Every helper returns PNG bytes, ready for
``client.images.edit(image, prompt, mask=...)``.

Outpaint helpers compute the ``left``/``right``/``top``/``bottom`` pixels to add:
``client.images.outpaint(image, prompt, **extend("right", 64).as_kwargs())``.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Literal, NamedTuple, TypeAlias

from huabu.sdk._files import ImageInput, image_bytes

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Extents",
    "ellipse",
    "extend",
    "from_alpha",
    "from_black_white",
    "image_size",
    "invert",
    "outpaint_mask",
    "pad",
    "rectangle",
    "to_aspect",
    "to_size",
]

Box: TypeAlias = tuple[int, int, int, int]  # (left, top, right, bottom), right/bottom exclusive, like PIL
SizeOrImage: TypeAlias = tuple[int, int] | ImageInput
Direction = Literal["left", "right", "up", "down", "top", "bottom", "horizontal", "vertical", "all"]
Anchor = Literal["center", "left", "right", "top", "bottom", "top-left", "top-right", "bottom-left", "bottom-right"]


def _open(value: ImageInput) -> Image.Image:
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    image = Image.open(io.BytesIO(image_bytes(value)))
    image.load()
    return image


def image_size(value: SizeOrImage) -> tuple[int, int]:
    """(width, height) of an image input, or the tuple itself."""
    if isinstance(value, tuple):
        width, height = value
    else:
        width, height = _open(value).size
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {width}x{height}")
    return int(width), int(height)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _mask_from_repaint(repaint: Image.Image, feather: float = 0) -> bytes:
    """``repaint``: an "L" image, 255 where to repaint. Returns the RGBA mask PNG (alpha 0 = repaint)."""
    from PIL import Image, ImageFilter, ImageOps

    if feather > 0:
        repaint = repaint.filter(ImageFilter.GaussianBlur(feather))
    alpha = ImageOps.invert(repaint)
    mask = Image.new("RGBA", repaint.size, (0, 0, 0, 255))
    mask.putalpha(alpha)
    return _png(mask)


def _check_box(box: Box, size: tuple[int, int]) -> None:
    left, top, right, bottom = box
    if not (left < right and top < bottom):
        raise ValueError(f"box must be (left, top, right, bottom) with left < right and top < bottom, got {box}")
    if right <= 0 or bottom <= 0 or left >= size[0] or top >= size[1]:
        raise ValueError(f"box {box} lies outside the {size[0]}x{size[1]} image")


def rectangle(size: SizeOrImage, box: Box, *, feather: float = 0) -> bytes:
    """Repaint the rectangle ``box`` = (left, top, right, bottom); ``feather`` softens the edge (pixels)."""
    from PIL import Image, ImageDraw

    wh = image_size(size)
    _check_box(box, wh)
    repaint = Image.new("L", wh, 0)
    ImageDraw.Draw(repaint).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return _mask_from_repaint(repaint, feather)


def ellipse(size: SizeOrImage, box: Box, *, feather: float = 0) -> bytes:
    """Repaint the ellipse inscribed in ``box`` = (left, top, right, bottom)."""
    from PIL import Image, ImageDraw

    wh = image_size(size)
    _check_box(box, wh)
    repaint = Image.new("L", wh, 0)
    ImageDraw.Draw(repaint).ellipse((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return _mask_from_repaint(repaint, feather)


def from_alpha(image: ImageInput, *, threshold: int = 128) -> bytes:
    """Repaint where ``image`` is transparent (alpha < ``threshold``), e.g. an erased area from an editor."""
    source = _open(image)
    if "A" not in source.getbands() and "transparency" not in source.info:
        raise ValueError("the image has no alpha channel: nothing is marked transparent")
    alpha = source.convert("RGBA").getchannel("A")
    return _mask_from_repaint(alpha.point(lambda a: 255 if a < threshold else 0))


def from_black_white(mask: ImageInput, *, repaint: Literal["white", "black"] = "white", threshold: int = 128) -> bytes:
    """Convert a black/white mask (the convention of many tools: white = repaint) to an alpha mask."""
    gray = _open(mask).convert("L")
    if repaint == "white":
        return _mask_from_repaint(gray.point(lambda v: 255 if v >= threshold else 0))
    return _mask_from_repaint(gray.point(lambda v: 255 if v < threshold else 0))


def invert(mask: ImageInput) -> bytes:
    """Swap repaint and keep areas of an alpha mask."""
    alpha = _open(mask).convert("RGBA").getchannel("A")
    return _mask_from_repaint(alpha)  # old alpha 255 (kept) becomes repaint 255


# --- outpainting ------------------------------------------------------------------------------


class Extents(NamedTuple):
    """Pixels to add on each side of an image."""

    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0

    def as_kwargs(self) -> dict[str, int]:
        return {"left": self.left, "right": self.right, "top": self.top, "bottom": self.bottom}

    def __add__(self, other: object) -> Extents:
        if not isinstance(other, Extents):
            return NotImplemented
        return Extents(*(a + b for a, b in zip(self, other, strict=True)))

    def output_size(self, size: SizeOrImage) -> tuple[int, int]:
        width, height = image_size(size)
        return width + self.left + self.right, height + self.top + self.bottom


def extend(direction: Direction, pixels: int) -> Extents:
    """``extend("right", 64)``; ``"horizontal"``/``"vertical"``/``"all"`` add ``pixels`` on each side."""
    if pixels <= 0:
        raise ValueError("pixels must be > 0")
    sides = {
        "left": ("left",),
        "right": ("right",),
        "up": ("top",),
        "top": ("top",),
        "down": ("bottom",),
        "bottom": ("bottom",),
        "horizontal": ("left", "right"),
        "vertical": ("top", "bottom"),
        "all": ("left", "right", "top", "bottom"),
    }.get(direction)
    if sides is None:
        raise ValueError(f"unknown direction {direction!r}")
    return Extents(**dict.fromkeys(sides, pixels))


def _split(extra: int, before_share: float) -> tuple[int, int]:
    before = round(extra * before_share)
    return before, extra - before


def to_size(image: SizeOrImage, target: tuple[int, int], *, anchor: Anchor = "center") -> Extents:
    """Extents that grow ``image`` to ``target`` = (width, height), keeping it at ``anchor``."""
    width, height = image_size(image)
    target_w, target_h = target
    if target_w < width or target_h < height:
        raise ValueError(f"target {target_w}x{target_h} is smaller than the image {width}x{height}")
    x_share = 0.0 if "left" in anchor else 1.0 if "right" in anchor else 0.5
    y_share = 0.0 if "top" in anchor else 1.0 if "bottom" in anchor else 0.5
    left, right = _split(target_w - width, x_share)
    top, bottom = _split(target_h - height, y_share)
    return Extents(left, right, top, bottom)


def to_aspect(image: SizeOrImage, aspect: str | float, *, anchor: Anchor = "center", multiple: int = 1) -> Extents:
    """Extents that grow ``image`` (never crop) to an aspect ratio like ``"16:9"`` or ``1.5``.

    ``multiple`` rounds the output size up to a multiple (e.g. the model's patch size).
    """
    width, height = image_size(image)
    if isinstance(aspect, str):
        num, _, den = aspect.partition(":")
        ratio = float(num) / float(den or 1)
    else:
        ratio = float(aspect)
    if ratio <= 0:
        raise ValueError("aspect must be > 0")
    target_w, target_h = (
        (math.ceil(height * ratio), height) if width / height < ratio else (width, math.ceil(width / ratio))
    )

    def round_up(value: int) -> int:
        return -(-value // multiple) * multiple

    return to_size((width, height), (round_up(target_w), round_up(target_h)), anchor=anchor)


def outpaint_mask(size: SizeOrImage, extents: Extents) -> bytes:
    """The mask of the extended canvas: the new border transparent (repaint), the original opaque."""
    from PIL import Image, ImageDraw

    width, height = image_size(size)
    out_w, out_h = extents.output_size((width, height))
    repaint = Image.new("L", (out_w, out_h), 255)
    ImageDraw.Draw(repaint).rectangle(
        (extents.left, extents.top, extents.left + width - 1, extents.top + height - 1), fill=0
    )
    return _mask_from_repaint(repaint)


def pad(image: ImageInput, extents: Extents) -> bytes:
    """The extended canvas as RGBA PNG, new area transparent: usable with ``images.edit`` and ``from_alpha``."""
    from PIL import Image

    source = _open(image).convert("RGBA")
    canvas = Image.new("RGBA", extents.output_size(source.size), (0, 0, 0, 0))
    canvas.paste(source, (extents.left, extents.top))
    return _png(canvas)

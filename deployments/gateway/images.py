"""Decoding user-supplied images and masks safely: size limits checked from the header before
any pixel is decoded (decompression bombs), truncated or corrupt files rejected with a 400.

Decoding is CPU-bound (hundreds of ms for a large image): callers on the event loop check
``image_size`` first and run the ``decode_*`` functions in a worker thread."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from huabu.deployments.gateway.errors import invalid

ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP"}


def _header(data: bytes, param: str) -> Image.Image:
    """The image opened lazily: format and size from the header, no pixel decoded yet."""
    if not data:
        raise invalid(f"{param} is empty: upload a PNG, JPEG or WebP image", param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise invalid(f"{param} declares too many pixels (decompression bomb protection)", param) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise invalid(
            f"{param} is not a readable image ({type(exc).__name__}): upload a valid PNG or JPEG", param
        ) from None
    if image.format not in ALLOWED_FORMATS:
        raise invalid(f"{param} must be PNG, JPEG or WebP, got {image.format}", param)
    return image


def image_size(data: bytes, param: str) -> tuple[int, int]:
    """-> (width, height) from the header alone: cheap enough for the event loop, so limits are
    checked before any decoding or allocation."""
    width, height = _header(data, param).size
    return width, height


def _open(data: bytes, param: str, max_pixels: int) -> Image.Image:
    image = _header(data, param)
    width, height = image.size
    if width * height > max_pixels:
        raise invalid(f"{param} is {width}x{height} pixels, above the limit of {max_pixels} pixels", param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()  # decodes now: truncated data fails here, not later in the model
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise invalid(f"{param} declares too many pixels (decompression bomb protection)", param) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise invalid(
            f"{param} is not a readable image ({type(exc).__name__}): upload a valid PNG or JPEG", param
        ) from None
    return image


def decode_image(data: bytes, param: str, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (H, W, 3) uint8 RGB, and the repaint mask from the alpha channel when any pixel is
    transparent (OpenAI's convention for edits without a separate mask)."""
    image = _open(data, param, max_pixels)
    alpha_mask = None
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if (alpha == 0).any():
            alpha_mask = alpha == 0
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy(), alpha_mask


def decode_mask(data: bytes, max_pixels: int, size: tuple[int, int]) -> np.ndarray:
    """A mask: transparent pixels repaint (alpha channel), else white pixels repaint
    (black/white mask). -> (H, W) bool; ``size`` is the image's (H, W)."""
    image = _open(data, "mask", max_pixels)
    if (image.height, image.width) != size:
        raise invalid(
            f"mask is {image.width}x{image.height} but the image is {size[1]}x{size[0]}: they must be the same size",
            "mask",
        )
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if (alpha < 255).any():
            return alpha == 0
    return np.asarray(image.convert("L")) > 127

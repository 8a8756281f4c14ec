"""PNG encoding with the generation parameters in text chunks, as established image tools do."""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from PIL import Image, PngImagePlugin


def encode_png(pixels: np.ndarray, parameters: Mapping[str, object], compress_level: int = 1) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes; deterministic for the same pixels, parameters and level."""
    info = PngImagePlugin.PngInfo()
    for key, value in parameters.items():
        # iTXt keeps Chinese prompts intact (tEXt is Latin-1 only).
        info.add_itxt(key, "" if value is None else str(value))
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()


def read_png_parameters(data: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(data)) as image:
        return {str(k): str(v) for k, v in image.text.items()}  # type: ignore[attr-defined]

"""Turn the image inputs users have (paths, bytes, file objects, PIL images) into bytes for the wire."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeAlias, Union

if TYPE_CHECKING:
    from PIL import Image

ImageInput: TypeAlias = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], "Image.Image"]

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"RIFF", "image/webp", "webp"),  # RIFF....WEBP; good enough for a content type
    (b"GIF8", "image/gif", "gif"),
)


def image_bytes(value: ImageInput) -> bytes:
    """Read ``value`` into bytes; PIL images are encoded as PNG (lossless, keeps the alpha channel)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str | os.PathLike):
        return Path(value).expanduser().read_bytes()
    if hasattr(value, "read"):
        data = value.read()
        if not isinstance(data, bytes):
            raise TypeError("file objects must be opened in binary mode ('rb')")
        return data
    if _is_pil_image(value):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    raise TypeError(f"unsupported image input {type(value).__name__}: give a path, bytes, a binary file or a PIL image")


def _is_pil_image(value: object) -> bool:
    # Check without importing PIL first: callers without PIL images never pay for the import.
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save")


def sniff(data: bytes) -> tuple[str, str]:
    """(content type, file extension) from magic bytes; PNG when unknown."""
    for magic, mime, ext in _MAGIC:
        if data.startswith(magic):
            return mime, ext
    return "image/png", "png"


def multipart_file(name: str, value: ImageInput) -> tuple[str, bytes, str]:
    data = image_bytes(value)
    mime, ext = sniff(data)
    return f"{name}.{ext}", data, mime

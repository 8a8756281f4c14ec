import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from huabu.deployments.backends import requests as R
from huabu.deployments.backends.mmdit.checkpoint import load_checkpoint
from huabu.deployments.backends.mmdit.pipeline import Pipeline
from huabu.deployments.backends.mmdit.png import encode_png, read_png_parameters
from huabu.deployments.backends.requests import InvalidRequest


def gen(prompt: str = "a red circle on the left", seed: int = 1, **kw: object) -> R.SampleRequest:
    kw.setdefault("steps", 4)
    return R.generation(prompt, seed=seed, size=(32, 32), **kw)  # type: ignore[arg-type]


def png_of(pipeline: Pipeline, request: R.SampleRequest) -> bytes:
    pixels = pipeline([request])[0].pixels
    assert pixels is not None
    return encode_png(pixels, {"prompt": request.prompt, "seed": request.seed, "model": pipeline.model_id})


def test_same_request_and_seed_give_identical_png(pipeline: Pipeline) -> None:
    request = gen("左边有个 red circle", guidance=3.0, negative_prompt="blurry")
    assert png_of(pipeline, request) == png_of(pipeline, request)
    assert png_of(pipeline, request) != png_of(pipeline, gen("左边有个 red circle", seed=2, guidance=3.0))


def test_results_are_identical_alone_and_batched(pipeline: Pipeline) -> None:
    batch = [gen(f"prompt {i} 蓝色", seed=i, guidance=1.0 + (i % 3)) for i in range(10)]
    together = pipeline(batch)
    for request, result in zip(batch, together, strict=True):
        alone = pipeline([request])[0]
        assert np.array_equal(alone.pixels, result.pixels)  # type: ignore[arg-type]


def test_mixed_shapes_are_grouped_and_returned_in_order(pipeline: Pipeline) -> None:
    batch = [gen(seed=1), R.generation("wide", seed=2, size=(32, 48), steps=4), gen(seed=3, steps=2)]
    shapes = [r.pixels.shape for r in pipeline(batch)]  # type: ignore[union-attr]
    assert shapes == [(32, 32, 3), (32, 48, 3), (32, 32, 3)]


def test_inpaint_keeps_every_pixel_outside_the_mask(pipeline: Pipeline) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:24, 4:20] = True
    out = pipeline([R.inpainting("a blue square", image, mask, seed=5, steps=4)])[0].pixels
    assert out is not None
    assert np.array_equal(out[~mask], image[~mask])
    assert not np.array_equal(out[mask], image[mask])


def test_outpaint_grows_the_canvas_and_preserves_the_original(pipeline: Pipeline) -> None:
    image = np.full((32, 32, 3), 200, dtype=np.uint8)
    request = R.outpainting("white background", image, left=8, right=8, top=0, bottom=16, seed=3, steps=4)
    out = pipeline([request])[0].pixels
    assert out is not None and out.shape == (48, 48, 3)
    assert np.array_equal(out[0:32, 8:40], image)


def test_img2img_runs_the_last_strength_fraction_of_the_schedule(pipeline: Pipeline) -> None:
    image = np.full((32, 32, 3), 90, dtype=np.uint8)
    totals: list[int] = []
    low = pipeline([R.img2img("x", image, strength=0.25, seed=1, steps=8)], on_step=lambda ix, s, t: totals.append(t))
    full = pipeline([R.img2img("x", image, strength=1.0, seed=1, steps=8)], on_step=lambda ix, s, t: totals.append(t))
    assert totals == [2, 2] + [8] * 8
    assert not np.array_equal(low[0].pixels, full[0].pixels)  # type: ignore[arg-type]


def test_progress_callback_and_cancellation_between_steps(pipeline: Pipeline) -> None:
    steps_seen: list[tuple[int, int]] = []
    pipeline([gen(steps=5)], on_step=lambda ix, s, t: steps_seen.append((s, t)))
    assert steps_seen == [(i, 5) for i in range(1, 6)]

    seen: list[int] = []
    result = pipeline([gen(steps=10)], on_step=lambda ix, s, t: seen.append(s), is_cancelled=lambda i: len(seen) >= 3)
    assert result[0].cancelled and result[0].pixels is None
    assert seen == [1, 2, 3]


def test_one_cancelled_request_does_not_stop_the_batch(pipeline: Pipeline) -> None:
    results = pipeline([gen(seed=1), gen(seed=2)], is_cancelled=lambda i: i == 0)
    assert results[0].cancelled and results[0].pixels is None
    assert not results[1].cancelled and results[1].pixels is not None


def test_long_prompts_are_truncated_and_say_so(pipeline: Pipeline) -> None:
    long = "一个红色的圆形" * 20
    results = pipeline([gen(long), gen("short")])
    assert [r.prompt_truncated for r in results] == [True, False]


@pytest.mark.parametrize(
    ("request_factory", "param", "message"),
    [
        (lambda: R.generation("x", seed=1, size=(30, 32)), "size", "multiple of 8"),
        (lambda: R.generation("x", seed=1, size=(32, 32), steps=0), "steps", "between 1 and"),
        (lambda: R.generation("x", seed=1, size=(32, 32), guidance=math.nan), "guidance_scale", "number from 0"),
        (lambda: R.generation("   ", seed=1, size=(32, 32)), "prompt", "prompt is empty"),
        (lambda: R.generation("x", seed=-1, size=(32, 32)), "seed", "seed must be"),
        (
            lambda: R.inpainting("x", np.zeros((32, 32, 3), np.uint8), np.ones((16, 32), bool), seed=1),
            "mask",
            "same size",
        ),
        (
            lambda: R.inpainting("x", np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), bool), seed=1),
            "mask",
            "no pixels",
        ),
        (lambda: R.img2img("x", np.zeros((32, 32, 3), np.uint8), strength=0.0, seed=1), "strength", "strength"),
    ],
)
def test_bad_arguments_are_rejected_with_a_message(
    pipeline: Pipeline, request_factory, param: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as info:
        pipeline([request_factory()])
    assert info.value.param == param


def test_outpaint_arguments_are_checked() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(InvalidRequest, match="at least one"):
        R.outpainting("x", image, seed=1)
    with pytest.raises(InvalidRequest, match="left must be zero or more"):
        R.outpainting("x", image, left=-8, seed=1)


def test_png_carries_generation_parameters(pipeline: Pipeline) -> None:
    pixels = pipeline([gen()])[0].pixels
    assert pixels is not None
    data = encode_png(pixels, {"prompt": "红色圆形", "seed": 7, "steps": 4, "model": "random-init@v0"})
    assert read_png_parameters(data) == {"prompt": "红色圆形", "seed": "7", "steps": "4", "model": "random-init@v0"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_serves_what_float32_serves(dtype: torch.dtype) -> None:
    # The networks run in half precision; the sampler's state stays float32, so the steps still
    # add up and the images stay within a level or two of float32's.
    full, half = Pipeline(load_checkpoint("tiny-mmdit@v1")), Pipeline(load_checkpoint("tiny-mmdit@v1"), dtype=dtype)
    square = np.zeros((32, 32), bool)
    square[8:24, 8:24] = True
    first = full([gen("a blue square", guidance=3.0)])[0].pixels
    assert first is not None
    requests = [gen("a red circle on the left", guidance=3.0), R.inpainting("a green circle", first, square, seed=2)]
    for request in requests:
        expected, got = full([request])[0].pixels, half([request])[0].pixels
        assert expected is not None and got is not None and got.dtype == np.uint8
        difference = np.abs(got.astype(int) - expected.astype(int))
        assert difference.mean() < 1.5, (request.prompt, difference.mean())
        assert (difference > 32).mean() < 0.01


def test_png_compress_level_trades_size_only(pipeline: Pipeline) -> None:
    pixels = pipeline([R.generation("a blue sky over a green field", seed=1, size=(64, 64), steps=4)])[0].pixels
    assert pixels is not None
    fast, small = encode_png(pixels, {"seed": 1}, 1), encode_png(pixels, {"seed": 1}, 9)
    assert len(small) <= len(fast)  # equal where deflate stores the blocks; see test_png.py
    for png in (fast, small):
        with Image.open(io.BytesIO(png)) as image:
            assert np.array_equal(np.asarray(image.convert("RGB")), pixels)

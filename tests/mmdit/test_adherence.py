"""The adherence evaluator: accurate on ground truth, strict on wrong images, and a parser that
reads every caption template back."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from huabu.deployments.backends.mmdit.eval.adherence import (
    color_labels,
    components,
    evaluate,
    inpaint_score,
    parse_prompt,
    score,
    score_inpaint_case,
    seam_score,
)
from huabu.deployments.backends.mmdit.training.synthetic import (
    BACKGROUNDS,
    COLORS,
    HIDDEN_ON,
    LANGUAGES,
    POSITIONS,
    SHAPES,
    SIZES,
    ObjectSpec,
    SceneSpec,
    caption_variants,
    render,
    sample_batch,
    sample_inpaint_case,
    sample_outpaint_case,
)


def degrade(image: np.ndarray, rng: np.random.Generator, noise: float, blur: float) -> np.ndarray:
    """What a generated image may look like: a little soft and a little noisy."""
    x = image.astype(np.float64)
    if blur > 0:
        radius = int(np.ceil(3 * blur))
        kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / blur) ** 2)
        kernel /= kernel.sum()
        h, w = image.shape[:2]
        padded = np.pad(x, ((radius, radius), (0, 0), (0, 0)), mode="edge")
        x = sum(k * padded[i : i + h] for i, k in enumerate(kernel))
        padded = np.pad(x, ((0, 0), (radius, radius), (0, 0)), mode="edge")
        x = sum(k * padded[:, i : i + w] for i, k in enumerate(kernel))
    x = x + rng.normal(0.0, noise, x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def accuracy(canvas: tuple[int, int], n: int, noise: float, blur: float, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    batch = sample_batch(rng, n, canvas)
    hits = dict.fromkeys(("color", "position", "shape", "size"), 0)
    total = 0
    for image, spec in zip(batch.images, batch.specs, strict=True):
        result = evaluate(degrade(image, rng, noise, blur), spec)
        for obj in result.objects:
            total += 1
            hits["color"] += obj.color
            hits["position"] += obj.position
            hits["shape"] += obj.shape
            hits["size"] += bool(obj.size)
    return {k: v / total for k, v in hits.items()}


@pytest.mark.parametrize(
    ("noise", "blur"), [(0.0, 0.0), (6.0, 0.0), (0.0, 0.6), (6.0, 0.6)], ids=["clean", "noise", "blur", "both"]
)
def test_ground_truth_is_scored_right(noise: float, blur: float) -> None:
    acc = accuracy((32, 32), 250, noise, blur)
    assert acc["color"] >= 0.98 and acc["position"] >= 0.98, acc
    assert acc["shape"] >= 0.95 and acc["size"] >= 0.95, acc


@pytest.mark.parametrize("canvas", [(32, 64), (64, 32), (48, 48)])
def test_ground_truth_on_other_canvases(canvas: tuple[int, int]) -> None:
    acc = accuracy(canvas, 80, 6.0, 0.6, seed=1)
    assert acc["color"] >= 0.98 and acc["position"] >= 0.98 and acc["shape"] >= 0.95, acc


def _scenes(n: int, seed: int) -> list[tuple[np.ndarray, SceneSpec]]:
    rng = np.random.default_rng(seed)
    batch = sample_batch(rng, n)
    return [(degrade(img, rng, 6.0, 0.6), spec) for img, spec in zip(batch.images, batch.specs, strict=True)]


def _with(spec: SceneSpec, index: int, **change: str) -> SceneSpec:
    objects = list(spec.objects)
    objects[index] = dataclasses.replace(objects[index], **change)
    return SceneSpec(tuple(objects), spec.background)


def test_a_swapped_color_is_detected() -> None:
    for image, spec in _scenes(150, 1):
        used = {o.color for o in spec.objects}
        wrong = next(c for c in COLORS if c not in used and c not in HIDDEN_ON[spec.background])
        result = evaluate(image, _with(spec, 0, color=wrong))
        assert not result.objects[0].color and not result.color_position and result.value < 1.0


def test_a_swapped_position_is_detected() -> None:
    for image, spec in _scenes(100, 2):
        for wrong in POSITIONS:
            if wrong != spec.objects[0].position:
                result = evaluate(image, _with(spec, 0, position=wrong))
                assert not result.objects[0].position and not result.color_position
        if len(spec.objects) == 2:  # the two objects trade places
            a, b = spec.objects
            swapped = SceneSpec((a.__class__(a.color, a.shape, b.position), b.__class__(b.color, b.shape, a.position)))
            assert not any(o.position for o in evaluate(image, swapped).objects)


def test_a_wrong_shape_or_size_is_detected() -> None:
    wrong_shape = wrong_size = total = 0
    for image, spec in _scenes(100, 3):
        obj = spec.objects[0]
        for shape in SHAPES:
            if shape != obj.shape:
                total += 1
                wrong_shape += not evaluate(image, _with(spec, 0, shape=shape)).objects[0].shape
        other = next(s for s in SIZES if s != obj.size)
        wrong_size += evaluate(image, _with(spec, 0, size=other)).objects[0].size is False
    assert wrong_shape >= 0.95 * total and wrong_size >= 0.95 * 100


def test_an_empty_image_scores_nothing() -> None:
    for background in BACKGROUNDS:
        blank = render(SceneSpec((), background))
        spec = SceneSpec((ObjectSpec("red", "circle", "left"), ObjectSpec("blue", "square", "right")), background)
        result = evaluate(blank, spec)
        assert not result.color and result.value == 0.0


def test_objects_of_one_color_are_matched_by_place() -> None:
    spec = SceneSpec((ObjectSpec("red", "circle", "left", "small"), ObjectSpec("red", "triangle", "right", "large")))
    result = evaluate(render(spec), spec)
    assert result.ok and result.value == 1.0
    flipped = SceneSpec((ObjectSpec("red", "circle", "right"), ObjectSpec("red", "triangle", "left")))
    assert not evaluate(render(spec), flipped).shape


def test_score_value_counts_attributes() -> None:
    spec = SceneSpec((ObjectSpec("green", "square", "top", "large"),), "white")
    image = render(spec)
    assert evaluate(image, spec).value == 1.0
    half = evaluate(image, SceneSpec((ObjectSpec("green", "circle", "bottom"),)))
    assert half.color and not half.position and not half.shape and half.size is None
    assert half.value == pytest.approx(1 / 3)


def test_color_labels_and_components() -> None:
    image = np.zeros((8, 8, 3), np.uint8) + 128
    image[1:3, 1:3] = COLORS["orange"]
    image[5:7, 5:7] = COLORS["orange"]
    image[0, 7] = COLORS["white"]
    labels = color_labels(image)
    assert (labels == 1).sum() == 8 and (labels == -1).sum() == 64 - 9
    ids = components(labels == 1)
    assert len(np.unique(ids[ids > 0])) == 2
    image[3:5, 3:5] = COLORS["orange"]  # diagonal contact joins them (8-connectivity)
    ids = components(color_labels(image) == 1)
    assert len(np.unique(ids[ids > 0])) == 1


# --------------------------------------------------------------------------------------------
# Prompt parser


def _covering_specs() -> list[SceneSpec]:
    """Scenes that together use every colour, shape, position, size and background word."""
    specs = []
    backgrounds = list(BACKGROUNDS)
    for i, (color, shape, position) in enumerate(
        zip(list(COLORS) * 2, itertools.islice(itertools.cycle(SHAPES), 16), itertools.cycle(POSITIONS), strict=False)
    ):
        bg = next(b for b in backgrounds[i % 5 :] + backgrounds if color not in HIDDEN_ON[b])
        specs.append(SceneSpec((ObjectSpec(color, shape, position, SIZES[i % 2]),), bg))
    pairs = [("left", "right"), ("top", "bottom"), ("right", "left"), ("bottom", "top")]
    for i, (p1, p2) in enumerate(pairs):
        c1, c2 = list(COLORS)[2 * i], list(COLORS)[2 * i + 1]
        objects = (ObjectSpec(c1, SHAPES[i % 3], p1, "small"), ObjectSpec(c2, SHAPES[(i + 1) % 3], p2, "large"))
        specs.append(SceneSpec(objects, "gray"))
    return specs


@pytest.mark.parametrize("language", LANGUAGES)
def test_parser_round_trips_every_caption_template(language: str) -> None:
    count = 0
    for spec in _covering_specs():
        for text, says in caption_variants(spec, language):
            assert parse_prompt(text) == says, text
            count += 1
    assert count > 500


def test_parser_reads_synonyms_and_case() -> None:
    expected = SceneSpec((ObjectSpec("red", "circle", "center"),), "gray")
    for text in (
        "A Red Circle In The Centre, grey background.",
        "red disc, middle; background is gray",
        "红圆在中心，灰色背景",
    ):
        assert parse_prompt(text) == expected, text
    assert parse_prompt("Left: a small blue square") == SceneSpec((ObjectSpec("blue", "square", "left", "small"),))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a cat on the left",
        "a red circle",  # no position
        "red circle on the left, photorealistic, 4k",
        "a red blue circle on the left",
        "a shredded circle on the left",
        "on the left",
        "a white circle on the left, white background",
        "一只猫在左边",
    ],
)
def test_parser_refuses_prompts_outside_the_language(text: str) -> None:
    assert parse_prompt(text) is None
    assert score(np.zeros((32, 32, 3), np.uint8), text) is None


def test_score_from_prompt() -> None:
    spec = SceneSpec((ObjectSpec("yellow", "triangle", "bottom", "large"), ObjectSpec("purple", "circle", "top")))
    image = render(spec)
    for text in (
        "a large yellow triangle at the bottom and a purple circle at the top",
        "下方一个大的黄色三角形，上面有一个紫色圆形",
    ):
        result = score(image, text)
        assert result is not None and result.ok and result.value == 1.0
    wrong = score(image, "a yellow triangle at the top and a purple circle at the bottom")
    assert wrong is not None and wrong.color and not wrong.position


# --------------------------------------------------------------------------------------------
# Editing checks


def test_seam_metric_tells_continued_from_broken_backgrounds() -> None:
    rng = np.random.default_rng(0)
    for side in ("left", "right", "top", "bottom"):
        case = sample_outpaint_case(rng, side=side)
        canvas, mask = case.canvas_and_mask()
        background = render(SceneSpec((), case.spec.background), canvas.shape[:2])
        continued = degrade(np.where(mask[..., None], background, canvas), rng, 4.0, 0.0)
        good = seam_score(continued, mask)
        assert good.ok() and abs(good.excess) < 5.0, good
        other = np.where(mask[..., None], (np.asarray(background, np.int16) + 90) % 256, canvas).astype(np.uint8)
        assert not seam_score(other, mask).ok()
    gray = render(SceneSpec((), "light gradient"), (32, 32))
    canvas = np.zeros((32, 64, 3), np.uint8)
    canvas[:, :32] = gray
    mask = np.zeros((32, 64), bool)
    mask[:, 32:] = True
    assert not seam_score(canvas, mask).ok()  # the new strip left empty


def test_inpaint_check() -> None:
    rng = np.random.default_rng(1)
    placed = 0
    for _ in range(30):
        case = sample_inpaint_case(rng)
        target = render(case.after, case.image.shape[:2], np.random.default_rng(0))
        result = np.where(case.mask[..., None], target, case.image)
        ok = score_inpaint_case(result, case)
        placed += ok.placed
        assert ok.kept and ok.outside_diff == 0.0
        assert not score_inpaint_case(case.image, case).placed  # nothing painted
        smudged = result.copy()
        smudged[~case.mask] = (smudged[~case.mask].astype(np.int16) + 60) % 256
        assert not score_inpaint_case(smudged, case).kept
    assert placed == 30
    # An object painted outside the mask does not count as placed.
    before = SceneSpec((), "gray")
    new = ObjectSpec("red", "circle", "left", "large")
    mask = np.zeros((32, 32), bool)
    mask[:, 16:] = True
    wrong_side = render(SceneSpec((new,), "gray"))
    assert not inpaint_score(wrong_side, render(before), mask, new).placed

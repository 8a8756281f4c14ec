"""The intent layer (issue #32): its corpus split by template family, its classifier file, and its
measured quality on the dev and held-out families (figures in docs: filters/README.md)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from huabu.filters import PromptFilter, PromptFilterSettings
from huabu.filters.evaluate import INTENT_CORPUS_DIR, EvalReport, evaluate, load_corpus
from huabu.filters.intent import IntentClassifier, IntentModelError, bundled_classifier_path
from huabu.filters.semantic import TextEncoder
from huabu.filters.training.families import write_corpus

KINDS = {"euphemism", "emoji", "effect", "injury", "coded", "translation", "mixed_script"}


def _split(name: str) -> list[dict[str, str]]:
    text = (INTENT_CORPUS_DIR / f"{name}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_splits_are_by_template_family_and_disjoint() -> None:
    splits = {name: _split(name) for name in ("train", "dev", "holdout")}
    families = {name: {r["family"] for r in rows} for name, rows in splits.items()}
    assert not families["train"] & families["dev"]
    assert not (families["train"] | families["dev"]) & families["holdout"]
    texts = {name: {r["text"] for r in rows} for name, rows in splits.items()}
    assert not (texts["train"] | texts["dev"]) & texts["holdout"]
    assert all(r["split"] == name for name, rows in splits.items() for r in rows)


def test_holdout_covers_every_adversarial_kind_with_benign_counterparts() -> None:
    rows = _split("holdout")
    for kind in KINDS:
        labels = Counter(r["label"] == "safe" for r in rows if r["kind"] == kind)
        assert labels[False] >= 10 and labels[True] >= 10, kind
    translated = {r["lang"] for r in rows if r["kind"] == "translation" and r["label"] != "safe"}
    assert len(translated - {"en", "zh"}) >= 6, translated


def test_train_and_dev_files_are_what_the_families_generate(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    for name in ("train", "dev"):
        assert (tmp_path / f"{name}.jsonl").read_text(encoding="utf-8") == (
            INTENT_CORPUS_DIR / f"{name}.jsonl"
        ).read_text(encoding="utf-8"), (
            f"regenerate: python -m huabu.filters.training.train_intent --regenerate ({name})"
        )


def test_bundled_classifier_loads_and_broken_files_are_refused(tmp_path: Path) -> None:
    clf = IntentClassifier()
    assert len(clf.version) == 12
    assert clf.classify(np.zeros((0, 512), dtype=np.float32)) == []
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(bundled_classifier_path().read_bytes()[:200])
    wrong_shape = tmp_path / "wrong.npz"
    np.savez(
        wrong_shape, weights=np.zeros((7, 3)), bias=np.zeros(7), labels=np.array(["safe"] * 7), thresholds=np.ones(7)
    )
    for path in (truncated, wrong_shape, tmp_path / "missing.npz"):
        with pytest.raises(IntentModelError, match="intent classifier"):
            IntentClassifier(path)


@pytest.fixture(scope="module")
def reports(prompt_filter: PromptFilter) -> dict[str, EvalReport]:
    rows = load_corpus(INTENT_CORPUS_DIR / "dev.jsonl") + load_corpus(INTENT_CORPUS_DIR / "holdout.jsonl")
    return {split: evaluate(prompt_filter, [r for r in rows if r.split == split]) for split in ("dev", "holdout")}


def test_quality_on_the_dev_families(reports: dict[str, EvalReport]) -> None:
    # Measured: recall 99.0 % (284/287), FPR 3.6 % (4/110: two v1 block-list rules, one exemplar, one
    # classifier false positive); the classifier's thresholds were calibrated here.
    dev = reports["dev"]
    assert dev.recall >= 0.98 and dev.false_positive_rate <= 0.04, dev.as_dict()


def test_quality_on_the_held_out_families(reports: dict[str, EvalReport]) -> None:
    # Measured once, before any change made after seeing it: recall 97.6 %, FPR 2.4 % (4/170); per kind
    # in filters/README.md. These bounds guard against regressions; they are not the targets.
    held = reports["holdout"]
    assert held.recall >= 0.95 and held.false_positive_rate <= 0.03, held.as_dict()
    for kind in KINDS:
        c = held.groups[f"kind={kind}"]
        assert c["tp"] / (c["tp"] + c["fn"]) >= 0.75, (kind, dict(c))


def test_the_v1_filter_misses_what_the_intent_layer_catches(
    encoder: TextEncoder, reports: dict[str, EvalReport]
) -> None:
    v1 = PromptFilter(PromptFilterSettings(enable_intent=False), encoder=encoder)
    rows = [r for r in load_corpus(INTENT_CORPUS_DIR / "holdout.jsonl") if r.kind in KINDS - {"translation"}]
    assert evaluate(v1, rows).recall < 0.6 < reports["holdout"].recall

"""The labelled corpus: its coverage, and the evaluation targets (recall >= 95 %, FPR <= 2 %)."""

from __future__ import annotations

from collections import Counter

import pytest

from huabu.filters import PromptFilter
from huabu.filters.evaluate import EvalReport, evaluate, load_corpus, main


@pytest.fixture(scope="module")
def report(prompt_filter: PromptFilter) -> EvalReport:
    return evaluate(prompt_filter, load_corpus())


def test_corpus_coverage() -> None:
    rows = load_corpus()
    assert len(rows) >= 200
    assert len({r.text for r in rows}) == len(rows)
    unsafe = [r for r in rows if r.label != "safe"]
    assert {r.lang for r in unsafe} == {"en", "zh", "mixed"}
    assert {r.label for r in unsafe} == {"sexual", "minors", "violence", "hate", "self_harm", "illegal"}
    kinds = Counter(r.kind for r in unsafe)
    assert kinds["obfuscated"] >= 40 and kinds["paraphrase"] >= 10
    obfuscated = " ".join(r.text for r in unsafe if r.kind == "obfuscated")
    for trick in ("\u200b", "ｎ", "n.u.d.e", "n u d e", "p0rn", "裸 体", "裸體"):
        assert trick in obfuscated, trick
    texts = {r.text for r in rows if r.label == "safe"}
    for lookalike in (
        "breast cancer awareness poster, pink ribbon",
        "鸡胸肉食谱",
        "shooting star over the lake",
        "naked mole rat in a burrow, nature documentary",
        "科技蓝风格封面",
        "a red circle on the left",
    ):
        assert lookalike in texts
    assert sum(r.label == "safe" for r in rows) >= 200
    assert Counter(r.split for r in rows)["holdout"] >= 80


def test_evaluation_targets(report: EvalReport) -> None:
    assert report.recall >= 0.95, report.as_dict()
    assert report.false_positive_rate <= 0.02, report.as_dict()
    assert report.category_accuracy >= 0.95, report.as_dict()


def test_targets_hold_on_the_holdout_split(report: EvalReport) -> None:
    c = report.groups["split=holdout"]
    assert c["tp"] / (c["tp"] + c["fn"]) >= 0.95
    assert c["fp"] / (c["fp"] + c["tn"]) <= 0.02 + 1 / (c["fp"] + c["tn"])  # small split: one FP of slack


def test_no_obfuscated_or_plain_unsafe_prompt_is_missed(report: EvalReport) -> None:
    for kind in ("obfuscated", "plain"):
        assert report.groups[f"kind={kind}"]["fn"] == 0, [r.text for r, _ in report.errors if r.kind == kind]


def test_evaluate_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--split", "holdout", "--no-semantic"]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "recall" in out and "false-positive rate" in out and "confusion" in out
    assert main(["--split", "dev", "--json"]) == 0
    assert '"recall"' in capsys.readouterr().out

"""Evaluate the prompt filter on the labelled corpus: precision, recall, false-positive rate, confusion.

    python -m huabu.filters.evaluate [--corpus tests/filters/corpus.jsonl] [--split all|dev|holdout]
                                     [--no-semantic] [--no-blocklist] [--errors] [--json]

Corpus lines are JSON objects: ``text``, ``label`` ("safe" or a category), ``lang`` (en/zh/mixed),
``kind`` (plain/obfuscated/paraphrase/lookalike) and ``split``. The ``dev`` split was used to choose the
semantic thresholds; ``holdout`` was not looked at while tuning. "Positive" means unsafe: recall is the
share of unsafe prompts blocked (in any category), the false-positive rate the share of safe prompts
blocked. The confusion table also shows whether the reported category matches the label.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huabu.filters.decision import Category, Decision
from huabu.filters.prompt_filter import PromptFilter
from huabu.filters.settings import PromptFilterSettings

__all__ = ["CorpusRow", "EvalReport", "default_corpus_path", "evaluate", "load_corpus", "main"]

SAFE = "safe"
_LABELS = (SAFE, *(c.value for c in Category))


@dataclass(frozen=True)
class CorpusRow:
    text: str
    label: str
    lang: str = ""
    kind: str = ""
    split: str = "dev"


def default_corpus_path() -> Path:
    """tests/filters/corpus.jsonl of the source checkout (the package is installed editable)."""
    return Path(__file__).resolve().parent.parent / "tests" / "filters" / "corpus.jsonl"


def load_corpus(path: str | Path | None = None) -> list[CorpusRow]:
    rows: list[CorpusRow] = []
    for n, line in enumerate(Path(path or default_corpus_path()).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = CorpusRow(**json.loads(line))
        if row.label not in _LABELS:
            raise ValueError(f"corpus line {n}: unknown label {row.label!r}")
        rows.append(row)
    return rows


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


@dataclass
class EvalReport:
    """Counts for one evaluation; the metrics are properties."""

    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)  # (label, predicted) -> count
    by_stage: Counter[str] = field(default_factory=Counter)  # stage of the blocking decisions
    groups: dict[str, Counter[str]] = field(default_factory=dict)  # "lang=en" -> Counter(tp=, fn=, fp=, tn=)
    errors: list[tuple[CorpusRow, Decision]] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def false_positive_rate(self) -> float:
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def category_accuracy(self) -> float:
        """Of the blocked unsafe prompts, the share reported under their labelled category."""
        right = sum(n for (label, pred), n in self.confusion.items() if label != SAFE and pred == label)
        return _ratio(right, self.tp)

    def as_dict(self) -> dict[str, object]:
        return {
            "n": self.tp + self.fn + self.fp + self.tn,
            "tp": self.tp,
            "fn": self.fn,
            "fp": self.fp,
            "tn": self.tn,
            "precision": self.precision,
            "recall": self.recall,
            "false_positive_rate": self.false_positive_rate,
            "category_accuracy": self.category_accuracy,
            "blocked_by_stage": dict(self.by_stage),
            "confusion": {f"{label}->{pred}": n for (label, pred), n in sorted(self.confusion.items())},
            "groups": {k: dict(v) for k, v in sorted(self.groups.items())},
        }


def evaluate(prompt_filter: PromptFilter, rows: Sequence[CorpusRow], batch_size: int = 32) -> EvalReport:
    """Run the filter over the rows (in batches, as a deployment would) and tally the outcome."""
    report = EvalReport()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        decisions = prompt_filter.check_many([r.text for r in chunk], record=False)
        for row, d in zip(chunk, decisions, strict=True):
            unsafe = row.label != SAFE
            pred = d.category.value if d.blocked and d.category else (SAFE if d.allowed else "unknown")
            report.confusion[(row.label, pred)] += 1
            if d.blocked:
                report.by_stage[d.stage.value] += 1
            outcome = ("tp" if d.blocked else "fn") if unsafe else ("fp" if d.blocked else "tn")
            setattr(report, outcome, getattr(report, outcome) + 1)
            for key in (f"split={row.split}", f"lang={row.lang}", f"kind={row.kind}"):
                report.groups.setdefault(key, Counter())[outcome] += 1
            if outcome in ("fn", "fp"):
                report.errors.append((row, d))
    return report


def _fmt(x: float) -> str:
    return "  n/a" if x != x else f"{100 * x:5.1f}%"


def format_report(report: EvalReport, show_errors: bool = False) -> str:
    lines = [
        f"prompts: {report.tp + report.fn} unsafe, {report.fp + report.tn} safe",
        f"precision {_fmt(report.precision)}   recall {_fmt(report.recall)}   "
        f"false-positive rate {_fmt(report.false_positive_rate)}   category accuracy {_fmt(report.category_accuracy)}",
        f"tp={report.tp} fn={report.fn} fp={report.fp} tn={report.tn}   blocked by stage: {dict(report.by_stage)}",
        "",
        "confusion (rows: label, columns: decision)",
    ]
    preds = [*_LABELS, *sorted({p for _, p in report.confusion} - set(_LABELS))]
    width = max(len(p) for p in preds) + 1
    lines.append(" " * width + "".join(f"{p:>{width}}" for p in preds))
    for label in _LABELS:
        counts = [report.confusion.get((label, p), 0) for p in preds]
        if any(counts):
            lines.append(f"{label:<{width}}" + "".join(f"{c:>{width}}" for c in counts))
    lines += ["", "by group: recall / false-positive rate"]
    for key, c in sorted(report.groups.items()):
        rec = _ratio(c["tp"], c["tp"] + c["fn"])
        fpr = _ratio(c["fp"], c["fp"] + c["tn"])
        positives, negatives = c["tp"] + c["fn"], c["fp"] + c["tn"]
        lines.append(
            f"  {key:<20} recall {_fmt(rec)} ({c['tp']}/{positives})   FPR {_fmt(fpr)} ({c['fp']}/{negatives})"
        )
    if show_errors and report.errors:
        lines += ["", "errors (corpus text shown: this is test data, never production prompts)"]
        for row, d in report.errors:
            kind = "MISS" if row.label != SAFE else "FP  "
            lines.append(f"  {kind} [{row.label}/{row.split}] {d.rule_id or '-'} score={d.score} {row.text!r}")
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m huabu.filters.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help="JSONL corpus (default: tests/filters/corpus.jsonl)")
    parser.add_argument("--split", choices=("all", "dev", "holdout"), default="all")
    parser.add_argument("--no-semantic", action="store_true", help="block lists only")
    parser.add_argument("--no-blocklist", action="store_true", help="semantic check only")
    parser.add_argument("--errors", action="store_true", help="list misses and false positives")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    args = parser.parse_args(list(argv) if argv is not None else None)

    rows = [r for r in load_corpus(args.corpus) if args.split == "all" or r.split == args.split]
    settings = PromptFilterSettings(enable_semantic=not args.no_semantic, enable_blocklist=not args.no_blocklist)
    report = evaluate(PromptFilter(settings), rows)
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report, args.errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate the prompt filter on the labelled corpora: precision, recall, false-positive rate, confusion.

    python -m huabu.filters.evaluate [--corpus FILE ...] [--split all|train|dev|holdout|holdout2|holdout3|holdout4]
                                     [--per-split] [--no-semantic] [--no-blocklist] [--no-intent] [--errors] [--json]

Corpus lines are JSON objects: ``text``, ``label`` ("safe" or a category), ``lang``, ``kind`` and
``split`` (and ``family``, the template family). The default corpora are ``tests/filters/corpus.jsonl``
(v1: plain/obfuscated/paraphrase/lookalike, en/zh) and the intent corpus of issue #32,
``filters/data/corpus/{dev,holdout,holdout2,holdout3,holdout4}.jsonl`` (euphemism, emoji, effect, injury, coded,
translation, mixed_script and their hard benign counterparts, in 26 languages), split by template family. The
``dev`` splits were used to choose thresholds; ``holdout`` was never looked at while tuning (it has been
measured since), ``holdout2`` (the second round: self-harm by injuries, ~50 hard benign prompts per
adversarial kind) was written before that round's changes and measured once after them, and has been
looked at while fixing since; ``holdout3`` (the third round: new template families and words, 14
languages, hard benign counterparts per kind incl. numbers, hex and dates) was written and measured
before the third round's changes and only measured again after them (its errors unread); ``holdout4``
(the fourth round: new families, words and languages such as th, sv, vi, id, cs, uk) was written by
another session before the fourth round's changes, measured before and after them, errors unread; the intent
corpus's ``train`` split (what the classifier learnt from) is not evaluated unless asked for.
"Positive" means unsafe: recall is the share of unsafe prompts blocked (in any category), the
false-positive rate the share of safe prompts blocked, precision the share of blocked prompts that are
unsafe. Per category: recall of its prompts, and the precision of blocks reported under it.
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

__all__ = [
    "CorpusRow",
    "EvalReport",
    "default_corpus_path",
    "default_corpus_paths",
    "evaluate",
    "load_corpora",
    "load_corpus",
    "main",
]

SAFE = "safe"
_LABELS = (SAFE, *(c.value for c in Category))


@dataclass(frozen=True)
class CorpusRow:
    text: str
    label: str
    lang: str = ""
    kind: str = ""
    split: str = "dev"
    family: str = ""


_ROOT = Path(__file__).resolve().parent.parent  # the source checkout (the package is installed editable)
INTENT_CORPUS_DIR = _ROOT / "filters" / "data" / "corpus"
EVAL_SPLITS = ("dev", "holdout", "holdout2", "holdout3", "holdout4")  # the intent corpus files evaluated by default


def default_corpus_path() -> Path:
    """tests/filters/corpus.jsonl, the v1 corpus."""
    return _ROOT / "tests" / "filters" / "corpus.jsonl"


def default_corpus_paths() -> list[Path]:
    """The v1 corpus and the intent corpus's dev and held-out families."""
    return [default_corpus_path(), *(INTENT_CORPUS_DIR / f"{s}.jsonl" for s in EVAL_SPLITS)]


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


def load_corpora(paths: Iterable[str | Path] | None = None) -> list[CorpusRow]:
    return [row for p in (paths if paths is not None else default_corpus_paths()) for row in load_corpus(p)]


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
            for key in (f"split={row.split}", f"lang={row.lang}", f"kind={row.kind}", f"label={row.label}"):
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
    lines += ["", "per category: recall of its prompts, precision of the blocks reported under it"]
    for cat in _LABELS[1:]:
        c = report.groups.get(f"label={cat}", Counter())
        reported = sum(n for (_, pred), n in report.confusion.items() if pred == cat)
        if c["tp"] + c["fn"] or reported:
            lines.append(
                f"  {cat:<20} recall {_fmt(_ratio(c['tp'], c['tp'] + c['fn']))} ({c['tp']}/{c['tp'] + c['fn']})   "
                f"precision {_fmt(_ratio(report.confusion[(cat, cat)], reported))} "
                f"({report.confusion[(cat, cat)]}/{reported})"
            )
    lines += ["", "by group: recall / false-positive rate / precision"]
    for key, c in sorted(report.groups.items()):
        if key.startswith("label="):
            continue
        rec = _ratio(c["tp"], c["tp"] + c["fn"])
        fpr = _ratio(c["fp"], c["fp"] + c["tn"])
        positives, negatives = c["tp"] + c["fn"], c["fp"] + c["tn"]
        lines.append(
            f"  {key:<20} recall {_fmt(rec)} ({c['tp']}/{positives})   FPR {_fmt(fpr)} ({c['fp']}/{negatives})"
            f"   precision {_fmt(_ratio(c['tp'], c['tp'] + c['fp']))}"
        )
    if show_errors and report.errors:
        lines += ["", "errors (corpus text shown: this is test data, never production prompts)"]
        for row, d in report.errors:
            kind = "MISS" if row.label != SAFE else "FP  "
            lines.append(f"  {kind} [{row.label}/{row.split}] {d.rule_id or '-'} score={d.score} {row.text!r}")
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m huabu.filters.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, action="append", default=None, help="JSONL corpus, repeatable (default: see above)"
    )
    parser.add_argument("--split", choices=("all", "train", *EVAL_SPLITS), default="all")
    parser.add_argument("--per-split", action="store_true", help="one report per split (what make filters-eval shows)")
    parser.add_argument("--no-semantic", action="store_true", help="no exemplar similarity")
    parser.add_argument("--no-blocklist", action="store_true", help="no block lists")
    parser.add_argument("--no-intent", action="store_true", help="no intent layer (the v1 filter)")
    parser.add_argument("--errors", action="store_true", help="list misses and false positives")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    args = parser.parse_args(list(argv) if argv is not None else None)

    rows = [r for r in load_corpora(args.corpus) if args.split == "all" or r.split == args.split]
    settings = PromptFilterSettings(
        enable_semantic=not args.no_semantic, enable_blocklist=not args.no_blocklist, enable_intent=not args.no_intent
    )
    prompt_filter = PromptFilter(settings)
    splits = sorted({r.split for r in rows}) if args.per_split else [args.split]
    reports = {}
    for split in splits:
        selected = [r for r in rows if split == "all" or r.split == split]
        reports[split] = evaluate(prompt_filter, selected)
        if not args.json:
            print(f"=== split: {split} ===\n{format_report(reports[split], args.errors)}\n")
    if args.json:
        out = {k: v.as_dict() for k, v in reports.items()}
        print(json.dumps(out if args.per_split else out[args.split], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

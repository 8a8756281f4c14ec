"""Train the intent classifier and calibrate its per-category thresholds (offline; minutes on a CPU).

    python -m huabu.filters.training.train_intent [--out filters/data/intent_classifier.npz] [--regenerate]

Data: ``filters/data/corpus/train.jsonl`` (template families, see ``families.py``; ``--regenerate``
rewrites it and ``dev.jsonl`` from the families), the ``dev`` rows of ``tests/filters/corpus.jsonl``
(the v1 corpus) and the v1 exemplar phrases. Thresholds are calibrated on ``filters/data/corpus/
dev.jsonl`` only, whose families the classifier never trained on. The held-out split is never read.

Model: softmax regression on the L2-normalised 512-d multilingual USE embedding of the prompt's
``semantic_text`` (what the semantic stage embeds), class-balanced, L2-regularised, fitted by full-batch
Adam in numpy. Deterministic for a given corpus.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np

from huabu.filters.blocklist import load_blocklists
from huabu.filters.decision import Category
from huabu.filters.intent import SAFE, softmax
from huabu.filters.normalize import normalize
from huabu.filters.semantic import SemanticMatcher, TextEncoder, load_exemplars
from huabu.filters.settings import PromptFilterSettings
from huabu.filters.training.families import write_corpus

ROOT = Path(__file__).resolve().parents[2]
CORPUS_DIR = ROOT / "filters" / "data" / "corpus"
LABELS = (SAFE, *(c.value for c in Category))
# Calibration (round 4): per category, the lowest thresholds at which every dev *kind* keeps its benign
# false positives within KIND_FP_BUDGET of its safe rows (one global budget let a benign family of one kind,
# e.g. demolition scenes, push the violence threshold up unnoticed at the cost of effect recall), never
# below the floor (a near-uniform distribution is not evidence), and never by a step that loses more than
# MAX_STEP_COST unsafe dev rows per false positive removed: such false positives are left and reported,
# for data or lexicon exceptions to fix, instead of being bought with recall.
KIND_FP_BUDGET = 0.02
MAX_STEP_COST = 1.0
THRESHOLD_FLOOR = 0.5
VETO_SLACK = 0.02


def _jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _v1_dev(half: int) -> list[dict[str, str]]:
    """Half of the v1 corpus's dev rows (by a stable hash of the text): 0 trains, 1 calibrates. The v1
    rows have no template families; the halves keep its lookalikes ("bath bomb") in both roles."""
    rows = [r for r in _jsonl(ROOT / "tests" / "filters" / "corpus.jsonl") if r["split"] == "dev"]
    return [r for r in rows if int(hashlib.sha256(r["text"].encode()).hexdigest(), 16) % 2 == half]


def training_rows() -> list[tuple[str, str]]:
    rows = [(r["text"], r["label"]) for r in _jsonl(CORPUS_DIR / "train.jsonl")]
    rows += [(r["text"], r["label"]) for r in _v1_dev(0)]
    ex = load_exemplars(["default"])
    rows += [(t, cat.value) for cat, phrases in ex.unsafe.items() for t in phrases]
    rows += [(t, SAFE) for t in ex.benign]
    return rows


_CACHE: dict[str, np.ndarray] = {}


def embed(encoder: TextEncoder, texts: list[str], cache: Path | None = None) -> np.ndarray:
    """Embeddings of the texts' semantic views; ``cache`` (an .npz) keeps them between runs."""
    if cache is not None and cache.exists() and not _CACHE:
        with np.load(cache, allow_pickle=False) as data:
            _CACHE.update(zip((str(k) for k in data["texts"]), data["vectors"], strict=True))
    semantic = [normalize(t).semantic_text for t in texts]
    missing = list(dict.fromkeys(t for t in semantic if t not in _CACHE))
    for i in range(0, len(missing), 64):
        _CACHE.update(zip(missing[i : i + 64], encoder.encode(missing[i : i + 64]), strict=True))
    if missing and cache is not None:
        np.savez(cache, texts=np.array(list(_CACHE)), vectors=np.stack(list(_CACHE.values())))
    return np.stack([_CACHE[t] for t in semantic])


def fit(
    x: np.ndarray, y: np.ndarray, n_labels: int, l2: float = 1e-4, steps: int = 2000, lr: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression by full-batch Adam; labels weighted by 1/sqrt(count), so a small category is
    not drowned by "sexual" without its 36 rows outweighing hundreds of benign ones."""
    counts = np.bincount(y, minlength=n_labels).astype(np.float32)
    sample_w = (1.0 / np.sqrt(np.maximum(counts, 1)))[y]
    onehot = np.eye(n_labels, dtype=np.float32)[y]
    w = np.zeros((n_labels, x.shape[1]), dtype=np.float32)
    b = np.zeros(n_labels, dtype=np.float32)
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    for t in range(1, steps + 1):
        p = softmax(x @ w.T + b)
        g = (p - onehot) * sample_w[:, None] / sample_w.sum()
        grads = [g.T @ x + l2 * w, g.sum(axis=0)]
        for i, (param, grad) in enumerate(zip((w, b), grads, strict=True)):
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad * grad
            param -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
    return w, b


def calibrate(
    probs: np.ndarray,
    y: np.ndarray,
    kinds: list[str] | None = None,
    verbose: bool = False,
    covered: np.ndarray | None = None,
) -> np.ndarray:
    """Per-category thresholds: start at the floor, then, while some dev kind has more flagged safe rows
    than KIND_FP_BUDGET allows, raise the one threshold whose next step removes a false positive of an
    over-budget kind at the least loss of recall (greedy; steps are the benign rows' own scores), unless
    even the best step costs more than MAX_STEP_COST unsafe rows per false positive removed. ``covered``
    marks rows the block lists and intent lexicons already decide (they run first): the classifier can
    neither lose those unsafe rows nor clear those safe ones, so neither counts."""
    n = len(LABELS)
    thresholds = np.full(n, np.inf, dtype=np.float32)
    thresholds[1:] = THRESHOLD_FLOOR
    free = ~covered if covered is not None else np.ones(len(y), dtype=bool)
    safe = (y == 0) & free
    unsafe = (y != 0) & free
    kind_of = np.array(kinds if kinds is not None else ["all"] * len(y))
    budget = {k: int(KIND_FP_BUDGET * int(((y == 0) & (kind_of == k)).sum())) for k in set(kind_of[y == 0])}

    def flagged(t: np.ndarray) -> np.ndarray:
        return (probs / t).max(axis=1) >= 1.0

    while True:
        fp = flagged(thresholds) & safe
        over = np.array(
            [bool(fp[i]) and int((fp & (kind_of == kind_of[i])).sum()) > budget[kind_of[i]] for i in range(len(y))]
        )
        if not over.any():
            break
        best: tuple[float, int, float] | None = None
        for k in range(1, n):
            hits = over & (probs[:, k] >= thresholds[k])
            if not hits.any():
                continue
            step = thresholds.copy()
            step[k] = float(probs[hits, k].min()) + 1e-4
            lost = int((flagged(thresholds) & unsafe).sum() - (flagged(step) & unsafe).sum())
            removed = int((over & ~flagged(step)).sum())
            cost = lost / max(removed, 1)
            if best is None or cost < best[0]:
                best = (cost, k, float(step[k]))
        if best is None or best[0] > MAX_STEP_COST:
            if verbose:
                left = sorted({str(k) for k in kind_of[over]})
                why = "no step" if best is None else f"a step costs {best[0]:.1f} unsafe rows per false positive"
                print(f"  calibration: false positives left in {left} ({why})")
            break
        thresholds[best[1]] = best[2]
    return thresholds


def calibrate_veto(
    safe_p: np.ndarray, excess: np.ndarray, sem_flagged: np.ndarray, clf_flagged: np.ndarray, y: np.ndarray
) -> tuple[float, float]:
    """The classifier's veto of marginal exemplar matches: (P(safe) bar, excess-similarity bar) that allows
    the most dev safe rows the exemplar stage alone would block while vetoing no dev unsafe row at all, with
    VETO_SLACK of room on both bars (the most conservative pair among the best). (inf, 0): no veto."""
    candidates = sem_flagged & ~clf_flagged  # what the veto could change
    best: tuple[int, float, float] = (0, float("inf"), 0.0)
    for p_bar in np.arange(0.5, 1.0, 0.02):
        for m_bar in np.arange(0.005, 0.105, 0.005):
            vetoed = candidates & (safe_p >= p_bar) & (excess < m_bar)
            # an unsafe row near either bar also counts: the bars must hold with slack, not exactly
            near = candidates & (safe_p >= p_bar - VETO_SLACK) & (excess < m_bar + VETO_SLACK)
            if (near & (y != 0)).any():
                continue
            gain = int((vetoed & (y == 0)).sum())
            if gain > best[0]:
                best = (gain, float(p_bar), float(m_bar))
    print(f"  veto: P(safe) >= {best[1]:.2f} and excess < {best[2]:.3f} allows {best[0]} dev safe rows, no unsafe")
    return best[1], best[2]


def report(probs: np.ndarray, y: np.ndarray, thresholds: np.ndarray, rows: list[dict[str, str]]) -> None:
    ratio = probs / thresholds
    flagged = ratio.max(axis=1) >= 1.0
    c: Counter[tuple[str, str]] = Counter()
    for r, yy, f in zip(rows, y, flagged, strict=True):
        outcome = ("tp" if f else "fn") if yy else ("fp" if f else "tn")
        c[(r["kind"], outcome)] += 1
        c[("all", outcome)] += 1
    for kind in sorted({k for k, _ in c}):
        tp, fn, fp, tn = (c[(kind, o)] for o in ("tp", "fn", "fp", "tn"))
        print(f"  dev {kind:<14} recall {tp}/{tp + fn}   FP {fp}/{fp + tn}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "filters" / "data" / "intent_classifier.npz")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache (.npz) between runs")
    parser.add_argument("--regenerate", action="store_true", help="rewrite train.jsonl/dev.jsonl from families.py")
    args = parser.parse_args()
    if args.regenerate:
        print("corpus rows:", write_corpus(CORPUS_DIR))
    encoder = TextEncoder(threads=1)
    train = training_rows()
    index = {label: i for i, label in enumerate(LABELS)}
    x = embed(encoder, [t for t, _ in train], args.cache)
    y = np.array([index[label] for _, label in train])
    print("training rows per label:", dict(Counter(label for _, label in train)))
    w, b = fit(x, y, len(LABELS))
    dev = _jsonl(CORPUS_DIR / "dev.jsonl") + [{**r, "kind": f"v1_{r['kind']}"} for r in _v1_dev(1)]
    dev_y = np.array([index[r["label"]] for r in dev])
    dev_probs = softmax(embed(encoder, [r["text"] for r in dev], args.cache) @ w.T + b)
    # what the block lists and intent lexicons decide before the classifier is not its to win or lose
    settings0 = PromptFilterSettings()
    earlier = (load_blocklists(settings0.blocklists), load_blocklists(settings0.intent_lexicons, prefix="intent"))
    covered = np.array([any(b.first_hit(normalize(r["text"])) is not None for b in earlier) for r in dev])
    thresholds = calibrate(dev_probs, dev_y, [r["kind"] for r in dev], verbose=True, covered=covered)
    print("thresholds:", {LABELS[k]: round(float(t), 3) for k, t in enumerate(thresholds) if k})
    report(dev_probs, dev_y, thresholds, dev)
    settings = PromptFilterSettings()
    matcher = SemanticMatcher(
        load_exemplars(settings.exemplars),
        threshold=settings.semantic_threshold,
        margin=settings.semantic_margin,
        clause_threshold=settings.semantic_clause_threshold,
        encoder=encoder,
        max_clauses=settings.max_clauses,
    )
    sem = matcher.check_many([normalize(r["text"]).semantic_text for r in dev])
    veto = calibrate_veto(
        dev_probs[:, 0],
        np.array([r.excess for r in sem]),
        np.array([r.flagged for r in sem]),
        (dev_probs / thresholds).max(axis=1) >= 1.0,
        dev_y,
    )
    np.savez_compressed(
        args.out,
        weights=w.astype(np.float32),
        bias=b.astype(np.float32),
        labels=np.array(LABELS),
        thresholds=thresholds,
        veto=np.array(veto, dtype=np.float32),
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

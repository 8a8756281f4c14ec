"""The intent layer: what a prompt *describes*, not only what it names (issue #32).

It sits between the block lists and the exemplar similarity and has two parts, each explainable:

* **Lexicons** (``data/intent_*.yaml``, the block-list format): idioms and euphemisms per language
  ("in the buff", "一丝不挂"), emoji with a generic adjective ("🍆💦 ... naughty"), coded extremist
  numerals, runes and abbreviations ("1488", "ᛋᛋ", "rahowa"), each with its benign-context exceptions
  ("88 keys", "in 1488", "卍 on a temple"); harm descriptions; and (round 5, ``intent_multilingual``)
  the words the English block list blocks, in 25 languages the embedding model does not read (vi, el,
  hi, fi, hu, ...), where no classifier on that embedding can help. A hit reports the rule id
  (``intent.coded.1488``, ``intent.multilingual.nudity``).
* **A classifier** (:class:`IntentClassifier`): softmax regression on the multilingual USE embedding
  the semantic stage computes anyway (no second model pass), trained by
  ``python -m huabu.filters.training.train_intent`` on template families of
  ``filters/data/corpus/train.jsonl``; per-category thresholds were calibrated on the ``dev``
  families. Weights and thresholds ship in ``data/intent_classifier.npz``. A hit reports
  ``intent.classifier.<category>``.

The classifier also vetoes *marginal* exemplar matches (round 4): when it is confident a prompt is
safe (P(safe) >= ``veto_safe``) and the exemplar similarity clears its bar by less than ``veto_margin``,
the prompt is allowed (the exemplar bank's near misses were its main false positives: diving, tuna
carving, rare steak). Both values are calibrated on dev by the training script so that no dev unsafe
prompt is vetoed; a weight file without them vetoes nothing.

Loading fails loudly (a missing, truncated or mis-shaped weight file raises
:class:`IntentModelError`): the deployment then fails closed rather than screening with less.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from huabu.filters.decision import Category
from huabu.filters.semantic import single_threaded_blas

__all__ = [
    "IntentClassifier",
    "IntentModelError",
    "IntentResult",
    "bundled_classifier_path",
    "softmax",
    "vetoes",
]

SAFE = "safe"
EMBEDDING_DIM = 512


class IntentModelError(RuntimeError):
    """The classifier's weight file is missing, unreadable or not what this code expects."""


def bundled_classifier_path() -> Path:
    return Path(str(resources.files("huabu.filters").joinpath("data/intent_classifier.npz")))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


@dataclass(frozen=True, slots=True)
class IntentResult:
    """The classifier's view of one text: the most likely unsafe category and its probability."""

    flagged: bool
    category: Category | None
    probability: float
    safe_probability: float = 0.0


def vetoes(safe_probability: float, excess: float, veto_safe: float, veto_margin: float) -> bool:
    """Whether a confident-safe classifier verdict overrules an exemplar match ``excess`` past its bar."""
    return safe_probability >= veto_safe and excess < veto_margin


class IntentClassifier:
    """Softmax regression over USE embeddings; immutable and thread-safe once loaded."""

    def __init__(self, path: str | Path | None = None, categories: frozenset[Category] | None = None) -> None:
        self.path = Path(path) if path is not None else bundled_classifier_path()
        try:
            raw = self.path.read_bytes()
            with np.load(self.path, allow_pickle=False) as data:
                weights = np.asarray(data["weights"], dtype=np.float32)
                bias = np.asarray(data["bias"], dtype=np.float32)
                labels = [str(x) for x in data["labels"]]
                thresholds = np.asarray(data["thresholds"], dtype=np.float32)
                veto = np.asarray(data["veto"], dtype=np.float32) if "veto" in data.files else None
        except Exception as exc:  # zip, pickle-refusal, missing key, short read: all one failure to the caller
            raise IntentModelError(f"intent classifier {self.path}: cannot load ({type(exc).__name__}: {exc})") from exc
        n = len(labels)
        if (
            weights.shape != (n, EMBEDDING_DIM)
            or bias.shape != (n,)
            or thresholds.shape != (n,)
            or SAFE not in labels
            or not np.isfinite(weights).all()
            or not np.isfinite(bias).all()
        ):
            raise IntentModelError(
                f"intent classifier {self.path}: unexpected shapes or values "
                f"(weights {weights.shape}, bias {bias.shape}, thresholds {thresholds.shape}, labels {labels})"
            )
        try:
            cats = [None if lab == SAFE else Category(lab) for lab in labels]
        except ValueError as exc:
            raise IntentModelError(f"intent classifier {self.path}: {exc}") from exc
        enabled = categories if categories is not None else frozenset(Category)
        # A disabled category can never win: its threshold is above any probability.
        self._thresholds = np.where(
            np.asarray([c is not None and c in enabled for c in cats]), thresholds, np.float32(np.inf)
        ).astype(np.float32)
        if veto is not None and (veto.shape != (2,) or np.isnan(veto).any()):
            raise IntentModelError(f"intent classifier {self.path}: veto must be two numbers, got {veto!r}")
        # (P(safe) at or above which, excess similarity below which): (inf, 0) never vetoes
        self.veto_safe, self.veto_margin = (float(veto[0]), float(veto[1])) if veto is not None else (np.inf, 0.0)
        self._weights = weights
        self._bias = bias
        self._categories = cats
        self.version = hashlib.sha256(raw).hexdigest()[:12]

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(rows, labels) class probabilities of L2-normalised USE embeddings."""
        with single_threaded_blas():  # a tiny product: all-core OpenBLAS would only add wake-up latency
            logits = embeddings @ self._weights.T + self._bias
        probs: np.ndarray = softmax(logits)
        return probs

    def classify(self, embeddings: np.ndarray) -> list[IntentResult]:
        """Per row: flagged when some unsafe category's probability reaches its calibrated threshold;
        of several, the one furthest above its threshold (relative to it)."""
        if len(embeddings) == 0:
            return []
        probs = self.probabilities(embeddings)
        ratio = probs / self._thresholds  # inf thresholds (safe, disabled) give 0
        best = ratio.argmax(axis=1)
        safe_col = self._categories.index(None)
        out = []
        for row, idx in enumerate(best):
            cat = self._categories[int(idx)]
            p = float(probs[row, idx])
            flagged = cat is not None and bool(ratio[row, idx] >= 1.0)
            out.append(
                IntentResult(
                    flagged=flagged,
                    category=cat if flagged else None,
                    probability=p,
                    safe_probability=float(probs[row, safe_col]),
                )
            )
        return out

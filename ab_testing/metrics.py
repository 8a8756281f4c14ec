"""Per-variant metric accumulators that live in any key-value state store.

Why this shape
- Every accumulator is a mergeable summary (counts, Welford moments, a log-bucketed histogram), so
  partial states from several gateway replicas combine exactly: ``a.merge(b)`` equals what one
  accumulator would hold after seeing both streams (up to float rounding).
- Each replica buffers locally and periodically flushes into *its own* key, one per
  (experiment, phase, variant, replica): no two writers share a key, so flushes never lose updates,
  and readers merge all the keys of an experiment. A replica that restarts under a new id simply
  starts a new key; the old one still counts.
- Metrics are kept per *phase* (the split version in ``Assignment.version``): a request is counted
  under the weights that assigned it, which makes the sample-ratio check exact across weight
  changes; ``ExperimentMetrics.totals()`` merges the phases for the comparisons.
- Forced (override) assignments are not randomised, so they are not recorded.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from pydantic import Field

from huabu.ab_testing._base import MutableModel, check_identifier, to_json_value
from huabu.ab_testing.assignment import Assignment
from huabu.ab_testing.store import KEY_PREFIX, ConflictError, StateStore

# Latency histogram: bucket 0 is [0, 1 ms); bucket i >= 1 is [1.05^(i-1), 1.05^i) ms, so any quantile
# read from it is within 2.5 % of the exact sample quantile (half a bucket in log space). Sparse
# dict storage keeps the JSON small (a few dozen buckets in practice); the top bucket is open-ended.
HIST_LOW_MS = 1.0
HIST_GROWTH = 1.05
HIST_MAX_INDEX = 1 + math.ceil(math.log(1e8 / HIST_LOW_MS) / math.log(HIST_GROWTH))  # ~28 hours
_LOG_GROWTH = math.log(HIST_GROWTH)


class Moments(MutableModel):
    """Count, mean and sum of squared deviations (Welford), merged with Chan et al.'s formula.

    Why not sum and sum of squares: their difference cancels catastrophically when the spread is
    small relative to the mean (latencies of ~1e4 ms varying by a few ms).
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @property
    def variance(self) -> float:
        """Unbiased sample variance (0 with fewer than two values)."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    def add(self, x: float) -> None:
        if not math.isfinite(x):
            raise ValueError(f"metric values must be finite, got {x}")
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def add_many(self, values: Iterable[float]) -> None:
        self._absorb(Moments.from_values(values))

    @classmethod
    def from_values(cls, values: Iterable[float]) -> Moments:
        xs = [float(v) for v in values]
        if not all(math.isfinite(x) for x in xs):
            raise ValueError("metric values must be finite")
        n = len(xs)
        if n == 0:
            return cls()
        mean = math.fsum(xs) / n
        return cls(n=n, mean=mean, m2=math.fsum((x - mean) ** 2 for x in xs))

    def _absorb(self, other: Moments) -> None:
        if other.n == 0:
            return
        if self.n == 0:
            self.n, self.mean, self.m2 = other.n, other.mean, other.m2
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / n
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.n = n

    def merge(self, other: Moments) -> Moments:
        out = self.model_copy()
        out._absorb(other)
        return out


class LatencyHistogram(MutableModel):
    counts: dict[int, int] = Field(default_factory=dict)  # bucket index -> count (sparse)

    @staticmethod
    def index(ms: float) -> int:
        if ms < HIST_LOW_MS:
            return 0
        return min(HIST_MAX_INDEX, 1 + int(math.log(ms / HIST_LOW_MS) / _LOG_GROWTH))

    @staticmethod
    def bounds(index: int) -> tuple[float, float]:
        """[low, high) of a bucket in ms (the last bucket is open-ended: high is inf)."""
        if index == 0:
            return 0.0, HIST_LOW_MS
        high = math.inf if index == HIST_MAX_INDEX else HIST_LOW_MS * HIST_GROWTH**index
        return HIST_LOW_MS * HIST_GROWTH ** (index - 1), high

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, ms: float) -> None:
        if not (ms >= 0 and math.isfinite(ms)):
            raise ValueError(f"latency must be a finite non-negative number of ms, got {ms}")
        i = self.index(ms)
        self.counts[i] = self.counts.get(i, 0) + 1

    def quantile(self, q: float) -> float | None:
        """The q-quantile in ms, interpolated inside its bucket (None when empty)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        total = self.total
        if total == 0:
            return None
        target = q * total
        seen = 0
        for i in sorted(self.counts):
            c = self.counts[i]
            if c and seen + c >= target:
                frac = (target - seen) / c
                low, high = self.bounds(i)
                if i == 0:
                    return low + frac * (high - low)
                if math.isinf(high):
                    return low
                return low * (high / low) ** frac  # geometric interpolation: buckets are log-spaced
            seen += c
        return self.bounds(max(self.counts))[0]

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        counts = dict(self.counts)
        for i, c in other.counts.items():
            counts[i] = counts.get(i, 0) + c
        return LatencyHistogram(counts=counts)


class VariantMetrics(MutableModel):
    """Everything measured for one variant (in one phase, from one replica, or merged)."""

    requests: int = 0  # requests served by the variant, including failed and blocked ones
    errors: int = 0
    filter_blocks: int = 0  # results withheld by a safety filter
    latency_ms: Moments = Field(default_factory=Moments)  # completed generations only
    latency_hist: LatencyHistogram = Field(default_factory=LatencyHistogram)
    quality: Moments = Field(default_factory=Moments)  # automatic quality score of the scorer
    feedback_total: int = 0
    feedback_accepted: int = 0

    def record_request(
        self,
        *,
        latency_ms: float | None = None,
        error: bool = False,
        filter_blocked: bool = False,
        quality: float | None = None,
    ) -> None:
        """One request. Pass ``latency_ms`` for a completed generation (errors and blocks often
        finish early and would flatter the latency)."""
        self.requests += 1
        self.errors += bool(error)
        self.filter_blocks += bool(filter_blocked)
        if latency_ms is not None:
            self.latency_hist.add(latency_ms)
            self.latency_ms.add(latency_ms)
        if quality is not None:
            self.quality.add(quality)

    def record_quality(self, score: float) -> None:
        """A score that arrives after the request (scorers may run asynchronously or on a sample)."""
        self.quality.add(score)

    def record_feedback(self, accepted: bool) -> None:
        self.feedback_total += 1
        self.feedback_accepted += bool(accepted)

    def merge(self, other: VariantMetrics) -> VariantMetrics:
        """A new accumulator holding both (self and other are unchanged)."""
        return VariantMetrics(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            filter_blocks=self.filter_blocks + other.filter_blocks,
            latency_ms=self.latency_ms.merge(other.latency_ms),
            latency_hist=self.latency_hist.merge(other.latency_hist),
            quality=self.quality.merge(other.quality),
            feedback_total=self.feedback_total + other.feedback_total,
            feedback_accepted=self.feedback_accepted + other.feedback_accepted,
        )

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def filter_block_rate(self) -> float | None:
        return self.filter_blocks / self.requests if self.requests else None

    @property
    def acceptance_rate(self) -> float | None:
        return self.feedback_accepted / self.feedback_total if self.feedback_total else None

    def latency_quantile(self, q: float) -> float | None:
        return self.latency_hist.quantile(q)

    @property
    def p95_latency_ms(self) -> float | None:
        return self.latency_hist.quantile(0.95)


def merge_all(parts: Iterable[VariantMetrics]) -> VariantMetrics:
    out = VariantMetrics()
    for p in parts:
        out = out.merge(p)
    return out


class ExperimentMetrics(MutableModel):
    """All of an experiment's metrics: phase (split version) -> variant -> accumulator."""

    experiment_id: str
    phases: dict[int, dict[str, VariantMetrics]] = Field(default_factory=dict)

    def phase(self, version: int) -> dict[str, VariantMetrics]:
        return self.phases.get(version, {})

    def totals(self) -> dict[str, VariantMetrics]:
        """Each variant merged over all phases."""
        out: dict[str, VariantMetrics] = {}
        for variants in self.phases.values():
            for name, m in variants.items():
                out[name] = out[name].merge(m) if name in out else m.merge(VariantMetrics())
        return out

    def variant(self, name: str, phase: int | None = None) -> VariantMetrics:
        """One variant's metrics (all phases when ``phase`` is None); empty when never seen."""
        source = self.totals() if phase is None else self.phase(phase)
        return source.get(name) or VariantMetrics()

    def add(self, phase: int, variant: str, metrics: VariantMetrics) -> None:
        bucket = self.phases.setdefault(phase, {})
        bucket[variant] = bucket[variant].merge(metrics) if variant in bucket else metrics.merge(VariantMetrics())


class MetricsKey(NamedTuple):
    experiment_id: str
    phase: int
    variant: str


def metrics_prefix(experiment_id: str, *, prefix: str = KEY_PREFIX) -> str:
    return f"{prefix}:metrics:{check_identifier(experiment_id, 'experiment id')}:"


def metrics_key(key: MetricsKey, replica_id: str, *, prefix: str = KEY_PREFIX) -> str:
    return f"{metrics_prefix(key.experiment_id, prefix=prefix)}{key.phase}:{key.variant}:{replica_id}"


class MetricsBuffer:
    """One gateway replica's not-yet-flushed metrics. Thread-safe; cheap to record into.

    Call ``flush(store)`` every few seconds (and on shutdown). A failed flush puts its deltas back.
    """

    def __init__(self, replica_id: str, *, prefix: str = KEY_PREFIX) -> None:
        if not replica_id or any(c.isspace() for c in replica_id):
            raise ValueError(f"replica id must be non-empty without whitespace, got {replica_id!r}")
        self.replica_id = replica_id
        self.prefix = prefix
        self._pending: dict[MetricsKey, VariantMetrics] = {}
        self._lock = threading.Lock()

    def _slot(self, assignment: Assignment) -> VariantMetrics:
        key = MetricsKey(assignment.experiment_id, assignment.version, assignment.variant)
        slot = self._pending.get(key)
        if slot is None:
            slot = self._pending[key] = VariantMetrics()
        return slot

    def record_request(
        self,
        assignment: Assignment,
        *,
        latency_ms: float | None = None,
        error: bool = False,
        filter_blocked: bool = False,
        quality: float | None = None,
    ) -> bool:
        """Record one request; returns False (and records nothing) for a forced assignment."""
        if assignment.forced:
            return False
        with self._lock:
            self._slot(assignment).record_request(
                latency_ms=latency_ms, error=error, filter_blocked=filter_blocked, quality=quality
            )
        return True

    def record_quality(self, assignment: Assignment, score: float) -> bool:
        if assignment.forced:
            return False
        with self._lock:
            self._slot(assignment).record_quality(score)
        return True

    def record_feedback(self, assignment: Assignment, accepted: bool) -> bool:
        if assignment.forced:
            return False
        with self._lock:
            self._slot(assignment).record_feedback(accepted)
        return True

    def drain(self) -> dict[MetricsKey, VariantMetrics]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    def restore(self, pending: Mapping[MetricsKey, VariantMetrics]) -> None:
        """Put drained deltas back (after a failed flush), merged with anything recorded since."""
        with self._lock:
            for key, m in pending.items():
                self._pending[key] = self._pending[key].merge(m) if key in self._pending else m

    def flush(self, store: StateStore, *, max_attempts: int = 20) -> int:
        """Merge the pending deltas into this replica's keys; returns the number of keys written."""
        pending = self.drain()
        done: list[MetricsKey] = []
        try:
            for key, delta in pending.items():
                store_key = metrics_key(key, self.replica_id, prefix=self.prefix)
                for _ in range(max_attempts):
                    current = store.get(store_key)
                    stored = None if current is None else VariantMetrics.model_validate(current["metrics"])
                    merged = delta if stored is None else stored.merge(delta)
                    value = {
                        "experiment_id": key.experiment_id,
                        "phase": key.phase,
                        "variant": key.variant,
                        "replica_id": self.replica_id,
                        "metrics": to_json_value(merged),
                    }
                    if store.compare_and_set(store_key, current, value):
                        done.append(key)
                        break
                else:
                    raise ConflictError(f"could not update {store_key} after {max_attempts} attempts")
        except BaseException:
            self.restore({k: v for k, v in pending.items() if k not in done})
            raise
        return len(done)


def load_metrics(store: StateStore, experiment_id: str, *, prefix: str = KEY_PREFIX) -> ExperimentMetrics:
    """Every replica's partial metrics for the experiment, merged per phase and variant."""
    out = ExperimentMetrics(experiment_id=experiment_id)
    for key in store.keys(metrics_prefix(experiment_id, prefix=prefix)):
        value = store.get(key)
        if value is None:  # deleted between keys() and get()
            continue
        out.add(int(value["phase"]), str(value["variant"]), VariantMetrics.model_validate(value["metrics"]))
    return out


def delete_metrics(store: StateStore, experiment_id: str, *, prefix: str = KEY_PREFIX) -> int:
    keys = store.keys(metrics_prefix(experiment_id, prefix=prefix))
    for key in keys:
        store.delete(key)
    return len(keys)

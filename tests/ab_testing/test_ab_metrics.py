"""Metric accumulators: exact merges, histogram quantiles, per-replica flushes into a state store."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from huabu.ab_testing.assignment import CANARY, STABLE, TrafficSplit
from huabu.ab_testing.metrics import (
    LatencyHistogram,
    MetricsBuffer,
    Moments,
    VariantMetrics,
    delete_metrics,
    load_metrics,
    merge_all,
)
from huabu.ab_testing.store import InMemoryStateStore, StateStore


def test_moments_merge_equals_one_pass() -> None:
    rng = np.random.default_rng(0)
    # Latency-like values: a large mean with a small spread is where sum/sumsq would cancel.
    data = 10_000.0 + rng.normal(0, 3, 3000)
    parts = np.array_split(data, [10, 700, 701, 2500])
    merged = Moments()
    for part in parts:
        m = Moments()
        for x in part:
            m.add(float(x))
        merged = merged.merge(m)
    assert merged.n == len(data)
    assert merged.mean == pytest.approx(float(data.mean()), rel=1e-14)
    assert merged.variance == pytest.approx(float(data.var(ddof=1)), rel=1e-9)
    bulk = Moments()
    bulk.add_many(data.tolist())
    assert bulk.variance == pytest.approx(merged.variance, rel=1e-9)
    assert Moments().merge(Moments()).n == 0 and Moments().variance == 0.0
    with pytest.raises(ValueError, match="finite"):
        Moments().add(float("nan"))


def test_histogram_quantiles_within_bucket_resolution() -> None:
    rng = np.random.default_rng(1)
    data = rng.lognormal(np.log(2500), 0.4, 20_000)
    a, b = LatencyHistogram(), LatencyHistogram()
    for i, x in enumerate(data):
        (a if i % 3 else b).add(float(x))
    h = a.merge(b)
    assert h.total == len(data)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = float(np.quantile(data, q))
        assert h.quantile(q) == pytest.approx(exact, rel=0.025)  # half a 5 % log bucket
    assert LatencyHistogram().quantile(0.95) is None
    sub_ms = LatencyHistogram()
    sub_ms.add(0.2)
    assert 0.0 <= (sub_ms.quantile(0.5) or 0) < 1.0
    huge = LatencyHistogram()
    huge.add(1e12)  # lands in the open top bucket instead of growing the dict without bound
    assert huge.quantile(1.0) == LatencyHistogram.bounds(max(huge.counts))[0]


def test_variant_metrics_rates_merge_and_json() -> None:
    a, b = VariantMetrics(), VariantMetrics()
    for i in range(100):
        a.record_request(latency_ms=1000 + i, error=i % 10 == 0, quality=0.5 + i / 1000)
    for i in range(50):
        b.record_request(filter_blocked=i % 5 == 0)
        b.record_feedback(accepted=i % 2 == 0)
    b.record_quality(0.9)
    m = a.merge(b)
    assert (m.requests, m.errors, m.filter_blocks) == (150, 10, 10)
    assert m.error_rate == pytest.approx(10 / 150) and m.filter_block_rate == pytest.approx(10 / 150)
    assert m.acceptance_rate == pytest.approx(0.5) and m.quality.n == 101
    assert m.latency_ms.n == 100 and m.p95_latency_ms == pytest.approx(1095, rel=0.03)
    assert a.requests == 100  # merge is pure
    text = m.model_dump_json()
    assert VariantMetrics.model_validate(json.loads(text)) == m
    assert merge_all([a, b]) == m
    assert VariantMetrics().error_rate is None and VariantMetrics().p95_latency_ms is None


def _split(version: int = 0) -> TrafficSplit:
    return TrafficSplit.canary("exp-m", stable_model="m@1", canary_model="m@2", canary_percent=30, version=version)


def test_replica_buffers_flush_and_merge_exactly() -> None:
    store = InMemoryStateStore()
    assert isinstance(store, StateStore)
    replicas = [MetricsBuffer(f"gateway-{i}") for i in range(3)]
    reference: dict[str, VariantMetrics] = {STABLE: VariantMetrics(), CANARY: VariantMetrics()}
    rng = np.random.default_rng(2)
    split = _split()
    for _round in range(4):  # several flushes accumulate into the same keys
        for i in range(600):
            a = split.assign(f"user-{rng.integers(0, 5000)}")
            latency, err = float(rng.lognormal(7, 0.3)), bool(rng.random() < 0.05)
            replicas[i % 3].record_request(a, latency_ms=None if err else latency, error=err, quality=float(i % 7))
            reference[a.variant].record_request(latency_ms=None if err else latency, error=err, quality=float(i % 7))
        for r in replicas:
            assert r.flush(store) == 2
        assert replicas[0].flush(store) == 0  # nothing pending
    loaded = load_metrics(store, "exp-m")
    totals = loaded.totals()
    for name in (STABLE, CANARY):
        got, want = totals[name], reference[name]
        assert (got.requests, got.errors) == (want.requests, want.errors)
        assert got.latency_hist == want.latency_hist
        assert got.latency_ms.mean == pytest.approx(want.latency_ms.mean, rel=1e-12)
        assert got.latency_ms.variance == pytest.approx(want.latency_ms.variance, rel=1e-9)
        assert got.quality.mean == pytest.approx(want.quality.mean, rel=1e-12)
    assert len(store.keys("huabu:ab:metrics:exp-m:")) == 6  # 3 replicas x 2 variants, one phase
    assert load_metrics(store, "exp").phases == {}  # the prefix ends at the id: no "exp-m" leakage
    assert delete_metrics(store, "exp-m") == 6 and load_metrics(store, "exp-m").phases == {}


def test_metrics_are_kept_per_phase_and_overrides_are_skipped() -> None:
    store = InMemoryStateStore()
    buf = MetricsBuffer("g")
    old, new = _split(0), _split(1)
    for i in range(100):
        buf.record_request(old.assign(f"u{i}"))
        buf.record_request(new.assign(f"u{i}"))
    assert not buf.record_request(new.assign("u1", override=CANARY))
    assert not buf.record_feedback(new.assign("u1", override=CANARY), accepted=True)
    buf.flush(store)
    m = load_metrics(store, "exp-m")
    assert set(m.phases) == {0, 1}
    assert sum(v.requests for v in m.phase(1).values()) == 100
    assert m.variant(STABLE).requests + m.variant(CANARY).requests == 200
    assert m.variant("nobody").requests == 0


class FlakyStore(InMemoryStateStore):
    """A store whose first compare-and-set fails like a dropped Redis connection."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def compare_and_set(self, key: str, expected: object, value: object) -> bool:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store unavailable")
        return super().compare_and_set(key, expected, value)


def test_failed_flush_keeps_the_deltas() -> None:
    store = FlakyStore()
    buf = MetricsBuffer("g")
    split = _split()
    for i in range(50):
        buf.record_request(split.assign(f"u{i}"), latency_ms=100.0)
    with pytest.raises(ConnectionError):
        buf.flush(store)
    buf.record_request(split.assign("late"), latency_ms=100.0)
    buf.flush(store)
    totals = load_metrics(store, "exp-m").totals()
    assert sum(m.requests for m in totals.values()) == 51


def test_concurrent_recording_and_flushing_loses_nothing() -> None:
    store = InMemoryStateStore()
    buffers = [MetricsBuffer("a"), MetricsBuffer("b")]
    split = _split()
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            for b in buffers:
                b.flush(store)

    def worker(k: int) -> None:
        for i in range(2000):
            buffers[k % 2].record_request(split.assign(f"w{k}-{i}"), latency_ms=10.0)

    flush_thread = threading.Thread(target=flusher)
    flush_thread.start()
    workers = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    flush_thread.join()
    for b in buffers:
        b.flush(store)
    totals = load_metrics(store, "exp-m").totals()
    assert sum(m.requests for m in totals.values()) == 8000
    assert sum(m.latency_hist.total for m in totals.values()) == 8000


def test_in_memory_store_semantics() -> None:
    store = InMemoryStateStore()
    assert store.compare_and_set("k", None, {"v": 1})
    assert not store.compare_and_set("k", None, {"v": 2})
    assert not store.compare_and_set("k", {"v": 0}, {"v": 2})
    assert store.compare_and_set("k", {"v": 1}, {"v": 2})
    value = store.get("k")
    assert isinstance(value, dict)
    value["v"] = 99  # a copy: the store is unchanged
    assert store.get("k") == {"v": 2}
    with pytest.raises(ValueError):
        store.set("bad", {"x": float("inf")})  # not strict JSON
    store.delete("k")
    assert store.get("k") is None and store.keys("") == []

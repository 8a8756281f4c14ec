"""The rollout's wire view and report (table and PNG plots) from a simulated rollout, without a server."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from huabu.ab_testing import (
    InMemoryStateStore,
    MetricsBuffer,
    Rollout,
    RolloutPolicy,
    RolloutRepository,
    evaluate_rollout,
    load_metrics,
)
from huabu.cluster.rollout_report import table, write_plots
from huabu.deployments.gateway.rollouts import rollout_info
from huabu.sdk.types import RolloutInfo

POLICY = RolloutPolicy(
    steps=(10, 50, 100),
    min_samples_per_step=20,
    min_step_seconds=0,
    evidence_from_percent=100,
    planned_samples=200,
    error_rate={"margin": 0.05, "min_samples": 20},
    quality={"margin": 0.05, "min_samples": 20},
    latency={"min_samples": 20},
)


def simulate() -> tuple[Rollout, InMemoryStateStore]:
    rng = random.Random(0)
    store = InMemoryStateStore()
    repo = RolloutRepository(store)
    repo.create(Rollout.start("ro-report", stable_model="m@1", canary_model="m@2", now=1000.0, policy=POLICY))
    buffer = MetricsBuffer("gw-0")
    now = 1000.0
    for tick in range(50):
        rollout = repo.get("ro-report")
        assert rollout is not None
        if rollout.terminal:
            return rollout, store
        for i in range(100):
            a = rollout.split.assign(f"user-{tick}-{i}")
            canary = a.variant == "canary"
            buffer.record_request(a, latency_ms=rng.lognormvariate(5.0 if canary else 5.1, 0.2))
            buffer.record_quality(a, rng.gauss(0.6 if canary else 0.5, 0.1))
            if i % 4 == 0:
                buffer.record_feedback(a, rng.random() < 0.7)
        buffer.flush(store)
        now += 10
        evaluate_rollout(store, "ro-report", now=now)
    raise AssertionError("the rollout did not finish")


def test_report_of_a_promoted_rollout(tmp_path: Path) -> None:
    rollout, store = simulate()
    assert rollout.status == "promoted"
    info = rollout_info(rollout, load_metrics(store, rollout.id), active=True)
    info = RolloutInfo.model_validate_json(info.model_dump_json())  # survives the wire
    stable, canary = info.variants
    assert (stable.variant, canary.variant) == ("stable", "canary") and canary.weight_percent == 100
    assert canary.quality_ci_low is not None and canary.quality_ci_low < canary.quality_mean < canary.quality_ci_high
    assert canary.latency_p50_ms is not None and sum(b.count for b in canary.latency_histogram) == canary.requests
    assert [p for _, p in info.traffic] == [10.0, 50.0, 100.0]
    assert [d.action for d in info.history if d.action != "hold"] == ["advance", "promote"]
    assert any(c.name == "quality" and c.status == "pass" for c in info.history[-1].checks)

    text = table(info)
    assert "rollout ro-report: promoted (active)" in text and "promote" in text and "quality" in text
    paths = write_plots(info, tmp_path / "report")
    assert [p.name for p in paths] == ["traffic.png", "latency.png", "quality.png"]
    for p in paths:
        with Image.open(p) as image:
            assert image.size == (640, 360)
            # Something was drawn in the variants' colours, not only axes.
            colours = {c[:3] for _, c in image.getcolors(1 << 16) or []}
            assert (204, 102, 0) in colours


def test_report_before_any_traffic(tmp_path: Path) -> None:
    rollout = Rollout.start("ro-empty", stable_model="m@1", canary_model="m@2", now=5.0)
    store = InMemoryStateStore()
    info = rollout_info(rollout, load_metrics(store, rollout.id), active=False)
    assert "rollout ro-empty: running" in table(info)
    assert all(p.exists() for p in write_plots(info, tmp_path))


def test_report_intervals_stay_within_zero_and_one() -> None:
    from huabu.cluster.rollout_report import acceptance_interval, quality_interval
    from huabu.sdk.types import VariantStats

    wide = VariantStats(variant="canary", quality_mean=0.97, quality_ci_low=0.91, quality_ci_high=1.04)
    assert quality_interval(wide) == (0.91, 1.0)
    for accepted, total in ((0, 3), (3, 3), (1, 2), (60, 100)):
        v = VariantStats(variant="stable", feedback_accepted=accepted, feedback_total=total)
        low, high = acceptance_interval(v) or (-1, -1)
        assert 0.0 <= low <= accepted / total <= high <= 1.0
    assert acceptance_interval(VariantStats(variant="stable")) is None

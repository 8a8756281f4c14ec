"""Sticky assignment: determinism, monotone ramps, weight accuracy, overrides."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from pydantic import ValidationError

from huabu.ab_testing.assignment import (
    BUCKETS,
    CANARY,
    STABLE,
    TrafficSplit,
    UnknownVariantError,
    Variant,
    bucket_for,
    percent_to_bp,
    reassigned_buckets,
)
from huabu.ab_testing.stats import srm_check

RAMP = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0)
USERS = [f"user-{i}" for i in range(20_000)]


def split(percent: float, experiment: str = "exp-1", version: int = 0) -> TrafficSplit:
    return TrafficSplit.canary(
        experiment, stable_model="mmdit@1", canary_model="mmdit@2", canary_percent=percent, version=version
    )


def test_bucket_is_sha256_of_experiment_and_unit() -> None:
    digest = hashlib.sha256(b"exp-1\x1fuser-42").digest()
    assert bucket_for("exp-1", "user-42") == int.from_bytes(digest[:8], "big") % BUCKETS
    assert bucket_for("exp-1", "user-42") == bucket_for("exp-1", "user-42")
    assert 0 <= bucket_for("exp-2", "user-42") < BUCKETS
    with pytest.raises(ValueError, match="non-empty"):
        bucket_for("exp-1", "")


def test_assignment_is_sticky_across_instances_and_versions() -> None:
    s1, s2 = split(10), split(10.0, version=7)
    first = [s1.assign(u).variant for u in USERS[:2000]]
    again = [s2.assign(u).variant for u in USERS[:2000]]
    assert first == again
    a = split(10).assign("user-1")
    assert a.reason == "hash" and not a.forced and a.bucket == bucket_for("exp-1", "user-1")
    assert a.model == ("mmdit@2" if a.variant == CANARY else "mmdit@1")


def test_ramp_is_monotone() -> None:
    # Bucket level: every step only moves buckets stable -> canary, exactly the added weight.
    for lo, hi in itertools.pairwise(RAMP):
        moves = reassigned_buckets(split(lo), split(hi))
        assert moves == {(STABLE, CANARY): percent_to_bp(hi) - percent_to_bp(lo)}
        assert reassigned_buckets(split(hi), split(lo)) == {(CANARY, STABLE): percent_to_bp(hi) - percent_to_bp(lo)}
    # User level: whoever was on the canary at one step is still on it at every later step.
    on_canary: set[str] = set()
    for percent in RAMP:
        s = split(percent)
        now = {u for u in USERS if s.assign(u).variant == CANARY}
        assert on_canary <= now
        on_canary = now
    assert on_canary == set(USERS)


def test_weights_are_accurate_over_many_units() -> None:
    units = [f"key-{i}" for i in range(50_000)]
    for percent in (1.0, 10.0, 50.0):
        s = split(percent, experiment=f"weights-{percent:g}")
        canary = sum(s.assign(u).variant == CANARY for u in units)
        p = percent / 100
        sd = (p * (1 - p) / len(units)) ** 0.5
        assert abs(canary / len(units) - p) < 4 * sd
        srm = srm_check({CANARY: canary, STABLE: len(units) - canary}, s.weights)
        assert not srm.mismatch


def test_buckets_are_uniform_and_experiments_independent() -> None:
    units = [f"u{i}" for i in range(20_000)]
    counts = [0] * 100
    for u in units:
        counts[bucket_for("uniform", u) // 100] += 1
    srm = srm_check({str(i): c for i, c in enumerate(counts)}, {str(i): 1.0 for i in range(100)})
    assert srm.df == 99 and srm.p_value > 0.001
    # Canary membership in two experiments is independent: overlap ~ p^2, not p.
    split_a, split_b = split(20, experiment="exp-a"), split(20, experiment="exp-b")
    a = {u for u in units if split_a.assign(u).variant == CANARY}
    b = {u for u in units if split_b.assign(u).variant == CANARY}
    overlap = len(a & b) / len(units)
    assert abs(overlap - 0.04) < 0.006  # sd 0.0014


def test_override_forces_a_variant() -> None:
    s = split(0)  # the canary has no traffic, yet an override reaches it
    assert all(s.assign(u).variant == STABLE for u in USERS[:500])
    forced = s.assign("user-1", override=CANARY)
    assert forced.variant == CANARY and forced.forced and forced.reason == "override" and forced.bucket is None
    assert s.assign("user-1", override="mmdit@2").variant == CANARY  # by model name too
    with pytest.raises(UnknownVariantError, match="nope"):
        s.assign("user-1", override="nope")
    assert s.assign("user-1", override="").variant == STABLE  # an empty header is no override


def test_multi_variant_layout_and_validation() -> None:
    s = TrafficSplit(
        experiment_id="abc",
        variants=(
            Variant(name="control", weight_bp=5000),
            Variant(name="b", weight_bp=2000),
            Variant(name="c", weight_bp=3000),
        ),
    )
    assert s.ranges() == {"control": range(5000, 10000), "b": range(0, 2000), "c": range(2000, 5000)}
    assert [s.variant_for_bucket(x).name for x in (0, 1999, 2000, 4999, 5000, 9999)] == [
        "b",
        "b",
        "c",
        "c",
        "control",
        "control",
    ]
    # Weight moved between the control and the last variant leaves the others alone.
    moved = reassigned_buckets(s, s.with_weights({"control": 4000, "c": 4000}))
    assert moved == {("control", "c"): 1000}
    assert s.with_weights({"b": 2000}).version == 1
    with pytest.raises(ValidationError, match="add up"):
        TrafficSplit(experiment_id="abc", variants=(Variant(name="a", weight_bp=5000),))
    with pytest.raises(ValidationError, match="unique"):
        TrafficSplit(
            experiment_id="abc", variants=(Variant(name="a", weight_bp=5000), Variant(name="a", weight_bp=5000))
        )
    with pytest.raises(ValidationError, match="experiment id"):
        split(5, experiment="bad:id")
    with pytest.raises(UnknownVariantError):
        s.with_weights({"zzz": 1})
    assert percent_to_bp(0.5) == 50 and percent_to_bp(100) == BUCKETS

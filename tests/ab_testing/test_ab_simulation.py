"""Simulations: continuous monitoring keeps the sequential tests' error rates at alpha, a naive
repeated t-test does not, and real differences are found.

Data are generated with numpy (fixed seeds) and summarised cumulatively at every look; each look
then calls the library's own test functions, exactly as a control loop would. Tolerances are three
binomial standard errors of the simulated rate around alpha.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest

from huabu.ab_testing.stats import (
    SequentialResult,
    non_inferiority_test,
    sequential_srm_check,
    sequential_test,
    srm_check,
    tune_mixture_variance,
    welch_t_test,
)

ALPHA = 0.05
PLANNED_N = 1000  # the mixture variance is tuned for 1,000 observations per arm


def tolerance(k: int, alpha: float = ALPHA) -> float:
    return 3.0 * math.sqrt(alpha * (1 - alpha) / k)


def cumulative(x: np.ndarray, mask: np.ndarray, looks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, mean, variance) of the masked values of each row at each look (looks are prefix lengths)."""
    n = np.cumsum(mask, axis=1)[:, looks - 1]
    s1 = np.cumsum(x * mask, axis=1)[:, looks - 1]
    s2 = np.cumsum(x * x * mask, axis=1)[:, looks - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = np.maximum((s2 - n * mean * mean) / (n - 1), 0.0)
    return n, mean, var


class Arm(NamedTuple):
    """A plain tuple satisfies the ``SummaryLike`` protocol the tests accept (and skips validation)."""

    n: int
    mean: float
    variance: float


def summary(n: np.ndarray, mean: np.ndarray, var: np.ndarray, k: int, j: int) -> Arm:
    return Arm(int(n[k, j]), float(mean[k, j]), float(var[k, j]))


Arms = tuple[np.ndarray, np.ndarray, np.ndarray]


def monitor_sequential(
    control: Arms, treatment: Arms, alpha: float = ALPHA
) -> tuple[np.ndarray, list[SequentialResult | None]]:
    """Per experiment: the first look at which the mixture SPRT rejects (-1: never), and the last result."""
    k_count, looks = control[0].shape
    first = np.full(k_count, -1)
    last: list[SequentialResult | None] = []
    for k in range(k_count):
        result = None
        for j in range(looks):
            c, t = summary(*control, k, j), summary(*treatment, k, j)
            if c.n < 10 or t.n < 10 or c.variance + t.variance == 0:
                continue
            tau2 = tune_mixture_variance((c.variance + t.variance) / PLANNED_N, alpha)
            result = sequential_test(c, t, mixture_variance=tau2, alpha=alpha, previous=result)
            if result.significant and first[k] < 0:
                first[k] = j
        last.append(result)
    return first, last


def normal_pairs(k: int, n: int, effect: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (k, n)), rng.normal(effect, 1.0, (k, n))


def arm_summaries(x: np.ndarray, looks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return cumulative(x, np.ones_like(x, dtype=bool), looks)


def test_aa_continuous_monitoring_sequential_stays_at_alpha_naive_does_not() -> None:
    k, n = 500, 2000
    looks = np.arange(20, n + 1, 20)  # 100 looks per experiment
    a, b = normal_pairs(k, n, 0.0, seed=11)
    ca, cb = arm_summaries(a, looks), arm_summaries(b, looks)

    first, _ = monitor_sequential(ca, cb)
    sequential_fpr = float(np.mean(first >= 0))

    # The naive analyst: a Welch test at every look, stop at the first p < alpha.
    naive_k, naive_every = 200, 2  # 200 experiments x 50 looks
    naive_rejected = 0
    for e in range(naive_k):
        for j in range(naive_every - 1, len(looks), naive_every):
            if welch_t_test(summary(*ca, e, j), summary(*cb, e, j), alpha=ALPHA).significant:
                naive_rejected += 1
                break
    naive_fpr = naive_rejected / naive_k
    # The same Welch test looked at once, at the end, is calibrated: peeking is the problem.
    fixed_fpr = float(np.mean([welch_t_test(summary(*ca, e, -1), summary(*cb, e, -1)).significant for e in range(k)]))

    print(
        f"A/A FPR under continuous monitoring: sequential {sequential_fpr:.3f} (100 looks), naive Welch "
        f"{naive_fpr:.3f} (50 looks), one fixed-horizon Welch {fixed_fpr:.3f}; alpha {ALPHA}"
    )
    assert sequential_fpr <= ALPHA + tolerance(k)
    assert abs(fixed_fpr - ALPHA) <= tolerance(k)
    assert naive_fpr > 3 * ALPHA  # peeking 50 times: roughly 0.3
    assert naive_fpr > sequential_fpr + 0.1


@pytest.mark.parametrize("dist", ["lognormal", "bernoulli"])
def test_aa_sequential_holds_for_skewed_and_binary_metrics(dist: str) -> None:
    k, n = 300, 2000
    rng = np.random.default_rng(12)
    if dist == "lognormal":  # latency-like: heavy right tail
        a, b = rng.lognormal(7.5, 0.6, (k, n)), rng.lognormal(7.5, 0.6, (k, n))
    else:  # error-rate-like: rare events
        a, b = (rng.random((k, n)) < 0.02).astype(float), (rng.random((k, n)) < 0.02).astype(float)
    looks = np.arange(40, n + 1, 40)
    first, _ = monitor_sequential(arm_summaries(a, looks), arm_summaries(b, looks))
    fpr = float(np.mean(first >= 0))
    print(f"A/A FPR ({dist}, 50 looks): {fpr:.3f}")
    assert fpr <= ALPHA + tolerance(k)


def test_aa_with_a_ramping_allocation() -> None:
    """The rollout changes the canary share 1 -> 5 -> 10 -> 25 -> 50 %; the test must stay valid."""
    k, total = 300, 20_000
    rng = np.random.default_rng(13)
    share = np.repeat([0.01, 0.05, 0.10, 0.25, 0.50], total // 5)
    is_canary = rng.random((k, total)) < share
    x = rng.normal(3.0, 1.0, (k, total))
    looks = np.arange(400, total + 1, 400)
    first, _ = monitor_sequential(cumulative(x, ~is_canary, looks), cumulative(x, is_canary, looks))
    fpr = float(np.mean(first >= 0))
    print(f"A/A FPR with a ramping allocation: {fpr:.3f}")
    assert fpr <= ALPHA + tolerance(k)


def test_real_differences_are_found_early_and_covered() -> None:
    k, n, effect = 200, 2000, 0.2  # a 0.2 standard-deviation shift
    looks = np.arange(20, n + 1, 20)
    a, b = normal_pairs(k, n, effect, seed=14)
    first, last = monitor_sequential(arm_summaries(a, looks), arm_summaries(b, looks))
    power = float(np.mean(first >= 0))
    median_stop = float(np.median(looks[first[first >= 0]]))
    coverage = float(np.mean([r is not None and r.ci_low <= effect <= r.ci_high for r in last]))
    print(f"power at d = 0.2: {power:.3f}, median stop at n = {median_stop:.0f} of {n}, coverage {coverage:.3f}")
    assert power >= 0.95
    assert median_stop < n / 2  # found well before the fixed horizon
    assert coverage >= 1 - ALPHA - tolerance(k)

    # A binary metric: 2 % -> 4 % errors.
    rng = np.random.default_rng(15)
    ea, eb = (rng.random((k, n)) < 0.02).astype(float), (rng.random((k, n)) < 0.04).astype(float)
    first_b, _ = monitor_sequential(arm_summaries(ea, looks), arm_summaries(eb, looks))
    power_b = float(np.mean(first_b >= 0))
    print(f"power for 2 % -> 4 % errors with 2,000 per arm: {power_b:.3f}")
    assert power_b >= 0.7


def test_sequential_non_inferiority_at_the_margin() -> None:
    """True difference exactly -margin: 'non-inferior' may be declared at most alpha of the time."""
    k, n, margin = 300, 2000, 0.1
    looks = np.arange(50, n + 1, 50)
    a, b = normal_pairs(k, n, -margin, seed=16)
    ca, cb = arm_summaries(a, looks), arm_summaries(b, looks)
    declared = 0
    for e in range(k):
        for j in range(len(looks)):
            c, t = summary(*ca, e, j), summary(*cb, e, j)
            tau2 = tune_mixture_variance((c.variance + t.variance) / PLANNED_N)
            if non_inferiority_test(c, t, margin=margin, method="sequential", mixture_variance=tau2).non_inferior:
                declared += 1
                break
    rate = declared / k
    print(f"non-inferiority wrongly declared at the margin: {rate:.3f}")
    assert rate <= ALPHA + tolerance(k)

    # With no true difference, non-inferiority with twice that margin is shown in almost all of them.
    a0, b0 = normal_pairs(100, n, 0.0, seed=17)
    ca0, cb0 = arm_summaries(a0, looks), arm_summaries(b0, looks)
    shown = 0
    for e in range(100):
        c, t = summary(*ca0, e, -1), summary(*cb0, e, -1)
        tau2 = tune_mixture_variance((c.variance + t.variance) / PLANNED_N)
        shown += non_inferiority_test(c, t, margin=2 * margin, method="sequential", mixture_variance=tau2).non_inferior
    assert shown / 100 >= 0.95


def test_srm_under_continuous_monitoring() -> None:
    k, total, p = 200, 20_000, 0.10
    rng = np.random.default_rng(18)
    is_canary = rng.random((k, total)) < p
    looks = np.arange(200, total + 1, 200)
    n_canary = np.cumsum(is_canary, axis=1)[:, looks - 1]
    weights = {"stable": 1 - p, "canary": p}
    seq_alarm = naive_alarm = 0
    for e in range(k):
        seq_hit = naive_hit = False
        for j, n in enumerate(looks):
            observed = {"canary": int(n_canary[e, j]), "stable": int(n - n_canary[e, j])}
            seq_hit = seq_hit or sequential_srm_check(observed, weights, alpha=ALPHA).mismatch
            naive_hit = naive_hit or srm_check(observed, weights, alpha=ALPHA).mismatch
            if seq_hit and naive_hit:
                break
        seq_alarm += seq_hit
        naive_alarm += naive_hit
    print(f"SRM false alarms over 100 looks: sequential {seq_alarm / k:.3f}, repeated chi-square {naive_alarm / k:.3f}")
    assert seq_alarm / k <= ALPHA + tolerance(k)
    assert naive_alarm / k > 3 * ALPHA

    # A canary that loses 20 % of its records is caught at the strict production threshold.
    dropped = is_canary & (rng.random((k, total)) < 0.2)
    kept_canary = np.cumsum(is_canary & ~dropped, axis=1)[:, looks - 1]
    kept_total = np.cumsum(~dropped, axis=1)[:, looks - 1]
    caught = sum(
        any(
            sequential_srm_check(
                {"canary": int(kept_canary[e, j]), "stable": int(kept_total[e, j] - kept_canary[e, j])}, weights
            ).mismatch
            for j in range(len(looks))
        )
        for e in range(k)
    )
    print(f"SRM detection (20 % of canary records lost, alpha 0.001): {caught / k:.3f}")
    assert caught / k >= 0.95

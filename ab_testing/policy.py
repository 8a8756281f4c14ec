"""The rollout policy: when to hold, advance, promote, roll back or pause a canary.

``decide(rollout, metrics, now)`` is a pure function of the rollout state, the experiment's metrics
and the time; it returns a ``Decision`` that says what to do, the new weights, why (a code and a
sentence) and the numbers behind it. Applying it (``Rollout.apply``) and persisting it is separate,
so the same function serves the live control loop, replays and tests.

How a step is judged (anchors: KServe ``canaryTrafficPercent`` steps, Argo Rollouts analysis runs
with pass / fail / inconclusive, Flagger's thresholds and step weights):

1. Guardrails compare the canary with the stable model on all data since the rollout started.
   Rates and scores (error rate, filter-block rate, quality score, feedback acceptance) use the
   anytime-valid normal-mixture confidence sequence for canary - stable (``stats.sequential_test``),
   so evaluating them every few seconds does not inflate false alarms. With margin m and the
   difference oriented so that "worse" is positive:
   - fail: the whole interval is worse than m (the canary is worse by more than m, with confidence);
   - pass: the whole interval is better than m (non-inferiority with margin m is shown);
   - inconclusive otherwise. p95 latency is a threshold on the ratio of the histograms' p95s.
2. Any failed guardrail rolls back at once, as soon as both arms have the guardrail's own minimum
   sample, without waiting for the step's minimum sample or time: the confidence sequence is valid
   at every look, so there is no reason to keep serving a bad canary.
3. A sample-ratio mismatch in the current phase pauses the rollout: the data are not trustworthy
   (a variant dropping or double-counting requests), and a person should look.
4. A step advances after its minimum canary sample and minimum time, when no required guardrail
   blocks: below ``evidence_from_percent`` a guardrail blocks only while its point estimate is worse
   than its margin (cheap exposure checks); from there on every required guardrail must *pass*, so
   the canary reaches most of the traffic, and is promoted, only with statistical evidence.
5. A step that stays blocked longer than ``max_step_seconds`` pauses (Argo's "inconclusive"), as
   does one that has not collected its minimum sample by then ("stalled").

Each guardrail is a separate test at level ``alpha``; a rollback false alarm needs one of them to
err, so the rollout-wide rate is at most (number of guardrails) x alpha.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from huabu.ab_testing._base import FrozenModel
from huabu.ab_testing.assignment import BUCKETS, CANARY, STABLE, percent_to_bp
from huabu.ab_testing.metrics import ExperimentMetrics, VariantMetrics
from huabu.ab_testing.stats import (
    SampleSummary,
    SRMResult,
    SummaryLike,
    sequential_srm_check,
    sequential_test,
    srm_check,
    tune_mixture_variance,
)

if TYPE_CHECKING:
    from huabu.ab_testing.rollout import Rollout

Action = Literal["hold", "advance", "promote", "rollback", "pause", "resume"]
CheckStatus = Literal["pass", "fail", "inconclusive", "insufficient_data", "disabled", "not_applicable"]
NOT_BLOCKING: tuple[CheckStatus, ...] = ("pass", "disabled", "not_applicable")


class Guardrail(FrozenModel):
    """A rate or score compared with the stable model within an absolute ``margin``.

    Rates are fractions (margin 0.01 = one percentage point); scores are in the scorer's units.
    """

    enabled: bool = True
    margin: float = Field(gt=0)
    min_samples: int = Field(default=100, ge=2)  # per arm before it can pass or fail
    required: bool = True  # advancing waits for it; optional ones can only fail
    # Why this guardrail cannot be measured for the rollout's models (the quality scorer cannot
    # judge one of them): it is then reported, never waited for.
    not_applicable: str | None = Field(default=None, max_length=300)


LATENCY_MIN_SAMPLES = 20  # a p95 of fewer completed requests per arm is noise


class LatencyGuardrail(FrozenModel):
    """p95 latency of the canary at most ``max_p95_ratio`` times the stable model's (Flagger-style)."""

    enabled: bool = True
    max_p95_ratio: float = Field(default=1.25, gt=1.0)
    min_samples: int = Field(default=200, ge=LATENCY_MIN_SAMPLES)  # completed requests per arm
    required: bool = True


class RolloutPolicy(FrozenModel):
    """Steps, their minimum sample and time, the guardrails and the SRM check of one rollout.

    Stored inside the ``Rollout``, so a running rollout keeps the policy it started with.
    """

    steps: tuple[float, ...] = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0)  # canary traffic percent
    min_samples_per_step: int = Field(default=200, ge=0)  # canary requests in the current step
    min_step_seconds: float = Field(default=300.0, ge=0)
    max_step_seconds: float | None = Field(default=24 * 3600.0, gt=0)  # then pause if still blocked
    evidence_from_percent: float = Field(default=25.0, ge=0, le=100)
    alpha: float = Field(default=0.05, gt=0, lt=1)  # per guardrail
    # The mixture variance of the sequential tests is tuned so the intervals are tightest when each
    # arm has this many observations (Howard et al.'s / GrowthBook's tuning); any value is valid.
    planned_samples: int = Field(default=2000, ge=10)
    error_rate: Guardrail = Guardrail(margin=0.01)
    filter_block_rate: Guardrail = Guardrail(margin=0.02)
    quality: Guardrail = Guardrail(margin=0.02)
    adoption: Guardrail = Guardrail(margin=0.05, required=False)  # feedback is sparse: never wait for it
    latency: LatencyGuardrail = LatencyGuardrail()
    srm_test: Literal["sequential", "chi2", "off"] = "sequential"  # sequential: valid when checked often
    srm_alpha: float = Field(default=0.001, gt=0, lt=1)
    srm_min_samples: int = Field(default=100, ge=0)  # requests in the phase before checking

    @model_validator(mode="after")
    def _steps(self) -> RolloutPolicy:
        s = self.steps
        if len(s) < 2 or s[-1] != 100.0:
            raise ValueError(f"steps must have at least two entries and end at 100, got {s}")
        if any(not 0 < x <= 100 for x in s) or any(b <= a for a, b in itertools.pairwise(s)):
            raise ValueError(f"steps must increase strictly within (0, 100], got {s}")
        if len({percent_to_bp(x) for x in s}) != len(s):
            raise ValueError(f"steps must differ by at least 0.01 %, got {s}")
        return self


# Named starting points for ``RolloutPolicy.build``. "default" is the production policy above;
# "demo" is sized for a walkthrough on a laptop (tens of requests per step, not thousands): wider
# margins, intervals tuned for ~200 samples per arm, and decisions on point estimates below 50 %.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "demo": {
        "steps": [20.0, 50.0, 100.0],
        "min_samples_per_step": 10,
        "min_step_seconds": 0,
        "evidence_from_percent": 50,
        "planned_samples": 200,
        "error_rate": {"margin": 0.05},
        "filter_block_rate": {"margin": 0.05},
        "quality": {"margin": 0.1},
        "latency": {"max_p95_ratio": 1.5},
    },
}
GUARDRAILS = ("error_rate", "filter_block_rate", "quality", "adoption", "latency")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build_policy(
    preset: str = "default",
    *,
    steps: Sequence[float] | None = None,
    min_samples: int | None = None,
    min_step_seconds: float | None = None,
    overrides: dict[str, Any] | None = None,
) -> RolloutPolicy:
    """The one way the example script and ``huabu rollout start`` make a policy.

    ``min_samples`` is the sample a step waits for *and* every guardrail's minimum per arm (the p95
    latency guardrail's floor is 20), so a small sample reaches the decisions it names; a step that
    advanced on fewer guardrail samples than its own would wait forever. ``overrides`` (any policy
    fields, nested) apply last.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown policy preset {preset!r}; choose one of {', '.join(PRESETS)}")
    # On top of every default, so a preset or an override may name one field of a guardrail.
    fields = _merge(RolloutPolicy().model_dump(), PRESETS[preset])
    if steps is not None:
        fields["steps"] = [float(s) for s in steps]
    if min_step_seconds is not None:
        fields["min_step_seconds"] = min_step_seconds
    n = min_samples if min_samples is not None else PRESETS[preset].get("min_samples_per_step")
    if n is not None:
        fields["min_samples_per_step"] = n
        for name in GUARDRAILS:
            least = LATENCY_MIN_SAMPLES if name == "latency" else 2
            fields[name] = {**fields.get(name, {}), "min_samples": max(least, n)}
    return RolloutPolicy.model_validate(_merge(fields, overrides or {}))


class GuardrailCheck(FrozenModel):
    name: str
    status: CheckStatus
    higher_is_better: bool
    threshold: float  # the margin, or the p95 ratio cap
    stable: float | None = None  # the metric for each arm (rate, mean score, p95 in ms)
    canary: float | None = None
    difference: float | None = None  # canary - stable; canary / stable for p95 latency
    ci_low: float | None = None  # anytime-valid (1 - alpha) interval for the difference
    ci_high: float | None = None
    p_value: float | None = None  # always-valid p-value for "no difference"
    within_margin: bool | None = None  # the point estimate is not worse than the threshold
    n_stable: int = 0
    n_canary: int = 0
    detail: str


class Decision(FrozenModel):
    action: Action
    code: str  # machine-readable reason, e.g. "guardrail_failed", "collecting_samples"
    reason: str
    at: float  # unix seconds
    actor: str = "policy"  # or e.g. "admin:alice" for manual operations
    step: int  # step index the decision was taken at
    phase: int  # split version the decision was taken at (a stale decision is refused)
    from_percent: float
    to_percent: float
    weights: dict[str, int]  # weights after the decision, basis points
    checks: tuple[GuardrailCheck, ...] = ()
    srm: SRMResult | None = None
    samples: dict[str, int] = Field(default_factory=dict)  # requests per variant, all phases
    step_samples: int | None = None  # canary requests in the current step
    step_elapsed_s: float | None = None


# ----------------------------------------------------------------------------------------------
# Guardrail evaluation
# ----------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _compare(
    name: str,
    guard: Guardrail,
    stable: SummaryLike,
    canary: SummaryLike,
    *,
    higher_is_better: bool,
    alpha: float,
    planned_samples: int,
    as_rate: bool,
) -> GuardrailCheck:
    """One rate or score guardrail judged with the anytime-valid confidence sequence."""
    fmt = _pct if as_rate else _num
    check = GuardrailCheck(
        name=name,
        status="disabled",
        higher_is_better=higher_is_better,
        threshold=guard.margin,
        stable=stable.mean if stable.n else None,
        canary=canary.mean if canary.n else None,
        n_stable=stable.n,
        n_canary=canary.n,
        detail=f"{name}: disabled",
    )
    if not guard.enabled:
        return check
    if guard.not_applicable:
        detail = f"{name}: not applicable ({guard.not_applicable})"
        return check.model_copy(update={"status": "not_applicable", "detail": detail})
    if stable.n < guard.min_samples or canary.n < guard.min_samples:
        detail = f"{name}: waiting for {guard.min_samples} per arm (stable {stable.n}, canary {canary.n})"
        return check.model_copy(update={"status": "insufficient_data", "detail": detail})
    planned = max((stable.variance + canary.variance) / planned_samples, 1e-18)
    res = sequential_test(stable, canary, mixture_variance=tune_mixture_variance(planned, alpha), alpha=alpha)
    diff, m = res.estimate, guard.margin
    # Orient so that "worse" is positive: worse = diff for lower-is-better metrics, -diff otherwise.
    worse_low, worse_high = (-res.ci_high, -res.ci_low) if higher_is_better else (res.ci_low, res.ci_high)
    worse = -diff if higher_is_better else diff
    status: CheckStatus = "fail" if worse_low > m else "pass" if worse_high < m else "inconclusive"
    word = {"fail": "worse than the margin", "pass": "non-inferior", "inconclusive": "inconclusive"}[status]
    scale, unit = (100.0, " pp") if as_rate else (1.0, "")
    detail = (
        f"{name} {word}: canary {fmt(canary.mean)} vs stable {fmt(stable.mean)}, difference "
        f"{scale * diff:+.3g}{unit} (anytime-valid {100 * (1 - alpha):g}% CI "
        f"[{scale * res.ci_low:+.3g}, {scale * res.ci_high:+.3g}]{unit}, margin {scale * m:.3g}{unit}; "
        f"n = {canary.n} / {stable.n})"
    )
    return check.model_copy(
        update={
            "status": status,
            "detail": detail,
            "difference": diff,
            "ci_low": res.ci_low,
            "ci_high": res.ci_high,
            "p_value": res.p_value,
            "within_margin": worse <= m,
        }
    )


def _latency_check(guard: LatencyGuardrail, stable: VariantMetrics, canary: VariantMetrics) -> GuardrailCheck:
    ns, nc = stable.latency_hist.total, canary.latency_hist.total
    ps, pc = stable.p95_latency_ms, canary.p95_latency_ms
    check = GuardrailCheck(
        name="p95_latency",
        status="disabled",
        higher_is_better=False,
        threshold=guard.max_p95_ratio,
        stable=ps,
        canary=pc,
        n_stable=ns,
        n_canary=nc,
        detail="p95_latency: disabled",
    )
    if not guard.enabled:
        return check
    if ns < guard.min_samples or nc < guard.min_samples or ps is None or pc is None:
        detail = f"p95_latency: waiting for {guard.min_samples} completed requests per arm (stable {ns}, canary {nc})"
        return check.model_copy(update={"status": "insufficient_data", "detail": detail})
    ratio = pc / ps if ps > 0 else (1.0 if pc == 0 else math.inf)
    ok = ratio <= guard.max_p95_ratio
    detail = (
        f"p95_latency {'within' if ok else 'over'} the cap: canary {pc:.0f} ms vs stable {ps:.0f} ms, "
        f"ratio {ratio:.3f} (cap {guard.max_p95_ratio:g}; n = {nc} / {ns})"
    )
    update = {"status": "pass" if ok else "fail", "detail": detail, "within_margin": ok}
    return check.model_copy(update={**update, "difference": ratio if math.isfinite(ratio) else None})


def evaluate_guardrails(
    policy: RolloutPolicy, stable: VariantMetrics, canary: VariantMetrics
) -> tuple[GuardrailCheck, ...]:
    """Every guardrail of the policy on the given (usually all-phase) metrics."""
    alpha, planned = policy.alpha, policy.planned_samples
    return (
        _compare(
            "error_rate",
            policy.error_rate,
            SampleSummary.from_proportion(stable.errors, stable.requests, smoothed=True),
            SampleSummary.from_proportion(canary.errors, canary.requests, smoothed=True),
            higher_is_better=False,
            as_rate=True,
            alpha=alpha,
            planned_samples=planned,
        ),
        _latency_check(policy.latency, stable, canary),
        _compare(
            "quality",
            policy.quality,
            stable.quality,
            canary.quality,
            higher_is_better=True,
            as_rate=False,
            alpha=alpha,
            planned_samples=planned,
        ),
        _compare(
            "filter_block_rate",
            policy.filter_block_rate,
            SampleSummary.from_proportion(stable.filter_blocks, stable.requests, smoothed=True),
            SampleSummary.from_proportion(canary.filter_blocks, canary.requests, smoothed=True),
            higher_is_better=False,
            as_rate=True,
            alpha=alpha,
            planned_samples=planned,
        ),
        _compare(
            "adoption",
            policy.adoption,
            SampleSummary.from_proportion(stable.feedback_accepted, stable.feedback_total, smoothed=True),
            SampleSummary.from_proportion(canary.feedback_accepted, canary.feedback_total, smoothed=True),
            higher_is_better=True,
            as_rate=True,
            alpha=alpha,
            planned_samples=planned,
        ),
    )


def _required(policy: RolloutPolicy, name: str) -> bool:
    guards = {
        "error_rate": policy.error_rate.required,
        "p95_latency": policy.latency.required,
        "quality": policy.quality.required,
        "filter_block_rate": policy.filter_block_rate.required,
        "adoption": policy.adoption.required,
    }
    return guards[name]


def _blocks(check: GuardrailCheck, *, required: bool, evidence_needed: bool) -> bool:
    """Does this check keep the step from advancing?"""
    if check.status in NOT_BLOCKING or not required:
        return False
    if check.status == "inconclusive":
        return evidence_needed or not check.within_margin
    return True  # insufficient data (a fail never gets here: it rolls back)


def check_srm(policy: RolloutPolicy, weights: dict[str, int], phase: dict[str, VariantMetrics]) -> SRMResult | None:
    """The sample-ratio check on the current phase's request counts (None: not checked yet)."""
    observed = {name: phase[name].requests if name in phase else 0 for name in {*weights, *phase}}
    if policy.srm_test == "off" or sum(observed.values()) < policy.srm_min_samples:
        return None
    w = {k: float(v) for k, v in weights.items()}
    if policy.srm_test == "chi2":
        return srm_check(observed, w, alpha=policy.srm_alpha)
    return sequential_srm_check(observed, w, alpha=policy.srm_alpha)


# ----------------------------------------------------------------------------------------------
# The decision
# ----------------------------------------------------------------------------------------------


def _weights(canary_percent: float) -> dict[str, int]:
    bp = percent_to_bp(canary_percent)
    return {STABLE: BUCKETS - bp, CANARY: bp}


def decide(rollout: Rollout, metrics: ExperimentMetrics, now: float) -> Decision:
    """What the rollout should do now. Pure: reads its arguments, changes nothing."""
    policy = rollout.policy
    current = rollout.canary_percent
    totals = metrics.totals()
    stable = totals.get(STABLE) or VariantMetrics()
    canary = totals.get(CANARY) or VariantMetrics()
    phase = metrics.phase(rollout.split.version)
    step_samples = phase[CANARY].requests if CANARY in phase else 0
    elapsed = max(0.0, now - rollout.step_started_at)

    def make(
        action: Action,
        code: str,
        reason: str,
        to_percent: float = current,
        checks: tuple[GuardrailCheck, ...] = (),
        srm: SRMResult | None = None,
    ) -> Decision:
        return Decision(
            action=action,
            code=code,
            reason=reason,
            at=now,
            step=rollout.step_index,
            phase=rollout.split.version,
            from_percent=current,
            to_percent=to_percent,
            weights=_weights(to_percent),
            samples={STABLE: stable.requests, CANARY: canary.requests},
            step_samples=step_samples,
            step_elapsed_s=elapsed,
            checks=checks,
            srm=srm,
        )

    if rollout.status != "running":
        return make("hold", "not_running", f"rollout is {rollout.status}; nothing to decide")

    checks = evaluate_guardrails(policy, stable, canary)
    srm = check_srm(policy, rollout.split.weights, phase)

    failed = [c for c in checks if c.status == "fail"]
    if failed:
        reason = f"rolled back at {current:g}%: " + "; ".join(c.detail for c in failed)
        return make("rollback", "guardrail_failed", reason, to_percent=0.0, checks=checks, srm=srm)
    if srm is not None and srm.mismatch:
        return make("pause", "sample_ratio_mismatch", f"paused at {current:g}%: {srm.summary}", checks=checks, srm=srm)
    timed_out = policy.max_step_seconds is not None and elapsed >= policy.max_step_seconds
    if step_samples < policy.min_samples_per_step:
        counts = f"{step_samples} of {policy.min_samples_per_step} canary requests"
        if timed_out:  # e.g. the canary deployment is not receiving or not reporting traffic
            reason = f"paused at {current:g}%: only {counts} after {elapsed:.0f} s"
            return make("pause", "stalled", reason, checks=checks, srm=srm)
        reason = f"collecting samples at {current:g}%: {counts}"
        return make("hold", "collecting_samples", reason, checks=checks, srm=srm)
    if elapsed < policy.min_step_seconds:
        reason = f"minimum step time at {current:g}%: {elapsed:.0f} of {policy.min_step_seconds:.0f} s"
        return make("hold", "min_step_time", reason, checks=checks, srm=srm)

    evidence_needed = current >= policy.evidence_from_percent
    blockers = [c for c in checks if _blocks(c, required=_required(policy, c.name), evidence_needed=evidence_needed)]
    if blockers:
        waiting = "; ".join(c.detail for c in blockers)
        if timed_out:
            reason = f"paused at {current:g}%: still inconclusive after {elapsed:.0f} s: {waiting}"
            return make("pause", "inconclusive", reason, checks=checks, srm=srm)
        need = "evidence of non-inferiority" if evidence_needed else "point estimates within the margins"
        return make(
            "hold", "awaiting_evidence", f"holding at {current:g}% for {need}: {waiting}", checks=checks, srm=srm
        )

    if rollout.step_index + 1 >= len(policy.steps):  # unreachable through Rollout.apply; be safe
        return make("hold", "last_step", f"already at the last step ({current:g}%)", checks=checks, srm=srm)
    passed = "; ".join(c.detail for c in checks if c.status not in ("disabled", "insufficient_data")) or "no data"
    target = policy.steps[rollout.step_index + 1]
    if target >= 100.0:
        return make(
            "promote",
            "promoted",
            f"promoted from {current:g}% to 100%: {passed}",
            to_percent=100.0,
            checks=checks,
            srm=srm,
        )
    return make(
        "advance",
        "step_passed",
        f"advanced {current:g}% -> {target:g}%: {passed}",
        to_percent=target,
        checks=checks,
        srm=srm,
    )

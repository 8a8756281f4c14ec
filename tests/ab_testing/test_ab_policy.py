"""The rollout policy end to end on simulated traffic, plus the state machine and persistence.

The simulation is the real pipeline minus Ray: users are assigned with ``TrafficSplit.assign``,
two gateway replicas record into ``MetricsBuffer``s and flush into an ``InMemoryStateStore``, and a
control loop calls ``evaluate_rollout`` every simulated minute, which loads the rollout (JSON) from
the store, decides and writes it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from pydantic import ValidationError

from huabu.ab_testing.assignment import CANARY, STABLE
from huabu.ab_testing.metrics import ExperimentMetrics, MetricsBuffer, VariantMetrics
from huabu.ab_testing.policy import Guardrail, RolloutPolicy, decide
from huabu.ab_testing.rollout import (
    Rollout,
    RolloutExistsError,
    RolloutRepository,
    StaleDecisionError,
    evaluate_rollout,
)
from huabu.ab_testing.store import InMemoryStateStore

TICK_S = 60.0
POLICY = RolloutPolicy(min_step_seconds=120, min_samples_per_step=200)


@dataclass(frozen=True)
class Behaviour:
    """How a model behaves; the stable model is ``Behaviour()``."""

    error_rate: float = 0.01
    latency_factor: float = 1.0  # multiplies a lognormal latency around 2 s
    quality_shift: float = 0.0  # added to a N(0.7, 0.1) quality score
    filter_rate: float = 0.01
    lost_records: float = 0.0  # share of requests never recorded (a metrics bug: SRM)
    scored: bool = True  # False: the quality scorer yields nothing for this model


STABLE_BEHAVIOUR = Behaviour()


def simulate(
    canary: Behaviour,
    *,
    seed: int,
    policy: RolloutPolicy = POLICY,
    requests_per_tick: int = 2000,
    max_ticks: int = 200,
    restart_every: int | None = None,
) -> Rollout:
    rng = np.random.default_rng(seed)
    store = InMemoryStateStore()
    repo = RolloutRepository(store)
    repo.create(Rollout.start("mmdit-v2", stable_model="mmdit@1", canary_model="mmdit@2", now=0.0, policy=policy))
    replicas = [MetricsBuffer("gateway-0"), MetricsBuffer("gateway-1")]
    now = 0.0
    for tick in range(max_ticks):
        if restart_every and tick and tick % restart_every == 0:
            # A gateway restart: new replica ids, new repository object; only the store survives.
            repo = RolloutRepository(store)
            replicas = [MetricsBuffer(f"gateway-{tick}-{i}") for i in range(2)]
        rollout = repo.get("mmdit-v2")
        assert rollout is not None
        if rollout.terminal or rollout.status == "paused":
            return rollout
        users = rng.integers(0, 30_000, requests_per_tick)
        u_err, u_filter, u_lost = rng.random((3, requests_per_tick))
        latency = rng.lognormal(np.log(2000.0), 0.3, requests_per_tick)
        quality = rng.normal(0.7, 0.1, requests_per_tick)
        for i in range(requests_per_tick):
            a = rollout.split.assign(f"user-{users[i]}")
            b = canary if a.variant == CANARY else STABLE_BEHAVIOUR
            if u_lost[i] < b.lost_records:
                continue
            error = bool(u_err[i] < b.error_rate)
            blocked = not error and bool(u_filter[i] < b.filter_rate)
            replicas[i % 2].record_request(
                a,
                latency_ms=None if error else float(latency[i] * b.latency_factor),
                error=error,
                filter_blocked=blocked,
                quality=float(quality[i] + b.quality_shift) if b.scored and not error else None,
            )
        for r in replicas:
            r.flush(store)
        now += TICK_S
        evaluate_rollout(store, "mmdit-v2", now=now)
    final = repo.get("mmdit-v2")
    assert final is not None
    return final


def moves(rollout: Rollout) -> list[tuple[str, float]]:
    return [(d.action, d.to_percent) for d in rollout.history if d.action != "hold"]


@pytest.mark.parametrize("seed", [1, 2])
def test_equal_canary_is_promoted_through_every_step(seed: int) -> None:
    rollout = simulate(Behaviour(), seed=seed, restart_every=7 if seed == 1 else None)
    assert rollout.status == "promoted", rollout.last_decision
    assert moves(rollout) == [
        ("advance", 5.0),
        ("advance", 10.0),
        ("advance", 25.0),
        ("advance", 50.0),
        ("promote", 100.0),
    ]
    assert rollout.split.weights == {STABLE: 0, CANARY: 10_000}
    assert [p for _, p in rollout.traffic_history()] == [1.0, 5.0, 10.0, 25.0, 50.0, 100.0]
    promote = rollout.history[-1]
    assert promote.code == "promoted" and promote.actor == "policy"
    assert "error_rate non-inferior" in promote.reason and "quality non-inferior" in promote.reason
    statuses = {c.name: c.status for c in promote.checks}
    # From 25 % on, every required guardrail must have passed; adoption has no feedback and is optional.
    assert statuses == {
        "error_rate": "pass",
        "p95_latency": "pass",
        "quality": "pass",
        "filter_block_rate": "pass",
        "adoption": "insufficient_data",
    }
    for d in rollout.history:
        if d.action in ("advance", "promote"):
            assert d.step_samples is not None and d.step_samples >= POLICY.min_samples_per_step
            assert d.step_elapsed_s is not None and d.step_elapsed_s >= POLICY.min_step_seconds
            assert d.srm is not None and not d.srm.mismatch


def test_better_canary_is_promoted() -> None:
    better = Behaviour(error_rate=0.005, latency_factor=0.8, quality_shift=0.05, filter_rate=0.005)
    rollout = simulate(better, seed=4)
    assert rollout.status == "promoted"
    quality = next(c for c in rollout.history[-1].checks if c.name == "quality")
    assert quality.difference is not None and quality.difference > 0.03 and quality.ci_low is not None
    assert quality.ci_low > 0  # significantly better, not just non-inferior


@pytest.mark.parametrize(
    ("canary", "guardrail"),
    [
        (Behaviour(error_rate=0.06), "error_rate"),
        (Behaviour(latency_factor=1.5), "p95_latency"),
        (Behaviour(quality_shift=-0.08), "quality"),
        (Behaviour(filter_rate=0.08), "filter_block_rate"),
    ],
)
def test_worse_canary_is_rolled_back_with_reasons(canary: Behaviour, guardrail: str) -> None:
    rollout = simulate(canary, seed=5)
    assert rollout.status == "rolled_back", rollout.last_decision
    assert rollout.split.weights == {STABLE: 10_000, CANARY: 0}
    decision = rollout.history[-1]
    assert decision.action == "rollback" and decision.code == "guardrail_failed"
    assert decision.from_percent <= 10.0  # caught while the canary still had little traffic
    assert guardrail in decision.reason
    failed = [c for c in decision.checks if c.status == "fail"]
    assert [c.name for c in failed] == [guardrail]
    check = failed[0]
    assert check.n_canary > 0 and check.stable is not None and check.canary is not None
    if guardrail == "p95_latency":
        assert check.difference is not None and check.difference > POLICY.latency.max_p95_ratio
    else:  # the whole anytime-valid interval is beyond the margin on the bad side
        assert check.ci_low is not None and check.ci_high is not None
        worse_bound = -check.ci_high if check.higher_is_better else check.ci_low
        assert worse_bound > check.threshold
    assert moves(rollout)[-1] == ("rollback", 0.0)


def test_lost_canary_records_pause_on_sample_ratio_mismatch() -> None:
    rollout = simulate(Behaviour(lost_records=0.4), seed=6)
    assert rollout.status == "paused"
    decision = rollout.history[-1]
    assert decision.action == "pause" and decision.code == "sample_ratio_mismatch"
    assert decision.srm is not None and decision.srm.mismatch and decision.srm.p_value <= POLICY.srm_alpha
    assert decision.weights == rollout.split.weights  # pausing keeps the traffic where it is


def test_a_step_without_evidence_pauses_as_inconclusive() -> None:
    policy = POLICY.model_copy(update={"max_step_seconds": 900.0})
    rollout = simulate(Behaviour(scored=False), seed=7, policy=policy)  # the canary's scorer is broken
    assert rollout.status == "paused"
    decision = rollout.history[-1]
    assert decision.code == "inconclusive" and "quality: waiting for" in decision.reason
    assert rollout.canary_percent == 1.0
    # Before pausing it held, and said why, once (holds with the same code are deduplicated).
    holds = [d.code for d in rollout.history if d.action == "hold"]
    assert holds == ["collecting_samples", "awaiting_evidence"]


def test_a_quality_guardrail_that_cannot_be_judged_never_blocks() -> None:
    # The server marks quality not applicable when its scorer cannot judge one of the models (a
    # diffusers canary under the adherence judge): the rollout decides on the other guardrails.
    unjudged = POLICY.quality.model_copy(update={"not_applicable": "the adherence scorer cannot judge diffusers:x"})
    policy = POLICY.model_copy(update={"max_step_seconds": 900.0, "quality": unjudged})
    rollout = simulate(Behaviour(scored=False), seed=7, policy=policy)
    assert rollout.status == "promoted", rollout.history[-1].reason
    promote = rollout.history[-1]
    checks = {c.name: c for c in promote.checks}
    assert checks["quality"].status == "not_applicable" and checks["error_rate"].status == "pass"
    assert "quality: not applicable (the adherence scorer cannot judge diffusers:x)" in promote.reason
    # The same canary, measurably worse on errors, is still rolled back.
    worse = simulate(
        Behaviour(scored=False, error_rate=0.06), seed=5, policy=POLICY.model_copy(update={"quality": unjudged})
    )
    assert worse.status == "rolled_back" and "error_rate" in worse.history[-1].reason


def _rollout(now: float = 0.0) -> Rollout:
    return Rollout.start("r1", stable_model="mmdit@1", canary_model="mmdit@2", now=now, policy=POLICY)


def _metrics(stable: int, canary: int, phase: int = 0) -> ExperimentMetrics:
    rng = np.random.default_rng(8)
    m = ExperimentMetrics(experiment_id="r1")
    for name, n in ((STABLE, stable), (CANARY, canary)):
        v = VariantMetrics()
        for x in rng.lognormal(7.6, 0.3, n):
            v.record_request(latency_ms=float(x), quality=0.7)
        m.add(phase, name, v)
    return m


def test_decide_is_pure_and_ticks_are_atomic() -> None:
    rollout = _rollout()
    metrics = _metrics(25_000, 250)
    before = rollout.model_dump_json()
    d1, d2 = decide(rollout, metrics, 600.0), decide(rollout, metrics, 600.0)
    assert d1 == d2 and rollout.model_dump_json() == before
    assert d1.action == "advance" and d1.to_percent == 5.0 and d1.weights == {STABLE: 9500, CANARY: 500}
    assert decide(rollout, metrics, 60.0).code == "min_step_time"
    assert decide(rollout, _metrics(10_000, 100), 600.0).code == "collecting_samples"
    # No traffic reaches the canary at all: after max_step_seconds the rollout pauses as stalled.
    empty = ExperimentMetrics(experiment_id="r1")
    assert decide(rollout, empty, 3600.0).code == "collecting_samples"
    stalled = decide(rollout, empty, POLICY.max_step_seconds or 0.0)
    assert (stalled.action, stalled.code) == ("pause", "stalled")

    # Two replicas running the control loop at the same moment: one advances, the other sees the new
    # phase (no samples yet) and holds. The step is never skipped.
    store = InMemoryStateStore()
    RolloutRepository(store).create(rollout)
    buf = MetricsBuffer("g")
    for i in range(20_000):
        a = rollout.split.assign(f"user-{i}")
        buf.record_request(a, latency_ms=2000.0, quality=0.7)
    buf.flush(store)
    first, d_first = evaluate_rollout(store, "r1", now=600.0)
    second, d_second = evaluate_rollout(store, "r1", now=600.0)
    assert (d_first.action, d_second.action) == ("advance", "hold")
    assert d_second.code == "collecting_samples" and second.canary_percent == 5.0
    assert second.split.version == 1 and second.revision == first.revision + 1


def test_optional_adoption_guardrail_never_blocks_but_can_fail() -> None:
    rollout = _rollout()
    metrics = _metrics(25_000, 250)
    assert decide(rollout, metrics, 600.0).action == "advance"  # no feedback yet: not waited for
    for name, accepted, total in ((STABLE, 600, 1000), (CANARY, 90, 300)):
        feedback = VariantMetrics()
        for i in range(total):
            feedback.record_feedback(accepted=i < accepted)
        metrics.add(0, name, feedback)
    decision = decide(rollout, metrics, 600.0)
    assert (decision.action, decision.code) == ("rollback", "guardrail_failed")
    assert decision.reason.startswith(
        "rolled back at 1%: adoption worse than the margin: canary 30.00% vs stable 60.00%"
    )


def test_manual_operations_and_stale_decisions() -> None:
    r = _rollout()
    paused = r.pause(10.0, actor="admin:alice", reason="investigating a report")
    assert paused.status == "paused" and paused.history[-1].actor == "admin:alice"
    assert decide(paused, _metrics(20_000, 300), 1000.0).code == "not_running"
    with pytest.raises(StaleDecisionError):
        paused.pause(11.0)
    resumed = paused.resume(20.0)
    # Resuming starts a new phase and restarts the step clock.
    assert resumed.status == "running" and resumed.split.version == 1 and resumed.step_started_at == 20.0
    stale = decide(r, _metrics(20_000, 300), 1000.0)  # decided on phase 0
    with pytest.raises(StaleDecisionError):
        resumed.apply(stale)
    promoted = resumed.promote(30.0)
    assert promoted.status == "promoted" and promoted.canary_percent == 100.0 and promoted.terminal
    with pytest.raises(StaleDecisionError):
        promoted.rollback(40.0)
    rolled = r.rollback(5.0, reason="bad images")
    assert rolled.status == "rolled_back" and rolled.canary_percent == 0.0
    assert rolled.history[-1].reason == "bad images" and rolled.history[-1].code == "manual_rollback"


def test_rollout_state_round_trips_and_is_unique() -> None:
    rollout = simulate(Behaviour(latency_factor=1.5), seed=9)
    text = rollout.model_dump_json()
    assert Rollout.model_validate_json(text) == rollout
    store = InMemoryStateStore()
    repo = RolloutRepository(store)
    repo.create(rollout)
    with pytest.raises(RolloutExistsError):
        repo.create(rollout)
    assert repo.get("mmdit-v2") == rollout and [r.id for r in repo.list()] == ["mmdit-v2"]
    with pytest.raises(KeyError):
        repo.update("missing", lambda r: r)


def test_policy_and_rollout_validation() -> None:
    for steps in [(5.0,), (5.0, 50.0), (10.0, 5.0, 100.0), (0.0, 100.0), (50.0, 50.0, 100.0)]:
        with pytest.raises(ValidationError, match="steps"):
            RolloutPolicy(steps=steps)
    assert RolloutPolicy(steps=(0.5, 100.0)).steps == (0.5, 100.0)
    with pytest.raises(ValidationError):
        Guardrail(margin=0.0)
    with pytest.raises(ValidationError, match="name@version"):
        Rollout.start("r1", stable_model="mmdit", canary_model="mmdit@2", now=0.0)
    with pytest.raises(ValidationError, match="different"):
        Rollout.start("r1", stable_model="mmdit@2", canary_model="mmdit@2", now=0.0)
    with pytest.raises(ValueError, match="rollout id"):
        Rollout.start("bad id", stable_model="mmdit@1", canary_model="mmdit@2", now=0.0)

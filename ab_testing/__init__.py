"""huabu.ab_testing: canary rollouts and A/B tests in plain Python (no Ray, no HTTP).

- ``assignment``: sticky SHA-256 bucketing of users or keys into variants, monotone ramps, overrides;
- ``metrics``: mergeable per-variant accumulators and the per-replica buffer that flushes them;
- ``store``: the ``StateStore`` protocol (Ray actor / Redis elsewhere) and an in-memory one;
- ``stats``: Welch, two-proportion z, non-inferiority, anytime-valid mixture SPRT, SRM checks;
- ``policy``: guardrails and the pure ``decide(rollout, metrics, now)``;
- ``rollout``: the persisted ``Rollout`` state, its transitions and the control-loop tick.
"""

from huabu.ab_testing.assignment import (
    BUCKETS,
    CANARY,
    STABLE,
    Assignment,
    TrafficSplit,
    UnknownVariantError,
    Variant,
    bucket_for,
    percent_to_bp,
    reassigned_buckets,
)
from huabu.ab_testing.metrics import (
    ExperimentMetrics,
    LatencyHistogram,
    MetricsBuffer,
    MetricsKey,
    Moments,
    VariantMetrics,
    delete_metrics,
    load_metrics,
    merge_all,
)
from huabu.ab_testing.policy import (
    Decision,
    Guardrail,
    GuardrailCheck,
    LatencyGuardrail,
    RolloutPolicy,
    build_policy,
    check_srm,
    decide,
    evaluate_guardrails,
)
from huabu.ab_testing.rollout import (
    Rollout,
    RolloutExistsError,
    RolloutRepository,
    StaleDecisionError,
    evaluate_rollout,
)
from huabu.ab_testing.stats import (
    NonInferiorityResult,
    SampleSummary,
    SequentialResult,
    SRMResult,
    StatResult,
    WelchResult,
    ZTestResult,
    non_inferiority_test,
    sequential_srm_check,
    sequential_test,
    srm_check,
    tune_mixture_variance,
    two_proportion_z_test,
    welch_t_test,
)
from huabu.ab_testing.store import ConflictError, InMemoryStateStore, StateStore

__all__ = [
    "BUCKETS",
    "CANARY",
    "STABLE",
    "Assignment",
    "ConflictError",
    "Decision",
    "ExperimentMetrics",
    "Guardrail",
    "GuardrailCheck",
    "InMemoryStateStore",
    "LatencyGuardrail",
    "LatencyHistogram",
    "MetricsBuffer",
    "MetricsKey",
    "Moments",
    "NonInferiorityResult",
    "Rollout",
    "RolloutExistsError",
    "RolloutPolicy",
    "RolloutRepository",
    "SRMResult",
    "SampleSummary",
    "SequentialResult",
    "StaleDecisionError",
    "StatResult",
    "StateStore",
    "TrafficSplit",
    "UnknownVariantError",
    "Variant",
    "VariantMetrics",
    "WelchResult",
    "ZTestResult",
    "bucket_for",
    "build_policy",
    "check_srm",
    "decide",
    "delete_metrics",
    "evaluate_guardrails",
    "evaluate_rollout",
    "load_metrics",
    "merge_all",
    "non_inferiority_test",
    "percent_to_bp",
    "reassigned_buckets",
    "sequential_srm_check",
    "sequential_test",
    "srm_check",
    "tune_mixture_variance",
    "two_proportion_z_test",
    "welch_t_test",
]

"""Prometheus metrics through Ray's metrics API (``ray.util.metrics``).

Every replica records into its own process; Ray's metrics agent on each node serves them all on
the node's metrics export port with a ``ray_`` prefix (counters also get ``_total``). Every series
carries an ``app`` tag (``Settings.app_name``), so several applications on one cluster stay
apart. Names, tags and meaning are documented in ``docs/OBSERVABILITY.md``; a test scrapes them.

Recording costs a few microseconds (measured ~6 us per call), so metrics are on by default
(``telemetry.metrics``). Instruments are created lazily, once per process, because Ray's metric
objects belong to the process that created them.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

# Seconds; from a cache hit (milliseconds) to a long generation (minutes).
LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
BATCH_BUCKETS: list[float] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64]

_app = "huabu"
_enabled = False


def configure(app: str, enabled: bool) -> None:
    global _app, _enabled
    _app, _enabled = app, enabled


@functools.cache
def _counter(name: str, description: str, tags: tuple[str, ...]) -> Any:
    from ray.util.metrics import Counter

    return Counter(name, description=description, tag_keys=("app", *tags))


@functools.cache
def _histogram(name: str, description: str, boundaries: tuple[float, ...], tags: tuple[str, ...]) -> Any:
    from ray.util.metrics import Histogram

    return Histogram(name, description=description, boundaries=list(boundaries), tag_keys=("app", *tags))


@functools.cache
def _gauge(name: str, description: str, tags: tuple[str, ...]) -> Any:
    from ray.util.metrics import Gauge

    return Gauge(name, description=description, tag_keys=("app", *tags))


def _inc(name: str, description: str, amount: float = 1.0, **tags: str) -> None:
    if _enabled and amount > 0:
        _counter(name, description, tuple(tags)).inc(amount, tags={"app": _app, **tags})


def _observe(name: str, description: str, value: float, buckets: list[float] | None = None, **tags: str) -> None:
    if _enabled:
        bounds = tuple(buckets or LATENCY_BUCKETS)
        _histogram(name, description, bounds, tuple(tags)).observe(value, tags={"app": _app, **tags})


_gauge_values: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
_refresher: threading.Thread | None = None
GAUGE_REFRESH_S = 2.0


def _set(name: str, description: str, value: float, **tags: str) -> None:
    if _enabled:
        _gauge(name, description, tuple(tags)).set(value, tags={"app": _app, **tags})
        _gauge_values[name, description, tuple(tags.items())] = value
        _start_refresher()


def _start_refresher() -> None:
    # Ray's agent drops a gauge series that is not re-reported within two report intervals
    # (measured: a gauge set once vanished from the scrape), so the last values are re-set.
    global _refresher
    if _refresher is None:
        _refresher = threading.Thread(target=_refresh_gauges, name="huabu-gauges", daemon=True)
        _refresher.start()


def _refresh_gauges() -> None:
    while True:
        time.sleep(GAUGE_REFRESH_S)
        for (name, description, tags), value in list(_gauge_values.items()):
            _gauge(name, description, tuple(k for k, _ in tags)).set(value, tags={"app": _app, **dict(tags)})


# --- the instruments, one function each ---------------------------------------------------------


def http_request(route: str, method: str, status: int, seconds: float) -> None:
    _inc("huabu_requests", "HTTP requests answered by the gateway", route=route, method=method, status=str(status))
    _observe("huabu_request_latency_s", "HTTP request latency at the gateway (s)", seconds, route=route)


def stage_latency(stage: str, seconds: float) -> None:
    _observe("huabu_stage_latency_s", "time spent in one stage of the request path (s)", seconds, stage=stage)


class ModelQueue:
    """Requests in one model replica, waiting for or inside a batch (a gauge per replica)."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.depth = 0

    def _report(self, change: int) -> None:
        self.depth = max(0, self.depth + change)
        description = "requests in a model replica, waiting for or inside a batch"
        _set("huabu_model_queue_depth", description, self.depth, variant=self.variant)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        self._report(1)
        try:
            yield
        finally:
            self._report(-1)

    def batch_started(self, size: int) -> None:
        _observe("huabu_model_batch_size", "requests per model batch", size, BATCH_BUCKETS, variant=self.variant)


def model_result(variant: str, queue_wait_s: float, generation_s: float, steps: int) -> None:
    _observe("huabu_model_queue_wait_s", "time a request waited for its batch (s)", queue_wait_s, variant=variant)
    _observe("huabu_model_generation_s", "batch generation time seen by a request (s)", generation_s, variant=variant)
    _inc("huabu_model_steps", "denoising steps run", float(steps), variant=variant)


def variant_request(variant: str, outcome: str, seconds: float) -> None:
    _inc("huabu_variant_requests", "requests routed to each model variant", variant=variant, outcome=outcome)
    _observe(
        "huabu_variant_latency_s", "latency from the router to the result, per variant (s)", seconds, variant=variant
    )


def cache_outcome(name: str, amount: float = 1) -> None:
    """Hits are counted where they are answered (the gateway), the rest by the cache stage; the
    hit ratio is these counters summed over replicas (docs/OBSERVABILITY.md)."""
    if name == "saved_s":
        _inc("huabu_cache_saved_seconds", "generation seconds saved by cache hits", amount)
    else:
        _inc("huabu_cache_requests", "cache outcomes (hits, misses, coalesced, bypassed, refreshed)", result=name)


def filter_decision(side: str, blocked: bool, category: str | None, check: str) -> None:
    decision = "blocked" if blocked else "allowed"
    _inc("huabu_filter_decisions", "safety filter decisions", filter=side, decision=decision)
    if blocked:
        description = "safety filter blocks by category"
        _inc("huabu_filter_blocks", description, filter=side, category=category or "unsafe", check=check)


def job_finished(status: str) -> None:
    _inc("huabu_jobs", "jobs that reached a terminal state", status=status)


def kafka_message(outcome: str, topic: str) -> None:
    """A Kafka request turned into a job (in), a result produced (out) or a message dead-lettered."""
    _inc("huabu_kafka_messages", "Kafka messages by outcome: in, out, dead_lettered", outcome=outcome, topic=topic)


def kafka_lag(topic: str, partition: int, lag: int) -> None:
    _set(
        "huabu_kafka_consumer_lag",
        "Kafka consumer lag (messages) per partition",
        lag,
        topic=topic,
        partition=str(partition),
    )


def kafka_paused(paused: bool) -> None:
    _set("huabu_kafka_paused", "1 while the Kafka ingress holds its partitions paused (backpressure)", float(paused))


def step_result(
    variant: str, first_step_s: float, iterations: int, full_evaluations: int | None, branches: int
) -> None:
    """One request served by the step scheduler (deployments/step_scheduler.py)."""
    _observe(
        "huabu_model_first_step_s",
        "time from arrival to a request's first denoising step (s)",
        first_step_s,
        variant=variant,
    )
    _inc(
        "huabu_model_iterations", "step-scheduler iterations a request took part in", float(iterations), variant=variant
    )
    if full_evaluations is not None:
        skipped = iterations * branches - full_evaluations
        _inc(
            "huabu_model_steps_skipped",
            "transformer branch evaluations step caching skipped",
            float(skipped),
            variant=variant,
        )


def step_iteration(variant: str, running: int) -> None:
    _observe(
        "huabu_model_running_batch", "requests in one step-scheduler iteration", running, BATCH_BUCKETS, variant=variant
    )

"""Thread-safe decision counters that a deployment exports as metrics (per rule, category and stage)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import TypedDict

from huabu.filters.decision import Decision

__all__ = ["CounterSnapshot", "FilterCounters"]


class CounterSnapshot(TypedDict):
    checked: int
    allowed: int
    blocked: int
    skipped: int
    blocked_by_category: dict[str, int]
    blocked_by_rule: dict[str, int]
    blocked_by_stage: dict[str, int]
    unavailable: int  # requests refused because the filter could not screen them (failing closed)
    unavailable_by_reason: dict[str, int]  # "load", "error", "timeout"


class FilterCounters:
    """Counts decisions. ``record`` is called by the filters; ``snapshot`` by the metrics exporter.

    A lock rather than per-key atomics: a deployment replica records a few thousand decisions a second
    at most, and a snapshot must be consistent across keys (blocked == sum of blocked_by_category).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: Counter[str] = Counter()
        self._by_category: Counter[str] = Counter()
        self._by_rule: Counter[str] = Counter()
        self._by_stage: Counter[str] = Counter()
        self._unavailable: Counter[str] = Counter()

    def record(self, decision: Decision) -> None:
        self.record_many((decision,))

    def record_many(self, decisions: Iterable[Decision]) -> None:
        with self._lock:
            for d in decisions:
                self._totals["checked"] += 1
                if d.stage.value == "skipped":
                    self._totals["skipped"] += 1
                if d.allowed:
                    self._totals["allowed"] += 1
                    continue
                self._totals["blocked"] += 1
                self._by_category[d.category.value if d.category else "unknown"] += 1
                self._by_rule[d.rule_id or "unknown"] += 1
                self._by_stage[d.stage.value] += 1

    def record_unavailable(self, reason: str) -> None:
        """A request the filter could not screen and so refused (its model did not load, errored or timed out)."""
        with self._lock:
            self._unavailable[reason] += 1

    def snapshot(self) -> CounterSnapshot:
        """A consistent copy of every counter (plain dicts, safe to serialise)."""
        with self._lock:
            return CounterSnapshot(
                checked=self._totals["checked"],
                allowed=self._totals["allowed"],
                blocked=self._totals["blocked"],
                skipped=self._totals["skipped"],
                blocked_by_category=dict(self._by_category),
                blocked_by_rule=dict(self._by_rule),
                blocked_by_stage=dict(self._by_stage),
                unavailable=sum(self._unavailable.values()),
                unavailable_by_reason=dict(self._unavailable),
            )

    def reset(self) -> None:
        with self._lock:
            for c in (self._totals, self._by_category, self._by_rule, self._by_stage, self._unavailable):
                c.clear()

"""Failing closed: a filter that cannot screen refuses the request; it never lets it through.

:class:`GuardedFilter` builds a filter (loading its model files), and runs each check under a time
limit. When the build fails (a corrupt exemplar file, a truncated classifier, an ONNX model that does
not load) or a check raises or overruns (an onnxruntime failure, an embedding timeout), the caller gets
:class:`FilterUnavailable` — the deployment answers 503 with Retry-After — and the event is logged with
its cause and counted (``FilterCounters.unavailable_by_reason``: load, error, timeout). A failed build
is retried, at most once per ``retry_after_s``, by the next request after that, so a fixed file is
picked up without a restart. Plain asyncio, no Ray.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from huabu.filters.counters import FilterCounters

__all__ = ["FilterUnavailable", "GuardedFilter", "Screen"]

logger = logging.getLogger("huabu.safety")


class Screen(Protocol):
    counters: FilterCounters

    def warmup(self) -> None: ...


ScreenT = TypeVar("ScreenT", bound=Screen)
T = TypeVar("T")


class FilterUnavailable(RuntimeError):
    """A filter could not screen a request (``reason``: load, error or timeout); retry later."""

    def __init__(self, stage: str, reason: str, retry_after_s: int) -> None:
        super().__init__(
            f"the {stage.replace('_', ' ')} cannot screen requests right now ({reason}); retry after {retry_after_s} s"
        )
        self.stage = stage
        self.reason = reason
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across Ray with all fields
        return (FilterUnavailable, (self.stage, self.reason, self.retry_after_s))


class GuardedFilter(Generic[ScreenT]):
    """A filter that is built, warmed up and run so that every failure refuses the request."""

    def __init__(
        self,
        stage: str,
        build: Callable[[FilterCounters], ScreenT],
        *,
        timeout_s: float,
        retry_after_s: int,
        counters: FilterCounters | None = None,
    ) -> None:
        self.stage = stage
        self.counters = counters if counters is not None else FilterCounters()
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._build = build
        self._filter: ScreenT | None = None
        self._next_load = 0.0
        self._loading = threading.Lock()

    @property
    def filter(self) -> ScreenT | None:
        return self._filter

    @property
    def available(self) -> bool:
        return self._filter is not None

    def load(self) -> bool:
        """Build and warm up the filter; on failure log the cause (it names the file and the layer) and
        leave the filter unavailable until the next attempt, ``retry_after_s`` later."""
        if not self._loading.acquire(blocking=False):
            return self.available  # another caller is building it
        try:
            if self._filter is not None:
                return True
            try:
                screen = self._build(self.counters)
                screen.warmup()
            except Exception as exc:
                self._next_load = time.monotonic() + self.retry_after_s
                logger.error(
                    "%s unavailable: its model did not load (%s: %s); refusing requests with 503, retrying in %d s",
                    self.stage,
                    type(exc).__name__,
                    exc,
                    self.retry_after_s,
                )
                return False
            self._filter = screen
            logger.info("%s loaded", self.stage)
            return True
        finally:
            self._loading.release()

    async def run(self, check: Callable[[ScreenT], T]) -> T:
        """``check(filter)`` in a worker thread, within ``timeout_s``; raises :class:`FilterUnavailable`
        when there is no filter, or the check raises or overruns (its thread is left to finish: its
        result is dropped, never used)."""
        screen = self._filter
        if screen is None and time.monotonic() >= self._next_load:
            await asyncio.to_thread(self.load)
            screen = self._filter
        if screen is None:
            raise self._unavailable("load", "the filter's model is not loaded")
        try:
            return await asyncio.wait_for(asyncio.to_thread(check, screen), self.timeout_s)
        except TimeoutError:
            raise self._unavailable("timeout", f"no decision within {self.timeout_s} s") from None
        except Exception as exc:
            raise self._unavailable("error", f"{type(exc).__name__}: {exc}") from None

    def _unavailable(self, reason: str, detail: str) -> FilterUnavailable:
        self.counters.record_unavailable(reason)
        logger.error("%s failed closed (%s): %s; answered 503", self.stage, reason, detail)
        return FilterUnavailable(self.stage, reason, self.retry_after_s)

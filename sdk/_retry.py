"""Retry decisions and backoff: pure functions, shared by the sync and async clients."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping

from huabu.sdk import constants

NEVER_RETRY_STATUS = frozenset({400, 422})  # validation errors: the same request fails the same way


def parse_retry_after(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, then ``Retry-After`` (seconds or HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - now(), 0.0)


def should_retry_status(status: int, headers: Mapping[str, str]) -> bool:
    if status in NEVER_RETRY_STATUS:
        return False
    # The server may overrule the default (openai-python honours the same header).
    override = {k.lower(): v for k, v in headers.items()}.get("x-should-retry")
    if override == "true":
        return True
    if override == "false":
        return False
    return status in constants.RETRYABLE_STATUS


def backoff_delay(
    attempt: int,
    *,
    initial: float = constants.INITIAL_RETRY_DELAY,
    maximum: float = constants.MAX_RETRY_DELAY,
    jitter: float = constants.JITTER,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff for retry number ``attempt`` (0-based), capped, minus up to ``jitter`` of it.

    Jitter spreads clients that failed together (a replica restart) so they do not retry in lockstep.
    """
    base = min(initial * (2.0**attempt), maximum)
    return base * (1.0 - jitter * rand())


def retry_delay(
    attempt: int,
    headers: Mapping[str, str] | None,
    *,
    rand: Callable[[], float] = random.random,
    max_retry_after: float = constants.MAX_RETRY_AFTER,
) -> float:
    """The wait before the next attempt: the server's Retry-After when sane, else our backoff."""
    if headers is not None:
        asked = parse_retry_after(headers)
        if asked is not None and 0 <= asked <= max_retry_after:
            return asked
    return backoff_delay(attempt, rand=rand)

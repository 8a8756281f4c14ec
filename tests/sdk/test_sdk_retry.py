"""Retry decisions and backoff (pure functions)."""

from __future__ import annotations

import email.utils

import pytest

from huabu.sdk import constants
from huabu.sdk._retry import backoff_delay, parse_retry_after, retry_delay, should_retry_status


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25  # ms is more precise
    assert parse_retry_after({"Retry-After": "-4"}) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    date = email.utils.formatdate(1_000_010, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=lambda: 1_000_000.0) == pytest.approx(10.0)
    assert parse_retry_after({"Retry-After": email.utils.formatdate(5, usegmt=True)}, now=lambda: 10.0) == 0.0


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    assert should_retry_status(status, {})


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 501])
def test_not_retryable_statuses(status: int) -> None:
    assert not should_retry_status(status, {})


def test_server_override_but_never_for_validation_errors() -> None:
    assert not should_retry_status(503, {"x-should-retry": "false"})
    assert should_retry_status(404, {"x-should-retry": "true"})
    assert not should_retry_status(400, {"x-should-retry": "true"})
    assert not should_retry_status(422, {"x-should-retry": "true"})


def test_backoff_grows_exponentially_capped_with_jitter() -> None:
    no_jitter = [backoff_delay(a, rand=lambda: 0.0) for a in range(8)]
    assert no_jitter[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(no_jitter) == constants.MAX_RETRY_DELAY
    full = backoff_delay(2, rand=lambda: 1.0)
    assert full == pytest.approx(2.0 * (1 - constants.JITTER))
    samples = {backoff_delay(1) for _ in range(50)}
    assert len(samples) > 1 and all(0.75 <= s <= 1.0 for s in samples)


def test_retry_delay_prefers_a_sane_retry_after() -> None:
    assert retry_delay(0, {"Retry-After": "7"}) == 7.0
    assert retry_delay(0, {"retry-after-ms": "20"}) == 0.02
    too_long = retry_delay(0, {"Retry-After": "3600"}, rand=lambda: 0.0)
    assert too_long == constants.INITIAL_RETRY_DELAY
    assert retry_delay(3, None, rand=lambda: 0.0) == 4.0

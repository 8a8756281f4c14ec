"""SDK defaults in one place (why: one table to read and to change; openai-python does the same)."""

from __future__ import annotations

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
BASE_URL_ENV = "HUABU_BASE_URL"
API_KEY_ENV = "HUABU_API_KEY"

# Timeouts, in seconds. Generation is slow on CPUs and cold replicas (scale-from-zero), so the read
# timeout is generous, but every call still has a finite total deadline across all its retries.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 120.0
DEFAULT_WRITE_TIMEOUT = 60.0
DEFAULT_POOL_TIMEOUT = 10.0
DEFAULT_DEADLINE = 300.0  # total per call, retries and backoff included

# Retries: exponential backoff with full jitter, capped; the server's Retry-After wins when sane.
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
JITTER = 0.25  # fraction of the computed delay removed at random (0.75x .. 1x)
MAX_RETRY_AFTER = 60.0  # a longer Retry-After than this is not waited for; fall back to backoff
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

DEFAULT_WAIT_TIMEOUT = 600.0  # how long JobHandle.wait waits for a job

IDEMPOTENCY_HEADER = "Idempotency-Key"
JOB_ID_HEADER = "X-Huabu-Job-Id"  # the job behind an images call answered with Prefer: wait
REQUEST_ID_HEADER = "x-request-id"
RETRY_COUNT_HEADER = "x-huabu-retry-count"

"""Webhook signatures as the Standard Webhooks specification defines them, for receivers and the server.

A delivery carries three headers: ``webhook-id`` (the same on every retry of one message, so a
receiver can de-duplicate), ``webhook-timestamp`` (unix seconds of this attempt) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` over ``"{id}.{timestamp}.{body}"``, keyed with
the base64-decoded part of the secret after ``whsec_``; several space-separated signatures while a
secret is being rotated.

>>> from huabu.sdk import webhooks
>>> event = webhooks.verify(request_body, request_headers, secret)  # doctest: +SKIP

The gateway signs with ``sign`` from this module, so the two sides share one definition.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from huabu.sdk._errors import HuabuError

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "new_secret",
    "sign",
    "signed_headers",
    "verify",
]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300  # the specification's suggested window against replays
ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "webhook-id", "webhook-timestamp", "webhook-signature"


class WebhookVerificationError(HuabuError):
    """The delivery is not signed by the secret, is malformed, or its timestamp is outside the tolerance."""


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret must be 'whsec_' followed by base64") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``msg_id.timestamp.body``."""
    payload = body.encode() if isinstance(body, str) else body
    digest = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + payload, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secrets_: list[str], msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three headers of one delivery attempt, signed with every secret given (rotation)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: " ".join(sign(s, msg_id, ts, body) for s in secrets_),
    }


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a delivery and return its parsed JSON payload; raise ``WebhookVerificationError`` otherwise.

    ``body`` must be the raw request body (re-serialised JSON would not match). Comparison is constant
    time; a timestamp further than ``tolerance_s`` from now (either way) is refused."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lowered.get(h) for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookVerificationError(f"webhook-timestamp is more than {tolerance_s:g} s from now")
    expected = sign(secret, msg_id, timestamp, body).encode()
    # Check every offered v1 signature (rotation sends several) without stopping at the first match.
    matched = False
    for offered in signatures.split():
        if offered.startswith("v1,"):
            matched |= hmac.compare_digest(offered.encode(), expected)
    if not matched:
        raise WebhookVerificationError("no matching v1 signature")
    try:
        parsed: dict[str, Any] = json.loads(body)
    except ValueError:
        raise WebhookVerificationError("the payload is not JSON") from None
    return parsed

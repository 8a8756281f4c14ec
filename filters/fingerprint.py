"""A stable, non-reversible handle on a prompt, so logs and traces never carry its text."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["prompt_fingerprint"]


def prompt_fingerprint(text: str | bytes, *, length: int = 16, key: bytes | None = None) -> str:
    """Hex prefix of SHA-256 of ``text`` (UTF-8). With ``key``, an HMAC-SHA-256 instead.

    Short prompts can be guessed from a plain hash by trying candidates; a deployment that worries about
    that passes a secret ``key``. ``length`` hex digits (16 = 64 bits) is plenty to correlate log lines.
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    digest = hmac.new(key, data, hashlib.sha256).hexdigest() if key is not None else hashlib.sha256(data).hexdigest()
    return digest[:length]

"""JSON-lines logs for the ``huabu.*`` loggers, each line carrying the request id and, when the
request is traced, its trace and span ids, so a log line leads to its trace and back.

The request id comes from a context variable that the gateway and every stage set from the
request they handle (jobs use the job id), falling back to Ray Serve's request context.

Every line is redacted as it is formatted (message with its args, extra fields, traceback):
these loggers do not propagate to the handlers that carry the gateway's redaction filter, and a
filter never sees the traceback text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import IO, Any

from opentelemetry import trace

request_id_var: ContextVar[str] = ContextVar("huabu_request_id", default="")

REDACTED = "[REDACTED]"
# What a secret looks like in text. Each pattern's first group is kept and the rest masked:
_SECRET_PATTERNS = re.compile(
    "|".join(
        [
            r"(hb_[0-9a-z]{3,12}_)[A-Za-z0-9_\-]{16,}",  # API keys hb_<id>_<secret>, hb_dev_<secret>
            r"((?i:bearer|basic)\s+)[^\s\"',;]+",  # Authorization header values
            # a URL's password (redis://:pw@host, https://user:pw@host): up to the last @ of the URL
            r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/?#@'\"]*:)[^\s'\"<>]+(?=@)",
            # name=value and "name": "value" where the name says secret (reprs, JSON, environments)
            r"((?i:[a-z0-9_\-]*(?:secret|password|passwd|token|api_key|apikey|access_key|private_key))[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"',;}&)]+",
        ]
    )
)
# Secrets known by value (the URL-signing secret): masked wherever they appear.
_known_secrets: set[str] = set()
MIN_KNOWN_SECRET_CHARS = 8  # shorter values would mask ordinary words


def add_secret(value: str) -> None:
    """Mask ``value`` in every log line this process writes from now on."""
    if len(value) >= MIN_KNOWN_SECRET_CHARS:
        _known_secrets.add(value)


def redact(text: str) -> str:
    """``text`` with API keys, bearer tokens, URL passwords, secret-named values and known secrets masked."""
    for secret in _known_secrets:
        text = text.replace(secret, REDACTED)
    return _SECRET_PATTERNS.sub(lambda m: next(g for g in m.groups() if g is not None) + REDACTED, text)


# LogRecord attributes that are not ``extra=`` fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def current_request_id() -> str:
    request_id = request_id_var.get()
    if request_id:
        return request_id
    try:
        from ray.serve.context import _get_serve_request_context

        return _get_serve_request_context().request_id or ""
    except Exception:  # outside a Serve replica
        return ""


class JsonLineFormatter(logging.Formatter):
    def __init__(self, static: dict[str, str] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **self.static,
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = f"{context.trace_id:032x}"
            line["span_id"] = f"{context.span_id:016x}"
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                if isinstance(value, int | float | bool) or value is None:
                    line[key] = value
                else:
                    line[key] = redact(value if isinstance(value, str) else repr(value))
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(
    static: dict[str, str], stream: IO[str] | None = None, level: int = logging.INFO
) -> logging.Handler:
    """Send ``huabu.*`` records to ``stream`` (stderr: Ray keeps it in the worker's log file) as
    JSON lines, replacing a handler installed earlier by this function."""
    logger = logging.getLogger("huabu")
    for old in [h for h in logger.handlers if isinstance(h.formatter, JsonLineFormatter)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter(static))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # one line per record, not a second plain-text copy from the root logger
    return handler

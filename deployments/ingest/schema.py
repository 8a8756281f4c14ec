"""The Kafka messages, version 1 (docs/KAFKA.md): a request in, a result out, a dead letter.

A request's ``job`` is a ``POST /v1/jobs`` body (``huabu.sdk.types``), validated by the same models;
the envelope around it carries the version, a correlation id (the result's key) and an optional
idempotency key (default: the message's topic, partition and offset)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from huabu.sdk.types import ErrorBody, Job
from huabu.sdk.validation import first_problem

SCHEMA_VERSION: Literal[1] = 1
MAX_CORRELATION_ID = 255
# Headers the ingress reads on a request and writes on what it produces.
TRACEPARENT_HEADER = "traceparent"
JOB_ID_HEADER = "huabu-job-id"
REASON_HEADER = "huabu-dead-letter-reason"


class KafkaRequest(BaseModel):
    """A generation request on the requests topic."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = SCHEMA_VERSION
    correlation_id: str | None = Field(default=None, min_length=1, max_length=MAX_CORRELATION_ID)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=MAX_CORRELATION_ID)
    job: dict[str, Any] = Field(description="a POST /v1/jobs body: kind (generate, edit, outpaint) and its fields")


class Source(BaseModel):
    """Where a message was read: what a result or a dead letter answers."""

    topic: str
    partition: int
    offset: int

    @property
    def idempotency_key(self) -> str:
        return f"kafka:{self.topic}:{self.partition}:{self.offset}"


class Rejected(Exception):
    """A message that can never become a job: it goes to the dead-letter topic with this reason."""

    def __init__(self, reason: ErrorBody) -> None:
        super().__init__(reason.message)
        self.reason = reason


def rejected(message: str, param: str | None, code: str = "invalid_message") -> Rejected:
    return Rejected(ErrorBody(message=message, type="invalid_request_error", param=param, code=code))


def parse_request(value: bytes | None, max_bytes: int) -> KafkaRequest:
    """The message's request, or ``Rejected`` naming what is wrong (worded as the HTTP API words it)."""
    if value is None:
        raise rejected("the message has no value; send a JSON request (docs/KAFKA.md)", "value")
    if len(value) > max_bytes:
        raise rejected(
            f"the message is {len(value)} bytes, larger than the limit of {max_bytes} bytes",
            "value",
            "request_too_large",
        )
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise rejected(f"the message is not JSON ({exc}); send a JSON request (docs/KAFKA.md)", "value") from None
    if not isinstance(data, dict):
        raise rejected("the message must be a JSON object with a 'job'", "value")
    try:
        request = KafkaRequest.model_validate(data)
    except ValidationError as exc:
        problem = first_problem(exc)
        raise rejected(problem.message, problem.param) from None
    # Results carry URLs: base64 images would make result messages larger than brokers accept.
    fmt = request.job.setdefault("response_format", "url")
    if fmt != "url":
        raise rejected(
            "Kafka results carry image URLs: leave response_format out or set it to 'url'", "job.response_format"
        )
    return request


def result_message(job: Job, request: dict[str, Any], source: Source) -> dict[str, Any]:
    """The outcome of a job, for the results topic. ``id`` is the job's id: a result delivered twice
    (at-least-once) carries the same id."""
    images = [
        image.model_dump(exclude_none=True, exclude={"b64_json"}) for image in (job.result.data if job.result else [])
    ]
    return {
        "version": SCHEMA_VERSION,
        "id": job.id,
        "job_id": job.id,
        "correlation_id": request.get("correlation_id"),
        "idempotency_key": request.get("idempotency_key"),
        "status": job.status.value,
        "images": images,
        "error": job.error.model_dump(exclude_none=True) if job.error else None,
        "model": job.model or (images[0].get("model") if images else None),
        "variant": job.variant,
        "timings": {
            "created_at": job.created_at,
            "finished_at": job.updated_at,
            "total_s": round(job.updated_at - job.created_at, 3),
        },
        "source": source.model_dump(),
    }


def dead_letter(reason: ErrorBody, source: Source, key: bytes | None, value: bytes | None) -> dict[str, Any]:
    """A message that could not be served, with why and the original bytes (text when it is UTF-8)."""
    letter: dict[str, Any] = {
        "version": SCHEMA_VERSION,
        "reason": reason.model_dump(exclude_none=True),
        "source": source.model_dump(),
        "dead_lettered_at": time.time(),
        "key": _text(key),
    }
    try:
        letter["value"] = value.decode() if value is not None else None
    except UnicodeDecodeError:
        letter["value_b64"] = base64.b64encode(value or b"").decode()
    return letter


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode(errors="replace")

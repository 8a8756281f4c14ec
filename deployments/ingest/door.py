"""The gateway's side of the Kafka door: ``IngestDoor.submit_ingested``, mixed into ``Gateway``.

The ingress (``kafka.py``) runs in its own replicas but creates every job here, in a gateway
replica, through what ``POST /v1/jobs`` and gRPC ``SubmitJob`` call (``Gateway.create_job``): the same
validation, the configured key's scope, idempotency scoping, rate limit, quota and concurrency slot
(``Access``), A/B unit, owner record and job store. Nothing is decided twice. The answer is a
``Submission`` (a job, or the error the HTTP API would have answered), never an exception, so that
the ingress tells a bad message (dead letter) from a busy system (pause and retry) by its status."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from huabu.deployments.core import telemetry
from huabu.deployments.core.settings import Settings
from huabu.deployments.gateway import auth
from huabu.deployments.gateway.access import Access
from huabu.deployments.gateway.errors import APIError, invalid
from huabu.deployments.gateway.experiments import CURRENT_UNIT, unit_from_headers
from huabu.sdk.types import ErrorBody, Job, job_request_adapter
from huabu.sdk.validation import first_problem

logger = logging.getLogger("huabu.ingest")
JOBS_PATH = "/v1/jobs"  # the route a Kafka request stands for: its scope and cost follow from it


@dataclass
class Delivery:
    """One message on its way to a job: its request id and trace context (a ``telemetry.hop`` carrier,
    whose traceparent each hop rewrites to its own span)."""

    request_id: str
    traceparent: str | None = None


@dataclass(frozen=True)
class Submission:
    """What became of a message: the job, or the error body and status the HTTP API would answer."""

    job: Job | None = None
    error: ErrorBody | None = None
    status: int = 202
    retry_after_s: float | None = None


def submission_error(exc: APIError) -> Submission:
    retry = exc.headers.get("Retry-After")
    return Submission(error=exc.body(), status=exc.status, retry_after_s=float(retry) if retry else None)


class IngestDoor:
    """``submit_ingested`` as a method of the Gateway deployment (mixed into ``routes.Gateway``)."""

    # Set by the Gateway (routes.py).
    settings: Settings
    access: Access
    unexpected_error: Any  # (exception, where) -> APIError: the gateway's answer to anything else

    async def create_job(self, req: Any, request_id: str, idempotency_key: str | None) -> Job:
        raise NotImplementedError  # the Gateway's: what POST /v1/jobs does

    async def submit_ingested(
        self, job_body: dict[str, Any], idempotency_key: str, key_id: str | None, delivery: Delivery
    ) -> Submission:
        """Create the job of one message, as ``key_id``'s ``POST /v1/jobs`` with ``Idempotency-Key``."""
        carrier = Delivery(delivery.request_id, delivery.traceparent)
        with telemetry.hop("kafka.submit", carrier, idempotency_key=idempotency_key):
            try:
                return Submission(job=await self._submit(job_body, idempotency_key, key_id, carrier.request_id))
            except APIError as exc:
                return submission_error(exc)
            except ValidationError as exc:
                problem = first_problem(exc)
                return submission_error(invalid(problem.message, problem.param))
            except Exception as exc:  # replica lost, store outage, a bug: as HTTP answers it (5xx)
                return submission_error(self.unexpected_error(exc, "kafka submit"))

    async def _submit(self, job_body: dict[str, Any], idempotency_key: str, key_id: str | None, request_id: str) -> Job:
        access = self.access
        principal = await access.authenticator.principal_of(key_id)
        if not principal.has(auth.GENERATE):
            raise auth.forbidden(auth.GENERATE)
        body = json.dumps(job_body, sort_keys=True, separators=(",", ":")).encode()
        limit = self.settings.gateway.max_request_bytes
        if len(body) > limit:
            raise APIError(
                f"the job is {len(body)} bytes, larger than the limit of {limit} bytes",
                param="job",
                code="request_too_large",
                status=413,
            )
        req = job_request_adapter.validate_python(job_body)
        fingerprint = None
        if self.settings.auth.enabled:  # keys are scoped to the API key and bound to the body, as on HTTP
            idempotency_key, fingerprint = await access.check_idempotency(principal, idempotency_key, body)
        admission = await access.admit(principal)  # a rate-limit token and a concurrency slot
        principal_token = auth.current_principal.set(principal)
        # The A/B unit of a request without headers: the key (sticky per key), or the body's `user`.
        unit_token = CURRENT_UNIT.set(unit_from_headers({}, self.settings))
        try:
            job = await self.create_job(req, request_id, idempotency_key)
            if fingerprint is not None:
                await access.remember_idempotency(fingerprint, body)
            return job
        finally:
            CURRENT_UNIT.reset(unit_token)
            auth.current_principal.reset(principal_token)
            if admission.release is not None:
                try:
                    await admission.release()
                except Exception:  # the slot expires on its own (access.REQUEST_SLOT_TTL_S)
                    logger.warning("could not release a concurrency slot", exc_info=True)

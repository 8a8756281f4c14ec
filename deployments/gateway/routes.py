"""The Gateway: FastAPI ingress with the OpenAI-compatible images API, jobs with SSE and
WebSocket progress, signed file downloads and health endpoints. It also runs this replica's
job runner.

A request meets, in this order: the middleware listed in ``MIDDLEWARE`` (outermost first), then
a route. Image routes go through ``GenerationService.run``: a cache hit is answered there from the
result cache, a miss goes down the stages that ``deployments/app.py`` wires."""

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile

from huabu.deployments.core import telemetry
from huabu.deployments.core.handles import ReplicaLost, connect
from huabu.deployments.core.messages import ModelRequest
from huabu.deployments.core.settings import Settings
from huabu.deployments.core.state import is_outage, open_store
from huabu.deployments.core.storage import StorageUnavailable, open_storage, valid_key
from huabu.deployments.gateway import auth, openapi_doc, usage, webhooks
from huabu.deployments.gateway.access import Access, AccessMiddleware, store_unavailable
from huabu.deployments.gateway.errors import APIError, invalid, not_found
from huabu.deployments.gateway.experiments import Experiments, UnitMiddleware
from huabu.deployments.gateway.generation import GenerationService
from huabu.deployments.gateway.grpc_service import ImagesGrpc, JobBody
from huabu.deployments.gateway.job_queue import QueueTracker
from huabu.deployments.gateway.jobs import IdempotencyConflict, JobRunner, JobStore, prefer_wait
from huabu.deployments.gateway.playground import mount_playground
from huabu.deployments.gateway.rollouts import RolloutService
from huabu.deployments.gateway.rollouts import router as rollouts_router
from huabu.deployments.gateway.security import (
    RequestLimits,
    SecurityHeaders,
    json_body,
    last_event_id,
    path_id_problem,
)
from huabu.deployments.ingest.door import IngestDoor
from huabu.sdk.constants import JOB_ID_HEADER
from huabu.sdk.types import (
    MAX_JOB_TIMEOUT_S,
    EditJobRequest,
    GenerateJobRequest,
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    Job,
    JobEvent,
    JobStatus,
    ModelList,
    OutpaintJobRequest,
    OutpaintRequest,
    WebhookDeliveryList,
    encode_b64_image,
    job_request_adapter,
)
from huabu.sdk.validation import first_problem

logger = logging.getLogger("huabu.gateway")
SSE_KEEPALIVE_S = 15.0
api = FastAPI(title="huabu", version="0.1.0", description="Serverless image generation for MMDiT models")

# What every request passes through, outermost first.
MIDDLEWARE = (
    telemetry.HttpTelemetry,  # request id, server span and request metrics around every other layer
    SecurityHeaders,  # security headers and CORS
    RequestLimits,  # body size while reading, content types
    AccessMiddleware,  # API key, scope, job ownership, rate limit, daily quota, concurrency slots
    UnitMiddleware,  # the A/B unit (user, key, override header) of each request
)
for middleware in reversed(MIDDLEWARE):  # Starlette runs the last-added middleware first
    api.add_middleware(middleware)

# Routes besides the Gateway's own (images, models, files, jobs, admin statistics, health: below).
mount_playground(api)  # the web playground at GET / (static files, no build step)
api.include_router(rollouts_router)  # POST /v1/feedback and /v1/admin/rollouts (canary / A/B)
api.include_router(auth.router)  # /v1/admin/keys
api.include_router(webhooks.router)  # /v1/admin/keys/{key_id}/webhook-secrets
api.include_router(usage.router)  # GET /v1/usage
openapi_doc.install(api)  # the OpenAPI document as the API behaves


def cancel_after_s(header: str | None) -> float | None:
    """The ``Cancel-After`` header: seconds after which the job is canceled (as ``timeout_s``)."""
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or seconds > MAX_JOB_TIMEOUT_S:  # also refuses NaN
        raise invalid(
            f"Cancel-After must be seconds > 0 and at most {MAX_JOB_TIMEOUT_S} (got {header[:20]!r})", "Cancel-After"
        )
    return seconds


def validation_error(exc: ValidationError | RequestValidationError) -> APIError:
    """Any validation failure, worded as the API words it (the same text the SDK gives locally)."""
    problem = first_problem(exc)
    return invalid(problem.message, problem.param)


# --- cross-cutting: request ids and the OpenAI error body --------------------------------------


def _error(exc: APIError) -> JSONResponse:
    return JSONResponse(exc.response_body(), status_code=exc.status, headers=exc.headers)


@api.exception_handler(APIError)
async def api_error_handler(request: Request, exc: APIError) -> JSONResponse:
    return _error(exc)


@api.exception_handler(ValidationError)
async def pydantic_error_handler(request: Request, exc: ValidationError) -> JSONResponse:
    return _error(validation_error(exc))


@api.exception_handler(RequestValidationError)
async def request_validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error(validation_error(exc))


@api.exception_handler(404)
async def not_found_handler(request: Request, exc: Exception) -> JSONResponse:
    return _error(not_found(f"no route {request.method} {request.url.path}"))


@api.exception_handler(405)
async def method_handler(request: Request, exc: Exception) -> JSONResponse:
    return _error(APIError(f"{request.method} is not allowed on {request.url.path}", status=405))


def unexpected_error(exc: Exception, where: str) -> APIError:
    """The answer to an exception that is not an APIError (HTTP routes and gRPC methods alike)."""
    if isinstance(exc, ReplicaLost):  # a stage's replica died mid-request; its replacement answers a retry
        logger.warning("replica lost on %s: %s", where, exc)
        retry = {"Retry-After": "1"}
        return APIError(f"{exc}; retry", "service_unavailable", code="replica_lost", status=503, headers=retry)
    if is_outage(exc):  # the state store is down or slow: a retry will do, nothing is broken here
        logger.warning("state store unavailable on %s: %r", where, exc)
        return store_unavailable()
    logger.exception("unexpected error on %s", where)
    return APIError("internal error; the request id identifies it in the logs", "server_error", status=500)


@api.exception_handler(Exception)
async def unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    return _error(unexpected_error(exc, request.url.path))


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
@serve.ingress(api)
class Gateway(ImagesGrpc, IngestDoor):  # + the gRPC methods (grpc_service.py), the Kafka door (ingest/door.py)
    unexpected_error = staticmethod(unexpected_error)

    async def __init__(  # type: ignore[misc]
        self,
        entry: DeploymentHandle,
        router: DeploymentHandle,
        stages: dict[str, DeploymentHandle],
        settings: Settings,
    ) -> None:
        telemetry.configure(settings, "gateway")
        self.settings = settings
        self.storage = open_storage(settings.storage)
        # optional stages by name, for their admin statistics
        self.stages = {name: connect(handle, settings) for name, handle in stages.items()}
        self.service = GenerationService(connect(entry, settings), connect(router, settings), self.storage, settings)
        self.jobs = JobStore(open_store(settings.state), settings.jobs)
        self.runner = JobRunner(self.jobs, self.service.run_job, settings.jobs, owner=f"gateway-{uuid.uuid4().hex}")
        self.access = api.state.access = Access(settings, self.jobs.kv, self.jobs)
        self.service.on_results = self.access.record_usage
        # Webhook messages are written as jobs end (and progress), and sent beside the runner.
        self.outbox = webhooks.WebhookOutbox(self.jobs.kv, settings.webhooks, settings.jobs.result_ttl_s)
        self.jobs.on_terminal = self.outbox.notify
        self.runner.on_progress = self._progress_webhook
        self.dispatcher = webhooks.WebhookDispatcher(
            self.outbox, webhooks.WebhookSecrets(self.jobs.kv), owner=self.runner.owner
        )
        self.queue = QueueTracker(self.jobs, self.runner.owner, settings.jobs.queue_update_s)
        # Started with the replica, so a replacement replica resumes jobs and deliveries without a request.
        self.runner.start()
        self.dispatcher.start()
        self.queue.start()
        if settings.ab.enabled:  # live A/B weights, per-variant metrics and the rollout controller
            self.experiments = Experiments(self.jobs.kv, settings, replica_id=self.runner.owner)
            self.experiments.start()
            await self.experiments.refresh()
            self.service.experiments = api.state.experiments = self.experiments
            api.state.rollouts = RolloutService(self.experiments, owner=self.runner.owner)
            api.state.rollouts.start()

    def check_health(self) -> None:
        if self.runner._loop_task is not None and self.runner._loop_task.done():
            raise RuntimeError("job runner stopped")

    # --- plumbing ----------------------------------------------------------------------------

    @staticmethod
    def _json(request: Request) -> object:
        # Parsed (strictly, once) and its content type checked by RequestLimits.
        return json_body(request.scope)

    # --- images ------------------------------------------------------------------------------

    @api.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True)
    async def generations(self, request: Request) -> Response | ImagesResponse:
        req = ImageGenerationRequest.model_validate(self._json(request))
        return await self._images(
            request,
            lambda: self.service.generation_requests(req, request.state.request_id),
            lambda: GenerateJobRequest.model_validate({**req.model_dump(exclude_unset=True), "kind": "generate"}),
            req.response_format,
        )

    @api.post("/v1/images/edits", response_model=ImagesResponse, response_model_exclude_none=True)
    async def edits(self, request: Request) -> Response | ImagesResponse:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise APIError(
                "send edits as multipart/form-data with an image file (and optional mask)",
                status=415,
                code="unsupported_media_type",
            )
        try:
            form = await request.form(max_files=4, max_fields=32)
        except Exception:
            raise invalid("malformed multipart body") from None
        images = [v for k in ("image", "image[]") for v in form.getlist(k) if isinstance(v, UploadFile)]
        if not images:
            raise invalid("upload the image to edit as the multipart file 'image'", "image")
        mask_file = form.get("mask")
        fields = {k: v for k, v in form.items() if isinstance(v, str) and k not in ("image", "image[]", "mask")}
        req = ImageEditRequest.model_validate(fields)
        image = await images[0].read()
        mask = await mask_file.read() if isinstance(mask_file, UploadFile) else None

        def job() -> EditJobRequest:  # the multipart files as the JSON job's base64 fields
            b64 = {"image": encode_b64_image(image), "mask": None if mask is None else encode_b64_image(mask)}
            return EditJobRequest.model_validate({**req.model_dump(exclude_unset=True), "kind": "edit", **b64})

        return await self._images(
            request,
            lambda: self.service.edit_requests(req, image, mask, request.state.request_id),
            job,
            req.response_format,
        )

    @api.post("/v1/images/outpaint", response_model=ImagesResponse, response_model_exclude_none=True)
    async def outpaint(self, request: Request) -> Response | ImagesResponse:
        req = OutpaintRequest.model_validate(self._json(request))
        return await self._images(
            request,
            lambda: self.service.outpaint_requests(req, request.state.request_id),
            lambda: OutpaintJobRequest.model_validate({**req.model_dump(exclude_unset=True), "kind": "outpaint"}),
            req.response_format,
        )

    async def _images(
        self,
        request: Request,
        requests: Callable[[], Awaitable[list[ModelRequest]]],
        job: Callable[[], JobBody],
        response_format: str,
    ) -> Response | ImagesResponse:
        """An images route's answer. Plain: synchronous. With ``Prefer: wait=N`` or a webhook header
        (``X-Huabu-Webhook``): a durable job run here in this request's trace (``images_or_job``),
        200 with the images when done within N s (a webhook alone: until it ends), else 202 with
        the job (``Location``) while it goes on."""
        wait_s = prefer_wait(request.headers.get("prefer"))
        webhook = webhooks.webhook_from_headers(request.headers)
        if wait_s is None and webhook is None:
            return await self.run_charged(await requests(), response_format)
        body = job() if webhook is None else job().model_copy(update={"webhook": webhook})
        job_id, result = await self.images_or_job(
            body,
            request.state.request_id,
            request.headers.get("idempotency-key"),
            wait_s,
            webhook_params=webhooks.HEADER_PARAMS,
        )
        headers = {JOB_ID_HEADER: job_id}
        if wait_s is not None:
            headers["Preference-Applied"] = f"wait={wait_s}"
        if isinstance(result, ImagesResponse):
            return JSONResponse(result.model_dump(mode="json", exclude_none=True), headers=headers)
        headers["Location"] = f"/v1/jobs/{job_id}"
        return JSONResponse(result.model_dump(mode="json", exclude_none=True), status_code=202, headers=headers)

    async def images_or_job(
        self,
        req: JobBody,
        request_id: str,
        idempotency_key: str | None,
        wait_s: int | None,
        *,
        webhook_params: Mapping[str, str] = webhooks.BODY_PARAMS,
    ) -> tuple[str, ImagesResponse | Job]:
        """Wait-or-queue: a durable job, created leased to this gateway's runner and attempted here at
        once in the caller's context (one trace, as a synchronous call). -> (job id, its images)
        when it succeeded within ``wait_s`` (None: until it ends), its failure raised as the
        synchronous call would, else (job id, the job) while it goes on under its lease (a runner
        elsewhere takes it over if this replica dies). A repeated Idempotency-Key waits for the
        first call's job."""
        job, created = await self._create_job(
            req, request_id, idempotency_key, lease=True, webhook_params=webhook_params
        )
        deadline = None if wait_s is None else time.monotonic() + wait_s
        if created:
            attempt = self.runner.run_inline(job.id)
            await asyncio.wait({attempt}, timeout=wait_s)  # never cancels the attempt
            job = await self._job(job.id)
        if not job.status.is_terminal:  # a repeated call, or an attempt given back for a retry
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            job = await self._wait_for(job, remaining)
        if job.status == JobStatus.succeeded and job.result is not None:
            return job.id, job.result
        if job.status == JobStatus.failed and job.error is not None:
            error = job.error
            raise APIError(error.message, error.type, error.param, error.code)
        return job.id, job

    async def run_charged(self, requests: list[ModelRequest], response_format: str) -> ImagesResponse:
        """A synchronous generation from any door: its cost taken and images reserved (``access.charged``,
        given back if it fails), then the work."""
        async with self.access.charged(requests):
            response, _ = await self.service.run(requests, response_format)
        return response

    @api.get("/v1/models", response_model=ModelList)
    async def models(self) -> ModelList:
        return ModelList(data=await self.service.catalog.models())

    @api.get("/v1/files/{key}")
    async def file(self, key: str, expires: int = 0, sig: str = "") -> Response:
        if not valid_key(key):
            raise not_found("no such file", "key")
        # Every backend: ids are in every response, so only the signature is a credential (S3 too).
        if not self.storage.signer.verify(key, expires, sig):
            raise APIError(
                "file URL has expired or its signature is invalid; request a new URL", "permission_error", status=403
            )
        try:
            data = await self.storage.get(key)
        except StorageUnavailable:
            logger.warning("object store unavailable for a file read", exc_info=True)
            retry = {"Retry-After": "1"}
            raise APIError(
                "image storage is unavailable; retry", "service_unavailable", status=503, headers=retry
            ) from None
        if data is None:
            raise not_found("no such file", "key")
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    # --- jobs --------------------------------------------------------------------------------

    @api.post("/v1/jobs", response_model=Job, response_model_exclude_none=True, status_code=202)
    async def submit(self, request: Request) -> Response:
        """Queue a job (202). With ``Prefer: wait=N`` (RFC 7240), answer 200 with the finished job if it
        ends within N seconds, else 202 as without it; ``Cancel-After: S`` is ``timeout_s``."""
        wait_s = prefer_wait(request.headers.get("prefer"))
        cancel_after = cancel_after_s(request.headers.get("cancel-after"))
        req = job_request_adapter.validate_python(self._json(request))
        job = await self.create_job(
            req, request.state.request_id, request.headers.get("idempotency-key"), cancel_after_s=cancel_after
        )
        headers = {}
        if wait_s is not None:
            headers["Preference-Applied"] = f"wait={wait_s}"
            job = await self._wait_for(job, wait_s)
        status = 200 if job.status.is_terminal else 202
        return JSONResponse(job.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers)

    async def _wait_for(self, job: Job, wait_s: float | None) -> Job:
        """The job once it ended, or as it stands after ``wait_s`` seconds (None: until it ends)."""
        if job.status.is_terminal:
            return job
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for event in self._events(job.id, -1):
                    if event is not None and event.is_terminal and event.type != "progress":
                        break
        return await self._job(job.id)

    async def create_job(
        self,
        req: JobBody,
        request_id: str,
        idempotency_key: str | None,
        *,
        cancel_after_s: float | None = None,
    ) -> Job:
        """POST /v1/jobs and gRPC SubmitJob, after the caller was admitted. ``cancel_after_s`` (the
        Cancel-After header) tightens the body's ``timeout_s``."""
        job, _ = await self._create_job(req, request_id, idempotency_key, cancel_after_s=cancel_after_s)
        return job

    async def _create_job(
        self,
        req: JobBody,
        request_id: str,
        idempotency_key: str | None,
        *,
        cancel_after_s: float | None = None,
        lease: bool = False,
        webhook_params: Mapping[str, str] = webhooks.BODY_PARAMS,
    ) -> tuple[Job, bool]:
        """-> (the job, whether this call created it). ``lease``: created leased to this gateway's
        runner, which is to run it at once (``JobRunner.run_inline``)."""
        # Validate now, so a job that can never run is a 400 here, not a failed job later.
        requests = await self.service.job_requests(req, request_id, None)
        steps = max(r.steps for r in requests)
        if req.preview_every is not None and req.preview_every > steps:
            raise invalid(
                f"preview_every must be at most the job's {steps} steps (got {req.preview_every})", "preview_every"
            )
        timeouts = [t for t in (req.timeout_s, cancel_after_s) if t is not None]
        owner = self.access.owner_of_new_job()
        webhook = (
            None
            if req.webhook is None
            else await webhooks.checked_webhook(
                req.webhook, owner, self.jobs.kv, self.settings.webhooks, webhook_params
            )
        )
        async with self.access.charged(requests) as charge:  # paid at submission, before it can run
            try:
                job, created = await self.jobs.create(
                    req.kind,
                    req.model_dump_json(),
                    idempotency_key,
                    model=req.model,
                    # The job is assigned to an A/B variant like a direct request by this user.
                    on_created=self.service.experiments.remember_job if self.service.experiments else None,
                    owner=owner,  # written first: no job is readable without its owner
                    webhook_json=webhook,
                    timeout_s=min(timeouts) if timeouts else None,
                    work_steps=sum(r.steps for r in requests),
                    lease_owner=self.runner.owner if lease else None,
                )
            except IdempotencyConflict as conflict:  # the same key's first request is still creating its job
                raise APIError(
                    "a request with this Idempotency-Key is still being processed; "
                    f"retry in {conflict.retry_after_s:g} s",
                    param="Idempotency-Key",
                    code="idempotency_key_in_use",
                    status=409,
                    headers={"Retry-After": f"{conflict.retry_after_s:g}"},
                ) from None
            if not created:  # a retry of a submitted job: its images were reserved the first time
                await charge.give_back()
        await self.access.job_created(job.id)  # a concurrency slot of the caller's key
        if not lease:
            self.runner.wake()
        return job, created

    async def _job(self, job_id: str) -> Job:
        problem = path_id_problem(f"/v1/jobs/{job_id}")  # a malformed id never reaches the store
        if problem is not None:
            raise problem
        job = await self.jobs.get(job_id)
        if job is None:
            raise not_found(f"no job {job_id!r}", "job_id")
        return job

    @api.get("/v1/jobs/{job_id}", response_model=Job, response_model_exclude_none=True)
    async def get_job(self, job_id: str) -> Job:
        return await self._job(job_id)

    @api.get("/v1/jobs/{job_id}/deliveries", response_model=WebhookDeliveryList, response_model_exclude_none=True)
    async def job_deliveries(self, job_id: str) -> WebhookDeliveryList:
        """Every message to the job's webhook with each attempt (status code, error, duration)."""
        await self._job(job_id)
        return WebhookDeliveryList(data=await self.outbox.of_job(job_id))

    async def _progress_webhook(self, job_id: str) -> None:
        job = await self.jobs.get(job_id)
        if job is not None and not job.status.is_terminal:
            await self.outbox.notify(job, f"progress:{job.progress.step}")

    @api.delete("/v1/jobs/{job_id}", response_model=Job, response_model_exclude_none=True)
    async def cancel_job(self, job_id: str) -> Job:
        await self._job(job_id)
        job = await self.jobs.request_cancel(job_id)
        assert job is not None
        return job

    async def _events(self, job_id: str, after: int) -> AsyncIterator[JobEvent | None]:
        """Job events after seq ``after`` until the terminal one; None when it is time for a
        keep-alive (so proxies and the SDK's read timeout never see a silent stream)."""
        seq = after
        quiet_since = time.monotonic()
        while True:
            for event in await self.jobs.events_after(job_id, seq):
                seq, quiet_since = event.seq, time.monotonic()
                yield event
                if event.status.is_terminal and event.type != "progress":
                    return
            if time.monotonic() - quiet_since > SSE_KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield None
            await asyncio.sleep(self.settings.jobs.poll_interval_s)

    @api.get("/v1/jobs/{job_id}/events")
    async def job_events(self, job_id: str, request: Request) -> StreamingResponse:
        await self._job(job_id)
        after = last_event_id(request.headers.get("last-event-id"))

        async def stream() -> AsyncIterator[str]:
            async for event in self._events(job_id, after):
                if event is None:
                    yield ": ping\n\n"
                else:
                    yield f"id: {event.seq}\nevent: {event.type}\ndata: {event.model_dump_json(exclude_none=True)}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @api.websocket("/v1/jobs/{job_id}/ws")
    async def job_ws(self, websocket: WebSocket, job_id: str) -> None:
        await websocket.accept()
        try:
            await self._job(job_id)
            after = last_event_id(websocket.headers.get("last-event-id"))
        except APIError as exc:  # accepted first, so that a browser can read why (close 4000 + status)
            await websocket.send_json(exc.response_body())
            await websocket.close(code=4000 + exc.status)
            return
        try:
            async for event in self._events(job_id, after):
                if event is not None:
                    await websocket.send_text(event.model_dump_json(exclude_none=True))
            await websocket.close()
        except WebSocketDisconnect:
            pass

    # --- admin -------------------------------------------------------------------------------

    @api.get("/v1/admin/cache/stats")
    async def cache_stats(self) -> dict[str, float]:
        if "cache" not in self.stages:
            raise not_found("the cache is disabled in this deployment")
        if self.service.cache is not None:  # this gateway's hits reach the index before it is read
            await self.service.cache.flush()
        stats: dict[str, float] = await self.stages["cache"].stats.remote()
        if self.service.cache is not None:
            stats["local_errors"] = stats.get("local_errors", 0.0) + self.service.cache.local_errors
        lookups = stats.get("hits", 0.0) + stats.get("misses", 0.0) + stats.get("coalesced", 0.0)
        return {**stats, "hit_ratio": stats.get("hits", 0.0) / lookups if lookups else 0.0}

    @api.get("/v1/admin/filters/stats")
    async def filter_stats(self) -> dict[str, Any]:
        """Decisions counted per stage, category and rule (never prompt text)."""
        return {
            name: await self.stages[name].stats.remote()
            for name in ("prompt_filter", "image_filter")
            if name in self.stages
        }

    # --- health ------------------------------------------------------------------------------

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        try:
            await asyncio.wait_for(self.jobs.kv.ping(), timeout=2)
            models = await asyncio.wait_for(self.service.catalog.model_ids(), timeout=5)
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ready", "models": models})

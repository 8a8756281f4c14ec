"""The gRPC door of the Gateway: ``huabu.v1.Images`` (proto/huabu/v1/images.proto, docs/GRPC.md).

Serve's gRPC proxy routes each call to the method of the application's ingress deployment named
like the RPC, so ``Gateway`` inherits these methods; they run in the gateway replica beside the
HTTP routes. Nothing here is a second copy of the HTTP side's rules: a message becomes the REST
request model (``huabu.sdk.types``) and is validated there, the caller passes the same ``Access``
checks in the order ``AccessMiddleware`` applies them (key, scope, job owner, idempotency key,
limits), and the work is the same ``GenerationService`` call, job store and job events. Every
failure is the ``APIError`` the HTTP side would answer, carried as a canonical status code with
its message as details.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import duration_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from pydantic import BaseModel, TypeAdapter, ValidationError
from ray.serve.context import _get_serve_request_context
from ray.serve.grpc_util import RayServegRPCContext
from starlette.datastructures import Headers

from huabu.deployments.core import telemetry
from huabu.deployments.core.logging_json import request_id_var
from huabu.deployments.core.messages import ModelRequest
from huabu.deployments.core.settings import Settings
from huabu.deployments.gateway import auth, webhooks
from huabu.deployments.gateway.access import IDEMPOTENT, Access, store_unavailable
from huabu.deployments.gateway.errors import APIError, invalid, not_found
from huabu.deployments.gateway.generation import GenerationService
from huabu.deployments.gateway.jobs import JobStore, prefer_wait, wait_seconds
from huabu.sdk.grpc_api import images_pb2 as pb
from huabu.sdk.types import (
    EditJobRequest,
    GenerateJobRequest,
    ImageData,
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    Job,
    JobEvent,
    OutpaintJobRequest,
    OutpaintRequest,
    _JobOptions,
    decode_b64_image,
    encode_b64_image,
    job_request_adapter,
)
from huabu.sdk.validation import first_problem

logger = logging.getLogger("huabu.grpc")
M = TypeVar("M", bound=Message)
JobBody = GenerateJobRequest | EditJobRequest | OutpaintJobRequest  # a POST /v1/jobs body, validated

# The REST route each RPC stands for: its scope (auth.required_scope) and cost follow from it.
GENERATE_PATH, MODELS_PATH, JOBS_PATH = "/v1/images/generations", "/v1/models", "/v1/jobs"
EDITS_PATH, OUTPAINT_PATH = "/v1/images/edits", "/v1/images/outpaint"
SERVICE = pb.DESCRIPTOR.services_by_name["Images"].full_name  # huabu.v1.Images: spans and metrics name calls by it

# REST error status -> canonical gRPC code (google.rpc.Code's HTTP mapping).
_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Enum values whose REST spelling is not the lower-cased name after the enum's prefix.
_REST_ENUM_VALUES = {"RESPONSE_FORMAT_BYTES": "b64_json"}


def status_code(error: APIError) -> grpc.StatusCode:
    return _CODES.get(error.status, grpc.StatusCode.INTERNAL if error.status >= 500 else grpc.StatusCode.UNKNOWN)


def error_metadata(error: APIError) -> tuple[tuple[str, str | bytes], ...]:
    """The REST error body's other fields (and Retry-After), as trailing metadata: plain keys for any
    client, and the same as a ``google.rpc.Status`` in ``grpc-status-details-bin`` for the rich-error
    helpers of grpc-go/grpc-java/grpcio-status (ErrorInfo, BadRequest naming the field, RetryInfo)."""
    retry_after = error.headers.get("Retry-After")
    fields = {
        "error-type": error.type,
        "error-param": error.param,
        "error-code": error.code,
        "retry-after": retry_after,
    }
    plain = tuple((name, value) for name, value in fields.items() if value)
    return (*plain, ("grpc-status-details-bin", status_details(error, retry_after)))


def status_details(error: APIError, retry_after: str | None) -> bytes:
    info = {k: v for k, v in {"type": error.type, "param": error.param or ""}.items() if v}
    details = [error_details_pb2.ErrorInfo(reason=(error.code or error.type).upper(), domain="huabu", metadata=info)]
    if error.param and status_code(error) is grpc.StatusCode.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.param, description=error.message)
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if retry_after and retry_after.isdigit():
        details.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(retry_after))))
    status = status_pb2.Status(code=status_code(error).value[0], message=error.message)
    for detail in details:
        status.details.add().Pack(detail)
    return status.SerializeToString()


# --- messages -> REST request fields ----------------------------------------------------------


def _rest_enum(field: FieldDescriptor, number: int) -> str:
    enum = field.enum_type
    value = enum.values_by_number.get(number)
    if value is None:  # a number this server's proto does not define (a newer client, or garbage)
        known = ", ".join(v.name for v in enum.values if v.number)
        raise invalid(f"{field.name} {number} is not a {enum.name}; use one of {known}", field.name)
    prefix = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(enum.name)).upper() + "_"
    return _REST_ENUM_VALUES.get(value.name, value.name.removeprefix(prefix).lower())


def rest_fields(message: Message) -> dict[str, Any]:
    """The JSON body REST would receive: the fields the message sets, named alike. Unset ``optional``
    fields and UNSPECIFIED enums are left out, so the server's defaults apply as for an omitted key."""
    fields: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.is_repeated and field.message_type is None:
            fields[field.name] = list(value)  # a webhook's events
        elif field.enum_type is not None:
            if value:
                fields[field.name] = _rest_enum(field, value)
        elif field.message_type is not None:
            fields[field.name] = rest_fields(value)
        elif field.type == FieldDescriptor.TYPE_BYTES:  # REST's JSON bodies carry images as base64
            fields[field.name] = encode_b64_image(value)
        else:
            fields[field.name] = value
    return fields


def validated(model: type[BaseModel] | TypeAdapter[Any], fields: Mapping[str, Any]) -> Any:
    """``model.model_validate`` with a failure worded as the REST API words it."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(fields)
        return model.model_validate(fields)
    except ValidationError as exc:
        problem = first_problem(exc)
        raise invalid(problem.message, problem.param) from None


def within_size_limit(message: Message, limit: int) -> None:
    """The HTTP body limit (gateway.max_request_bytes) on a message: Serve's gRPC proxy takes up to
    2 GiB, so the limit is the gateway's. The parameter named is the largest bytes field."""
    size = message.ByteSize()
    if size <= limit:
        return
    param, largest = "request", -1
    pending: list[Message] = [message]
    while pending:  # the bytes fields of the message and its sub-messages (SubmitJob's oneof)
        current = pending.pop()
        for field, value in current.ListFields():
            if field.type == FieldDescriptor.TYPE_BYTES and len(value) > largest:
                param, largest = field.name, len(value)
            elif field.message_type is not None and not isinstance(value, Sequence):
                pending.append(value)
    raise APIError(
        f"{param} makes the request {size} bytes, larger than the limit of {limit} bytes",
        param=param,
        code="request_too_large",
        status=413,
    )


def job_request(request: pb.SubmitJobRequest) -> JobBody:
    return job_body_of(job_fields(request))


def job_fields(request: pb.SubmitJobRequest) -> dict[str, Any]:
    """REST's ``POST /v1/jobs`` JSON body of the message: ``kind`` and the job's fields. ``wait_s``
    is REST's ``Prefer`` header, not the body."""
    kind = request.WhichOneof("request")
    if kind is None:
        raise invalid("set the job's request: one of generate, edit, outpaint", "request")
    return {"kind": kind, **rest_fields(getattr(request, kind))}


def job_body(kind: str, fields: Mapping[str, Any]) -> JobBody:
    """REST's ``POST /v1/jobs`` body of ``kind`` from a message's fields, validated there."""
    return job_body_of({"kind": kind, **fields})


def job_body_of(fields: Mapping[str, Any]) -> JobBody:
    body: JobBody = validated(job_request_adapter, fields)
    return body


# A message with any of these runs as a durable job (REST's job body options).
JOB_OPTIONS = frozenset(_JobOptions.model_fields)


# --- REST responses -> messages ---------------------------------------------------------------


def _message(cls: type[M], values: Mapping[str, Any]) -> M:
    """``cls`` from a REST model's dumped fields of the same names (None: left unset)."""
    names = cls.DESCRIPTOR.fields_by_name
    return cls(**{name: value for name, value in values.items() if name in names and value is not None})


def _enum_number(enum: Any, prefix: str, value: str) -> int:
    return int(enum.Value(f"{prefix}_{value.upper()}"))


def image_message(image: ImageData) -> pb.Image:
    message = _message(pb.Image, image.model_dump(exclude={"b64_json", "url"}))
    if image.b64_json is not None:
        message.png = decode_b64_image(image.b64_json)
    elif image.url is not None:
        message.url = image.url
    return message


def images_message(response: ImagesResponse) -> pb.ImagesResponse:
    return pb.ImagesResponse(created=response.created, data=[image_message(d) for d in response.data])


def job_message(job: Job) -> pb.Job:
    status = _enum_number(pb.JobStatus, "JOB_STATUS", job.status.value)
    message = _message(pb.Job, {**job.model_dump(exclude={"progress", "result", "error"}), "status": status})
    message.progress.CopyFrom(_message(pb.JobProgress, job.progress.model_dump()))
    if job.result is not None:
        message.result.CopyFrom(images_message(job.result))
    if job.error is not None:
        message.error.CopyFrom(_message(pb.Error, job.error.model_dump()))
    return message


def event_message(event: JobEvent) -> pb.JobEvent:
    enums = {
        "type": _enum_number(pb.JobEventType, "JOB_EVENT_TYPE", event.type),
        "status": _enum_number(pb.JobStatus, "JOB_STATUS", event.status.value),
    }
    message = _message(pb.JobEvent, {**event.model_dump(exclude={"result", "error", "preview"}), **enums})
    if event.preview is not None:
        preview = event.preview
        message.preview.CopyFrom(
            pb.Preview(width=preview.width, height=preview.height, media_type=preview.media_type, data=preview.bytes)
        )
    if event.result is not None:
        message.result.CopyFrom(images_message(event.result))
    if event.error is not None:
        message.error.CopyFrom(_message(pb.Error, event.error.model_dump()))
    return message


# --- the servicer -----------------------------------------------------------------------------


class Aborted(Exception):
    """Ends a stream whose status code is already set on the gRPC context (Serve sends that code)."""


@dataclass(frozen=True)
class Call:
    request_id: str
    idempotency_key: str | None  # scoped to the caller's key, as the job store sees it


def _metadata(context: RayServegRPCContext, name: str) -> str | None:
    value = dict(context.invocation_metadata()).get(name)
    return value if isinstance(value, str) else None


def _headers(context: RayServegRPCContext) -> Headers:
    """The call's text metadata as case-insensitive headers (REST's header parsers read them)."""
    return Headers(headers={k: v for k, v in context.invocation_metadata() if isinstance(v, str)})


def _request_id(context: RayServegRPCContext) -> str:
    # Serve's proxy assigns the request id (a client's ``request_id`` metadata, else a new one).
    return _get_serve_request_context().request_id or _metadata(context, "x-request-id") or ""


class ImagesGrpc:
    """``huabu.v1.Images`` as methods of the Gateway deployment (mixed into ``routes.Gateway``)."""

    # Set by the Gateway (routes.py).
    settings: Settings
    service: GenerationService
    jobs: JobStore
    access: Access
    # How the gateway answers an exception that is not an APIError (replica lost, store outage, bug).
    unexpected_error: Callable[[Exception, str], APIError]

    async def _job(self, job_id: str) -> Job:
        raise NotImplementedError  # the Gateway's: the id's form, then the store

    def _events(self, job_id: str, after: int) -> AsyncIterator[JobEvent | None]:
        raise NotImplementedError  # the Gateway's: job events after seq ``after``, None for a keep-alive

    async def create_job(self, req: JobBody, request_id: str, idempotency_key: str | None) -> Job:
        raise NotImplementedError  # the Gateway's: what POST /v1/jobs does

    async def _wait_for(self, job: Job, wait_s: float | None) -> Job:
        raise NotImplementedError  # the Gateway's: the job once it ended, or after wait_s

    async def images_or_job(
        self,
        req: JobBody,
        request_id: str,
        idempotency_key: str | None,
        wait_s: int | None,
        *,
        webhook_params: Mapping[str, str] = webhooks.BODY_PARAMS,
    ) -> tuple[str, ImagesResponse | Job]:
        raise NotImplementedError  # the Gateway's: wait-or-queue, the job attempted inline

    async def run_charged(self, requests: list[ModelRequest], response_format: str) -> ImagesResponse:
        raise NotImplementedError  # the Gateway's: a synchronous generation, its cost taken first

    # --- RPCs (named as the proto names them) ---------------------------------------------------

    async def _images_rpc(
        self,
        context: RayServegRPCContext,
        call: Call,
        kind: str,
        fields: dict[str, Any],
        direct: Callable[[], Awaitable[ImagesResponse]],
    ) -> pb.ImagesResponse:
        """An images RPC's answer: ``direct()``, or with job options (the message's ``webhook``, ...),
        ``prefer: wait=N`` or ``x-huabu-webhook`` metadata (REST's ``Prefer`` / ``X-Huabu-Webhook``
        headers, read by the same parser) a durable job attempted inline: its images with
        ``job_id``, or only ``job_id`` when it had not ended within N seconds (REST's 202)."""
        wait_s = prefer_wait(_metadata(context, "prefer"), "prefer")
        # As the REST header, the metadata's webhook wins over the message's, and is not part of the
        # content an idempotency key is bound to.
        webhook = webhooks.webhook_from_headers(_headers(context))
        if wait_s is None and webhook is None and not JOB_OPTIONS & fields.keys():
            return images_message(await direct())
        body = job_body(kind, fields)
        params = webhooks.BODY_PARAMS
        if webhook is not None:
            body, params = body.model_copy(update={"webhook": webhook}), webhooks.HEADER_PARAMS
        job_id, result = await self.images_or_job(
            body, call.request_id, call.idempotency_key, wait_s, webhook_params=params
        )
        if isinstance(result, ImagesResponse):
            message = images_message(result)
        else:
            message = pb.ImagesResponse(created=int(result.created_at))
        message.job_id = job_id
        return message

    async def Generate(self, request: pb.GenerateRequest, grpc_context: RayServegRPCContext) -> pb.ImagesResponse:
        async def respond(call: Call) -> pb.ImagesResponse:
            fields = rest_fields(request)

            async def direct() -> ImagesResponse:
                req = validated(ImageGenerationRequest, fields)
                requests = await self.service.generation_requests(req, call.request_id)
                return await self.run_charged(requests, req.response_format)

            return await self._images_rpc(grpc_context, call, "generate", fields, direct)

        return await self._unary(
            grpc_context,
            "Generate",
            GENERATE_PATH,
            respond,
            pb.ImagesResponse,
            costly=True,
            content=lambda: rest_fields(request),
        )

    async def Edit(self, request: pb.EditRequest, grpc_context: RayServegRPCContext) -> pb.ImagesResponse:
        async def respond(call: Call) -> pb.ImagesResponse:
            within_size_limit(request, self.settings.gateway.max_request_bytes)
            every = rest_fields(request)  # the images as base64, as the edit job's body has them

            async def direct() -> ImagesResponse:
                # The multipart route's split: the files as bytes, the other fields through the model.
                fields = {k: v for k, v in every.items() if k not in ("image", "mask")}
                req = validated(ImageEditRequest, fields)
                mask = request.mask if request.HasField("mask") else None
                requests = await self.service.edit_requests(req, request.image, mask, call.request_id)
                return await self.run_charged(requests, req.response_format)

            return await self._images_rpc(grpc_context, call, "edit", every, direct)

        return await self._unary(
            grpc_context,
            "Edit",
            EDITS_PATH,
            respond,
            pb.ImagesResponse,
            costly=True,
            content=lambda: rest_fields(request),
        )

    async def Outpaint(self, request: pb.OutpaintRequest, grpc_context: RayServegRPCContext) -> pb.ImagesResponse:
        async def respond(call: Call) -> pb.ImagesResponse:
            within_size_limit(request, self.settings.gateway.max_request_bytes)
            fields = rest_fields(request)

            async def direct() -> ImagesResponse:
                req = validated(OutpaintRequest, fields)
                requests = await self.service.outpaint_requests(req, call.request_id)
                return await self.run_charged(requests, req.response_format)

            return await self._images_rpc(grpc_context, call, "outpaint", fields, direct)

        return await self._unary(
            grpc_context,
            "Outpaint",
            OUTPAINT_PATH,
            respond,
            pb.ImagesResponse,
            costly=True,
            content=lambda: rest_fields(request),
        )

    async def ListModels(self, request: pb.ListModelsRequest, grpc_context: RayServegRPCContext) -> pb.ModelList:
        async def respond(call: Call) -> pb.ModelList:
            models = []
            for info in await self.service.catalog.models():
                model = _message(pb.Model, info.model_dump(exclude={"sampling"}))
                if info.sampling is not None:
                    model.sampling.CopyFrom(_message(pb.ModelSampling, info.sampling.model_dump()))
                models.append(model)
            return pb.ModelList(data=models)

        return await self._unary(grpc_context, "ListModels", MODELS_PATH, respond, pb.ModelList)

    async def SubmitJob(self, request: pb.SubmitJobRequest, grpc_context: RayServegRPCContext) -> pb.Job:
        async def respond(call: Call) -> pb.Job:
            within_size_limit(request, self.settings.gateway.max_request_bytes)
            # REST's Prefer: wait=N, as the message's wait_s or as `prefer` metadata.
            if request.HasField("wait_s"):
                wait_s: int | None = wait_seconds(str(request.wait_s), "wait_s")
            else:
                wait_s = prefer_wait(_metadata(grpc_context, "prefer"), "prefer")
            job = await self.create_job(job_request(request), call.request_id, call.idempotency_key)
            return job_message(job if wait_s is None else await self._wait_for(job, wait_s))

        return await self._unary(
            grpc_context, "SubmitJob", JOBS_PATH, respond, pb.Job, costly=True, content=lambda: job_fields(request)
        )

    async def GetJob(self, request: pb.GetJobRequest, grpc_context: RayServegRPCContext) -> pb.Job:
        async def respond(call: Call) -> pb.Job:
            return job_message(await self._job(request.job_id))

        return await self._unary(
            grpc_context, "GetJob", f"{JOBS_PATH}/{request.job_id}", respond, pb.Job, job_id=request.job_id
        )

    async def CancelJob(self, request: pb.CancelJobRequest, grpc_context: RayServegRPCContext) -> pb.Job:
        async def respond(call: Call) -> pb.Job:
            job = await self.jobs.request_cancel(request.job_id)
            if job is None:
                raise not_found(f"no job {request.job_id!r}", "job_id")
            return job_message(job)

        return await self._unary(
            grpc_context, "CancelJob", f"{JOBS_PATH}/{request.job_id}", respond, pb.Job, job_id=request.job_id
        )

    async def WatchJob(
        self, request: pb.WatchJobRequest, grpc_context: RayServegRPCContext
    ) -> AsyncIterator[pb.JobEvent]:
        path = f"{JOBS_PATH}/{request.job_id}/events"
        with self._traced(grpc_context, "WatchJob", stream=True) as call:
            try:
                if request.HasField("after_seq") and request.after_seq < -1:
                    raise invalid("after_seq must be the seq of an event of this job (-1: from the first)", "after_seq")
                after = request.after_seq if request.HasField("after_seq") else -1
                async with self._admitted(grpc_context, path, job_id=request.job_id, stream=True):
                    async for event in self._events(request.job_id, after):
                        if event is not None:  # gRPC keeps the connection alive itself
                            yield event_message(event)
                call.finished()
            except Exception as exc:
                error = self._failed(grpc_context, call, exc, path)
                # Serve carries the code of a failed stream but not its trailing metadata.
                raise Aborted(error.message) from None

    # --- plumbing ------------------------------------------------------------------------------

    def _api_error(self, exc: Exception, path: str) -> APIError:
        if isinstance(exc, APIError):
            return exc
        if isinstance(exc, ValidationError):
            problem = first_problem(exc)
            return invalid(problem.message, problem.param)
        return self.unexpected_error(exc, f"gRPC {path}")

    def _failed(self, context: RayServegRPCContext, call: telemetry.RpcSpan, exc: Exception, path: str) -> APIError:
        """``exc`` as the APIError the HTTP side would answer, its code set on the call and its span."""
        error = self._api_error(exc, path)
        code = status_code(error)
        context.set_code(code)
        context.set_details(error.message)
        call.finished(error.status, code.name, code.value[0])
        return error

    def _traced(self, context: RayServegRPCContext, rpc: str, *, stream: bool = False) -> Any:
        metadata = context.invocation_metadata()
        return telemetry.grpc_call(f"{SERVICE}/{rpc}", metadata, _request_id(context), stream=stream)

    async def _unary(
        self,
        context: RayServegRPCContext,
        rpc: str,
        path: str,
        respond: Callable[[Call], Awaitable[M]],
        empty: type[M],
        *,
        costly: bool = False,
        job_id: str | None = None,
        content: Callable[[], object] | None = None,
    ) -> M:
        with self._traced(context, rpc) as traced:
            try:
                async with self._admitted(context, path, costly=costly, job_id=job_id, content=content) as call:
                    response = await respond(call)
                traced.finished()
                return response
            except Exception as exc:
                # Returned, not raised: Serve then sends the code with the trailing metadata (and logs no
                # traceback for a refused request); the client sees only the status.
                error = self._failed(context, traced, exc, path)
                # Serve's annotation says str values; gRPC sends the -bin key's bytes as they are (tested).
                context.set_trailing_metadata(cast(list[tuple[str, str]], list(error_metadata(error))))
                return empty()

    @asynccontextmanager
    async def _admitted(
        self,
        context: RayServegRPCContext,
        path: str,
        *,
        costly: bool = False,
        job_id: str | None = None,
        content: Callable[[], object] | None = None,
        stream: bool = False,
    ) -> AsyncIterator[Call]:
        """The caller, checked as ``AccessMiddleware`` checks an HTTP request to ``path``; the limits'
        slot is held and ``auth.current_principal`` set (usage metering reads it) while the call runs.
        ``content()``: the request as REST's body has it, what an idempotency key is bound to
        (``access.request_fingerprint``: the same message content is the same request, over either door)."""
        access = self.access
        needed = auth.required_scope(path)
        assert needed is not None, path
        request_id = _request_id(context)
        try:
            principal = await access.authenticator.authenticate(_metadata(context, "authorization"))
            if not principal.has(needed):
                raise auth.forbidden(needed)
            if job_id is not None:
                await self._job(job_id)  # the id's form, then existence, as the REST routes check them
                if not await access.may_see_job(principal, job_id):
                    raise not_found(f"no job {job_id!r}", "job_id")
            # As on HTTP: only the calls that may create a job read the key (IDEMPOTENT), scoped to
            # the caller's API key and bound to the request's content.
            idempotency_key = _metadata(context, "idempotency-key") if path in IDEMPOTENT else None
            fingerprint, fields = None, None
            if idempotency_key and access.settings.auth.enabled:
                fields = content() if content is not None else {}
                idempotency_key, fingerprint = await access.check_idempotency(principal, idempotency_key, fields)
            # A costly call holds a concurrency slot; an event stream one of the key's stream slots.
            admission = await access.admit(principal) if costly else None
            if stream:
                admission = await access.open_stream(principal)
        except APIError:
            raise
        except Exception:  # the store is down or overloaded: refuse (fail closed), as HTTP does
            logger.warning("access control unavailable for gRPC %s", path, exc_info=True)
            raise store_unavailable() from None
        principal_token, request_token = auth.current_principal.set(principal), request_id_var.set(request_id)
        try:
            yield Call(request_id, idempotency_key)
            if fingerprint is not None:
                await access.remember_idempotency(fingerprint, fields)
        finally:
            auth.current_principal.reset(principal_token)
            request_id_var.reset(request_token)
            if admission is not None and admission.release is not None:
                try:
                    await admission.release()
                except Exception:  # the slot expires on its own (access.REQUEST_SLOT_TTL_S)
                    logger.warning("could not release a concurrency slot", exc_info=True)

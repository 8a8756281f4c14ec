"""``GrpcClient`` and ``AsyncGrpcClient``: the huabu client over gRPC (``huabu.v1.Images``, docs/GRPC.md).

>>> from huabu.sdk.grpc import GrpcClient
>>> client = GrpcClient("127.0.0.1:9000", api_key="hb_...")  # doctest: +SKIP
>>> client.images.generate("一只在雪地里的红狐狸", seed=7)[0].save("fox.png")  # doctest: +SKIP

The methods, arguments and results are the HTTP client's (``ImageResults``, ``JobHandle``,
``ModelList``, the same exceptions), so code switches transport by switching the client. Arguments
are validated by the same wire types before anything is sent; retries, backoff and the error
classes are the HTTP client's helpers. Needs ``pip install 'huabu[grpc]'``: only this module
imports grpcio, so ``import huabu.sdk`` works without it.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

import grpc
import grpc.aio
from google.protobuf.message import Message
from opentelemetry import propagate
from opentelemetry.trace import Span
from pydantic import BaseModel

from huabu.sdk import _devkey, _tracing, constants
from huabu.sdk._base import Timeouts
from huabu.sdk._client import AsyncClient, Client
from huabu.sdk._errors import APIConnectionError, APITimeoutError, HuabuError, error_from_body
from huabu.sdk._files import ImageInput
from huabu.sdk._jobs import AnyJobRequest, AsyncJobHandle, JobHandle, Transport, _EventFollower, wait_seconds
from huabu.sdk._params import (
    CallOptions,
    EditParams,
    GenerateParams,
    OutpaintParams,
    SubmitEditParams,
    SubmitGenerateParams,
    SubmitOutpaintParams,
    Unpack,
    split_params,
    wire_request,
)
from huabu.sdk._results import ImageResults
from huabu.sdk._retry import parse_retry_after, retry_delay, should_retry_status
from huabu.sdk.grpc_api import images_pb2 as pb
from huabu.sdk.grpc_api import images_pb2_grpc
from huabu.sdk.resources.jobs import _wait, edit_job, generate_job, outpaint_job
from huabu.sdk.types import (
    ERROR_STATUS,
    ErrorBody,
    ImageData,
    ImageGenerationRequest,
    ImagesResponse,
    Job,
    JobEvent,
    JobPreview,
    JobProgress,
    JobStatus,
    ModelInfo,
    ModelList,
    ModelSampling,
    decode_b64_image,
    encode_b64_image,
)

__all__ = ["AsyncGrpcClient", "AsyncGrpcJobHandle", "GrpcClient", "GrpcJobHandle", "status_error"]

M = TypeVar("M", bound=Message)
GRPC_ADDRESS_ENV = "HUABU_GRPC_ADDRESS"
DEFAULT_GRPC_ADDRESS = "127.0.0.1:9000"  # `huabu up`'s default gRPC port
SERVICE = pb.DESCRIPTOR.services_by_name["Images"].full_name  # huabu.v1.Images

# --- errors: a status code -> the exception the same REST status raises ---------------------------

# google.rpc.Code's HTTP mapping, inverted; the server's own codes (docs/GRPC.md) come first.
_HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
}
# The REST error type a status stands for, when the server sent none (a failed stream carries only
# the code and message; Serve drops its trailing metadata).
_ERROR_TYPE = {status: kind for kind, status in reversed(ERROR_STATUS.items())}


def _pairs(metadata: Iterable[Any] | None) -> dict[str, str]:
    return {str(k).lower(): v for k, v in (metadata or ()) if isinstance(v, str)}


def _request_id(*metadata: Iterable[Any] | None) -> str | None:
    for md in metadata:
        pairs = _pairs(md)
        for name in ("request_id", constants.REQUEST_ID_HEADER):
            if pairs.get(name):
                return pairs[name]
    return None


def status_error(exc: grpc.RpcError) -> HuabuError:
    """A failed call as the exception the HTTP client raises for the same failure.

    The REST error body's fields come from the trailing metadata (``error-type``, ``error-param``,
    ``error-code``, ``retry-after``). UNAVAILABLE without them never reached huabu (refused, reset,
    no route): a connection error, as httpx's would be.
    """
    code: grpc.StatusCode = exc.code()  # every RpcError a call raises is also its grpc.Call
    details: str = exc.details() or code.name
    trailing = _pairs(exc.trailing_metadata())
    request_id = _request_id(exc.trailing_metadata(), exc.initial_metadata())
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return APITimeoutError(f"request timed out: {details}")
    if code is grpc.StatusCode.CANCELLED or (code is grpc.StatusCode.UNAVAILABLE and "error-type" not in trailing):
        return APIConnectionError(f"connection error: {details}")
    status = _HTTP_STATUS.get(code, 500)
    error = ErrorBody(
        message=details,
        type=trailing.get("error-type") or _ERROR_TYPE.get(status, "server_error"),
        param=trailing.get("error-param") or None,
        code=trailing.get("error-code") or None,
    )
    retry_after = parse_retry_after(trailing)
    return error_from_body(status, error, request_id=request_id, body=exc, retry_after=retry_after)


class _Retry:
    """The retry decisions of one call (a finite total deadline, retries, backoff): the HTTP client's
    rules and helpers, applied to status codes. Sans-I/O, so both clients drive it the same way."""

    def __init__(self, client: _GrpcBase, call: CallOptions, rpc: str) -> None:
        self.timeouts = Timeouts.coerce(call.get("timeout"), client.timeout)
        retries = call.get("max_retries")
        self.max_retries = client.max_retries if retries is None else retries
        self.attempt = 0
        self._clock, self._rand = client._clock, client._rand
        self.deadline = self._clock() + self.timeouts.total
        # One client span for the call, retries included; every attempt carries it as traceparent.
        self.span = _tracing.start_rpc_span(f"{SERVICE}/{rpc}", client.address)

    def timeout(self) -> float:
        """The gRPC deadline of the next attempt: what is left of the call's total."""
        remaining = self.deadline - self._clock()
        if remaining <= 0:
            raise APITimeoutError(f"deadline of {self.timeouts.total:g} s exceeded after {self.attempt} attempt(s)")
        return remaining

    def after(self, exc: grpc.RpcError) -> float:
        """Seconds to wait before retrying ``exc``'s call, or its exception raised."""
        error = status_error(exc)
        code: grpc.StatusCode = exc.code()
        request_id = _request_id(exc.trailing_metadata(), exc.initial_metadata())
        _tracing.record_rpc(self.span, code.name, code.value[0], self.attempt + 1, request_id)
        trailing = _pairs(exc.trailing_metadata())
        if isinstance(error, APIConnectionError):
            retryable = not isinstance(error, APITimeoutError)  # our own deadline: nothing left to retry in
        else:
            retryable = should_retry_status(getattr(error, "status_code", 500), trailing)
        if self.attempt >= self.max_retries or not retryable:
            raise error from None
        delay = retry_delay(self.attempt, trailing, rand=self._rand)
        if self._clock() + delay >= self.deadline:
            raise error from None  # waiting would overrun the deadline: report the real failure now
        self.attempt += 1
        return delay

    def succeeded(self, initial: Any, trailing: Any) -> str | None:
        request_id = _request_id(initial, trailing)
        _tracing.record_rpc(self.span, "OK", 0, self.attempt + 1, request_id)
        return request_id

    def end(self, error: BaseException | None) -> None:
        if error is not None and not isinstance(error, grpc.RpcError):
            _tracing.record_error(self.span, error)
        self.span.end()


# --- messages <-> the wire types -----------------------------------------------------------------

_RESPONSE_FORMAT = {"b64_json": pb.RESPONSE_FORMAT_BYTES, "url": pb.RESPONSE_FORMAT_URL}
_CACHE = {"use": pb.CACHE_MODE_USE, "bypass": pb.CACHE_MODE_BYPASS, "refresh": pb.CACHE_MODE_REFRESH}
_PRIORITY = {"interactive": pb.PRIORITY_INTERACTIVE, "batch": pb.PRIORITY_BATCH}


def wire_message(request: BaseModel, cls: type[M]) -> M:
    """A validated REST body as the proto message of the same RPC: the same names, enums spelled as
    the proto spells them, REST's base64 images as bytes."""
    fields = request.model_dump(mode="json", exclude_none=True, exclude={"kind"})
    fields["response_format"] = _RESPONSE_FORMAT[fields["response_format"]]
    fields["cache"] = _CACHE[fields["cache"]]
    if "priority" in fields:
        fields["priority"] = _PRIORITY[fields["priority"]]
    for name in ("image", "mask"):
        if name in fields:
            fields[name] = decode_b64_image(fields[name])
    unknown = set(fields) - set(cls.DESCRIPTOR.fields_by_name)
    if unknown:  # a REST field this proto does not carry yet: refuse rather than drop it silently
        raise ValueError(f"not available over gRPC: {', '.join(sorted(unknown))}")
    return cls(**fields)


def _enum_value(enum: Any, number: int, prefix: str) -> str:
    return str(enum.Name(number)).removeprefix(prefix).lower()


def images_response(message: pb.ImagesResponse) -> ImagesResponse:
    data = []
    for image in message.data:
        content = image.WhichOneof("content")
        data.append(
            ImageData(
                b64_json=encode_b64_image(image.png) if content == "png" else None,
                url=image.url if content == "url" else None,
                id=image.id or None,
                seed=image.seed,
                model=image.model or None,
                cached=image.cached,
                prompt_truncated=image.prompt_truncated,
                variant=image.variant or None,
                metadata=dict(image.metadata),
                full_evaluations=image.full_evaluations if image.HasField("full_evaluations") else None,
            )
        )
    return ImagesResponse(created=message.created, data=data)


def _error(message: pb.Error) -> ErrorBody:
    return ErrorBody(message=message.message, type=message.type or "server_error", param=message.param or None,
                     code=message.code or None)  # fmt: skip


def job(message: pb.Job) -> Job:
    return Job(
        id=message.id,
        status=JobStatus(_enum_value(pb.JobStatus, message.status, "JOB_STATUS_")),
        kind=message.kind,
        created_at=message.created_at,
        updated_at=message.updated_at,
        progress=JobProgress(step=message.progress.step, total=message.progress.total),
        result=images_response(message.result) if message.HasField("result") else None,
        error=_error(message.error) if message.HasField("error") else None,
        model=message.model or None,
        variant=message.variant or None,
        queue_position=message.queue_position if message.HasField("queue_position") else None,
        eta_s=message.eta_s if message.HasField("eta_s") else None,
        deadline_at=message.deadline_at if message.HasField("deadline_at") else None,
        cancel_reason=message.cancel_reason or None,
    )


def job_event(message: pb.JobEvent) -> JobEvent:
    kind = _enum_value(pb.JobEventType, message.type, "JOB_EVENT_TYPE_")
    # proto3 cannot leave step/total unset; REST sends them with progress events only.
    counted = kind == "progress" or message.total > 0
    return JobEvent(
        type=kind,
        job_id=message.job_id,
        seq=message.seq,
        status=JobStatus(_enum_value(pb.JobStatus, message.status, "JOB_STATUS_")),
        step=message.step if counted else None,
        total=message.total if counted else None,
        result=images_response(message.result) if message.HasField("result") else None,
        error=_error(message.error) if message.HasField("error") else None,
        queue_position=message.queue_position if message.HasField("queue_position") else None,
        eta_s=message.eta_s if message.HasField("eta_s") else None,
        preview=_preview(message.preview) if message.HasField("preview") else None,
        reason=message.reason or None,
    )


def _preview(message: pb.Preview) -> JobPreview:
    return JobPreview(width=message.width, height=message.height, media_type=message.media_type or "image/png",
                      b64_json=encode_b64_image(message.data))  # fmt: skip


def model_list(message: pb.ModelList) -> ModelList:
    models = []
    for m in message.data:
        sampling = None
        if m.HasField("sampling"):
            s = m.sampling
            sampling = ModelSampling(
                size=s.size,
                steps=s.steps,
                guidance_scale=s.guidance_scale,
                max_steps=s.max_steps,
                max_side=s.max_side,
                size_multiple=s.size_multiple,
                min_side=s.min_side if s.HasField("min_side") else None,
                max_prompt_bytes=s.max_prompt_bytes,
                operations=list(s.operations) or None,
            )
        info = ModelInfo(id=m.id, owned_by=m.owned_by or "huabu", sampling=sampling, backend=m.backend or None,
                         pipeline=m.pipeline or None, dtype=m.dtype or None)  # fmt: skip
        models.append(info)
    return ModelList(data=models)


def _generate_request(prompt: str, params: GenerateParams) -> tuple[pb.GenerateRequest, CallOptions]:
    fields, call = split_params(params)
    return wire_message(wire_request(ImageGenerationRequest, prompt=prompt, **fields), pb.GenerateRequest), call


def _watch_request(job_id: str, after_seq: int | None) -> pb.WatchJobRequest:
    request = pb.WatchJobRequest(job_id=job_id)
    if after_seq is not None:  # resume: only the events after the last one seen (SSE's Last-Event-ID)
        request.after_seq = after_seq
    return request


def _edit_request(image: ImageInput, prompt: str, params: EditParams) -> tuple[pb.EditRequest, CallOptions]:
    # The edit job's body is the edit with its files as base64: one builder and validation for both.
    body, call, _ = edit_job(image, prompt, cast(SubmitEditParams, params))
    return wire_message(body, pb.EditRequest), call


def _outpaint_request(image: ImageInput, prompt: str, params: OutpaintParams) -> tuple[pb.OutpaintRequest, CallOptions]:
    body, call, _ = outpaint_job(image, prompt, cast(SubmitOutpaintParams, params))
    return wire_message(body, pb.OutpaintRequest), call


_JOB_MESSAGES: dict[str, type[Message]] = {
    "generate": pb.GenerateRequest,
    "edit": pb.EditRequest,
    "outpaint": pb.OutpaintRequest,
}


def _submit_request(request: AnyJobRequest, wait_s: int | None = None) -> pb.SubmitJobRequest:
    # SubmitJobRequest's oneof is named as REST's ``kind``; wait_s is REST's Prefer: wait.
    message = pb.SubmitJobRequest(**{request.kind: wire_message(request, _JOB_MESSAGES[request.kind])})
    if wait_s is not None:
        message.wait_s = wait_s
    return message


# --- the clients -----------------------------------------------------------------------------------


class _GrpcBase:
    """Configuration and metadata shared by both clients."""

    _clock: Callable[[], float] = staticmethod(time.monotonic)
    _rand: Callable[[], float] = staticmethod(random.random)

    def __init__(
        self,
        address: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | Timeouts | None = None,
        max_retries: int | None = None,
        application: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        default_metadata: Mapping[str, str] | None = None,
    ) -> None:
        # As the HTTP client: the address given, HUABU_GRPC_ADDRESS, the one `huabu up` recorded, the
        # default; the key given, HUABU_API_KEY, the development key of that loopback server.
        self.address = (
            address or os.environ.get(GRPC_ADDRESS_ENV) or _devkey.local_grpc_address() or DEFAULT_GRPC_ADDRESS
        )
        if api_key is None:
            api_key = os.environ.get(constants.API_KEY_ENV) or _devkey.discover_grpc_dev_key(self.address)
        self.api_key = api_key
        self.timeout = Timeouts.coerce(timeout, Timeouts())  # finite: a lost replica never hangs a call
        self.max_retries = constants.DEFAULT_MAX_RETRIES if max_retries is None else max_retries
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.application = application  # Serve's app, where one Serve instance serves several
        self.credentials = credentials  # None: plaintext (grpc.ssl_channel_credentials() for TLS)
        self.default_metadata = {k.lower(): v for k, v in (default_metadata or {}).items()}

    def _metadata(
        self, call: CallOptions, attempt: int, idempotency_key: str | None = None, span: Span | None = None
    ) -> list[tuple[str, str]]:
        md: dict[str, str] = {**self.default_metadata}
        if self.application:
            md["application"] = self.application
        if self.api_key:
            md["authorization"] = f"Bearer {self.api_key}"
        if idempotency_key:
            md[constants.IDEMPOTENCY_HEADER.lower()] = idempotency_key
        if attempt:
            md[constants.RETRY_COUNT_HEADER] = str(attempt)
        md.update({k.lower(): v for k, v in (call.get("extra_headers") or {}).items()})
        if span is not None:
            _tracing.inject(span, md)  # the call's client span, a child of the caller's
        else:
            propagate.inject(md)  # traceparent of the caller's span, if any
        return list(md.items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(address={self.address!r})"


class GrpcClient(_GrpcBase):
    """Synchronous huabu client over gRPC: ``Client``'s ``images.generate``, ``jobs`` and ``models``."""

    def __init__(self, address: str | None = None, api_key: str | None = None, **options: Any) -> None:
        super().__init__(address, api_key, **options)
        self._channel = (
            grpc.secure_channel(self.address, self.credentials)
            if self.credentials is not None
            else grpc.insecure_channel(self.address)
        )
        self._stub = images_pb2_grpc.ImagesStub(self._channel)
        self._downloads: Client | None = None
        self.images = GrpcImages(self)
        self.jobs = GrpcJobs(self)
        self.models = GrpcModels(self)

    @staticmethod
    def _sleep(seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def _unary(
        self, rpc: str, request: Any, call: CallOptions, *, idempotency_key: str | None = None
    ) -> tuple[Any, str | None]:
        method, retry, error = getattr(self._stub, rpc), _Retry(self, call, rpc), None
        try:
            while True:
                timeout = retry.timeout()
                try:
                    metadata = self._metadata(call, retry.attempt, idempotency_key, retry.span)
                    response, answer = method.with_call(request, metadata=metadata, timeout=timeout)
                    return response, retry.succeeded(answer.initial_metadata(), answer.trailing_metadata())
                except grpc.RpcError as exc:
                    self._sleep(retry.after(exc))
        except BaseException as exc:
            error = exc
            raise
        finally:
            retry.end(error)

    def _watch(self, job_id: str, after_seq: int | None, timeout: float) -> Iterator[JobEvent]:
        request = _watch_request(job_id, after_seq)
        stream = self._stub.WatchJob(request, metadata=self._metadata({}, 0), timeout=timeout)
        try:
            for message in stream:
                yield job_event(message)
        except grpc.RpcError as exc:
            raise status_error(exc) from None
        finally:
            stream.cancel()

    def _download(self, url: str) -> bytes:
        # url results are plain HTTPS downloads: the HTTP client's, with its retries and without our key.
        if self._downloads is None:
            self._downloads = Client(base_url="http://downloads.invalid", api_key="", timeout=self.timeout)
        return self._downloads._download(url)

    def _results(
        self, response: ImagesResponse, *, request_id: str | None = None, job_id: str | None = None
    ) -> ImageResults:
        return ImageResults(response, loader=self._download, request_id=request_id, job_id=job_id)

    def close(self) -> None:
        self._channel.close()
        if self._downloads is not None:
            self._downloads.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncGrpcClient(_GrpcBase):
    """``GrpcClient`` with ``await`` (``grpc.aio``). Like ``httpx.AsyncClient`` it can be built
    anywhere, in a loop or not: its channel is opened on first use, in the event loop that uses it
    (a ``grpc.aio`` channel belongs to the loop it was made in). Used from a later loop once that
    one has stopped (a second ``asyncio.run``), it opens a new channel there; two loops running at
    once (threads) need a client each."""

    def __init__(self, address: str | None = None, api_key: str | None = None, **options: Any) -> None:
        super().__init__(address, api_key, **options)
        self._channel: grpc.aio.Channel | None = None
        self._channel_loop: asyncio.AbstractEventLoop | None = None
        self._images_stub: images_pb2_grpc.ImagesStub | None = None
        self._downloads: AsyncClient | None = None
        self.images = AsyncGrpcImages(self)
        self.jobs = AsyncGrpcJobs(self)
        self.models = AsyncGrpcModels(self)

    @staticmethod
    async def _sleep(seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    @property
    def _stub(self) -> images_pb2_grpc.ImagesStub:
        """The stub over this loop's channel, opened now if the client has none in this loop."""
        loop = asyncio.get_running_loop()  # outside a loop: RuntimeError, as any await would fail
        if self._images_stub is None or self._channel_loop is not loop:
            previous = self._channel_loop
            if previous is not None and previous is not loop and previous.is_running():
                raise RuntimeError(
                    "this AsyncGrpcClient is in use by another running event loop; make a client per loop"
                )
            # A stopped loop's channel cannot be closed from here (its loop does not run): dropped.
            self._channel = (
                grpc.aio.secure_channel(self.address, self.credentials)
                if self.credentials is not None
                else grpc.aio.insecure_channel(self.address)
            )
            self._channel_loop, self._images_stub = loop, images_pb2_grpc.ImagesStub(self._channel)
        return self._images_stub

    async def _unary(
        self, rpc: str, request: Any, call: CallOptions, *, idempotency_key: str | None = None
    ) -> tuple[Any, str | None]:
        retry, error = _Retry(self, call, rpc), None
        try:
            while True:
                timeout = retry.timeout()
                try:
                    metadata = self._metadata(call, retry.attempt, idempotency_key, retry.span)
                    answer = getattr(self._stub, rpc)(request, metadata=metadata, timeout=timeout)
                    response = await answer
                    initial, trailing = await answer.initial_metadata(), await answer.trailing_metadata()
                    return response, retry.succeeded(initial, trailing)
                except grpc.RpcError as exc:
                    await self._sleep(retry.after(exc))
        except BaseException as exc:
            error = exc
            raise
        finally:
            retry.end(error)

    async def _watch(self, job_id: str, after_seq: int | None, timeout: float) -> AsyncIterator[JobEvent]:
        request = _watch_request(job_id, after_seq)
        stream = self._stub.WatchJob(request, metadata=self._metadata({}, 0), timeout=timeout)
        try:
            async for message in stream:
                yield job_event(message)
        except grpc.RpcError as exc:
            raise status_error(exc) from None
        finally:
            stream.cancel()

    async def _download(self, url: str) -> bytes:
        if self._downloads is None:
            self._downloads = AsyncClient(base_url="http://downloads.invalid", api_key="", timeout=self.timeout)
        return await self._downloads._download(url)

    def _results(
        self, response: ImagesResponse, *, request_id: str | None = None, job_id: str | None = None
    ) -> ImageResults:
        return ImageResults(response, aloader=self._download, request_id=request_id, job_id=job_id)

    async def close(self) -> None:
        channel, loop = self._channel, self._channel_loop
        self._channel = self._channel_loop = self._images_stub = None
        if channel is not None and loop is asyncio.get_running_loop():
            await channel.close()
        if self._downloads is not None:
            await self._downloads.close()

    async def __aenter__(self) -> AsyncGrpcClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


# --- job handles: the HTTP handles' event following, waiting and results, over WatchJob -------------


def _stream_timeout(follower: _EventFollower, base: Timeouts) -> float:
    # One WatchJob call lives until the events() deadline, or the client's total deadline at most;
    # a quiet job then reconnects (resuming after the last seq) rather than holding a dead stream.
    return follower.timeouts().total if follower.timeout is not None else base.total


class GrpcJobHandle(JobHandle):
    """A job submitted over gRPC: ``JobHandle``'s ``status``, ``events``, ``wait``, ``result``, ``cancel``.

    ``events()`` follows ``WatchJob``, reconnecting after the last ``seq`` it saw; its ``transport``
    argument is accepted for ``JobHandle`` compatibility and ignored."""

    def __init__(self, client: GrpcClient, job: Job | str, *, request_id: str | None = None) -> None:
        # JobHandle's inherited loops use only _clock, _sleep, timeout and _results of the client,
        # which GrpcClient has with the same meaning.
        super().__init__(client, job, request_id=request_id)  # type: ignore[arg-type]
        self._grpc = client

    def status(self, **call: Unpack[CallOptions]) -> Job:
        """Fetch the job's current state (``GetJob``)."""
        message, _ = self._grpc._unary("GetJob", pb.GetJobRequest(job_id=self.id), call)
        self.job = job(message)
        return self.job

    def cancel(self, **call: Unpack[CallOptions]) -> Job:
        """Ask the server to stop the job at its next denoising step (``CancelJob``)."""
        message, _ = self._grpc._unary("CancelJob", pb.CancelJobRequest(job_id=self.id), call)
        self.job = job(message)
        return self.job

    def _connect(self, transport: Transport, follower: _EventFollower) -> Iterator[JobEvent]:
        yield from self._grpc._watch(self.id, follower.last_seq, _stream_timeout(follower, self._grpc.timeout))


class AsyncGrpcJobHandle(AsyncJobHandle):
    """The ``AsyncGrpcClient`` twin of ``GrpcJobHandle``."""

    def __init__(self, client: AsyncGrpcClient, job: Job | str, *, request_id: str | None = None) -> None:
        super().__init__(client, job, request_id=request_id)  # type: ignore[arg-type]
        self._grpc = client

    async def status(self, **call: Unpack[CallOptions]) -> Job:
        message, _ = await self._grpc._unary("GetJob", pb.GetJobRequest(job_id=self.id), call)
        self.job = job(message)
        return self.job

    async def cancel(self, **call: Unpack[CallOptions]) -> Job:
        message, _ = await self._grpc._unary("CancelJob", pb.CancelJobRequest(job_id=self.id), call)
        self.job = job(message)
        return self.job

    async def _connect(self, transport: Transport, follower: _EventFollower) -> AsyncIterator[JobEvent]:
        async for event in self._grpc._watch(self.id, follower.last_seq, _stream_timeout(follower, self._grpc.timeout)):
            yield event


# --- resources (the HTTP client's names and signatures) -------------------------------------------


class GrpcImages:
    def __init__(self, client: GrpcClient) -> None:
        self._client = client

    def generate(self, prompt: str, **params: Unpack[GenerateParams]) -> ImageResults:
        """Text to image (``Generate``); blocks until the images are ready."""
        request, call = _generate_request(prompt, params)
        response, request_id = self._client._unary("Generate", request, call)
        return self._client._results(images_response(response), request_id=request_id)

    def edit(self, image: ImageInput, prompt: str, **params: Unpack[EditParams]) -> ImageResults:
        """Inpaint ``image`` where ``mask`` is transparent, or img2img without mask (``Edit``)."""
        request, call = _edit_request(image, prompt, params)
        response, request_id = self._client._unary("Edit", request, call)
        return self._client._results(images_response(response), request_id=request_id)

    def outpaint(self, image: ImageInput, prompt: str, **params: Unpack[OutpaintParams]) -> ImageResults:
        """Extend ``image`` by ``left``/``right``/``top``/``bottom`` pixels (``Outpaint``)."""
        request, call = _outpaint_request(image, prompt, params)
        response, request_id = self._client._unary("Outpaint", request, call)
        return self._client._results(images_response(response), request_id=request_id)


class GrpcJobs:
    def __init__(self, client: GrpcClient) -> None:
        self._client = client

    def submit(self, prompt: str, **params: Unpack[SubmitGenerateParams]) -> GrpcJobHandle:
        """Queue a text-to-image job and return at once with its handle (``SubmitJob``)."""
        body, call, key = generate_job(prompt, params)
        return self.create(body, idempotency_key=key, wait=_wait(params), **call)

    def submit_edit(self, image: ImageInput, prompt: str, **params: Unpack[SubmitEditParams]) -> GrpcJobHandle:
        """Queue an inpaint/img2img job (``mask``: transparent = repaint)."""
        body, call, key = edit_job(image, prompt, params)
        return self.create(body, idempotency_key=key, wait=_wait(params), **call)

    def submit_outpaint(self, image: ImageInput, prompt: str, **params: Unpack[SubmitOutpaintParams]) -> GrpcJobHandle:
        """Queue an outpaint job (``left``/``right``/``top``/``bottom`` pixels)."""
        body, call, key = outpaint_job(image, prompt, params)
        return self.create(body, idempotency_key=key, wait=_wait(params), **call)

    def create(
        self,
        request: AnyJobRequest,
        *,
        idempotency_key: str | None = None,
        wait: int | None = None,
        **call: Unpack[CallOptions],
    ) -> GrpcJobHandle:
        """``wait=N``: answered with the finished job when it ends within N seconds (REST's Prefer: wait)."""
        # One key per logical submit, reused by every retry: a lost answer never makes a second job.
        key = idempotency_key or str(uuid.uuid4())
        submit = _submit_request(request, wait_seconds(wait, call, self._client.timeout))
        message, request_id = self._client._unary("SubmitJob", submit, call, idempotency_key=key)
        return GrpcJobHandle(self._client, job(message), request_id=request_id)

    def get(self, job_id: str, **call: Unpack[CallOptions]) -> GrpcJobHandle:
        """Reattach to a job by id (fetches it once, so an unknown id raises ``NotFoundError`` here)."""
        handle = GrpcJobHandle(self._client, job_id)
        handle.status(**call)
        return handle

    def cancel(self, job_id: str, **call: Unpack[CallOptions]) -> Job:
        return GrpcJobHandle(self._client, job_id).cancel(**call)


class GrpcModels:
    def __init__(self, client: GrpcClient) -> None:
        self._client = client

    def list(self, **call: Unpack[CallOptions]) -> ModelList:
        response, _ = self._client._unary("ListModels", pb.ListModelsRequest(), call)
        return model_list(response)


class AsyncGrpcImages:
    def __init__(self, client: AsyncGrpcClient) -> None:
        self._client = client

    async def generate(self, prompt: str, **params: Unpack[GenerateParams]) -> ImageResults:
        request, call = _generate_request(prompt, params)
        response, request_id = await self._client._unary("Generate", request, call)
        return self._client._results(images_response(response), request_id=request_id)

    async def edit(self, image: ImageInput, prompt: str, **params: Unpack[EditParams]) -> ImageResults:
        request, call = _edit_request(image, prompt, params)
        response, request_id = await self._client._unary("Edit", request, call)
        return self._client._results(images_response(response), request_id=request_id)

    async def outpaint(self, image: ImageInput, prompt: str, **params: Unpack[OutpaintParams]) -> ImageResults:
        request, call = _outpaint_request(image, prompt, params)
        response, request_id = await self._client._unary("Outpaint", request, call)
        return self._client._results(images_response(response), request_id=request_id)


class AsyncGrpcJobs:
    def __init__(self, client: AsyncGrpcClient) -> None:
        self._client = client

    async def submit(self, prompt: str, **params: Unpack[SubmitGenerateParams]) -> AsyncGrpcJobHandle:
        body, call, key = generate_job(prompt, params)
        return await self.create(body, idempotency_key=key, wait=_wait(params), **call)

    async def submit_edit(
        self, image: ImageInput, prompt: str, **params: Unpack[SubmitEditParams]
    ) -> AsyncGrpcJobHandle:
        body, call, key = edit_job(image, prompt, params)
        return await self.create(body, idempotency_key=key, wait=_wait(params), **call)

    async def submit_outpaint(
        self, image: ImageInput, prompt: str, **params: Unpack[SubmitOutpaintParams]
    ) -> AsyncGrpcJobHandle:
        body, call, key = outpaint_job(image, prompt, params)
        return await self.create(body, idempotency_key=key, wait=_wait(params), **call)

    async def create(
        self,
        request: AnyJobRequest,
        *,
        idempotency_key: str | None = None,
        wait: int | None = None,
        **call: Unpack[CallOptions],
    ) -> AsyncGrpcJobHandle:
        key = idempotency_key or str(uuid.uuid4())
        submit = _submit_request(request, wait_seconds(wait, call, self._client.timeout))
        message, request_id = await self._client._unary("SubmitJob", submit, call, idempotency_key=key)
        return AsyncGrpcJobHandle(self._client, job(message), request_id=request_id)

    async def get(self, job_id: str, **call: Unpack[CallOptions]) -> AsyncGrpcJobHandle:
        handle = AsyncGrpcJobHandle(self._client, job_id)
        await handle.status(**call)
        return handle

    async def cancel(self, job_id: str, **call: Unpack[CallOptions]) -> Job:
        return await AsyncGrpcJobHandle(self._client, job_id).cancel(**call)


class AsyncGrpcModels:
    def __init__(self, client: AsyncGrpcClient) -> None:
        self._client = client

    async def list(self, **call: Unpack[CallOptions]) -> ModelList:
        response, _ = await self._client._unary("ListModels", pb.ListModelsRequest(), call)
        return model_list(response)

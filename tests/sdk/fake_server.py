"""An in-process fake of the huabu wire API, as an ``httpx.MockTransport`` handler.

It speaks exactly the wire types of ``huabu.sdk.types`` so the SDK's contract tests can run without Ray;
the same tests run against a real server when ``HUABU_TEST_BASE_URL`` is set (see ``conftest.py``).
Fault injection (``fail_next``, ``drop_next``) exists only here: it exercises the client's retry logic.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import httpx
import pydantic
from PIL import Image, PngImagePlugin

from huabu.sdk.types import (
    ERROR_STATUS,
    ErrorBody,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    ImageData,
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    Job,
    JobEvent,
    JobProgress,
    JobStatus,
    ModelInfo,
    ModelList,
    OutpaintRequest,
    decode_b64_image,
    job_request_adapter,
)

MODEL = "tiny@1"
DEFAULT_SIZE = (32, 32)
DEFAULT_STEPS = 4
BLOCKED_WORD = "forbidden"  # a prompt containing it is blocked with category "test"


class _Fail(Exception):
    def __init__(self, status: int, error: ErrorBody, headers: dict[str, str] | None = None) -> None:
        self.status, self.error, self.headers = status, error, headers or {}


def _fail(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> _Fail:
    return _Fail(ERROR_STATUS[type], ErrorBody(message=message, type=type, param=param, code=code))


@dataclass
class FakeJob:
    job: Job
    request: Any
    events: list[JobEvent] = field(default_factory=list)


@dataclass
class Fault:
    path: str
    method: str | None
    action: Callable[[httpx.Request], httpx.Response | None]


class FakeServer:
    base_url = "http://huabu.test"

    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.idempotency: dict[str, str] = {}
        self.files: dict[str, bytes] = {}
        self.requests: list[httpx.Request] = []
        self.feedback: list[FeedbackRequest] = []
        self.faults: list[Fault] = []
        self.api_key: str | None = None
        self._counter = 0

    # --- fault injection ------------------------------------------------------------------------

    def fail_next(
        self,
        path: str,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        method: str | None = None,
        body: Any = None,
        times: int = 1,
    ) -> None:
        def action(request: httpx.Request) -> httpx.Response:
            default = {"error": {"message": f"injected {status}", "type": "server_error", "param": None, "code": None}}
            return httpx.Response(status, headers=headers, json=default if body is None else body)

        self.faults.extend(Fault(path, method, action) for _ in range(times))

    def raise_next(self, path: str, exc: Exception, *, method: str | None = None) -> None:
        def action(request: httpx.Request) -> httpx.Response:
            raise exc

        self.faults.append(Fault(path, method, action))

    def drop_next(self, path: str, *, method: str | None = None) -> None:
        """Process the request normally, then lose the response (the client sees a read error)."""

        def action(request: httpx.Request) -> None:
            self._route(request)
            raise httpx.ReadError("response lost (injected)", request=request)

        self.faults.append(Fault(path, method, action))

    # --- transport ------------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        for fault in self.faults:
            if request.url.path == fault.path and fault.method in (None, request.method):
                self.faults.remove(fault)
                response = fault.action(request)
                if response is not None:
                    return response
                break
        return self._route(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def _route(self, request: httpx.Request) -> httpx.Response:
        self._counter += 1
        request_id = f"req_{self._counter}"
        try:
            if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
                raise _fail("invalid API key", "authentication_error")
            status, payload, headers = self._dispatch(request)
        except _Fail as exc:
            body = ErrorResponse(error=exc.error).model_dump(mode="json")
            return httpx.Response(exc.status, json=body, headers={"x-request-id": request_id, **exc.headers})
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"] if p not in ("generate", "edit", "outpaint")) or None
            body = ErrorResponse(error=ErrorBody(message=first["msg"], type="invalid_request_error", param=param))
            return httpx.Response(400, json=body.model_dump(mode="json"), headers={"x-request-id": request_id})
        headers = {"x-request-id": request_id, **headers}
        if isinstance(payload, bytes | str):
            return httpx.Response(status, content=payload, headers=headers)
        return httpx.Response(status, json=payload, headers=headers)

    def _dispatch(self, request: httpx.Request) -> tuple[int, Any, dict[str, str]]:
        path, method = request.url.path, request.method
        if path == "/v1/models" and method == "GET":
            return 200, ModelList(data=[ModelInfo(id=MODEL, created=1, owned_by="huabu")]).model_dump(), {}
        if path == "/v1/images/generations" and method == "POST":
            req = ImageGenerationRequest.model_validate_json(request.content)
            return 200, self._images(req, "generate").model_dump(mode="json", exclude_none=True), {}
        if path == "/v1/images/edits" and method == "POST":
            fields, files = _multipart(request)
            if "image" not in files:
                raise _fail("image is required", param="image")
            req = ImageEditRequest.model_validate(fields)
            size = _open(files["image"], "image").size
            if "mask" in files and _open(files["mask"], "mask").size != size:
                raise _fail("mask must be the size of the image", param="mask")
            return 200, self._images(req, "edit", size=size).model_dump(mode="json", exclude_none=True), {}
        if path == "/v1/images/outpaint" and method == "POST":
            req = OutpaintRequest.model_validate_json(request.content)
            w, h = _open(req.image_bytes(), "image").size
            size = (w + req.left + req.right, h + req.top + req.bottom)
            return 200, self._images(req, "outpaint", size=size).model_dump(mode="json", exclude_none=True), {}
        if path.startswith("/files/") and method == "GET":
            data = self.files.get(path.removeprefix("/files/"))
            if data is None:
                raise _fail("no such file", "not_found_error")
            return 200, data, {"content-type": "image/png"}
        if path == "/v1/feedback" and method == "POST":
            self.feedback.append(FeedbackRequest.model_validate_json(request.content))
            return 200, FeedbackResponse(recorded=True).model_dump(), {}
        if path == "/v1/jobs" and method == "POST":
            return self._submit(request)
        if path.startswith("/v1/jobs/"):
            job_id, _, tail = path.removeprefix("/v1/jobs/").partition("/")
            fake = self.jobs.get(job_id)
            if fake is None:
                raise _fail(f"no job with id {job_id!r}", "not_found_error", param="id")
            if method == "GET" and tail == "":
                return 200, fake.job.model_dump(mode="json"), {}
            if method == "DELETE" and tail == "":
                self._cancel(fake)
                return 200, fake.job.model_dump(mode="json"), {}
            if method == "GET" and tail == "events":
                return 200, self._sse(fake, request.headers.get("last-event-id")), {"content-type": "text/event-stream"}
        raise _fail(f"no route {method} {path}", "not_found_error")

    # --- images ---------------------------------------------------------------------------------

    def _images(self, req: Any, op: str, *, size: tuple[int, int] | None = None) -> ImagesResponse:
        if BLOCKED_WORD in req.prompt.lower():
            raise _fail("the prompt was blocked by the content policy", "content_policy_violation", code="test")
        if req.model not in (None, MODEL, MODEL.split("@")[0]):
            raise _fail(f"unknown model {req.model!r}", "not_found_error", param="model")
        size = size or getattr(req, "dimensions", None) or DEFAULT_SIZE
        data = []
        for i in range(req.n):
            seed = (req.seed if req.seed is not None else _derive_seed(req.prompt)) + i
            png = _png(size, seed, {"prompt": req.prompt, "seed": str(seed), "model": MODEL, "op": op})
            image_id = hashlib.sha256(png).hexdigest()[:16]
            item = ImageData(id=image_id, seed=seed, model=MODEL, metadata={"op": op})
            if req.response_format == "url":
                self.files[f"{image_id}.png"] = png
                item.url = f"{self.base_url}/files/{image_id}.png"
            else:
                item.b64_json = base64.b64encode(png).decode()
            data.append(item)
        return ImagesResponse(created=int(time.time()), data=data)

    # --- jobs -----------------------------------------------------------------------------------

    def _submit(self, request: httpx.Request) -> tuple[int, Any, dict[str, str]]:
        key = request.headers.get("idempotency-key")
        if key and key in self.idempotency:
            return 200, self.jobs[self.idempotency[key]].job.model_dump(mode="json"), {}
        req = job_request_adapter.validate_json(request.content)
        now = time.time()
        job = Job(
            id=f"job_{uuid.uuid4().hex[:12]}",
            status=JobStatus.queued,
            kind=req.kind,
            created_at=now,
            updated_at=now,
            progress=JobProgress(step=0, total=req.steps or DEFAULT_STEPS),
            model=MODEL,
        )
        self.jobs[job.id] = FakeJob(job=job, request=req)
        self.idempotency[key or job.id] = job.id
        return 200, job.model_dump(mode="json"), {}

    def _run(self, fake: FakeJob) -> None:
        """Run the whole job at once, recording the events a real server would stream."""
        if fake.job.status.is_terminal:
            return
        total = fake.job.progress.total
        fake.events.append(self._event(fake, "status", JobStatus.running, step=0, total=total))
        for step in range(1, total + 1):
            fake.events.append(self._event(fake, "progress", JobStatus.running, step=step, total=total))
        req = fake.request
        try:
            size = None
            if fake.job.kind == "outpaint":
                w, h = _open(req.image_bytes(), "image").size
                size = (w + req.left + req.right, h + req.top + req.bottom)
            elif fake.job.kind == "edit":
                size = _open(req.image_bytes(), "image").size
            result = self._images(req, fake.job.kind, size=size)
        except _Fail as exc:
            fake.job = fake.job.model_copy(update={"status": JobStatus.failed, "error": exc.error})
            fake.events.append(self._event(fake, "error", JobStatus.failed, error=exc.error))
            return
        fake.job = fake.job.model_copy(
            update={
                "status": JobStatus.succeeded,
                "result": result,
                "progress": JobProgress(step=total, total=total),
                "updated_at": time.time(),
            }
        )
        fake.events.append(self._event(fake, "result", JobStatus.succeeded, step=total, total=total, result=result))

    def _event(self, fake: FakeJob, type: str, status: JobStatus, **kw: Any) -> JobEvent:
        return JobEvent(type=type, job_id=fake.job.id, seq=len(fake.events), status=status, **kw)

    def _cancel(self, fake: FakeJob) -> None:
        if fake.job.status.is_terminal:
            return
        fake.job = fake.job.model_copy(update={"status": JobStatus.canceled, "updated_at": time.time()})
        fake.events.append(self._event(fake, "status", JobStatus.canceled))

    def _sse(self, fake: FakeJob, last_event_id: str | None) -> str:
        self._run(fake)
        after = int(last_event_id) if last_event_id is not None else -1
        chunks = [": keep-alive\n\n"]
        for event in fake.events:
            if event.seq > after:
                chunks.append(f"id: {event.seq}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n")
        return "".join(chunks)


def _derive_seed(prompt: str) -> int:
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")


def _png(size: tuple[int, int], seed: int, text: dict[str, str]) -> bytes:
    color = tuple(seed.to_bytes(8, "big")[-3:])
    image = Image.new("RGB", size, color)
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _open(data: bytes, param: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except Exception as exc:
        raise _fail(f"{param} is not a readable image", param=param) from exc


def _multipart(request: httpx.Request) -> tuple[dict[str, str], dict[str, bytes]]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise _fail("expected multipart/form-data")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.content
    )
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        raw = part.get_payload(decode=True)
        payload = raw if isinstance(raw, bytes) else b""
        if part.get_filename() is not None:
            files[str(name).removesuffix("[]")] = payload
        else:
            fields[str(name)] = payload.decode()
    return fields, files


def decode(data: str) -> bytes:
    return decode_b64_image(data)


def event_line(event: JobEvent) -> str:
    return f"data: {json.dumps(event.model_dump(mode='json'))}\n\n"

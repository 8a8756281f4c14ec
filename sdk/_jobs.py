"""Job handles: submit once, then follow progress, wait, fetch the result or cancel; reattach by id.

The state machine (which events are new, when a stream is finished, how long to back off before
reconnecting, what a finished job means) lives in ``_EventFollower`` and plain functions, shared by
``JobHandle`` and ``AsyncJobHandle``; the handles only add blocking or awaiting I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeGuard
from urllib.parse import quote

import httpx
import pydantic

from huabu.sdk import _ws, constants
from huabu.sdk._base import RequestOptions, Timeouts
from huabu.sdk._errors import (
    APIConnectionError,
    HuabuError,
    InvalidParameterError,
    JobCanceledError,
    JobTimeoutError,
    error_from_job,
)
from huabu.sdk._params import CallOptions, Unpack, request_options
from huabu.sdk._retry import backoff_delay
from huabu.sdk._sse import ServerSentEvent, SSEDecoder
from huabu.sdk.types import (
    MAX_PREFER_WAIT_S,
    EditJobRequest,
    GenerateJobRequest,
    ImagesResponse,
    Job,
    JobEvent,
    JobStatus,
    OutpaintJobRequest,
)

if TYPE_CHECKING:
    from huabu.sdk._client import AsyncClient, Client
    from huabu.sdk._results import ImageResults

Transport: TypeAlias = Literal["sse", "ws"]
AnyJobRequest: TypeAlias = GenerateJobRequest | EditJobRequest | OutpaintJobRequest
MAX_STREAM_RECONNECTS = 5  # consecutive failures without a single event in between

# --- request builders ----------------------------------------------------------------------------


def _job_path(job_id: str, suffix: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def wait_seconds(wait: int | None, call: CallOptions, timeouts: Timeouts | None) -> int | None:
    """The seconds to ask the server to wait (``Prefer: wait``, gRPC's ``wait_s``): ``wait``, never
    longer than this call may read (the server answers by then)."""
    if wait is None:
        return None
    if not 0 <= wait <= MAX_PREFER_WAIT_S:
        raise InvalidParameterError(f"wait must be 0 to {MAX_PREFER_WAIT_S} seconds, got {wait}", param="wait")
    read = Timeouts.coerce(call.get("timeout"), timeouts or Timeouts()).read
    return max(0, min(wait, int(read) - 5))


def prefer_wait(wait: int | None, call: CallOptions, timeouts: Timeouts | None) -> dict[str, str]:
    """The ``Prefer: wait=N`` header (none for ``wait=None``)."""
    seconds = wait_seconds(wait, call, timeouts)
    return {} if seconds is None else {"Prefer": f"wait={seconds}"}


def submit_options(
    body: AnyJobRequest,
    call: CallOptions,
    idempotency_key: str | None,
    wait: int | None = None,
    timeouts: Timeouts | None = None,
) -> RequestOptions:
    # One key per logical submit, generated before the first attempt: every retry of this call sends the
    # same key, so a submit whose response was lost cannot create a second job.
    headers = prefer_wait(wait, call, timeouts)
    return request_options(
        "POST",
        "/v1/jobs",
        f"jobs.submit.{body.kind}",
        call,
        json=body.model_dump(mode="json", exclude_none=True),
        idempotency_key=idempotency_key or str(uuid.uuid4()),
        headers=headers,
    )


def status_options(job_id: str, call: CallOptions) -> RequestOptions:
    return request_options("GET", _job_path(job_id), "jobs.get", call)


def cancel_options(job_id: str, call: CallOptions) -> RequestOptions:
    return request_options("DELETE", _job_path(job_id), "jobs.cancel", call)


def events_options(job_id: str, last_seq: int | None, timeouts: Timeouts) -> RequestOptions:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_seq is not None:
        headers["Last-Event-ID"] = str(last_seq)  # resume after the last event we saw
    return RequestOptions(
        method="GET", path=_job_path(job_id, "/events"), operation="jobs.events", headers=headers, timeout=timeouts
    )


def parse_sse(sse: ServerSentEvent) -> JobEvent | None:
    if sse.event not in ("message", "progress", "status", "result", "error") or not sse.data.strip():
        return None  # keep-alives and event types this SDK does not know
    try:
        return JobEvent.model_validate_json(sse.data)
    except pydantic.ValidationError as exc:
        raise HuabuError(f"malformed job event in the SSE stream: {exc}") from exc


def job_outcome(job: Job) -> ImagesResponse:
    """The result of a finished job, or the exception its failure corresponds to."""
    if job.status is JobStatus.succeeded and job.result is not None:
        return job.result
    if job.status is JobStatus.canceled:
        raise JobCanceledError(job.id)
    if job.status is JobStatus.failed and job.error is not None:
        raise error_from_job(job.error, job.id)
    raise HuabuError(f"job {job.id} ended as {job.status} without a result")


def event_from_job(job: Job, seq: int) -> JobEvent:
    """A terminal event made from a job snapshot, for a stream that closed before sending its own."""
    kind = {JobStatus.succeeded: "result", JobStatus.failed: "error"}.get(job.status, "status")
    return JobEvent(
        type=kind,
        job_id=job.id,
        seq=seq,
        status=job.status,
        step=job.progress.step,
        total=job.progress.total,
        result=job.result,
        error=job.error,
        reason=job.cancel_reason,
    )


class _EventFollower:
    """Dedupes events by ``seq``, tracks the deadline and the reconnect budget of one ``events()`` call."""

    def __init__(self, job_id: str, timeout: float | None, clock: Callable[[], float], base: Timeouts) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self._base = base
        self.last_seq: int | None = None
        self.failures = 0

    def accept(self, event: JobEvent) -> bool:
        self.failures = 0
        if self.last_seq is not None and event.seq <= self.last_seq:
            return False  # replayed after a reconnect
        self.last_seq = event.seq
        return True

    def check_deadline(self) -> None:
        if self._deadline is not None and self._clock() >= self._deadline:
            raise JobTimeoutError(self.job_id, self.timeout or 0.0)

    def timeouts(self) -> Timeouts:
        """Socket timeouts for the next connection: reads end at our deadline at the latest."""
        if self._deadline is None:
            return self._base
        remaining = max(self._deadline - self._clock(), 0.001)
        return Timeouts(
            connect=min(self._base.connect, remaining),
            read=min(self._base.read, remaining),
            write=min(self._base.write, remaining),
            pool=min(self._base.pool, remaining),
            total=min(self._base.total, remaining),
        )

    def on_failure(self, error: HuabuError) -> float:
        """Seconds to wait before reconnecting, or re-raise when the budget or the deadline is spent."""
        self.check_deadline()
        self.failures += 1
        if self.failures > MAX_STREAM_RECONNECTS:
            raise error
        return self._clip(backoff_delay(self.failures - 1))

    def on_open_end(self) -> float:
        """The stream closed cleanly without a terminal event (e.g. a gateway restart): pause, reconnect."""
        self.check_deadline()
        self.failures += 1
        if self.failures > MAX_STREAM_RECONNECTS:
            raise APIConnectionError(f"the event stream of job {self.job_id} keeps closing before the job ends")
        return self._clip(backoff_delay(self.failures - 1))

    def terminal(self, job: Job) -> JobEvent:
        return event_from_job(job, (self.last_seq if self.last_seq is not None else -1) + 1)

    def _clip(self, delay: float) -> float:
        if self._deadline is None:
            return delay
        return max(min(delay, self._deadline - self._clock()), 0.0)


def _finished(job: Job | None) -> TypeGuard[Job]:
    """A snapshot that already says everything ``result()`` needs (no request required)."""
    if job is None or not job.status.is_terminal:
        return False
    if job.status is JobStatus.succeeded:
        return job.result is not None
    return job.status is JobStatus.canceled or job.error is not None


def _check_transport(transport: str) -> None:
    if transport not in ("sse", "ws"):
        raise ValueError(f"transport must be 'sse' or 'ws', got {transport!r}")


class _HandleBase:
    id: str
    job: Job | None
    last_event: JobEvent | None

    def _remember(self, event: JobEvent) -> None:
        self.last_event = event
        if self.job is not None:
            progress = self.job.progress
            if event.step is not None and event.total is not None:
                progress = progress.model_copy(update={"step": event.step, "total": event.total})
            update: dict[str, Any] = {
                "status": event.status,
                "progress": progress,
                "queue_position": event.queue_position,  # none once it runs
                "eta_s": event.eta_s,
            }
            if event.reason is not None:
                update["cancel_reason"] = event.reason
            if event.result is not None:
                update["result"] = event.result
            if event.error is not None:
                update["error"] = event.error
            self.job = self.job.model_copy(update=update)

    def _ws_args(self, client: Any, timeouts: Timeouts, last_seq: int | None) -> tuple[str, dict[str, str]]:
        url = client._url(_job_path(self.id, "/ws"))
        headers = {k: v for k, v in client._headers(RequestOptions("GET", ""), url, 0).items() if k != "Accept"}
        if last_seq is not None:
            headers["Last-Event-ID"] = str(last_seq)
        return _ws.ws_url(url), headers

    def __repr__(self) -> str:
        status = self.job.status.value if self.job else "?"
        return f"{type(self).__name__}(id={self.id!r}, status={status})"


class JobHandle(_HandleBase):
    """A submitted job. Cheap to create from an id (``client.jobs.get(id)``); nothing runs client-side."""

    def __init__(self, client: Client, job: Job | str, *, request_id: str | None = None) -> None:
        self._client = client
        self.job = job if isinstance(job, Job) else None
        self.id = job.id if isinstance(job, Job) else job
        self.request_id = request_id
        self.last_event = None

    def status(self, **call: Unpack[CallOptions]) -> Job:
        """Fetch the job's current state (``GET /v1/jobs/{id}``)."""
        self.job = self._client._request_model(status_options(self.id, call), Job)
        return self.job

    def cancel(self, **call: Unpack[CallOptions]) -> Job:
        """Ask the server to stop the job at its next denoising step (``DELETE /v1/jobs/{id}``)."""
        self.job = self._client._request_model(cancel_options(self.id, call), Job)
        return self.job

    def events(self, *, transport: Transport = "sse", timeout: float | None = None) -> Iterator[JobEvent]:
        """Typed events until the job ends; reconnects (resuming after the last ``seq``) on dropped streams."""
        _check_transport(transport)
        follower = _EventFollower(self.id, timeout, self._client._clock, self._client.timeout)
        while True:
            try:
                for event in self._connect(transport, follower):
                    if follower.accept(event):
                        self._remember(event)
                        yield event
                        if event.is_terminal:
                            return
                    follower.check_deadline()
            except APIConnectionError as exc:  # dropped, timed out, refused: reconnect within budget
                self._client._sleep(follower.on_failure(exc))
                continue
            job = self.status()  # closed without a terminal event: maybe we missed it
            if job.status.is_terminal:
                event = follower.terminal(job)
                self.last_event = event
                yield event
                return
            self._client._sleep(follower.on_open_end())

    def _connect(self, transport: Transport, follower: _EventFollower) -> Iterator[JobEvent]:
        timeouts = follower.timeouts()
        if transport == "ws":
            url, headers = self._ws_args(self._client, timeouts, follower.last_seq)
            yield from _ws.iter_events(url, headers, timeouts.connect, timeouts.read)
            return
        response = self._client._request(events_options(self.id, follower.last_seq, timeouts), stream=True)
        decoder = SSEDecoder()
        try:
            for line in response.iter_lines():
                follower.check_deadline()  # keep-alive comments must not extend a wait past its timeout
                sse = decoder.feed(line)
                parsed = parse_sse(sse) if sse is not None else None
                if parsed is not None:
                    yield parsed
            tail = decoder.flush()
            last = parse_sse(tail) if tail is not None else None
            if last is not None:
                yield last
        except httpx.TransportError as exc:
            raise APIConnectionError(f"event stream interrupted: {exc or type(exc).__name__}") from exc
        finally:
            response.close()

    def wait(
        self,
        timeout: float | None = constants.DEFAULT_WAIT_TIMEOUT,
        *,
        poll_interval: float | None = None,
        on_event: Callable[[JobEvent], None] | None = None,
        transport: Transport = "sse",
    ) -> Job:
        """Block until the job ends and return its final state (raises ``JobTimeoutError`` after ``timeout``).

        Follows the event stream by default; ``poll_interval`` polls ``GET /v1/jobs/{id}`` instead.
        """
        if _finished(self.job):
            return self.job
        if poll_interval is None:
            for event in self.events(transport=transport, timeout=timeout):
                if on_event is not None:
                    on_event(event)
            return self.status()
        deadline = None if timeout is None else self._client._clock() + timeout
        while True:
            job = self.status()
            if job.status.is_terminal:
                return job
            if deadline is not None and self._client._clock() + poll_interval > deadline:
                raise JobTimeoutError(self.id, timeout or 0.0)
            self._client._sleep(poll_interval)

    def result(self, timeout: float | None = constants.DEFAULT_WAIT_TIMEOUT, **wait: Any) -> ImageResults:
        """Wait, then the images; a failed job raises the error a direct call would (e.g. content policy)."""
        job = self.wait(timeout, **wait)
        return self._client._results(job_outcome(job), job_id=job.id)


class AsyncJobHandle(_HandleBase):
    """The ``AsyncClient`` twin of ``JobHandle``."""

    def __init__(self, client: AsyncClient, job: Job | str, *, request_id: str | None = None) -> None:
        self._client = client
        self.job = job if isinstance(job, Job) else None
        self.id = job.id if isinstance(job, Job) else job
        self.request_id = request_id
        self.last_event = None

    async def status(self, **call: Unpack[CallOptions]) -> Job:
        self.job = await self._client._request_model(status_options(self.id, call), Job)
        return self.job

    async def cancel(self, **call: Unpack[CallOptions]) -> Job:
        self.job = await self._client._request_model(cancel_options(self.id, call), Job)
        return self.job

    async def events(self, *, transport: Transport = "sse", timeout: float | None = None) -> AsyncIterator[JobEvent]:
        _check_transport(transport)
        follower = _EventFollower(self.id, timeout, self._client._clock, self._client.timeout)
        while True:
            try:
                async for event in self._connect(transport, follower):
                    if follower.accept(event):
                        self._remember(event)
                        yield event
                        if event.is_terminal:
                            return
                    follower.check_deadline()
            except APIConnectionError as exc:
                await self._client._sleep(follower.on_failure(exc))
                continue
            job = await self.status()
            if job.status.is_terminal:
                event = follower.terminal(job)
                self.last_event = event
                yield event
                return
            await self._client._sleep(follower.on_open_end())

    async def _connect(self, transport: Transport, follower: _EventFollower) -> AsyncIterator[JobEvent]:
        timeouts = follower.timeouts()
        if transport == "ws":
            url, headers = self._ws_args(self._client, timeouts, follower.last_seq)
            async for event in _ws.aiter_events(url, headers, timeouts.connect, timeouts.read):
                yield event
            return
        response = await self._client._request(events_options(self.id, follower.last_seq, timeouts), stream=True)
        decoder = SSEDecoder()
        try:
            async for line in response.aiter_lines():
                follower.check_deadline()  # keep-alive comments must not extend a wait past its timeout
                sse = decoder.feed(line)
                parsed = parse_sse(sse) if sse is not None else None
                if parsed is not None:
                    yield parsed
            tail = decoder.flush()
            last = parse_sse(tail) if tail is not None else None
            if last is not None:
                yield last
        except httpx.TransportError as exc:
            raise APIConnectionError(f"event stream interrupted: {exc or type(exc).__name__}") from exc
        finally:
            await response.aclose()

    async def wait(
        self,
        timeout: float | None = constants.DEFAULT_WAIT_TIMEOUT,
        *,
        poll_interval: float | None = None,
        on_event: Callable[[JobEvent], None] | None = None,
        transport: Transport = "sse",
    ) -> Job:
        if _finished(self.job):
            return self.job
        if poll_interval is None:
            async for event in self.events(transport=transport, timeout=timeout):
                if on_event is not None:
                    on_event(event)
            return await self.status()
        deadline = None if timeout is None else self._client._clock() + timeout
        while True:
            job = await self.status()
            if job.status.is_terminal:
                return job
            if deadline is not None and self._client._clock() + poll_interval > deadline:
                raise JobTimeoutError(self.id, timeout or 0.0)
            await self._client._sleep(poll_interval)

    async def result(self, timeout: float | None = constants.DEFAULT_WAIT_TIMEOUT, **wait: Any) -> ImageResults:
        job = await self.wait(timeout, **wait)
        return self._client._results(job_outcome(job), job_id=job.id)

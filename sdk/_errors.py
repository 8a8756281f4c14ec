"""Exception hierarchy mirroring HTTP status codes, and the one function that maps a response to it."""

from __future__ import annotations

from typing import Any

import httpx

from huabu.sdk._retry import parse_retry_after
from huabu.sdk.constants import REQUEST_ID_HEADER
from huabu.sdk.types import ERROR_STATUS, ErrorBody

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ContentPolicyViolationError",
    "HuabuError",
    "InternalServerError",
    "InvalidParameterError",
    "JobCanceledError",
    "JobTimeoutError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
    "error_from_body",
    "error_from_job",
    "error_from_response",
]


class HuabuError(Exception):
    """Base of every error the SDK raises."""


class APIConnectionError(HuabuError):
    """The request never got an HTTP answer (DNS, refused, reset, TLS, ...)."""

    def __init__(self, message: str = "connection error", *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request


class APITimeoutError(APIConnectionError):
    """A timeout or the call's total deadline expired before an answer arrived."""

    def __init__(self, message: str = "request timed out", *, request: httpx.Request | None = None) -> None:
        super().__init__(message, request=request)


class APIStatusError(HuabuError):
    """The server answered with an error status; carries its OpenAI-style error body."""

    status_code: int = 0

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        body: Any = None,
        response: httpx.Response | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.request_id = request_id
        self.type = type
        self.param = param
        self.code = code
        self.body = body
        self.response = response
        self.job_id = job_id  # set when the error is the outcome of a job
        self.hint: str | None = None  # the client's next step (a 401: where the key came from, or is)

    def __str__(self) -> str:
        where = [f"param={self.param}"] if self.param else []
        if self.request_id:
            where.append(f"request_id={self.request_id}")
        if self.job_id:
            where.append(f"job_id={self.job_id}")
        suffix = f" ({', '.join(where)})" if where else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{self.status_code} {self.message}{suffix}{hint}"


class BadRequestError(APIStatusError):
    status_code = 400


class InvalidParameterError(BadRequestError, ValueError):
    """An argument was rejected before anything was sent, in the words the server would use for it.

    A ``BadRequestError``, so one ``except`` catches a bad argument whichever side found it; no
    request id, since no request was made."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message, status_code=400, type="invalid_request_error", param=param)

    def __str__(self) -> str:
        return f"{self.message} (param={self.param})" if self.param and self.param not in self.message else self.message


class AuthenticationError(APIStatusError):
    status_code = 401


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class ConflictError(APIStatusError):
    status_code = 409


class UnprocessableEntityError(APIStatusError):
    status_code = 422


class RateLimitError(APIStatusError):
    status_code = 429

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after  # seconds the server asked us to wait, if it said


class ContentPolicyViolationError(BadRequestError):
    """The prompt or the generated image was blocked; ``category`` says which policy."""

    @property
    def category(self) -> str | None:
        return self.code


class InternalServerError(APIStatusError):
    """Any 5xx (``except InternalServerError`` catches 503 too)."""

    status_code = 500


class ServiceUnavailableError(InternalServerError):
    """503: overloaded or scaling from zero; retried automatically, honouring Retry-After."""

    status_code = 503


class JobCanceledError(HuabuError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was canceled")
        self.job_id = job_id


class JobTimeoutError(HuabuError, TimeoutError):
    """``wait()``/``result()`` gave up; the job itself keeps running and can be reattached by id."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(f"job {job_id} did not finish within {timeout:g} s (it keeps running; reattach by id)")
        self.job_id = job_id
        self.timeout = timeout


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    500: InternalServerError,
    503: ServiceUnavailableError,
}


def _error_class(status: int, error_type: str | None) -> type[APIStatusError]:
    if error_type == "content_policy_violation":
        return ContentPolicyViolationError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return InternalServerError if status >= 500 else APIStatusError


def error_from_body(
    status: int,
    error: ErrorBody,
    *,
    request_id: str | None = None,
    body: Any = None,
    response: httpx.Response | None = None,
    retry_after: float | None = None,
    job_id: str | None = None,
) -> APIStatusError:
    cls = _error_class(status, error.type)
    kwargs: dict[str, Any] = {
        "status_code": status,
        "request_id": request_id,
        "type": error.type,
        "param": error.param,
        "code": error.code,
        "body": body,
        "response": response,
        "job_id": job_id,
    }
    if cls is RateLimitError:
        kwargs["retry_after"] = retry_after
    return cls(error.message, **kwargs)


def error_from_job(error: ErrorBody, job_id: str) -> APIStatusError:
    """A failed job's error as the exception the same failure would raise on a direct call."""
    return error_from_body(ERROR_STATUS.get(error.type, 500), error, job_id=job_id)


def error_from_response(response: httpx.Response) -> APIStatusError:
    """Map an error response (body already read) to its exception, whatever the body looks like."""
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = response.text
    error: ErrorBody
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        try:
            error = ErrorBody.model_validate(body["error"])
        except ValueError:
            error = ErrorBody(message=str(body["error"]))
    elif isinstance(body, dict) and isinstance(body.get("detail"), str):  # a bare FastAPI/Starlette error
        error = ErrorBody(message=body["detail"], type="")
    else:
        text = body if isinstance(body, str) and body.strip() else response.reason_phrase or "error"
        error = ErrorBody(message=text.strip()[:2000], type="")
    return error_from_body(
        response.status_code,
        error,
        request_id=response.headers.get(REQUEST_ID_HEADER),
        body=body,
        response=response,
        retry_after=parse_retry_after(response.headers),
    )

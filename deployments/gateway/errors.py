"""API errors with the OpenAI error body ``{"error": {"message", "type", "param", "code"}}``.

Every failure the gateway answers goes through ``APIError`` so that the status, the error type
and the message that says what to fix are decided in one place."""

from __future__ import annotations

from huabu.sdk.types import ERROR_STATUS, ErrorBody, ErrorResponse


class APIError(Exception):
    def __init__(
        self,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.status = status if status is not None else ERROR_STATUS.get(type, 500)
        self.headers = headers or {}

    def body(self) -> ErrorBody:
        return ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code)

    def response_body(self) -> dict[str, object]:
        return ErrorResponse(error=self.body()).model_dump()


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(message, "invalid_request_error", param, code)


def not_found(message: str, param: str | None = None) -> APIError:
    return APIError(message, "not_found_error", param, status=404)


def overloaded(retry_after_s: int, what: str = "the model", message: str | None = None) -> APIError:
    return APIError(
        message or f"{what} is at capacity; retry after {retry_after_s} s",
        "service_unavailable",
        code="overloaded",
        status=503,
        headers={"Retry-After": str(retry_after_s)},
    )

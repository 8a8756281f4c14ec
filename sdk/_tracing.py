"""Client spans with opentelemetry-api only: a no-op unless the application configured an OTel SDK."""

from __future__ import annotations

from collections.abc import MutableMapping

import httpx
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

_tracer = trace.get_tracer("huabu.sdk")


def use_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Trace this SDK's calls with ``provider`` rather than the global one (None: the global one
    again), for applications and tests that keep the SDK's spans apart from their own."""
    global _tracer
    _tracer = trace.get_tracer("huabu.sdk", tracer_provider=provider)


def start_client_span(method: str, url: httpx.URL, operation: str | None) -> Span:
    # start_span, not start_as_current_span: the span outlives generator and await boundaries, and
    # attaching it to the context there would leak into the caller's context on abandonment.
    return _tracer.start_span(
        f"huabu {operation}" if operation else f"{method} {url.path}",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": method,
            "url.full": str(url.copy_with(query=None)),
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
        },
    )


def inject(span: Span, headers: MutableMapping[str, str]) -> None:
    """Add ``traceparent`` (and whatever else the global propagator writes) for ``span``."""
    propagate.inject(headers, context=trace.set_span_in_context(span))


def record_response(span: Span, response: httpx.Response, attempts: int) -> None:
    span.set_attribute("http.response.status_code", response.status_code)
    span.set_attribute("huabu.attempts", attempts)
    request_id = response.headers.get("x-request-id")
    if request_id:
        span.set_attribute("huabu.request_id", request_id)
    if response.status_code >= 400:
        span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status_code}"))


def record_error(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def start_rpc_span(method: str, address: str) -> Span:
    """The client span of one gRPC call, ``method`` as ``huabu.v1.Images/Generate`` (retries included)."""
    service, _, name = method.rpartition("/")
    host, _, port = address.rpartition(":")
    attributes: dict[str, str | int] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
    attributes["server.address"] = host or address
    if port.isdigit():
        attributes["server.port"] = int(port)
    return _tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)


def record_rpc(span: Span, code: str, code_number: int, attempts: int, request_id: str | None) -> None:
    span.set_attribute("rpc.grpc.status_code", code_number)
    span.set_attribute("huabu.attempts", attempts)
    if request_id:
        span.set_attribute("huabu.request_id", request_id)
    if code != "OK":
        span.set_status(Status(StatusCode.ERROR, code))

"""Tracing across the request path, and the one place each replica sets up its telemetry.

One trace per request: the SDK's client span, the gateway's server span, then one span per
deployment the request passes (``prompt_filter``, ``cache``, ``image_filter``, ``router``,
``model``) with the work inside each as children (``prompt_filter.check``, ``cache.lookup``,
``storage.put``, ``cache.write``, ``model.queue``, ``model.inference``, ...). Deployments are
separate processes, so the W3C ``traceparent`` of the current span travels explicitly in
``ModelRequest.traceparent``: each stage starts its span as a child of it and rewrites it for
the next stage. A job runs in its own trace whose root links to the request that submitted it.

Configuration is the standard ``OTEL_*`` variables, overridable per application through
``Settings.telemetry`` (which travels to every replica with the settings). Traces are off unless
an exporter or an endpoint is configured; then no tracer provider exists and every helper here
returns at once (a shared no-op object, no span, no context switch).

Every stage is timed into the ``huabu_stage_latency_s`` histogram whether or not it is traced.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import Any, ParamSpec, Protocol, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from huabu.deployments.core import metrics
from huabu.deployments.core.logging_json import configure_logging, request_id_var
from huabu.deployments.core.settings import Settings, TelemetrySettings

logger = logging.getLogger("huabu.telemetry")
W3C = TraceContextTextMapPropagator()
T = TypeVar("T")
P = ParamSpec("P")

_tracer: Tracer | None = None  # None: tracing is off in this process
_provider: Any = None  # the SDK TracerProvider, for force_flush
_configured = False


class Carrier(Protocol):
    """What travels between deployments (``ModelRequest``)."""

    traceparent: str | None
    request_id: str


# --- configuration --------------------------------------------------------------------------------


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def trace_exporter(settings: TelemetrySettings) -> str:
    """``otlp``, ``console`` or ``none``: settings, else OTEL_TRACES_EXPORTER, else otlp iff an
    endpoint is known (off by default, unlike the OTel SDK's own default of otlp)."""
    if (_env("OTEL_SDK_DISABLED") or "").lower() == "true":
        return "none"
    if settings.traces != "auto":
        return settings.traces
    named = (_env("OTEL_TRACES_EXPORTER") or "").split(",")[0].strip().lower()
    if named in ("otlp", "console", "none"):
        return named
    return "otlp" if traces_endpoint(settings) else "none"


def traces_endpoint(settings: TelemetrySettings) -> str | None:
    if settings.endpoint:
        return settings.endpoint.rstrip("/") + "/v1/traces"
    if _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


def make_sampler(name: str | None, arg: float | None) -> Any:
    """The standard OTEL_TRACES_SAMPLER names; None: the environment's (parentbased_always_on)."""
    from opentelemetry.sdk.trace import sampling

    name = (name or _env("OTEL_TRACES_SAMPLER") or "parentbased_always_on").lower()
    if arg is None:
        raw = _env("OTEL_TRACES_SAMPLER_ARG")
        arg = float(raw) if raw else 1.0
    ratio = sampling.TraceIdRatioBased(arg)
    samplers: dict[str, Any] = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(ratio),
    }
    if name not in samplers:
        raise ValueError(f"unknown trace sampler {name!r}; use one of {sorted(samplers)}")
    return samplers[name]


def configure(settings: Settings, component: str) -> None:
    """Set up metrics, JSON logs and (when configured) tracing for this replica process. Called
    by every deployment's constructor; the first call in a process wins."""
    global _configured, _tracer, _provider
    if _configured:
        return
    _configured = True
    t = settings.telemetry
    metrics.configure(settings.app_name, t.metrics)
    if t.json_logs:
        configure_logging({"app": settings.app_name, "component": component})
    exporter_name = trace_exporter(t)
    if exporter_name == "none":
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=traces_endpoint(t))  # headers, timeout: OTEL_EXPORTER_OTLP_*
    attributes = {"huabu.app": settings.app_name, "huabu.component": component}
    service = t.service_name or _env("OTEL_SERVICE_NAME") or "huabu"
    resource = Resource.create({**attributes, "service.name": service})  # + OTEL_RESOURCE_ATTRIBUTES
    provider = TracerProvider(resource=resource, sampler=make_sampler(t.sampler, t.sampler_arg))
    delay = t.export_delay_ms or int(_env("OTEL_BSP_SCHEDULE_DELAY") or 5000)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
    # Deliberately not the global provider: libraries that trace themselves when one is set
    # (FastAPI 0.165's native telemetry) would add a second, differently named server span.
    _provider, _tracer = provider, provider.get_tracer("huabu.deployments")
    logger.info("tracing on: exporter=%s service=%s", exporter_name, service)


def tracing_enabled() -> bool:
    return _tracer is not None


def flush(timeout_s: float = 5.0) -> bool:
    """Export every finished span now (tests, shutdown)."""
    return bool(_provider.force_flush(int(timeout_s * 1000))) if _provider is not None else True


# --- spans ----------------------------------------------------------------------------------------


class StageSpan:
    """A handle on the span of a stage; every method is a no-op when tracing is off. ``variant``,
    once set, also counts the stage's outcome and latency per variant."""

    __slots__ = ("span", "variant")

    def __init__(self, span: Span | None = None) -> None:
        self.span = span
        self.variant: str | None = None

    def set(self, **attributes: Any) -> None:
        if self.span is not None:
            self.span.set_attributes({f"huabu.{k}": v for k, v in attributes.items() if v is not None})

    def event(self, name: str, **attributes: Any) -> None:
        if self.span is not None:
            self.span.add_event(name, {k: v for k, v in attributes.items() if v is not None})


def traceparent_of(span: Span) -> str | None:
    carrier: dict[str, str] = {}
    W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def current_traceparent() -> str | None:
    return traceparent_of(trace.get_current_span()) if _tracer is not None else None


def _parent(traceparent: str | None) -> otel_context.Context:
    # An explicit empty context when there is none: a stage's span never inherits whatever the
    # replica's event loop happens to hold.
    return W3C.extract({"traceparent": traceparent}) if traceparent else otel_context.Context()


def carry(requests: Iterable[Carrier]) -> None:
    """Give requests about to leave this process the current span as their parent."""
    traceparent = current_traceparent()
    if traceparent is not None:
        for request in requests:
            request.traceparent = traceparent


@contextlib.contextmanager
def hop(name: str, request: Carrier, **attributes: Any) -> Iterator[StageSpan]:
    """The span of one deployment handling ``request``: a child of the caller's span, made the
    parent of whatever this deployment calls next (``request.traceparent`` is rewritten)."""
    token = request_id_var.set(request.request_id)
    start = time.perf_counter()
    stage = StageSpan()
    outcome = "error"
    try:
        if _tracer is None:
            yield stage
        else:
            attributes = {
                "request_id": request.request_id,
                "operation": getattr(request, "operation", None),
                **attributes,
            }
            attrs = {f"huabu.{k}": v for k, v in attributes.items() if v is not None}
            with _tracer.start_as_current_span(
                name, context=_parent(request.traceparent), kind=SpanKind.SERVER, attributes=attrs
            ) as span:
                stage.span = span
                request.traceparent = traceparent_of(span)
                yield stage
        outcome = "ok"
    finally:
        elapsed = time.perf_counter() - start
        metrics.stage_latency(name, elapsed)
        if stage.variant is not None:
            metrics.variant_request(stage.variant, outcome, elapsed)
        request_id_var.reset(token)


@contextlib.contextmanager
def work(name: str, **attributes: Any) -> Iterator[StageSpan]:
    """A child span of the current one for a piece of work inside a stage, timed as a stage."""
    start = time.perf_counter()
    try:
        if _tracer is None:
            yield StageSpan()
        else:
            with _tracer.start_as_current_span(
                name, attributes={f"huabu.{k}": v for k, v in attributes.items() if v is not None}
            ) as span:
                yield StageSpan(span)
    finally:
        metrics.stage_latency(name, time.perf_counter() - start)


def traced(name: str) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Decorate an async method as ``work(name)`` (storage calls)."""

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            with work(name):
                return await fn(*args, **kwargs)

        return wrapper

    return decorate


def event(name: str, **attributes: Any) -> None:
    """An event on the current span (job transitions)."""
    if _tracer is not None:
        trace.get_current_span().add_event(name, {k: v for k, v in attributes.items() if v is not None})


def retro_span(parent: StageSpan, name: str, start_ns: int, end_ns: int, **attributes: Any) -> None:
    """A finished child span for an interval measured elsewhere (queue wait, inference)."""
    metrics.stage_latency(name, max(0, end_ns - start_ns) / 1e9)
    if _tracer is not None and parent.span is not None:
        span = _tracer.start_span(
            name,
            context=trace.set_span_in_context(parent.span),
            start_time=start_ns,
            attributes={f"huabu.{k}": v for k, v in attributes.items() if v is not None},
        )
        span.end(end_time=max(start_ns, end_ns))


@contextlib.contextmanager
def job(job_id: str, submitted_by: str | None) -> Iterator[StageSpan]:
    """The root span of one job attempt, linked to the span of the request that submitted it."""
    token = request_id_var.set(job_id)
    try:
        if _tracer is None:
            yield StageSpan()
            return
        links = []
        if submitted_by:
            submitter = trace.get_current_span(W3C.extract({"traceparent": submitted_by})).get_span_context()
            if submitter.is_valid:
                links.append(Link(submitter, {"huabu.link": "submitted_by"}))
        with _tracer.start_as_current_span(
            "job",
            context=otel_context.Context(),
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={"huabu.job_id": job_id},
        ) as span:
            yield StageSpan(span)
    finally:
        request_id_var.reset(token)


def filter_decision(stage: StageSpan, side: str, decision: Any) -> None:
    """A safety decision (``side``: prompt or image) on the check's span and in the metrics;
    never the text it judged."""
    category = decision.category.value if decision.category is not None else None
    stage.set(
        decision="blocked" if decision.blocked else "allowed",
        check=decision.stage.value,
        category=category,
        rule_id=decision.rule_id,
        score=None if decision.score is None else round(float(decision.score), 4),
    )
    metrics.filter_decision(side, decision.blocked, category, decision.stage.value)


def replica_variant(default: str = "stable") -> str:
    """The variant a model replica serves, from its deployment name (``MMDiT-<variant>``)."""
    try:
        from ray import serve

        name = serve.get_replica_context().deployment
    except Exception:
        return default
    return name.split("-", 1)[1] if name.startswith("MMDiT-") else default


def model_done(stage: StageSpan, request: Any, result: Any, variant: str, enqueued_ns: int) -> None:
    """Attributes and child spans of a model call: queue wait, batch size, steps, inference time."""
    stage.set(
        variant=variant,
        model=result.model,
        steps=request.steps,
        batch_size=result.batch_size,
        queue_wait_s=round(result.queue_wait_s, 6),
        generation_s=round(result.generation_s, 6),
        cancelled=result.cancelled,
        job_id=request.job_id,
    )
    started_ns = enqueued_ns + int(result.queue_wait_s * 1e9)
    retro_span(stage, "model.queue", enqueued_ns, started_ns)
    retro_span(stage, "model.inference", started_ns, started_ns + int(result.generation_s * 1e9), steps=request.steps)
    metrics.model_result(variant, result.queue_wait_s, result.generation_s, request.steps)


# --- the gateway ----------------------------------------------------------------------------------


# gRPC codes that are the server's fault (OpenTelemetry's rule for server spans); the rest are the caller's.
_GRPC_SERVER_FAULTS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)


class RpcSpan(StageSpan):
    """The outcome of a gRPC call: its REST-equivalent status (for the request metrics) and code."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        super().__init__()
        self.status = 200

    def finished(self, status: int = 200, code: str = "OK", code_number: int = 0) -> None:
        self.status = status
        if self.span is not None:
            self.span.set_attribute("rpc.grpc.status_code", code_number)
            if code in _GRPC_SERVER_FAULTS:
                self.span.set_status(trace.Status(trace.StatusCode.ERROR, code))


@contextlib.contextmanager
def grpc_call(
    method: str, metadata: Iterable[tuple[str, Any]], request_id: str, *, stream: bool = False
) -> Iterator[RpcSpan]:
    """What ``HttpTelemetry`` does for an HTTP request, for one gRPC call to the gateway: the server
    span (a child of the caller's ``traceparent`` metadata), counted in the request metrics under
    the route ``huabu.v1.Images/Generate``, method ``GRPC``. A stream's span is not made current:
    its generator may be closed from another context, where detaching would fail."""
    start = time.perf_counter()
    call = RpcSpan()
    try:
        if _tracer is None:
            yield call
            return
        service, _, name = method.rpartition("/")
        carrier = {k: v for k, v in metadata if isinstance(v, str)}
        attrs = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name, "huabu.request_id": request_id}
        options: dict[str, Any] = {"context": W3C.extract(carrier), "kind": SpanKind.SERVER, "attributes": attrs}
        if stream:
            call.span = _tracer.start_span(method, **options)
            try:
                yield call
            finally:
                call.span.end()
        else:
            with _tracer.start_as_current_span(method, **options) as span:
                call.span = span
                yield call
    finally:
        metrics.http_request(method, "GRPC", call.status, time.perf_counter() - start)


class HttpTelemetry:
    """ASGI middleware (plain ASGI: no extra task or stream per request, unlike FastAPI's
    ``@app.middleware``): the request id on ``request.state`` and in log lines, the gateway's
    server span (a child of the caller's ``traceparent``), the request counter and latency
    histogram; a traced request's response carries its ``traceparent``. A streamed response is
    timed to its last byte."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from ray.serve.context import _get_serve_request_context
        from starlette.datastructures import Headers, MutableHeaders

        start = time.perf_counter()
        headers = Headers(scope=scope)
        # Serve's proxy assigns the request id (echoing a client's x-request-id) and puts it on
        # every response; logs, jobs and traces carry the same id.
        request_id = _get_serve_request_context().request_id or headers.get("x-request-id", "")
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        method, status = scope["method"], 500
        span: Span | None = None
        route: str | None = None  # the route template, once the app has answered

        async def send_observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                parent = (
                    traceparent_of(span) if span is not None and span.get_span_context().trace_flags.sampled else None
                )
                if parent is not None:
                    MutableHeaders(scope=message)["traceparent"] = parent
            await send(message)

        try:
            if _tracer is None:
                await self.app(scope, receive, send_observed)
                return
            with _tracer.start_as_current_span(
                f"{method} {scope['path']}",
                context=W3C.extract(headers),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "huabu.request_id": request_id},
            ) as span:
                await self.app(scope, receive, send_observed)
                route = _route(scope)  # the span needs it before it ends; the metrics reuse it
                span.update_name(f"{method} {route}")
                span.set_attributes({"http.route": route, "http.response.status_code": status})
                if status >= 500:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, f"HTTP {status}"))
        finally:
            metrics.http_request(route or _route(scope), method, status, time.perf_counter() - start)
            request_id_var.reset(token)


def _route(scope: dict[str, Any]) -> str:
    """The route template, not the path: bounded label values and span names. A request refused
    before routing (access control, size limits) is matched against the routes here."""
    route = scope.get("route")
    if route is None:
        from starlette.routing import Match

        app = scope.get("app")
        route = next((r for r in getattr(app, "routes", ()) if r.matches(scope)[0] == Match.FULL), None)
    return getattr(route, "path", None) or "unmatched"

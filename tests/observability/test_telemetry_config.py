"""Configuration from the standard OTEL_* variables (off by default), the shared no-op path, and
JSON-lines logs carrying request and trace ids. No Ray needed."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from huabu.deployments.core import telemetry
from huabu.deployments.core.logging_json import configure_logging, request_id_var
from huabu.deployments.core.messages import ModelRequest
from huabu.deployments.core.settings import Settings, TelemetrySettings

OTEL_VARS = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_traces_are_off_unless_configured(clean_env: pytest.MonkeyPatch) -> None:
    assert telemetry.trace_exporter(TelemetrySettings()) == "none"
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert telemetry.trace_exporter(TelemetrySettings()) == "otlp"
    assert telemetry.traces_endpoint(TelemetrySettings()) == "http://collector:4318/v1/traces"
    clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:4318/custom")
    assert telemetry.traces_endpoint(TelemetrySettings()) == "http://other:4318/custom"
    assert telemetry.traces_endpoint(TelemetrySettings(endpoint="http://set:1")) == "http://set:1/v1/traces"
    clean_env.setenv("OTEL_TRACES_EXPORTER", "none")
    assert telemetry.trace_exporter(TelemetrySettings()) == "none"
    assert telemetry.trace_exporter(TelemetrySettings(traces="console")) == "console"
    clean_env.setenv("OTEL_SDK_DISABLED", "true")
    assert telemetry.trace_exporter(TelemetrySettings(traces="otlp")) == "none"


def test_telemetry_settings_travel_with_the_settings() -> None:
    settings = Settings.load(environ={"HUABU__TELEMETRY__TRACES": "otlp", "HUABU__TELEMETRY__SAMPLER_ARG": "0.25"})
    assert settings.telemetry.traces == "otlp" and settings.telemetry.sampler_arg == 0.25
    with pytest.raises(ValueError, match="sampler_arg"):
        Settings.load(environ={}, telemetry={"sampler_arg": 2})


def test_standard_sampler_names(clean_env: pytest.MonkeyPatch) -> None:
    assert "ParentBased" in telemetry.make_sampler(None, None).get_description()
    clean_env.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    clean_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    assert telemetry.make_sampler(None, None).get_description() == "TraceIdRatioBased{0.1}"
    assert telemetry.make_sampler("always_off", None).get_description() == "AlwaysOffSampler"
    with pytest.raises(ValueError, match="unknown trace sampler 'sometimes'"):
        telemetry.make_sampler("sometimes", None)


def test_helpers_do_nothing_while_tracing_is_off() -> None:
    assert not telemetry.tracing_enabled()  # nothing configured in this process
    request = ModelRequest(operation="generate", prompt="p", seed=1, height=32, width=32, steps=2, guidance=1.0)
    with telemetry.hop("cache", request) as hop, telemetry.work("cache.lookup") as work:
        hop.set(cache_hit=True)
        work.event("x")
        assert hop.span is None and work.span is None
    telemetry.carry([request])
    assert request.traceparent is None and telemetry.current_traceparent() is None


def test_json_log_lines_carry_request_and_trace_ids() -> None:
    stream = io.StringIO()
    handler = configure_logging({"app": "t", "component": "test"}, stream=stream)
    tracer = TracerProvider().get_tracer("test")
    token = request_id_var.set("req-123")
    try:
        with tracer.start_as_current_span("work") as span:
            logging.getLogger("huabu.test").info("hello %s", "world", extra={"job_id": "job_1"})
    finally:
        request_id_var.reset(token)
        logging.getLogger("huabu").removeHandler(handler)
    line = json.loads(stream.getvalue().strip())
    context = span.get_span_context()
    assert line["message"] == "hello world" and line["level"] == "INFO" and line["logger"] == "huabu.test"
    assert line["request_id"] == "req-123" and line["job_id"] == "job_1" and line["component"] == "test"
    assert line["trace_id"] == f"{context.trace_id:032x}" and line["span_id"] == f"{context.span_id:016x}"

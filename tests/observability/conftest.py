"""Fixtures for the observability tests: a real OTLP/HTTP receiver, an application that exports its
traces to it, and an SDK client whose spans go to the same receiver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from otlp_receiver import OTLPReceiver


@pytest.fixture(scope="session")
def otlp() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def traced_app(deploy_app: Any, otlp: OTLPReceiver) -> Any:
    """An application whose replicas export every span to the receiver within ~0.1 s."""
    return deploy_app(
        lifetime="dir",
        telemetry={"traces": "otlp", "endpoint": otlp.endpoint, "export_delay_ms": 100, "service_name": "huabu-test"},
    )


@pytest.fixture()
def traced_client(traced_app: Any, otlp: OTLPReceiver) -> Iterator[Any]:
    """A huabu SDK client whose client spans are exported to the receiver (not through the
    process-global provider, which other test modules expect to be unset)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from huabu.sdk import Client, _tracing

    provider = TracerProvider(resource=Resource.create({"service.name": "huabu-sdk-test"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp.endpoint}/v1/traces")))
    _tracing.use_tracer_provider(provider)
    client = Client(base_url=traced_app.base_url, max_retries=0)
    try:
        yield client
    finally:
        client.close()
        _tracing.use_tracer_provider(None)
        provider.shutdown()

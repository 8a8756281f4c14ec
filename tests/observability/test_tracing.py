"""One connected trace per request, from the SDK's client span through every deployment, exported
over OTLP/HTTP by each replica to a real receiver that decodes the protobuf payloads."""

from __future__ import annotations

import io
import time
import uuid
from collections import defaultdict

import pytest
from otlp_receiver import OTLPReceiver, ReceivedSpan
from PIL import Image

from huabu.sdk import BadRequestError, ContentPolicyViolationError, masks

pytestmark = [pytest.mark.serve, pytest.mark.slow]

GENERATE = "POST /v1/images/generations"
# child -> parent for the path of an uncached text-to-image request
MISS_PARENTS = {
    GENERATE: "huabu images.generate",
    "prompt_filter": GENERATE,
    "prompt_filter.check": "prompt_filter",
    "cache": "prompt_filter",
    "image_filter": "cache",
    "image_filter.check": "image_filter",
    "router": "image_filter",
    "model": "router",
    "model.queue": "model",
    "model.inference": "model",
    "storage.put": "cache",
    "cache.write": "cache",
}


def unique(prompt: str) -> str:
    return f"{prompt} {uuid.uuid4().hex[:6]}"  # never a cache hit from an earlier test or run


def client_trace_id(otlp: OTLPReceiver, request_id: str | None, timeout: float = 30.0) -> str:
    assert request_id
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = otlp.find(
            lambda s: (
                s.resource.get("service.name") == "huabu-sdk-test"
                and s.attributes.get("huabu.request_id") == request_id
            )
        )
        if found:
            return found[0].trace_id
        time.sleep(0.05)
    raise AssertionError(f"no client span for request {request_id}")


def tree(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    """Assert one root and no dangling parent, and index the spans by name."""
    ids = {s.span_id: s for s in spans}
    roots = [s.name for s in spans if not s.parent_id]
    assert len(roots) == 1, f"roots: {roots}"
    dangling = [s.name for s in spans if s.parent_id and s.parent_id not in ids]
    assert not dangling, f"spans whose parent never arrived: {dangling}"
    by_name: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for s in spans:
        by_name[s.name].append(s)
    return by_name


def assert_parents(spans: list[ReceivedSpan], parents: dict[str, str]) -> None:
    ids = {s.span_id: s for s in spans}
    for s in spans:
        if s.name in parents:
            assert ids[s.parent_id].name == parents[s.name], (s.name, ids[s.parent_id].name)


def assert_model_span(model: ReceivedSpan, steps: int) -> None:
    a = model.attributes
    assert a["huabu.variant"] == "stable" and a["huabu.steps"] == steps
    assert a["huabu.batch_size"] >= 1 and a["huabu.queue_wait_s"] >= 0 and a["huabu.generation_s"] > 0
    assert "@" in a["huabu.model"]  # name@version


def test_text_to_image_is_one_connected_trace(traced_client, otlp: OTLPReceiver) -> None:
    images = traced_client.images.generate(unique("a red circle"), seed=1, steps=3, size="32x32")
    assert images.job_id  # sent with Prefer: wait: a durable job, attempted inline in this request's trace
    trace_id = client_trace_id(otlp, images.request_id)
    spans = otlp.wait_for_trace(trace_id, set(MISS_PARENTS) | {"huabu images.generate", "cache.lookup"})
    by_name = tree(spans)
    assert_parents(spans, MISS_PARENTS)
    assert all(len(by_name[name]) == 1 for name in MISS_PARENTS)
    # A miss is looked up once, by the gateway; the cache stage trusts that lookup.
    assert_parents(spans, {"cache.lookup": GENERATE})
    assert len(by_name["cache.lookup"]) == 1 and by_name["cache.lookup"][0].attributes["huabu.cache_hit"] is False
    assert_model_span(by_name["model"][0], steps=3)
    assert by_name["router"][0].attributes["huabu.variant"] == "stable"
    assert by_name["cache"][0].attributes["huabu.cache_hit"] is False
    gateway = by_name[GENERATE][0]
    assert gateway.attributes["http.route"] == "/v1/images/generations"
    assert gateway.attributes["huabu.request_id"] == images.request_id
    assert by_name["prompt_filter.check"][0].attributes["huabu.decision"] == "allowed"
    # every replica exported its own spans: the tree really crosses processes
    components = {s.resource.get("huabu.component") for s in spans} - {None}
    assert components == {"gateway", "prompt_filter", "cache", "image_filter", "router", "model"}


def test_inpaint_is_one_connected_trace(traced_client, otlp: OTLPReceiver) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (20, 90, 200)).save(buffer, format="PNG")
    mask = masks.rectangle((32, 32), (8, 8, 24, 24))
    images = traced_client.images.edit(buffer.getvalue(), unique("a yellow sun"), mask=mask, seed=2, steps=3)
    trace_id = client_trace_id(otlp, images.request_id)
    parents = {**MISS_PARENTS, "POST /v1/images/edits": "huabu images.edit", "prompt_filter": "POST /v1/images/edits"}
    del parents[GENERATE]
    spans = otlp.wait_for_trace(trace_id, set(parents))
    by_name = tree(spans)
    assert_parents(spans, parents)
    assert by_name["cache"][0].attributes["huabu.operation"] == "edit"
    assert_model_span(by_name["model"][0], steps=3)


def test_cache_hit_is_a_short_trace_without_model_spans(traced_client, otlp: OTLPReceiver) -> None:
    prompt = unique("a blue square")
    traced_client.images.generate(prompt, seed=3, steps=2, size="32x32")
    hit = traced_client.images.generate(prompt, seed=3, steps=2, size="32x32")
    assert hit[0].cached
    trace_id = client_trace_id(otlp, hit.request_id)
    spans = otlp.wait_for_trace(trace_id, {GENERATE, "cache.lookup"})
    time.sleep(1.0)  # a span of another stage, were there one, would have been exported by now
    by_name = tree(otlp.trace(trace_id))
    # The gateway answers a hit itself: no other deployment takes part. It answered this very
    # request moments ago, so it remembers the result, PNG included: no index or storage read.
    stages = {"prompt_filter", "cache", "router", "model", "model.inference", "image_filter"}
    assert not (stages | {"cache.write", "storage.put", "storage.get"}) & set(by_name)
    lookup = by_name["cache.lookup"][0].attributes
    assert lookup["huabu.cache_hit"] is True and lookup["huabu.cache_source"] == "recent"
    assert_parents(spans, {"cache.lookup": GENERATE})


def test_blocked_prompt_trace_never_holds_the_prompt(traced_client, otlp: OTLPReceiver) -> None:
    secret = "naked woman okapi-" + uuid.uuid4().hex[:8]
    with pytest.raises(ContentPolicyViolationError) as raised:
        traced_client.images.generate(secret, steps=2, size="32x32")
    trace_id = client_trace_id(otlp, raised.value.request_id)
    spans = otlp.wait_for_trace(trace_id, {GENERATE, "prompt_filter", "prompt_filter.check"})
    time.sleep(1.0)
    spans = otlp.trace(trace_id)
    by_name = tree(spans)
    assert not {"cache", "router", "model"} & set(by_name)
    check = by_name["prompt_filter.check"][0].attributes
    assert check["huabu.decision"] == "blocked" and check["huabu.category"] == "sexual"
    assert by_name[GENERATE][0].attributes["http.response.status_code"] == 400
    for span in spans:  # names, attributes, events, status and resource, in their wire encoding
        assert secret.encode() not in span.raw, span.name
        assert b"okapi" not in span.raw, span.name


def test_job_trace_links_to_the_submitting_request(traced_client, otlp: OTLPReceiver) -> None:
    handle = traced_client.jobs.submit(unique("a green triangle"), seed=4, steps=4, size="32x32")
    result = handle.result(timeout=120)
    assert result[0].seed == 4
    submit_trace = client_trace_id(otlp, handle.request_id)
    submit_spans = otlp.wait_for_trace(submit_trace, {"huabu jobs.submit.generate", "POST /v1/jobs"})
    assert_parents(submit_spans, {"POST /v1/jobs": "huabu jobs.submit.generate"})
    tree(submit_spans)
    submit_span_ids = {s.span_id for s in submit_spans}

    deadline = time.monotonic() + 60
    while not (jobs := otlp.find(lambda s: s.name == "job" and s.attributes.get("huabu.job_id") == handle.id)):
        assert time.monotonic() < deadline, "no job span"
        time.sleep(0.1)
    (job,) = jobs
    assert job.parent_id == ""
    assert [(t, s) for t, s in job.links if t == submit_trace and s in submit_span_ids]
    job_parents = {k: v for k, v in MISS_PARENTS.items() if k not in (GENERATE, "prompt_filter")}
    job_parents["prompt_filter"] = "job"
    spans = otlp.wait_for_trace(job.trace_id, set(job_parents) | {"job"})
    by_name = tree(spans)
    assert_parents(spans, job_parents)
    model = by_name["model"][0]
    assert_model_span(model, steps=4)
    assert model.attributes["huabu.job_id"] == handle.id
    progress = [(e["step"], e["total"]) for name, e in model.events if name == "progress"]
    assert progress == [(i, 4) for i in range(1, 5)]
    assert [name for name, _ in job.events] == ["job.running", "job.succeeded"]


def test_grpc_call_is_one_connected_trace(traced_app, traced_client, otlp: OTLPReceiver, grpc_port: int) -> None:
    """A gRPC call continues the caller's trace like an HTTP request: the SDK's client span sends its
    ``traceparent`` as metadata, the gateway's server span is its child and the parent of every stage."""
    from huabu.sdk.grpc import GrpcClient

    rpc = "huabu.v1.Images/Generate"
    client = GrpcClient(f"127.0.0.1:{grpc_port}", application=traced_app.name, max_retries=0)
    images = client.images.generate(unique("a teal kite"), seed=1, steps=2, size="32x32")
    trace_id = client_trace_id(otlp, images.request_id)
    parents = {**MISS_PARENTS, "prompt_filter": rpc}
    del parents[GENERATE]
    spans = otlp.wait_for_trace(trace_id, set(parents) | {rpc})
    by_name = tree(spans)
    assert_parents(spans, parents)
    client_span, server_span = sorted(by_name[rpc], key=lambda s: s.kind, reverse=True)  # CLIENT=3, SERVER=2
    assert (client_span.kind, server_span.kind) == (3, 2) and server_span.parent_id == client_span.span_id
    assert server_span.attributes["rpc.system"] == "grpc" and server_span.attributes["rpc.method"] == "Generate"
    assert server_span.attributes["rpc.grpc.status_code"] == 0 == client_span.attributes["rpc.grpc.status_code"]
    assert server_span.attributes["huabu.request_id"] == images.request_id
    assert_model_span(by_name["model"][0], steps=2)
    # A refused call is the caller's fault: its code on the server span, but no error status.
    with client, pytest.raises(BadRequestError):
        client.images.generate(unique("x"), size="33x32", steps=2)
    deadline = time.monotonic() + 30
    while not (refused := otlp.find(lambda s: s.kind == 2 and s.attributes.get("rpc.grpc.status_code") == 3)):
        assert time.monotonic() < deadline, "no server span for the refused call"
        time.sleep(0.05)
    assert refused[0].name == rpc and not refused[0].status_message  # INVALID_ARGUMENT: not an error status

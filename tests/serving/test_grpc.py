"""huabu.v1.Images over Serve's gRPC proxy, with a real grpcio client against the deployed app:
the same images, jobs, keys and validation as HTTP (deployments/gateway/grpc_service.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers import Receiver, decode_png, png_bytes

from huabu.deployments.core.state import EmbeddedStore
from huabu.deployments.gateway import auth
from huabu.deployments.gateway.auth import key_hash, new_key
from huabu.deployments.gateway.grpc_service import error_metadata, status_code
from huabu.sdk.grpc_api import images_pb2 as pb
from huabu.sdk.grpc_api import images_pb2_grpc

pytestmark = pytest.mark.serve

SMALL = {"prompt": "a red circle on blue", "size": "32x32", "steps": 4}


@pytest.fixture(scope="module")
def admin_key() -> str:
    return new_key()[1]


@pytest.fixture(scope="module")
def grpc_app(deploy_app: Any, admin_key: str) -> Any:
    return deploy_app(
        auth={"enabled": True, "admin_key_sha256": key_hash(admin_key), "default_rate": "1000/min"},
        safety={"prompt_enabled": False, "image": {"enabled": False}},
    )


@pytest.fixture(scope="module")
def channel(grpc_port: int) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> images_pb2_grpc.ImagesStub:
    return images_pb2_grpc.ImagesStub(channel)


def meta(app: Any, key: str | None, **extra: str) -> list[tuple[str, str]]:
    """Metadata of a call to ``app``: Serve picks the application by the ``application`` key."""
    pairs = [("application", app.name), *extra.items()]
    return pairs + ([("authorization", f"Bearer {key}")] if key is not None else [])


def rpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_checked_in_stubs_match_the_proto() -> None:
    pytest.importorskip("grpc_tools")
    root = Path(__file__).resolve().parents[2]
    check = subprocess.run([sys.executable, "proto/generate.py", "--check"], cwd=root, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_generate_same_png_as_http(grpc_app, stub, admin_key) -> None:
    request = pb.GenerateRequest(seed=11, cache=pb.CACHE_MODE_BYPASS, **SMALL)
    response = stub.Generate(request, metadata=meta(grpc_app, admin_key), timeout=120)
    assert len(response.data) == 1 and response.data[0].WhichOneof("content") == "png"
    image = response.data[0]
    assert image.png.startswith(b"\x89PNG") and image.seed == 11 and image.model
    with grpc_app.client() as c:
        r = c.post(
            "/v1/images/generations",
            json={**SMALL, "seed": 11, "cache": "bypass"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
    assert r.status_code == 200, r.text
    assert base64.b64decode(r.json()["data"][0]["b64_json"]) == image.png

    url = stub.Generate(
        pb.GenerateRequest(seed=11, response_format=pb.RESPONSE_FORMAT_URL, **SMALL),
        metadata=meta(grpc_app, admin_key),
        timeout=120,
    ).data[0]
    assert url.WhichOneof("content") == "url"
    assert httpx.get(url.url, timeout=30).content == image.png


def test_list_models_and_reflection(grpc_app, stub, channel, admin_key) -> None:
    models = stub.ListModels(pb.ListModelsRequest(), metadata=meta(grpc_app, admin_key), timeout=30)
    assert models.data and models.data[0].id and models.data[0].sampling.max_steps > 0
    # Server reflection (Serve's gRPCOptions.enable_reflection), so grpcurl can list and call it.
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    services = {s.name for answer in answers for s in answer.list_services_response.service}
    assert "huabu.v1.Images" in services


def test_watched_job_streams_progress_then_result(grpc_app, stub, admin_key) -> None:
    md = meta(grpc_app, admin_key)
    job = stub.SubmitJob(pb.SubmitJobRequest(generate=pb.GenerateRequest(**{**SMALL, "steps": 6}, seed=3)), metadata=md)
    assert job.id.startswith("job_") and job.status == pb.JOB_STATUS_QUEUED and job.kind == "generate"
    events = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=md, timeout=120))
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    steps = [e.step for e in events if e.type == pb.JOB_EVENT_TYPE_PROGRESS]
    assert steps and steps[-1] == 6 and all(e.total == 6 for e in events if e.type == pb.JOB_EVENT_TYPE_PROGRESS)
    last = events[-1]
    assert last.type == pb.JOB_EVENT_TYPE_RESULT and last.status == pb.JOB_STATUS_SUCCEEDED
    assert last.result.data[0].png.startswith(b"\x89PNG")
    # Resumable: only the events after a seq, as SSE's Last-Event-ID.
    resumed = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.id, after_seq=seqs[-2]), metadata=md, timeout=30))
    assert [e.seq for e in resumed] == [seqs[-1]]
    done = stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md, timeout=30)
    assert done.status == pb.JOB_STATUS_SUCCEEDED and done.result.data[0].png == last.result.data[0].png
    # The same job over HTTP.
    with grpc_app.client() as c:
        r = c.get(f"/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {admin_key}"})
    assert r.json()["status"] == "succeeded"


def test_cancel_mid_stream(grpc_app, stub, admin_key) -> None:
    md = meta(grpc_app, admin_key)
    # Long enough that the cancel lands mid-run on a loaded CI machine too: the cancel ends it within a
    # few steps, so the test stays short.
    request = pb.GenerateRequest(prompt="a long one", size="64x64", steps=200, cache=pb.CACHE_MODE_BYPASS)
    job = stub.SubmitJob(pb.SubmitJobRequest(generate=request), metadata=md, timeout=30)
    stream = stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=md, timeout=120)
    seen, cancelled = [], None
    for event in stream:
        seen.append(event)
        # At the first progress event: status events (queue place, ETA) may come before it in any number.
        if event.type == pb.JOB_EVENT_TYPE_PROGRESS and cancelled is None:
            cancelled = stub.CancelJob(pb.CancelJobRequest(job_id=job.id), metadata=md, timeout=30)
            assert cancelled.id == job.id
    assert cancelled is not None, [e.type for e in seen]
    assert seen[-1].status == pb.JOB_STATUS_CANCELED, seen[-1]
    assert max(e.step for e in seen) < 200
    assert stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md, timeout=30).status == pb.JOB_STATUS_CANCELED


@pytest.mark.parametrize("key", [None, "hb_000000000000_wrongsecret", "not-a-key"])
def test_missing_or_invalid_key_is_unauthenticated(grpc_app, stub, key) -> None:
    for call in (
        lambda: stub.Generate(pb.GenerateRequest(**SMALL), metadata=meta(grpc_app, key), timeout=30),
        lambda: stub.ListModels(pb.ListModelsRequest(), metadata=meta(grpc_app, key), timeout=30),
    ):
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        assert "API key" in (error.details() or "") and "wrongsecret" not in (error.details() or "")
    watch = pb.WatchJobRequest(job_id="job_" + "0" * 24)
    error = rpc_error(lambda: list(stub.WatchJob(watch, metadata=meta(grpc_app, key), timeout=30)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def rich_status(error: grpc.RpcError) -> tuple[status_pb2.Status, dict[str, Any]]:
    """The ``grpc-status-details-bin`` trailer decoded with googleapis' own messages, not ours."""
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    details: dict[str, Any] = {}
    for packed in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if packed.Is(kind.DESCRIPTOR):
                details[kind.DESCRIPTOR.name] = kind()
                packed.Unpack(details[kind.DESCRIPTOR.name])
    return status, details


def test_unknown_job_is_not_found(grpc_app, stub, admin_key) -> None:
    md = meta(grpc_app, admin_key)
    for job_id in ("job_" + "0" * 24, "nope", ""):
        error = rpc_error(lambda j=job_id: stub.GetJob(pb.GetJobRequest(job_id=j), metadata=md, timeout=30))
        assert error.code() == grpc.StatusCode.NOT_FOUND and "job" in (error.details() or "")
        assert dict(error.trailing_metadata() or ())["error-param"] == "job_id"


def test_rate_limit_is_resource_exhausted(grpc_app, stub, admin_key) -> None:
    with grpc_app.client() as c:
        r = c.post(
            "/v1/admin/keys",
            json={"name": "grpc-slow", "scopes": ["generate"], "rate": "1/min"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
    key = r.json()["key"]
    stub.Generate(pb.GenerateRequest(seed=1, **SMALL), metadata=meta(grpc_app, key), timeout=120)
    error = rpc_error(lambda: stub.Generate(pb.GenerateRequest(seed=1, **SMALL), metadata=meta(grpc_app, key)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit" in (error.details() or "")
    trailing = dict(error.trailing_metadata() or ())
    assert trailing["error-code"] == "rate_limit_exceeded" and float(trailing["retry-after"]) > 0
    status, details = rich_status(error)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and status.message == error.details()
    assert details["RetryInfo"].retry_delay.seconds == int(trailing["retry-after"])
    assert details["ErrorInfo"].reason == "RATE_LIMIT_EXCEEDED" and details["ErrorInfo"].domain == "huabu"
    # A generate-scoped key is refused what only admin keys may do... (no admin RPC yet); its scope
    # still lets it read the models.
    assert stub.ListModels(pb.ListModelsRequest(), metadata=meta(grpc_app, key), timeout=30).data


BAD: list[tuple[pb.GenerateRequest, str]] = [
    (pb.GenerateRequest(), "prompt"),
    (pb.GenerateRequest(prompt="   "), "prompt"),
    (pb.GenerateRequest(prompt="x" * 4001), "prompt"),
    (pb.GenerateRequest(prompt="x", n=0), "n"),
    (pb.GenerateRequest(prompt="x", n=1000), "n"),
    (pb.GenerateRequest(prompt="x", steps=0), "steps"),
    (pb.GenerateRequest(prompt="x", steps=100000), "steps"),
    (pb.GenerateRequest(prompt="x", guidance_scale=-1), "guidance_scale"),
    (pb.GenerateRequest(prompt="x", guidance_scale=float("nan")), "guidance_scale"),
    (pb.GenerateRequest(prompt="x", seed=-5), "seed"),
    (pb.GenerateRequest(prompt="x", size="big"), "size"),
    (pb.GenerateRequest(prompt="x", size="33x32"), "size"),
    (pb.GenerateRequest(prompt="x", size="99999x99999"), "size"),
    (pb.GenerateRequest(prompt="x", model="no such model!"), "model"),
    (pb.GenerateRequest(prompt="x", response_format=7), "response_format"),  # type: ignore[arg-type]
    (pb.GenerateRequest(prompt="x", cache=42), "cache"),  # type: ignore[arg-type]
    (pb.GenerateRequest(prompt="x", user="u" * 300), "user"),
    (pb.GenerateRequest(prompt="x", negative_prompt="n" * 5000), "negative_prompt"),
]


def test_bad_messages_are_invalid_argument(grpc_app, stub, admin_key) -> None:
    md = meta(grpc_app, admin_key)
    for request, param in BAD:
        error = rpc_error(lambda r=request: stub.Generate(r, metadata=md, timeout=30))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, error)
        assert error.details(), request
        trailing = dict(error.trailing_metadata() or ())
        assert trailing.get("error-param") == param, (request, trailing, error.details())
        # The same, as google.rpc.Status details for grpc-go/java's rich-error helpers.
        status, details = rich_status(error)
        assert (status.code, status.message) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], error.details())
        assert [v.field for v in details["BadRequest"].field_violations] == [param]
        assert details["ErrorInfo"].metadata["param"] == param
        # The job door refuses the same message with the same words.
        job_error = rpc_error(
            lambda r=request: stub.SubmitJob(pb.SubmitJobRequest(generate=r), metadata=md, timeout=30)
        )
        assert (job_error.code(), job_error.details()) == (error.code(), error.details())
    error = rpc_error(lambda: stub.SubmitJob(pb.SubmitJobRequest(), metadata=md, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "generate" in (error.details() or "")
    unknown = rpc_error(lambda: stub.Generate(pb.GenerateRequest(prompt="x", model="nope@v9"), metadata=md))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND and "not served" in (unknown.details() or "")
    # Still serving.
    assert stub.Generate(pb.GenerateRequest(**SMALL), metadata=md, timeout=120).data[0].png


def test_edit_with_a_mask_keeps_every_unmasked_pixel(grpc_app, stub, admin_key) -> None:
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.full((32, 32, 4), 255, dtype=np.uint8)
    mask[:, 16:, 3] = 0  # transparent = repaint, as the multipart route reads it
    request = pb.EditRequest(
        image=png_bytes(image), mask=png_bytes(mask, "RGBA"), prompt="a green square", seed=3, steps=3
    )
    edited = stub.Edit(request, metadata=meta(grpc_app, admin_key), timeout=120).data[0]
    out = decode_png(edited.png)
    assert np.array_equal(out[:, :16], image[:, :16])
    assert not np.array_equal(out[:, 16:], image[:, 16:])
    # The same request over HTTP answers the same PNG.
    with grpc_app.client() as c:
        r = c.post(
            "/v1/images/edits",
            data={"prompt": "a green square", "seed": "3", "steps": "3"},
            files={"image": ("i.png", request.image), "mask": ("m.png", request.mask)},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
    assert r.status_code == 200, r.text
    assert base64.b64decode(r.json()["data"][0]["b64_json"]) == edited.png


def test_outpaint_grows_the_canvas_and_jobs_take_every_kind(grpc_app, stub, admin_key) -> None:
    md = meta(grpc_app, admin_key)
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    request = pb.OutpaintRequest(image=png_bytes(image), prompt="a red circle", right=16, bottom=8, seed=1, steps=3)
    out = decode_png(stub.Outpaint(request, metadata=md, timeout=120).data[0].png)
    assert out.shape == (40, 48, 3) and np.array_equal(out[:32, :32], image)
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255  # white = repaint
    edit = pb.EditRequest(image=png_bytes(image), mask=png_bytes(mask, "L"), prompt="blue", seed=2, steps=3)
    for submit in (pb.SubmitJobRequest(outpaint=request), pb.SubmitJobRequest(edit=edit)):
        job = stub.SubmitJob(submit, metadata=md, timeout=30)
        assert job.kind == submit.WhichOneof("request")
        last = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=md, timeout=120))[-1]
        assert last.status == pb.JOB_STATUS_SUCCEEDED, last
        done = decode_png(last.result.data[0].png)
        if job.kind == "outpaint":
            assert done.shape == (40, 48, 3) and np.array_equal(done[:32, :32], image)
        else:
            keep = mask == 0
            assert np.array_equal(done[keep], image[keep])


def test_bad_images_are_invalid_argument_naming_the_part(grpc_app, stub, admin_key) -> None:
    md = meta(grpc_app, admin_key)
    good = png_bytes(np.zeros((32, 32, 3), dtype=np.uint8))
    limit = grpc_app.settings.gateway.max_request_bytes
    huge = good + b"\0" * limit  # over the HTTP body limit, far under Serve's gRPC message limit
    cases: list[tuple[Any, str]] = [
        (lambda: stub.Edit(pb.EditRequest(image=huge, prompt="x"), metadata=md, timeout=60), "image"),
        (lambda: stub.Outpaint(pb.OutpaintRequest(image=huge, prompt="x", left=8), metadata=md, timeout=60), "image"),
        (
            lambda: stub.SubmitJob(
                pb.SubmitJobRequest(edit=pb.EditRequest(image=good, mask=huge, prompt="x")), metadata=md, timeout=60
            ),
            "mask",
        ),
        (lambda: stub.Edit(pb.EditRequest(image=b"not a png", prompt="x"), metadata=md, timeout=30), "image"),
        (lambda: stub.Edit(pb.EditRequest(prompt="x"), metadata=md, timeout=30), "image"),
        (lambda: stub.Edit(pb.EditRequest(image=good, mask=b"\x89PNG\r\n garbage", prompt="x"), metadata=md), "mask"),
        (lambda: stub.Edit(pb.EditRequest(image=good, mask=good[:40], prompt="x"), metadata=md, timeout=30), "mask"),
        (
            lambda: stub.Edit(
                pb.EditRequest(image=good, mask=png_bytes(np.zeros((16, 16), dtype=np.uint8), "L"), prompt="x"),
                metadata=md,
                timeout=30,
            ),
            "mask",
        ),
        (lambda: stub.Edit(pb.EditRequest(image=good, prompt="x", strength=2.0), metadata=md, timeout=30), "strength"),
        (lambda: stub.Outpaint(pb.OutpaintRequest(image=good, prompt="x"), metadata=md, timeout=30), None),
        (lambda: stub.Outpaint(pb.OutpaintRequest(image=good, prompt="x", left=-1), metadata=md), "left"),
    ]
    for call, param in cases:
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (param, error)
        assert error.details(), param
        if param is not None:
            trailing = dict(error.trailing_metadata() or ())
            assert trailing.get("error-param") == param, (param, trailing, error.details())
    # Still serving.
    assert stub.Edit(pb.EditRequest(image=good, prompt="x", steps=2), metadata=md, timeout=120).data[0].png


def test_a_deadline_shorter_than_the_work_ends_the_call_and_the_server_serves_on(deploy_app, stub) -> None:
    """The client's deadline ends the call at the deadline, unary or streamed, and the server serves
    on. That the abandoned work itself stops (counted steps) is tests/serving/test_step_scheduler.py::
    test_a_grpc_deadline_stops_a_request_batched_work; this model holds each batch a fixed time."""
    seconds = 3.0
    app = deploy_app(
        lifetime="test",
        model={"fixed_latency": {"seconds": seconds}, "max_batch_size": 1, "max_ongoing_requests": 1},
    )
    md = meta(app, None)

    def request(seed: int) -> pb.GenerateRequest:
        return pb.GenerateRequest(prompt="slow", size="32x32", steps=2, seed=seed, cache=pb.CACHE_MODE_BYPASS)

    stub.Generate(request(1), metadata=md, timeout=60)  # warm: first-call costs out of the timings
    started = time.monotonic()
    error = rpc_error(lambda: stub.Generate(request(2), metadata=md, timeout=1.0))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
    assert time.monotonic() - started < seconds  # at the deadline, not when the work would have ended
    assert stub.Generate(request(3), metadata=md, timeout=60).data[0].png  # served on

    # A watched job: the stream ends at the deadline; the job is not the watcher's, so it runs on.
    job = stub.SubmitJob(pb.SubmitJobRequest(generate=request(4)), metadata=md, timeout=30)
    started = time.monotonic()
    error = rpc_error(lambda: list(stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=md, timeout=1.0)))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - started < seconds
    last = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=md, timeout=60))[-1]
    assert last.status == pb.JOB_STATUS_SUCCEEDED, last


def test_a_generate_scope_key_is_refused_admin_and_a_scope_refusal_is_permission_denied(
    grpc_app, stub, admin_key
) -> None:
    # Every key has `generate` (admin includes it; a key needs a scope) and no RPC is admin-only, so
    # over gRPC a scope refusal cannot be provoked with a real key: the generate-scope key is shown
    # refused the admin API and served over gRPC, and the refusal the gRPC door raises maps to
    # PERMISSION_DENIED.
    with grpc_app.client() as c:
        admin = {"Authorization": f"Bearer {admin_key}"}
        key = c.post("/v1/admin/keys", json={"name": "grpc-generate", "scopes": ["generate"]}, headers=admin)
        assert key.status_code in (200, 201), key.text
        refused = c.get("/v1/admin/keys", headers={"Authorization": f"Bearer {key.json()['key']}"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"
    md = meta(grpc_app, key.json()["key"])
    assert stub.ListModels(pb.ListModelsRequest(), metadata=md, timeout=30).data
    forbidden = auth.forbidden(auth.GENERATE)
    assert status_code(forbidden) == grpc.StatusCode.PERMISSION_DENIED
    assert ("error-code", "insufficient_scope") in error_metadata(forbidden)


def test_job_options_and_their_events_travel_as_proto_fields(grpc_app, stub, admin_key) -> None:
    """#26/#29's job fields with plain stubs: preview_every, timeout_s, priority, cache_steps and wait_s
    (REST's Prefer: wait) go through the REST job model; previews come as bytes in the events; with
    `prefer: wait=0` metadata Generate answers only the job id (REST's 202) and the job runs on."""
    md = meta(grpc_app, admin_key)
    request = pb.GenerateRequest(
        prompt="a blue square",
        size="32x32",
        steps=4,
        seed=2,
        cache=pb.CACHE_MODE_BYPASS,
        preview_every=2,
        timeout_s=120,
        priority=pb.PRIORITY_BATCH,
        cache_steps=pb.CacheSteps(threshold=0.05),
    )
    job = stub.SubmitJob(pb.SubmitJobRequest(generate=request, wait_s=30), metadata=md, timeout=60)
    assert job.status == pb.JOB_STATUS_SUCCEEDED and job.result.data[0].png.startswith(b"\x89PNG")  # one call
    assert job.deadline_at - job.created_at == pytest.approx(120, abs=0.01)
    assert job.result.data[0].HasField("full_evaluations")  # cache_steps reached the model
    events = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=md, timeout=60))
    previews = [e.preview for e in events if e.HasField("preview")]
    assert [(p.width, p.height, p.media_type) for p in previews] == [(32, 32, "image/png")]
    assert decode_png(previews[0].data).shape == (32, 32, 3)

    slow = pb.GenerateRequest(prompt="slow", size="32x32", steps=30, cache=pb.CACHE_MODE_BYPASS)
    queued = stub.Generate(slow, metadata=[*md, ("prefer", "wait=0")], timeout=60)
    assert queued.job_id.startswith("job_") and not queued.data
    last = list(stub.WatchJob(pb.WatchJobRequest(job_id=queued.job_id), metadata=md, timeout=120))[-1]
    assert last.status == pb.JOB_STATUS_SUCCEEDED and last.result.data[0].png.startswith(b"\x89PNG")

    bad = [
        (pb.SubmitJobRequest(generate=pb.GenerateRequest(**SMALL), wait_s=61), "wait_s"),
        (pb.SubmitJobRequest(generate=pb.GenerateRequest(**SMALL, preview_every=0)), "preview_every"),
        (pb.SubmitJobRequest(generate=pb.GenerateRequest(**SMALL, timeout_s=-1)), "timeout_s"),
        (pb.SubmitJobRequest(generate=pb.GenerateRequest(**SMALL, priority=7)), "priority"),
        (pb.SubmitJobRequest(generate=pb.GenerateRequest(**SMALL, webhook=pb.Webhook(url="ftp://x/h"))), "webhook.url"),
        (
            pb.SubmitJobRequest(
                generate=pb.GenerateRequest(**SMALL, webhook=pb.Webhook(url="https://example.com/h", events=["done"]))
            ),
            "webhook.events.0",
        ),
    ]
    for message, param in bad:
        error = rpc_error(lambda m=message: stub.SubmitJob(m, metadata=md, timeout=30))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (param, error)
        assert dict(error.trailing_metadata() or ()).get("error-param") == param, (param, error.details())


def make_key(app: Any, admin_key: str, name: str) -> str:
    with app.client() as c:
        r = c.post(
            "/v1/admin/keys",
            json={"name": name, "scopes": ["generate"]},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["key"])


def reordered(message: Message) -> bytes:
    """``message`` serialized with its fields in reverse order (a parser merges them alike): another
    client's encoding of the same content."""
    parts = []
    for field, value in message.ListFields():
        one = type(message)()
        if field.message_type is not None:
            getattr(one, field.name).CopyFrom(value)
        else:
            setattr(one, field.name, value)
        parts.append(one.SerializeToString())
    return b"".join(reversed(parts))


def test_an_idempotency_key_is_bound_to_the_request_content_over_both_doors(grpc_app, stub, channel, admin_key) -> None:
    """One source of truth (access.request_fingerprint over REST's body form): the same key and the same
    content is the same job over gRPC and HTTP, whatever the encoding; other content is refused as
    HTTP refuses it (422 idempotency_key_reused -> INVALID_ARGUMENT); keys are the caller's own."""
    key, other_key = make_key(grpc_app, admin_key, "idem-a"), make_key(grpc_app, admin_key, "idem-b")
    idem = f"order-{uuid.uuid4().hex}"
    md = meta(grpc_app, key, **{"idempotency-key": idem})
    generate = pb.GenerateRequest(seed=11, guidance_scale=4.5, **SMALL)
    first = stub.SubmitJob(pb.SubmitJobRequest(generate=generate), metadata=md, timeout=60)
    # The same content, its fields in another order (and wait_s, REST's Prefer header, set): the same job.
    shuffled = reordered(generate)
    assert len(shuffled) < 128  # its length is one varint byte
    # wait_s (field 4) first, then generate (field 1, length-delimited) with its fields reversed.
    raw = pb.SubmitJobRequest(wait_s=0).SerializeToString() + b"\x0a" + bytes([len(shuffled)]) + shuffled
    assert raw != pb.SubmitJobRequest(generate=generate, wait_s=0).SerializeToString()
    assert pb.SubmitJobRequest.FromString(raw).generate == generate
    submit_raw = channel.unary_unary(
        "/huabu.v1.Images/SubmitJob", request_serializer=lambda b: b, response_deserializer=pb.Job.FromString
    )
    assert submit_raw(raw, metadata=md, timeout=60).id == first.id
    # The same content as REST's JSON body (keys in another order, 4.5 spelt alike): the same job.
    body = {
        "steps": 4,
        "size": "32x32",
        "kind": "generate",
        "guidance_scale": 4.5,
        "seed": 11,
        "prompt": SMALL["prompt"],
    }
    with grpc_app.client() as c:
        http_same = c.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem})
        http_other = c.post(
            "/v1/jobs", json={**body, "seed": 12}, headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem}
        )
    assert http_same.status_code == 202 and http_same.json()["id"] == first.id, http_same.text
    assert http_other.status_code == 422 and http_other.json()["error"]["code"] == "idempotency_key_reused"
    # Another message with the key: refused with HTTP's code, and no job made.
    for changed in (
        pb.SubmitJobRequest(generate=pb.GenerateRequest(seed=12, guidance_scale=4.5, **SMALL)),
        pb.SubmitJobRequest(outpaint=pb.OutpaintRequest(prompt="x", right=8)),
    ):
        error = rpc_error(lambda changed=changed: stub.SubmitJob(changed, metadata=md, timeout=60))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        trailing = dict(error.trailing_metadata() or ())
        assert trailing["error-code"] == "idempotency_key_reused" and trailing["error-param"] == "Idempotency-Key"
        assert "different request" in (error.details() or "")
    # Another API key's same idempotency key is its own job.
    theirs = stub.SubmitJob(
        pb.SubmitJobRequest(generate=generate),
        metadata=meta(grpc_app, other_key, **{"idempotency-key": idem}),
        timeout=60,
    )
    assert theirs.id != first.id
    # Reading calls ignore the key, as HTTP's GETs do: it stays bound to the job's content.
    stub.GetJob(pb.GetJobRequest(job_id=first.id), metadata=md, timeout=30)
    assert stub.SubmitJob(pb.SubmitJobRequest(generate=generate), metadata=md, timeout=60).id == first.id


def test_an_images_call_made_a_job_keeps_its_idempotency_key_over_both_doors(grpc_app, stub, admin_key) -> None:
    """Images calls with ``prefer: wait`` create a job named by the key: over HTTP too the key is the
    caller's and bound to the content (a multipart edit's form as its fields), so an edit through
    either door is one job, and another key's same idempotency key never answers with this job."""
    key, other_key = make_key(grpc_app, admin_key, "idem-edit-a"), make_key(grpc_app, admin_key, "idem-edit-b")
    image = png_bytes(np.random.default_rng(9).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    idem = f"edit-{uuid.uuid4().hex}"
    request = pb.EditRequest(image=image, prompt="a green square", seed=3, steps=3)
    md = meta(grpc_app, key, **{"idempotency-key": idem, "prefer": "wait=60"})
    first = stub.Edit(request, metadata=md, timeout=120)
    assert first.job_id and first.data, first

    def http_edit(api_key: str, seed: str = "3") -> httpx.Response:
        with grpc_app.client() as c:
            return c.post(
                "/v1/images/edits",
                data={"steps": "3", "seed": seed, "prompt": "a green square"},
                files={"image": ("i.png", image)},
                headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": idem, "Prefer": "wait=60"},
            )

    same = http_edit(key)
    assert same.status_code == 200 and same.headers["x-huabu-job-id"] == first.job_id, same.text
    assert base64.b64decode(same.json()["data"][0]["b64_json"]) == first.data[0].png
    other = http_edit(key, seed="4")
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused", other.text
    theirs = http_edit(other_key)
    assert theirs.status_code == 200 and theirs.headers["x-huabu-job-id"] != first.job_id, theirs.text
    # Generate: the same rule, the same code.
    gen_md = meta(grpc_app, key, **{"idempotency-key": idem + "-g", "prefer": "wait=60"})
    made = stub.Generate(pb.GenerateRequest(seed=5, **SMALL), metadata=gen_md, timeout=120)
    assert stub.Generate(pb.GenerateRequest(seed=5, **SMALL), metadata=gen_md, timeout=120).job_id == made.job_id
    error = rpc_error(lambda: stub.Generate(pb.GenerateRequest(seed=6, **SMALL), metadata=gen_md, timeout=120))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(error.trailing_metadata() or ())["error-code"] == "idempotency_key_reused"


def test_webhooks_as_the_message_field_or_as_metadata_are_delivered_signed(deploy_app, stub) -> None:
    """REST's two ways: the job's ``webhook`` (a field of every images message, so of SubmitJob's) and,
    on the images calls, the ``X-Huabu-Webhook`` headers as metadata (the same parser: its errors
    name the header); either makes the call a job whose events reach the receiver, signed with the
    key's secret."""
    admin = new_key()[1]
    app = deploy_app(
        auth={"enabled": True, "admin_key_sha256": key_hash(admin), "default_rate": "1000/min"},
        safety={"prompt_enabled": False, "image": {"enabled": False}},
        webhooks={"allow_private": True, "poll_interval_s": 0.2},  # the receiver is on 127.0.0.1
    )
    with app.client() as c:
        made = c.post("/v1/admin/keys", json={"name": "grpc-hooks"}, headers={"Authorization": f"Bearer {admin}"})
        key_id, key = made.json()["id"], made.json()["key"]
        secrets = c.post(f"/v1/admin/keys/{key_id}/webhook-secrets", headers={"Authorization": f"Bearer {admin}"})
    assert secrets.status_code == 201, secrets.text
    receiver = Receiver(secrets.json()["secret"])
    try:
        md = meta(app, key)
        hook = pb.Webhook(url=receiver.url)
        job = stub.SubmitJob(
            pb.SubmitJobRequest(generate=pb.GenerateRequest(seed=1, webhook=hook, **SMALL)), metadata=md, timeout=60
        )
        assert receiver.succeeded(job.id)["data"]["status"] == "succeeded"
        # Metadata on Generate: a job (its id in the answer), images in the answer, events to the hook.
        hooked = [*md, ("x-huabu-webhook", receiver.url), ("x-huabu-webhook-events", "succeeded")]
        answer = stub.Generate(pb.GenerateRequest(seed=2, **SMALL), metadata=hooked, timeout=120)
        assert answer.job_id.startswith("job_") and answer.data[0].png.startswith(b"\x89PNG")
        assert receiver.succeeded(answer.job_id)["data"]["id"] == answer.job_id
        for bad, param in (
            ([("x-huabu-webhook", "ftp://x/h")], "X-Huabu-Webhook"),
            ([("x-huabu-webhook-events", "succeeded")], "X-Huabu-Webhook"),  # events without a URL
            (
                [("x-huabu-webhook", receiver.url), ("x-huabu-webhook-secret-id", "whs_0000000000000000")],
                "X-Huabu-Webhook-Secret-Id",
            ),
        ):
            error = rpc_error(
                lambda bad=bad: stub.Generate(pb.GenerateRequest(**SMALL), metadata=[*md, *bad], timeout=60)
            )
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, error)
            assert dict(error.trailing_metadata() or ())["error-param"] == param, (bad, error.details())
    finally:
        receiver.server.shutdown()


def test_a_fingerprint_stored_before_canonical_ones_still_matches_its_body(grpc_app, admin_key) -> None:
    """Records written before ``request_fingerprint`` hold the sha256 of the body's bytes (kept for
    jobs.result_ttl_s): a retry of such a request after the upgrade is the same request, another
    body is still refused."""
    with grpc_app.client() as c:
        made = c.post("/v1/admin/keys", json={"name": "legacy"}, headers={"Authorization": f"Bearer {admin_key}"})
    key_id, key = made.json()["id"], made.json()["key"]
    idem = f"old-{uuid.uuid4().hex}"
    raw = json.dumps({"kind": "generate", "seed": 21, **SMALL}).encode()
    scoped = f"{key_id}:{hashlib.sha256(idem.encode()).hexdigest()}"

    async def store_legacy() -> None:
        store = EmbeddedStore(grpc_app.settings.state.namespace)
        await store.put(f"idemfp:{scoped}", hashlib.sha256(raw).hexdigest().encode(), ttl_s=600)

    asyncio.run(store_legacy())
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idem, "content-type": "application/json"}
    with grpc_app.client() as c:
        same = c.post("/v1/jobs", content=raw, headers=headers)
        other = c.post("/v1/jobs", content=raw.replace(b'"seed": 21', b'"seed": 22'), headers=headers)
    assert same.status_code == 202, same.text
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused", other.text

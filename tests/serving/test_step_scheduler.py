"""``model.scheduler: step`` through the deployed app: a request joins a running job mid-way and
gets the PNG it gets alone, the job keeps its progress and stops when cancelled, step caching (the
variant's default or the request's own) reports its full evaluations, and bad ``priority`` /
``cache_steps`` are 400s naming them. Under either scheduler, a request whose caller is gone (HTTP
client disconnected, gRPC deadline passed) stops between steps, counted on the model replica."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from helpers import sse_events, wait_job

from huabu.sdk.grpc_api import images_pb2 as pb
from huabu.sdk.grpc_api import images_pb2_grpc

pytestmark = pytest.mark.serve

# Step caching off, over the variant's default (step_app).
BODY = {"prompt": "a red circle", "seed": 11, "steps": 4, "size": "32x32", "guidance_scale": 3.0, "cache": "bypass"}
BODY["cache_steps"] = {"threshold": 0.0}


@pytest.fixture(scope="module")
def step_app(deploy_app):
    # Step caching by default on this variant: a request without cache_steps gets it.
    stable = {"model": "tiny-mmdit@v1", "weight": 100.0, "cache_steps": {"threshold": 1.0}}
    return deploy_app(model={"scheduler": "step", "max_batch_size": 4}, variants={"stable": stable})


def test_a_request_joining_a_running_job_gets_the_png_it_gets_alone(step_app) -> None:
    with step_app.client() as c:
        alone = c.post("/v1/images/generations", json=BODY)
        assert alone.status_code == 200, alone.text
        long = {"kind": "generate", "prompt": "a long job", "steps": 200, "size": "32x32", "cache": "bypass"}
        job_id = c.post("/v1/jobs", json=long).json()["id"]
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        joined = c.post("/v1/images/generations", json={**BODY, "priority": "interactive"})
        assert joined.status_code == 200, joined.text
        mid_way = c.get(f"/v1/jobs/{job_id}").json()["progress"]["step"]
        assert c.delete(f"/v1/jobs/{job_id}").status_code == 200
        job = wait_job(c, job_id)
        events = sse_events(c, job_id)
    image = joined.json()["data"][0]
    assert image["metadata"]["batch_size"] == "2"  # it ran beside the job, not after it
    assert image["b64_json"] == alone.json()["data"][0]["b64_json"]
    assert 2 < mid_way < 200  # the job went on while the request ran
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) < 200
    assert job["status"] == "canceled" and events[-1]["status"] == "canceled"


def test_step_caching_reports_full_evaluations(step_app) -> None:
    with step_app.client() as c:
        plain = c.post("/v1/images/generations", json={**BODY, "steps": 8}).json()["data"][0]
        cached = c.post("/v1/images/generations", json={**BODY, "steps": 8, "cache_steps": {"threshold": 1.0}})
        default = {k: v for k, v in BODY.items() if k != "cache_steps"}
        by_variant = c.post("/v1/images/generations", json={**default, "steps": 8})
    assert cached.status_code == 200, cached.text
    image = cached.json()["data"][0]
    assert plain.get("full_evaluations") is None  # only with step caching: threshold 0 turned it off
    assert 2 <= image["full_evaluations"] < 16  # 8 steps x (cond + uncond), most skipped
    defaulted = by_variant.json()["data"][0]  # the variant's default: the same as asked for explicitly
    assert (defaulted["b64_json"], defaulted["full_evaluations"]) == (image["b64_json"], image["full_evaluations"])


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"priority": "urgent"}, "priority"),
        ({"cache_steps": {"threshold": -0.5}}, "cache_steps.threshold"),
        ({"cache_steps": {"threshold": 1.5}}, "cache_steps.threshold"),
    ],
)
def test_bad_priority_and_cache_steps_are_400s_naming_them(step_app, extra, param) -> None:
    with step_app.client() as c:
        r = c.post("/v1/images/generations", json={**BODY, **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param, error


def counters(app: Any) -> dict[str, int]:
    """The stable model replica's work counts (``ModelStage.counters``)."""
    from ray import serve

    handle = serve.get_deployment_handle("MMDiT-stable", app_name=app.name)
    return dict(handle.counters.remote().result(timeout_s=30))


def abandoned(app: Any, start: Callable[[], Callable[[], None]]) -> dict[str, int]:
    """``start()`` sends a request and returns how to leave it; it is left once the model has run a
    few of its steps (or at once, when leaving is a deadline). -> the model replica's counts from
    before the request until nothing runs there any more."""
    before = counters(app)
    leave = start()
    deadline = time.monotonic() + 120
    while counters(app)["steps"] < before["steps"] + 3 and counters(app)["abandoned"] == before["abandoned"]:
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.05)
    leave()
    while (now := counters(app))["running"] or now["abandoned"] == before["abandoned"]:
        assert time.monotonic() < deadline, f"still running after its caller left: {now}"
        time.sleep(0.05)
    counts = {k: now[k] - before[k] for k in now}
    print("model replica counts while abandoned:", counts)
    return counts


def test_a_disconnected_http_caller_s_request_leaves_the_running_set(step_app) -> None:
    body = {**BODY, "steps": 200, "size": "128x128"}

    def start() -> Callable[[], None]:
        url = urlsplit(step_app.base_url)
        payload = json.dumps(body).encode()
        head = (
            f"POST {url.path}/v1/images/generations HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        sock = socket.create_connection((url.hostname, url.port))
        sock.sendall(head.encode() + payload)
        return sock.close  # the client goes away without reading the answer

    counts = abandoned(step_app, start)
    assert counts["abandoned"] == 1, counts
    assert 3 <= counts["steps"] < 200, counts  # it ran, then stopped long before its 200 steps
    assert counts["steps_after_abandoned"] <= 1, counts  # the iteration in flight at most


def test_a_grpc_deadline_stops_a_request_batched_work(app, grpc_port) -> None:
    """Request-level batching (``@serve.batch``): the deadline passes while the lone request's batch
    denoises; the batch stops at the next step instead of running its 200."""
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = images_pb2_grpc.ImagesStub(channel)
        md = [("application", app.name)]

        def request(size: str, steps: int) -> pb.GenerateRequest:
            return pb.GenerateRequest(prompt="slow", size=size, steps=steps, seed=3, cache=pb.CACHE_MODE_BYPASS)

        stub.Generate(request("32x32", 2), metadata=md, timeout=120)  # warm: the path to the model is open
        errors: list[grpc.RpcError] = []

        def start() -> Callable[[], None]:
            call = stub.Generate.future(request("512x512", 200), metadata=md, timeout=5.0)
            call.add_done_callback(lambda f: errors.append(f.exception()))
            return lambda: None  # the deadline leaves it

        counts = abandoned(app, start)
    assert errors and errors[0] is not None and errors[0].code() == grpc.StatusCode.DEADLINE_EXCEEDED, errors
    assert counts["abandoned"] == 1, counts
    assert counts["steps"] < 200, counts
    assert counts["steps_after_abandoned"] <= 1, counts

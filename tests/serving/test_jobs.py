"""Durable jobs: progress over SSE and WebSocket, cancellation between steps, idempotency, and
survival of killed model and gateway replicas (embedded store and Redis)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import ray
from helpers import sse_events, wait_job

pytestmark = pytest.mark.serve


def test_job_progress_over_sse_ends_with_the_result(app) -> None:
    with app.client() as c:
        r = c.post("/v1/jobs", json={"kind": "generate", "prompt": "a red circle", "seed": 9, "steps": 6})
        assert r.status_code == 202 and r.json()["status"] == "queued"
        job_id = r.json()["id"]
        events = sse_events(c, job_id)
        job = c.get(f"/v1/jobs/{job_id}").json()
    assert [e["seq"] for e in events] == list(range(len(events)))
    progress = [(e["step"], e["total"]) for e in events if e["type"] == "progress"]
    assert progress == [(i, 6) for i in range(1, 7)]
    assert events[-1]["type"] == "result" and events[-1]["status"] == "succeeded"
    assert events[-1]["result"]["data"][0]["seed"] == 9
    assert job["status"] == "succeeded" and job["progress"] == {"step": 6, "total": 6}


def test_job_events_over_websocket(app) -> None:
    from websockets.sync.client import connect

    with app.client() as c:
        job_id = c.post("/v1/jobs", json={"kind": "generate", "prompt": "蓝色方块", "steps": 3}).json()["id"]
    ws_url = app.base_url.replace("http://", "ws://") + f"/v1/jobs/{job_id}/ws"
    with connect(ws_url, open_timeout=30) as ws:
        events = [json.loads(m) for m in ws]
    assert events[0]["status"] == "queued" and events[-1]["type"] == "result"
    assert [e["step"] for e in events if e["type"] == "progress"] == [1, 2, 3]


def test_cancel_stops_a_running_job_between_steps(app) -> None:
    with app.client() as c:
        job_id = c.post("/v1/jobs", json={"kind": "generate", "prompt": "slow", "steps": 200}).json()["id"]
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert c.delete(f"/v1/jobs/{job_id}").status_code == 200
        job = wait_job(c, job_id)
        events = sse_events(c, job_id)
    assert job["status"] == "canceled" and job.get("result") is None
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps and max(steps) < 200
    assert events[-1]["status"] == "canceled"


def test_cancel_a_queued_job_and_idempotent_submits(app) -> None:
    body = {"kind": "generate", "prompt": "once", "seed": 1, "steps": 2}
    with app.client() as c:
        first = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "key-123"}).json()
        second = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "key-123"}).json()
        other = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "key-456"}).json()
        assert first["id"] == second["id"] != other["id"]
        done = wait_job(c, first["id"])
        assert done["status"] == "succeeded"
        # cancelling a finished job changes nothing
        assert c.delete(f"/v1/jobs/{first['id']}").json()["status"] == "succeeded"


def replica_actors(app_name: str, deployment: str) -> list:
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{app_name}#{deployment}#")
    ]
    return [ray.get_actor(n, namespace="serve") for n in names]


def run_and_kill(app, deployment: str, steps: int = 150) -> dict:
    """Submit a job, kill the deployment's replica mid-generation, return the finished job."""
    with app.client(timeout=30) as c:
        body = {"kind": "generate", "prompt": f"survive {deployment}", "seed": 3, "steps": steps, "cache": "bypass"}
        job_id = c.post("/v1/jobs", json=body).json()["id"]
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] < 1:
            assert time.monotonic() < deadline, "job never started"
            time.sleep(0.02)
        victims = replica_actors(app.name, deployment)
        assert victims
        for actor in victims:
            ray.kill(actor, no_restart=True)
        return wait_job(c, job_id, timeout=180)


@pytest.fixture(scope="module")
def redis_app(deploy_app, redis_url):
    return deploy_app(state={"backend": "redis", "redis_url": redis_url})


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["embedded", "redis"])
@pytest.mark.parametrize("deployment", ["MMDiT-stable", "Gateway"])
def test_accepted_jobs_survive_killed_replicas(request, app, backend: str, deployment: str) -> None:
    target = app if backend == "embedded" else request.getfixturevalue("redis_app")
    job = run_and_kill(target, deployment)
    assert job["status"] == "succeeded", job
    assert job["result"]["data"][0]["seed"] == 3


@pytest.mark.slow
def test_redis_store_keeps_jobs_across_gateway_restarts(redis_app, redis_url) -> None:
    import redis

    with redis_app.client() as c:
        job_id = c.post("/v1/jobs", json={"kind": "generate", "prompt": "kept", "steps": 2}).json()["id"]
        wait_job(c, job_id)
    keys = redis.Redis.from_url(redis_url).keys(f"{redis_app.name}:job:{job_id}*")
    assert {k.decode().rsplit(":", 1)[-1] for k in keys} >= {job_id, "events", "request"}


def test_concurrent_jobs_are_batched_by_the_model(app) -> None:
    with app.client() as c:
        body = {"kind": "generate", "prompt": "batch me", "steps": 80, "cache": "bypass"}
        ids = [c.post("/v1/jobs", json={**body, "seed": i}).json()["id"] for i in range(8)]
        jobs = [wait_job(c, i) for i in ids]
    sizes = [int(j["result"]["data"][0]["metadata"]["batch_size"]) for j in jobs]
    assert all(j["status"] == "succeeded" for j in jobs) and max(sizes) > 1, sizes


def test_overload_answers_503_with_retry_after_never_a_hang(deploy_app) -> None:
    small = deploy_app(
        lifetime="test", model={"max_batch_size": 1, "max_ongoing_requests": 1, "max_queued_requests": 1}
    )
    statuses: list[int] = []
    retry_after: list[str] = []

    def call() -> None:
        with small.client(timeout=60) as c:
            r = c.post("/v1/images/generations", json={"prompt": "busy", "steps": 100, "cache": "bypass"})
            statuses.append(r.status_code)
            if r.status_code == 503:
                retry_after.append(r.headers.get("retry-after", ""))
                assert r.json()["error"]["type"] == "service_unavailable"

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(statuses) == 8 and set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
    assert all(v.isdigit() for v in retry_after)


def test_a_state_store_outage_answers_503_never_500(deploy_app, redis_launcher, free_tcp_port, tmp_path) -> None:
    """With Redis down, routes that read or write the store answer 503 store_unavailable with
    Retry-After (the client retries), not a 500; they work again once Redis is back."""
    port = free_tcp_port()
    redis_proc = redis_launcher(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    app = deploy_app(lifetime="test", state={"backend": "redis", "redis_url": url}, cache={"enabled": False})
    try:
        with app.client(timeout=60) as c:
            job_id = c.post("/v1/jobs", json={"kind": "generate", "prompt": "outage", "steps": 2}).json()["id"]
            redis_proc.terminate()
            redis_proc.wait(10)
            answers = [
                c.get(f"/v1/jobs/{job_id}"),
                c.post("/v1/jobs", json={"kind": "generate", "prompt": "during the outage", "steps": 2}),
                c.get("/v1/usage"),
            ]
            for r in answers:
                assert r.status_code == 503, (r.request.url, r.status_code, r.text)
                assert r.json()["error"]["code"] == "store_unavailable" and r.headers["retry-after"] == "1"
            redis_proc = redis_launcher(port, tmp_path)
            deadline = time.monotonic() + 30
            while c.get(f"/v1/jobs/{job_id}").status_code != 404:  # Redis restarted empty: the job is gone
                assert time.monotonic() < deadline, "the gateway did not recover after Redis came back"
                time.sleep(0.5)
    finally:
        redis_proc.terminate()

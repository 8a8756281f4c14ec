"""What integrators ask of jobs, through the deployed app: Prefer: wait (one call, synchronous when it
can be), deadlines (timeout_s, Cancel-After), queue positions and ETAs of waiting jobs, previews in
progress events, and a 400 naming the parameter for each bad input."""

from __future__ import annotations

import time

import httpx
import pytest
from helpers import decode_png, sse_events, wait_job

from huabu.sdk import Client, Timeouts
from huabu.sdk.types import JobPreview

pytestmark = pytest.mark.serve
SMALL = {"kind": "generate", "size": "32x32", "cache": "bypass"}
# A job that outlasts a few seconds on any machine: 200 steps at 32x32 took under 3 s on a quiet one.
SLOW = {**SMALL, "size": "64x64", "steps": 200}


@pytest.fixture(scope="module")
def jobs_app(deploy_app):
    # One image at a time, so that jobs wait behind each other; positions updated often.
    return deploy_app(model={"max_batch_size": 1}, jobs={"queue_update_s": 0.2})


def test_prefer_wait_answers_200_when_done_and_202_when_not(jobs_app) -> None:
    with jobs_app.client(timeout=90) as c:
        done = c.post("/v1/jobs", json={**SMALL, "prompt": "quick", "steps": 2}, headers={"Prefer": "wait=30"})
        started = time.monotonic()
        slow = c.post("/v1/jobs", json={**SLOW, "prompt": "slow"}, headers={"Prefer": "wait=2"})
        waited = time.monotonic() - started
        c.delete(f"/v1/jobs/{slow.json()['id']}")
    assert done.status_code == 200 and done.headers["preference-applied"] == "wait=30", done.text
    assert done.json()["status"] == "succeeded" and done.json()["result"]["data"][0]["b64_json"]
    assert slow.status_code == 202 and slow.json()["status"] in ("queued", "running"), slow.text
    assert waited >= 2.0, waited  # it waited the N seconds asked for before answering 202


def test_a_deadline_cancels_a_running_job_between_steps(jobs_app) -> None:
    body = {**SLOW, "prompt": "too slow", "timeout_s": 60}
    with jobs_app.client(timeout=60) as c:
        r = c.post("/v1/jobs", json=body, headers={"Cancel-After": "3"})  # the tighter of the two
        assert r.status_code == 202 and r.json()["deadline_at"] - r.json()["created_at"] == pytest.approx(3, abs=0.01)
        job = wait_job(c, r.json()["id"])
        events = sse_events(c, job["id"])
    assert job["status"] == "canceled" and job["cancel_reason"] == "deadline_exceeded", job
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps and max(steps) < 200  # the model stopped between steps
    assert events[-1]["status"] == "canceled" and events[-1]["reason"] == "deadline_exceeded"


def test_queue_positions_count_down_to_zero_behind_a_busy_replica(jobs_app) -> None:
    with jobs_app.client(timeout=60) as c:
        blocker = c.post("/v1/jobs", json={**SMALL, "prompt": "blocker", "steps": 60}).json()["id"]
        while c.get(f"/v1/jobs/{blocker}").json()["progress"]["step"] < 1:
            time.sleep(0.05)
        ids = [c.post("/v1/jobs", json={**SMALL, "prompt": f"queued {i}", "steps": 30}).json()["id"] for i in range(6)]
        deadline = time.monotonic() + 30
        while c.get(f"/v1/jobs/{ids[-1]}").json().get("queue_position") is None:
            assert time.monotonic() < deadline, "no queue position on the last job"
            time.sleep(0.1)
        last = c.get(f"/v1/jobs/{ids[-1]}").json()
        assert 1 <= last["queue_position"] <= 5, last
        finished = [wait_job(c, i) for i in [blocker, *ids]]
        streams = {i: sse_events(c, i) for i in ids}
    assert all(j["status"] == "succeeded" for j in finished)
    for job_id, events in streams.items():
        positions = [e["queue_position"] for e in events if e.get("queue_position") is not None]
        assert positions and positions == sorted(positions, reverse=True), (job_id, positions)
        assert positions[-1] == 0, (job_id, positions)  # next in line before it started
        started = next(e["seq"] for e in events if e["type"] == "progress")
        assert all(e["seq"] < started for e in events if e.get("queue_position") is not None)
    etas = [e["eta_s"] for s in streams.values() for e in s if e.get("eta_s") is not None]
    assert etas and all(eta > 0 for eta in etas)


def test_previews_decode_as_images_of_the_stated_size(jobs_app) -> None:
    with jobs_app.client(timeout=60) as c:
        body = {**SMALL, "prompt": "a red circle", "steps": 6, "size": "64x64", "preview_every": 2}
        job_id = c.post("/v1/jobs", json=body).json()["id"]
        events = sse_events(c, job_id)
    with_preview = [e for e in events if e.get("preview")]
    assert [e["step"] for e in with_preview] == [2, 4], [(e["type"], e.get("step")) for e in events]
    for event in with_preview:
        preview = JobPreview.model_validate(event["preview"])
        pixels = decode_png(preview.bytes)
        assert pixels.shape == (preview.height, preview.width, 3) == (64, 64, 3)
        assert len(preview.b64_json) < 20_000  # a few KB
    assert events[-1]["status"] == "succeeded"


def test_the_sdk_passes_wait_timeout_and_previews(jobs_app) -> None:
    with Client(jobs_app.base_url, max_retries=0) as client:
        handle = client.jobs.submit("a blue square", size="32x32", steps=4, preview_every=2, wait=30, timeout_s=60)
        assert handle.job is not None and handle.job.status.value == "succeeded"  # answered in one call
        previews = [e.preview for e in client.jobs.get(handle.id).events() if e.preview is not None]
        assert [p.width for p in previews] == [32]


def test_images_generate_with_prefer_wait_answers_images_or_a_job_the_sdk_follows(jobs_app) -> None:
    """Prefer: wait on the OpenAI route: a durable job attempted inline; 200 with the images when done in
    time, else 202 with the job (Location), which the SDK follows to its images."""
    body = {"prompt": "quick circle", "size": "32x32", "steps": 2, "cache": "bypass"}
    with jobs_app.client(timeout=60) as c:
        done = c.post("/v1/images/generations", json=body, headers={"Prefer": "wait=30"})
        assert done.status_code == 200 and done.headers["preference-applied"] == "wait=30", done.text
        assert done.json()["data"][0]["b64_json"] and "status" not in done.json()  # an ImagesResponse
        job = c.get(f"/v1/jobs/{done.headers['x-huabu-job-id']}").json()
        assert job["status"] == "succeeded" and job["result"]["data"][0]["seed"] == done.json()["data"][0]["seed"]

    statuses: list[int] = []
    record = {"response": [lambda r: statuses.append(r.status_code) if r.request.method == "POST" else None]}
    # A 7 s read timeout makes the SDK ask for wait=2: the 150-step generation is answered 202.
    with (
        httpx.Client(event_hooks=record) as http,
        Client(jobs_app.base_url, max_retries=0, timeout=Timeouts(read=7), http_client=http) as client,
    ):
        images = client.images.generate("slow square", size="32x32", steps=150, seed=5, cache="bypass")
        job = client.jobs.get(images.job_id or "").job
    assert statuses == [202], statuses
    assert images[0].seed == 5 and decode_png(images[0].bytes).shape == (32, 32, 3)
    assert job is not None and job.status.value == "succeeded" and job.progress.step == 150


BAD_JOBS = [
    ({"webhook": {"url": "not a url"}}, {}, "webhook.url"),
    ({"webhook": {"url": "ftp://example.com/hook"}}, {}, "webhook.url"),
    ({"webhook": {"url": "https://example.com/" + "a" * 2100}}, {}, "webhook.url"),
    ({"webhook": {"url": "http://10.1.2.3/hook"}}, {}, "webhook.url"),  # private, and not allowed here
    ({"webhook": {"url": "http://127.0.0.1:8080/hook"}}, {}, "webhook.url"),
    ({"webhook": {"url": "http://[::1]/hook"}}, {}, "webhook.url"),
    ({"webhook": {"url": "http://169.254.169.254/latest"}}, {}, "webhook.url"),
    ({"webhook": {"url": "https://example.com/h", "events": ["done"]}}, {}, "webhook.events.0"),
    ({"preview_every": 0}, {}, "preview_every"),
    ({"preview_every": 5, "steps": 4}, {}, "preview_every"),
    ({"timeout_s": -1}, {}, "timeout_s"),
    ({}, {"Prefer": "wait=61"}, "Prefer"),
    ({}, {"Prefer": "wait=soon"}, "Prefer"),
    ({}, {"Cancel-After": "-5"}, "Cancel-After"),
]


@pytest.mark.parametrize(("extra", "headers", "param"), BAD_JOBS)
def test_bad_job_options_are_400_naming_the_parameter(jobs_app, extra, headers, param) -> None:
    with jobs_app.client() as c:
        r = c.post("/v1/jobs", json={**SMALL, "prompt": "x", **extra}, headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error


def test_a_webhook_without_a_signing_secret_is_refused(jobs_app) -> None:
    """Webhooks need a key's signing secret: without auth there is none, and the job is refused
    up front (400) rather than run with a webhook that could never be signed."""
    with jobs_app.client() as c:
        r = c.post("/v1/jobs", json={**SMALL, "prompt": "x", "webhook": {"url": "https://example.com/h"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "webhook", r.text

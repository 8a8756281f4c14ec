"""``model.scheduler: step`` through the deployed app: a request joins a running job mid-way and
gets the PNG it gets alone, the job keeps its progress and stops when cancelled, step caching
reports its full evaluations, and bad ``priority`` / ``cache_steps`` are 400s naming them."""

from __future__ import annotations

import time

import pytest
from helpers import sse_events, wait_job

pytestmark = pytest.mark.serve

BODY = {"prompt": "a red circle", "seed": 11, "steps": 4, "size": "32x32", "guidance_scale": 3.0, "cache": "bypass"}


@pytest.fixture(scope="module")
def step_app(deploy_app):
    return deploy_app(model={"scheduler": "step", "max_batch_size": 4})


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
    assert cached.status_code == 200, cached.text
    image = cached.json()["data"][0]
    assert plain.get("full_evaluations") is None  # only with cache_steps
    assert 2 <= image["full_evaluations"] < 16  # 8 steps x (cond + uncond), most skipped


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

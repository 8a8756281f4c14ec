"""The soak under faults, bounded (bench/soak.py runs it for minutes): 8 SDK clients against a
2-replica gateway on a real Redis for ~75 s while a model replica, a gateway replica and the Redis
server are killed once each. No accepted job may be lost, and no 5xx other than 503 + Retry-After.
And one request in flight on a killed gateway replica, watched closely: Ray 2.60's proxy would
answer it a bare 500; huabu's proxy middleware (cluster/serve_proxy.py) answers 503 + Retry-After."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = [pytest.mark.serve, pytest.mark.slow]


def load_soak() -> ModuleType:
    # bench/ is not a package; the test runs the benchmark's own driver so the two cannot drift.
    path = Path(__file__).resolve().parents[2] / "bench" / "soak.py"
    spec = importlib.util.spec_from_file_location("huabu_bench_soak", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_soak_under_faults_loses_no_job_and_answers_no_5xx_but_503(deploy_app, free_tcp_port, tmp_path) -> None:
    soak = load_soak()
    redis = soak.RedisServer(free_tcp_port(), tmp_path)
    redis.start()
    try:
        app = deploy_app(lifetime="test", **soak.app_overrides(redis.url))
        # state.namespace from deploy_app is kept: _merge overlays dicts key by key.
        cfg = soak.SoakConfig(clients=8, duration_s=65.0, redis_down_s=4.0, drain_s=60.0, job_timeout_s=60.0)
        report = soak.run_soak(app.base_url, app.name, redis, cfg, print)
        print(report.table())
    finally:
        redis.stop()
    assert all(f.recovered for f in report.faults), [(f.kind, f.recover_s) for f in report.faults]
    assert len(report.recorder.accepted) > 0 and not report.lost, report.lost
    # Every 5xx is a 503 with Retry-After, a request in flight on the killed gateway replica included.
    assert not report.bad_5xx(), report.bad_5xx()


def test_a_submit_in_flight_on_a_killed_gateway_gets_503_and_the_sdk_its_one_job(app) -> None:
    """The SDK's job submit (its default Idempotency-Key, ``Prefer: wait`` holding the request open
    in the gateway while the job runs) is in flight when the only gateway replica is killed. The
    caller sees no 500: the first attempt is answered 503 + Retry-After with the error body, and the
    retry, on the replacement replica with the same key, returns the same job, finished."""
    soak = load_soak()
    recorder = soak.Recorder()
    sent: list[bytes] = []
    key = f"gateway-loss-{uuid.uuid4()}"
    outcome: dict[str, Any] = {}

    def submit() -> None:
        with soak.make_client(app.base_url, recorder, 4, 240, lambda r: sent.append(r.read())) as client:
            try:
                outcome["job"] = client.jobs.submit(
                    "in flight", seed=5, steps=150, cache="bypass", idempotency_key=key, wait=60
                ).job
            except Exception as exc:  # the assertion below names it
                outcome["error"] = exc

    caller = threading.Thread(target=submit)
    caller.start()
    with app.client(timeout=30) as c:
        deadline = time.monotonic() + 60
        while not sent:
            assert time.monotonic() < deadline, "the SDK never sent its submit"
            time.sleep(0.05)
        # The same key and bytes name the same job (whichever request created it); once it runs,
        # the SDK's request is waiting in the gateway for it to end.
        headers = {"Idempotency-Key": key, "content-type": "application/json"}
        while (found := c.post("/v1/jobs", content=sent[0], headers=headers)).status_code == 409:
            assert time.monotonic() < deadline, "the key's job was never created"  # 409: still being created
            time.sleep(0.05)
        assert found.status_code in (200, 202), found.text
        job_id = found.json()["id"]
        while c.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] < 1:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        assert not outcome, f"the submit ended before the kill: {outcome}"
        soak.kill_replica(app.name, "Gateway")
    caller.join(240)
    job = outcome.get("job")
    print(f"statuses seen by the SDK: {dict(recorder.statuses)}; job {job and (job.id, job.status)}")
    assert "error" not in outcome, outcome  # four retries outlast a gateway replica's replacement
    assert 500 not in recorder.statuses, recorder.server_errors
    lost = [e for e in recorder.server_errors if e[1] == 503]
    assert lost, f"no 503 seen: the request was not in flight on the killed replica ({recorder.statuses})"
    _, _, retry_after, _, body = lost[0]
    assert retry_after == "1" and '"code": "gateway_replica_lost"' in body, lost[0]
    # The retry with the same key: the one job, run to its end.
    assert job is not None and job.id == job_id and soak.status_name(job.status) == "succeeded", job

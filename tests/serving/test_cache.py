"""The cache deployment on real Serve: hot prompts cost one generation, versions never mix,
single flight, metering, and a Redis that goes away and comes back."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import cast

import httpx
import numpy as np
import pytest
from ray import serve
from ray.serve import Deployment

from huabu.deployments.backends.mmdit.png import encode_png
from huabu.deployments.cache import CacheStage
from huabu.deployments.core.handles import Answering, replica_actor_options
from huabu.deployments.core.messages import ModelRequest, ModelResult
from huabu.deployments.core.settings import Settings

pytestmark = pytest.mark.serve


def generate(client: httpx.Client, **body: object) -> dict:
    r = client.post("/v1/images/generations", json={"steps": 3, **body})
    assert r.status_code == 200, r.text
    return r.json()["data"][0]


def stats(client: httpx.Client) -> dict:
    return client.get("/v1/admin/cache/stats").json()


def test_hot_prompt_costs_one_generation(app) -> None:
    with app.client() as c:
        before = stats(c)
        first = generate(c, prompt="科技蓝风格封面 hot")
        repeats = [generate(c, prompt="科技蓝风格封面 hot") for _ in range(5)]
        after = stats(c)
    assert not first["cached"] and all(r["cached"] for r in repeats)
    assert {r["seed"] for r in repeats} == {first["seed"]}  # unseeded: the seed is derived from the request
    assert {base64.b64decode(r["b64_json"]) for r in repeats} == {base64.b64decode(first["b64_json"])}
    assert after["misses"] - before["misses"] == 1 and after["hits"] - before["hits"] == 5
    assert after["saved_s"] > before["saved_s"] and 0 < after["hit_ratio"] <= 1


def test_a_hit_is_answered_by_the_gateway_alone(app) -> None:
    """A stored result passed both screens under the current policy, so a hit asks neither the
    prompt filter nor the cache stage (their counters stay still) and no model runs."""
    with app.client() as c:
        generate(c, prompt="gateway hit")
        before = c.get("/v1/admin/filters/stats").json()
        hits = [generate(c, prompt="gateway hit") for _ in range(3)]
        after = c.get("/v1/admin/filters/stats").json()
    assert all(h["cached"] for h in hits)
    assert after == before


def test_the_screening_policy_is_part_of_the_key(tmp_path) -> None:
    from huabu.deployments.core.messages import ModelRequest
    from huabu.deployments.core.result_cache import cache_key, screening_policy
    from huabu.deployments.core.settings import SafetySettings
    from huabu.filters.intent import bundled_classifier_path

    blocklist = tmp_path / "blocklist.yaml"
    blocklist.write_text("version: 1\nrules: []\n")
    custom = SafetySettings(prompt={"blocklists": [str(blocklist)]})
    policies = {
        screening_policy(SafetySettings()),
        screening_policy(SafetySettings(image={"nsfw_threshold": 0.5})),
        screening_policy(custom),
    }
    blocklist.write_text("version: 2\nrules: []\n")  # the same settings, another list
    policies.add(screening_policy(custom))
    # the intent layer's classifier (issue #32): retrained weights under the same path are another policy
    weights = tmp_path / "intent.npz"
    weights.write_bytes(bundled_classifier_path().read_bytes())
    retrained = SafetySettings(prompt={"intent_classifier": str(weights)})
    policies.add(screening_policy(retrained))
    weights.write_bytes(weights.read_bytes() + b"retrained")
    policies.add(screening_policy(retrained))
    assert len(policies) == 6
    request = ModelRequest(operation="generate", prompt="p", seed=1, height=32, width=32, steps=2, guidance=4.0)
    assert len({cache_key(request, policy) for policy in policies}) == 6
    assert screening_policy(SafetySettings()) == screening_policy(SafetySettings())


def test_bypass_refresh_and_explicit_seeds(app) -> None:
    with app.client() as c:
        base = generate(c, prompt="cache modes")
        bypass = generate(c, prompt="cache modes", cache="bypass")
        seeded = generate(c, prompt="cache modes", seed=base["seed"] + 1)
        refreshed = generate(c, prompt="cache modes", cache="refresh")
        again = generate(c, prompt="cache modes")
    assert not bypass["cached"] and bypass["seed"] != base["seed"]
    assert not seeded["cached"] and seeded["seed"] == base["seed"] + 1
    assert not refreshed["cached"] and refreshed["seed"] == base["seed"]
    assert again["cached"] and again["b64_json"] == base["b64_json"]


def test_url_hits_and_job_results_say_cached(app) -> None:
    with app.client() as c:
        generate(c, prompt="cached url", response_format="url")
        hit = generate(c, prompt="cached url", response_format="url")
        assert hit["cached"] and httpx.get(hit["url"]).content.startswith(b"\x89PNG")
        job = c.post("/v1/jobs", json={"kind": "generate", "prompt": "cached url", "steps": 3}).json()
        from helpers import wait_job

        done = wait_job(c, job["id"])
    assert done["status"] == "succeeded" and done["result"]["data"][0]["cached"] is True


def test_identical_concurrent_misses_share_one_model_call(app) -> None:
    results: list[dict] = []
    with app.client() as c:
        before = stats(c)

    def call() -> None:
        with app.client() as c:
            results.append(generate(c, prompt="single flight", steps=60))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    with app.client() as c:
        after = stats(c)
    assert len(results) == 6 and len({r["b64_json"] for r in results}) == 1
    assert after["misses"] - before["misses"] == 1
    assert (after["coalesced"] - before["coalesced"]) + (after["hits"] - before["hits"]) == 5


def test_another_model_version_never_gets_this_versions_image(deploy_app) -> None:
    two = deploy_app(
        lifetime="test",
        variants={"stable": {"model": "random-init@v0"}, "canary": {"model": "random-init@v1", "weight": 0}},
    )
    with two.client() as c:
        v0 = generate(c, prompt="versioned", seed=1)
        v1 = generate(c, prompt="versioned", seed=1, model="random-init@v1")
        v1_again = generate(c, prompt="versioned", seed=1, model="random-init@v1")
    assert v0["model"] == "random-init@v0" and v1["model"] == "random-init@v1"
    assert not v1["cached"] and v1["b64_json"] != v0["b64_json"]
    assert v1_again["cached"] and v1_again["model"] == "random-init@v1"


@pytest.mark.slow
def test_redis_outage_bypasses_the_cache_and_recovers(deploy_app, redis_launcher, free_tcp_port, tmp_path) -> None:
    port = free_tcp_port()
    redis_proc = redis_launcher(port, tmp_path)
    app = deploy_app(
        lifetime="test", cache={"backend": "redis", "redis_url": f"redis://127.0.0.1:{port}/0", "timeout_s": 0.3}
    )
    try:
        with app.client() as c:
            generate(c, prompt="outage")
            assert generate(c, prompt="outage")["cached"]
            redis_proc.terminate()
            redis_proc.wait(10)
            # New seeds: the cache stage still remembers the image it made moments ago for "outage".
            during = [
                c.post("/v1/images/generations", json={"prompt": "outage", "steps": 3, "seed": seed})
                for seed in range(3)
            ]
            assert [r.status_code for r in during] == [200, 200, 200]
            assert not any(r.json()["data"][0]["cached"] for r in during)
            assert stats(c)["local_errors"] >= 3
            redis_proc = redis_launcher(port, tmp_path)
            deadline = time.monotonic() + 30
            generate(c, prompt="outage again")  # re-populates after the restart (data was not persisted)
            while not generate(c, prompt="outage again")["cached"]:
                assert time.monotonic() < deadline, "caching did not resume after Redis came back"
                time.sleep(0.5)
    finally:
        redis_proc.terminate()


def redis_calls(url: str, command: str) -> int:
    import redis

    info = redis.Redis.from_url(url).info("commandstats")
    return int(info.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_hot_hit_costs_no_store_round_trip_and_a_cold_one_costs_one(deploy_app, redis_url: str) -> None:
    """The gateway remembers the results it answered for ``cache.recent_s``: repeats of a hot prompt
    read neither the index nor storage; once forgotten, a hit is one index read (GET and the LRU
    touch pipelined), never more."""
    app = deploy_app(lifetime="test", cache={"backend": "redis", "redis_url": redis_url, "recent_s": 2.0})
    with app.client() as c:
        first = generate(c, prompt="remembered by the gateway")
        wait_until(lambda: stats(c)["entries"] >= 1)  # the stage indexes it behind the answer
        before = {cmd: redis_calls(redis_url, cmd) for cmd in ("get", "zadd")}
        hot = [generate(c, prompt="remembered by the gateway", response_format=f) for f in ("b64_json", "url") * 3]
        during = {cmd: redis_calls(redis_url, cmd) for cmd in ("get", "zadd")}
        time.sleep(2.5)  # past recent_s: forgotten
        cold = generate(c, prompt="remembered by the gateway")
        after = {cmd: redis_calls(redis_url, cmd) for cmd in ("get", "zadd")}
    assert not first["cached"] and all(h["cached"] for h in hot) and cold["cached"]
    png = base64.b64decode(first["b64_json"])
    assert all(base64.b64decode(h["b64_json"]) == png for h in hot if h.get("b64_json"))
    assert base64.b64decode(cold["b64_json"]) == png
    assert during == before, "a remembered hit read the store"
    assert after["get"] - during["get"] == 1 and after["zadd"] - during["zadd"] == 1


def test_recent_results_are_bounded_in_count_bytes_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from huabu.deployments.core import result_cache as cache
    from huabu.deployments.core.settings import CacheSettings

    now = [100.0]
    monkeypatch.setattr(cache.time, "monotonic", lambda: now[0])
    recent = cache.RecentResults(CacheSettings(recent_s=5, recent_entries=3, recent_bytes=100))

    def result(size: int, key: str | None = "k.png") -> ModelResult:
        return ModelResult(png=b"x" * size, seed=0, model="m@1", prompt_truncated=False, storage_key=key)

    for name in "abcd":
        recent.put(name, result(10))
    assert recent.get("a") is None and [recent.get(n) is not None for n in "bcd"] == [True] * 3  # count bound
    recent.put("e", result(90))  # bytes: 10 + 10 + 90 > 100, least recently used out first
    assert recent.get("b") is None and recent.get("c") is None and recent.get("e") is not None
    assert recent.size_bytes == sum(len(r.png) for _, r in recent.entries.values()) <= 100
    recent.put("big", result(101))  # larger than the whole budget: never kept
    assert recent.get("big") is None
    now[0] += 5.1
    assert recent.get("e") is None and recent.size_bytes == 10  # expired, and its bytes given back
    assert cache.RecentResults(CacheSettings(recent_s=0)).get("x") is None


def test_the_cache_stage_answers_a_result_it_just_made_without_the_index(app) -> None:
    """The gateway looked the request up and missed (``looked_up``); the cache stage does not read
    the index again, yet a result it finished after that lookup is not generated twice."""
    from ray import serve

    from huabu.deployments.core.messages import ModelRequest

    stage = serve.get_deployment_handle("CacheStage", app.name)
    request = ModelRequest(
        "generate", "made moments ago", seed=7, height=32, width=32, steps=3, guidance=1.0, looked_up=True
    )
    with app.client() as c:
        before = stats(c)
        first = stage.generate.remote(request).result(timeout_s=120)
        again = stage.generate.remote(request).result(timeout_s=120)
        after = stats(c)
    assert not first.cached and again.cached
    assert again.png == first.png and again.storage_key == first.storage_key
    assert after["misses"] - before["misses"] == 1 and after["hits"] - before["hits"] == 1


@serve.deployment(max_ongoing_requests=16)
class LosesItsFirstCall(Answering):
    """The cache's next stage, whose first call never answers: a replica on a node that died."""

    def __init__(self) -> None:
        self.calls = 0

    def received(self) -> int:
        return self.calls

    async def generate(self, request: ModelRequest) -> ModelResult:
        self.calls += 1
        if self.calls == 1:
            await asyncio.Event().wait()
        return ModelResult(
            png=encode_png(np.zeros((8, 8, 3), np.uint8), {}),
            seed=request.seed,
            model=request.model or "",
            prompt_truncated=False,
        )


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_job_retry_never_waits_on_the_lost_call_it_retries(serve_port: int, tmp_path: Path) -> None:
    settings = Settings.load(
        environ={}, state={"namespace": "lostcall"}, storage={"local_dir": str(tmp_path), "public_base_url": "/"}
    )
    options = replica_actor_options(settings, num_cpus=0)
    stage = cast(Deployment, CacheStage).options(ray_actor_options=options)
    handle = serve.run(stage.bind(LosesItsFirstCall.options(ray_actor_options=options).bind(), settings), name="lost")
    try:
        request = ModelRequest("generate", "a lost call", 7, 32, 32, 4, 1.0, model="lost@v0")
        coalesced = handle.stats.remote().result(timeout_s=30).get("coalesced", 0)
        lost = handle.generate.remote(request)  # the first attempt: its call never comes back
        next_stage = serve.get_deployment_handle("LosesItsFirstCall", app_name="lost")
        wait_until(lambda: next_stage.received.remote().result(timeout_s=10) == 1)
        waiting = handle.generate.remote(request)  # the same image, not a retry: shares the lost call
        wait_until(lambda: handle.stats.remote().result(timeout_s=10).get("coalesced", 0) > coalesced)
        retried: ModelResult = handle.generate.remote(replace(request, retry=True)).result(timeout_s=60)
        assert retried.seed == 7 and not retried.cached
        later: ModelResult = handle.generate.remote(request).result(timeout_s=60)  # the retry's image
        assert later.cached and later.storage_key == retried.storage_key
        for stuck in (lost, waiting):
            with pytest.raises(TimeoutError):
                stuck.result(timeout_s=1)
    finally:
        serve.delete("lost")

"""Canary rollouts end to end on real model deployments: live weights under load without replica
restarts or failed requests, sticky assignment and overrides, feedback, automatic promotion of a
better canary and automatic rollback of a worse one (a lower-quality checkpoint)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from helpers import AB, FAST_POLICY, LIGHT, wait_rollout

from huabu.cluster import rollout_cli
from huabu.sdk import AsyncClient, Client, ConflictError
from huabu.sdk.types import RolloutList

pytestmark = [pytest.mark.serve, pytest.mark.slow]

# The synthetic caption language, so the adherence scorer can judge every image.
PROMPTS = ["a red circle on the left", "左边一个蓝色正方形", "a green triangle on the right", "右边有个 yellow circle"]


def generate(client: httpx.Client, user: str, seed: int, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"prompt": PROMPTS[seed % len(PROMPTS)], "seed": seed, "steps": 3}
    return client.post("/v1/images/generations", json=body, headers={"x-huabu-user": user, **(headers or {})})


class Load:
    """Background traffic from many users; every response is kept."""

    def __init__(self, client: httpx.Client, workers: int = 3) -> None:
        self.client = client
        self.workers = workers
        self.stop = threading.Event()
        self.responses: list[tuple[int, str | None]] = []  # (status, variant)
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(workers)

    def _run(self, k: int) -> None:
        rng = random.Random(k)
        while not self.stop.is_set():
            try:
                r = generate(self.client, f"user-{rng.randrange(10**6)}", rng.randrange(10**6))
                outcome = (r.status_code, r.json()["data"][0].get("variant") if r.status_code == 200 else r.text)
            except httpx.HTTPError as exc:  # a gateway being replaced
                outcome = (0, str(exc))
                time.sleep(0.2)
            with self.lock:
                self.responses.append(outcome)

    def __enter__(self) -> Load:
        for k in range(self.workers):
            self.pool.submit(self._run, k)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.pool.shutdown(wait=True)

    def count(self) -> int:
        with self.lock:
            return len(self.responses)

    def wait_for(self, variant: str, n: int = 2, timeout: float = 90.0) -> None:
        """Until ``n`` more responses came from ``variant``."""
        deadline = time.monotonic() + timeout
        with self.lock:
            start = len(self.responses)
        while time.monotonic() < deadline:
            with self.lock:
                if sum(1 for _, v in self.responses[start:] if v == variant) >= n:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"no {variant} responses: {Counter(v for _, v in self.responses[start:])}")


def replicas(app_name: str) -> set[str]:
    """Every Serve replica actor of the app (their names carry the replica id)."""
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if f"{app_name}#" in a["name"]}


def kill_replicas(app_name: str, deployment: str) -> set[str]:
    killed = set()
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if f"{app_name}#{deployment}#" in actor["name"]:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            killed.add(actor["name"])
    return killed


@pytest.fixture(scope="module")
def two_variants(deploy_app: Any) -> Any:
    """The bundled checkpoints: stable tiny-mmdit@v1, canary tiny-mmdit@v2."""
    return deploy_app(
        variants={"stable": {"model": "tiny-mmdit@v1"}, "canary": {"model": "tiny-mmdit@v2"}}, ab=AB, **LIGHT
    )


def test_weights_change_under_load_without_restarts_or_failures(two_variants: Any) -> None:
    manual = {**FAST_POLICY, "min_samples_per_step": 10**6}  # the policy holds; an operator moves
    with two_variants.client() as c:
        before = replicas(two_variants.name)
        assert {n.split("#")[1] for n in before} >= {"Gateway", "Router", "MMDiT-stable", "MMDiT-canary"}
        with Load(c) as load:
            load.wait_for("stable")
            first = c.post("/v1/admin/rollouts", json={"id": "load-1", "policy": manual})
            assert first.status_code == 201, first.text
            assert first.json()["canary_percent"] == 20.0 and first.json()["active"]
            load.wait_for("canary")
            assert c.post("/v1/admin/rollouts/load-1/promote", json={"reason": "test"}).json()["canary_percent"] == 100
            n = load.count()
            load.wait_for("canary", n=6)
            assert c.post("/v1/admin/rollouts", json={"id": "load-2", "policy": manual}).status_code == 201
            load.wait_for("stable")
            rolled = c.post("/v1/admin/rollouts/active/rollback").json()
            assert rolled["status"] == "rolled_back" and rolled["canary_percent"] == 0
            time.sleep(1.0)  # the gateways have re-read the weights
            tail_start = load.count()
            load.wait_for("stable", n=4)
        after = replicas(two_variants.name)
    statuses = Counter(status for status, _ in load.responses)
    assert statuses == {200: len(load.responses)}, statuses  # not one failed request
    assert before == after  # no replica was restarted or replaced
    variants = Counter(v for _, v in load.responses)
    assert variants["stable"] and variants["canary"], variants
    assert n < len(load.responses)
    # After the rollback (and the refresh interval) nothing goes to the canary.
    assert {v for _, v in load.responses[tail_start:]} == {"stable"}


def test_sticky_assignment_override_and_feedback(two_variants: Any) -> None:
    with two_variants.client() as c:
        r = c.post(
            "/v1/admin/rollouts",
            json={"id": "sticky", "policy": {**FAST_POLICY, "steps": [50, 100], "min_samples_per_step": 10**6}},
        )
        assert r.status_code == 201, r.text
        # The same user always gets the same variant; users spread over both.
        seen = {u: {generate(c, f"u{u}", s).json()["data"][0]["variant"] for s in range(2)} for u in range(16)}
        assert all(len(v) == 1 for v in seen.values()), seen
        assert {next(iter(v)) for v in seen.values()} == {"stable", "canary"}
        forced = generate(c, "u0", 5, {"x-huabu-variant": "canary"})
        assert forced.json()["data"][0]["variant"] == "canary"
        bad = generate(c, "u0", 5, {"x-huabu-variant": "nope"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-huabu-variant"
        # A job is assigned like a direct request by the same user, and records its variant.
        user = next(u for u, v in seen.items() if v == {"canary"})
        job = c.post(
            "/v1/jobs",
            json={"kind": "generate", "prompt": PROMPTS[0], "steps": 3},
            headers={"x-huabu-user": f"u{user}"},
        ).json()
        deadline = time.monotonic() + 60
        while (j := c.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert j["status"] == "succeeded" and j["variant"] == "canary" and j["result"]["data"][0]["variant"] == "canary"
        # Feedback: attributed to the variant that made the image, counted once.
        image_id = generate(c, f"u{user}", 9).json()["data"][0]["id"]
        # The image -> assignment record is written off the response path: until it lands, the image is
        # unknown (404, nothing recorded), so ask again rather than guess how long that takes.
        deadline = time.monotonic() + 30
        while (fb := c.post("/v1/feedback", json={"image_id": image_id, "accepted": True})).status_code == 404:
            assert time.monotonic() < deadline, fb.text
            time.sleep(0.1)
        assert fb.status_code == 200 and fb.json() == {"recorded": True, "variant": "canary"}
        assert c.post("/v1/feedback", json={"image_id": image_id, "accepted": False}).json()["recorded"] is False
        assert c.post("/v1/feedback", json={"job_id": job["id"], "accepted": True}).json()["variant"] == "canary"
        assert c.post("/v1/feedback", json={"image_id": "f" * 64, "accepted": True}).status_code == 404
        assert c.post("/v1/feedback", json={"accepted": True}).status_code == 400
        # Bad admin input is a 400/404/409 that says what to fix.
        assert c.post("/v1/admin/rollouts", json={"id": "again"}).status_code == 409  # one is running
        with Client(base_url=two_variants.base_url) as sdk:  # the SDK's client.rollouts, sync and async
            assert sdk.rollouts.status().id == "sticky"
            promoted = sdk.rollouts.promote("sticky", reason="enough data")
            assert promoted.status == "promoted" and promoted.canary_percent == 100
            assert promoted.history[-1].actor == "admin" and promoted.history[-1].reason == "enough data"
        listed = asyncio.run(_list_async(two_variants.base_url))
        assert {"load-1", "load-2", "sticky"} <= {r.id for r in listed.data}
        bad_policy = c.post("/v1/admin/rollouts", json={"policy": {"steps": [50, 10]}})
        assert bad_policy.status_code == 400 and "steps" in bad_policy.json()["error"]["message"]
        unknown = c.post("/v1/admin/rollouts", json={"canary_model": "nope@v9"})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "canary_model"
        assert c.get("/v1/admin/rollouts/missing").status_code == 404
        assert c.post("/v1/admin/rollouts/sticky/launch").status_code == 404
        assert c.post("/v1/admin/rollouts/sticky/pause").status_code == 409  # already promoted
        with Client(base_url=two_variants.base_url, max_retries=0) as sdk, pytest.raises(ConflictError):
            sdk.rollouts.rollback("sticky")
        time.sleep(1.0)  # the gateway flushes its metrics every 0.3 s
        info = c.get("/v1/admin/rollouts/sticky").json()
        canary = next(v for v in info["variants"] if v["variant"] == "canary")
        assert canary["feedback_total"] == 2 and canary["feedback_accepted"] == 2


async def _list_async(base_url: str) -> RolloutList:
    async with AsyncClient(base_url=base_url) as sdk:
        return await sdk.rollouts.list()


def test_a_better_canary_is_promoted_automatically(deploy_app: Any, tmp_path: Path, capsys: Any) -> None:
    # The current model is untrained (adherence ~0.3 on these prompts) and fails 20 % of its
    # requests (injected); the canary is the trained tiny-mmdit@v1 (adherence ~0.95), without faults.
    app = deploy_app(
        lifetime="test",
        variants={
            "stable": {"model": "random-init@v3", "inject_error_rate": 0.2},
            "canary": {"model": "tiny-mmdit@v1"},
        },
        ab=AB,
        **LIGHT,
    )
    with app.client() as c:
        r = c.post("/v1/admin/rollouts", json={"id": "better", "policy": FAST_POLICY})
        assert r.status_code == 201, r.text
        with Load(c):
            # Kill the gateway (controller, metrics buffers, assignment) after the first step:
            # the replacement resumes the rollout from the state store.
            moved = wait_rollout(c, "better", ("running",), until=lambda i: i["canary_percent"] >= 50)
            gateways = kill_replicas(app.name, "Gateway")
            assert gateways
            info = wait_rollout(c, "better", ("promoted", "rolled_back", "paused"))
        assert replicas(app.name).isdisjoint(gateways)  # a new gateway replica finished the rollout
    assert moved["canary_percent"] == 50.0, moved
    assert info["status"] == "promoted", info["last_decision"]
    assert info["canary_percent"] == 100.0
    actions = [d["action"] for d in info["history"] if d["action"] != "hold"]
    assert actions == ["advance", "promote"], info["history"]
    promote = info["history"][-1]
    assert promote["actor"] == "policy" and "quality" in promote["reason"] and "error_rate" in promote["reason"]
    checks = {ch["name"]: ch for ch in promote["checks"]}
    assert checks["quality"]["canary"] > checks["quality"]["stable"] + 0.2  # the scorer sees the better model
    assert checks["error_rate"]["canary"] < checks["error_rate"]["stable"]
    stats = {v["variant"]: v for v in info["variants"]}
    assert stats["canary"]["requests"] >= 16 and stats["canary"]["errors"] == 0 and stats["stable"]["errors"] > 0
    assert stats["canary"]["latency_p95_ms"] > 0 and stats["canary"]["quality_n"] > 0
    assert [p for _, p in info["traffic"]] == [20.0, 50.0, 100.0]
    # The report: a table on stdout and three PNGs.
    assert rollout_cli.main(["report", "better", "--base-url", app.base_url, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "rollout better: promoted" in out and "promote" in out
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["latency.png", "quality.png", "traffic.png"]


def test_a_worse_canary_is_rolled_back_automatically(deploy_app: Any) -> None:
    # A lower-quality checkpoint: the untrained random-init model as the canary.
    app = deploy_app(
        lifetime="test",
        variants={"stable": {"model": "tiny-mmdit@v1"}, "canary": {"model": "random-init@v3"}},
        ab=AB,
        **LIGHT,
    )
    with app.client() as c:
        r = c.post("/v1/admin/rollouts", json={"id": "worse", "policy": FAST_POLICY})
        assert r.status_code == 201, r.text
        with Load(c) as load:
            info = wait_rollout(c, "worse", ("promoted", "rolled_back", "paused"))
            time.sleep(1.0)
            tail = load.count()
            load.wait_for("stable", n=4)
    assert info["status"] == "rolled_back", info["last_decision"]
    last = info["last_decision"]
    assert last["action"] == "rollback" and last["code"] == "guardrail_failed" and "quality" in last["reason"]
    failed = next(ch for ch in last["checks"] if ch["name"] == "quality")
    assert failed["status"] == "fail" and failed["canary"] < failed["stable"] and failed["ci_high"] < -0.05
    assert info["canary_percent"] == 0.0
    assert {v for s, v in load.responses[tail:]} == {"stable"}  # the canary gets nothing any more

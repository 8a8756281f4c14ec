"""A canary rollout across backends: from the own tiny-mmdit@v1 to a diffusers Qwen-Image variant,
through the deployed application and the existing rollout machinery. The adherence scorer judges
only the own models, so the quality guardrail is reported "not applicable" and the rollout decides
on errors (and latency, feedback) alone."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import AB, FAST_POLICY, LIGHT, wait_rollout

from huabu.cluster import rollout_cli

pytestmark = [pytest.mark.serve, pytest.mark.slow]

PROMPTS = ["a red circle on the left", "左边一个蓝色正方形", "a green triangle on the right"]


def traffic(client: httpx.Client, stop: threading.Event, worker: int, seen: list[tuple[int, str | None]]) -> None:
    for i in itertools.count():
        if stop.is_set():
            return
        body = {"prompt": PROMPTS[i % len(PROMPTS)], "seed": 1000 * worker + i, "steps": 2}
        r = client.post("/v1/images/generations", json=body, headers={"x-huabu-user": f"user-{worker}-{i}"})
        seen.append((r.status_code, r.json()["data"][0]["model"] if r.status_code == 200 else r.text))


def test_a_rollout_from_the_own_model_to_a_diffusers_variant(
    deploy_app: Any, tiny_qwen: Path, tmp_path: Path, capsys: Any
) -> None:
    diffusers_model = f"diffusers:{tiny_qwen}"
    app = deploy_app(
        lifetime="test",
        variants={"stable": {"model": "tiny-mmdit@v1"}, "canary": {"model": diffusers_model, "steps": 2}},
        ab=AB,
        **LIGHT,
    )
    with app.client() as c:
        r = c.post("/v1/admin/rollouts", json={"policy": FAST_POLICY})  # no id: derived from the canary
        assert r.status_code == 201, r.text
        rollout_id = r.json()["id"]
        assert rollout_id.startswith(f"{tiny_qwen.name}.") and ":" not in rollout_id
        stop, seen = threading.Event(), []
        with ThreadPoolExecutor(3) as pool:
            workers = [pool.submit(traffic, c, stop, k, seen) for k in range(3)]
            try:
                info = wait_rollout(c, rollout_id, ("promoted", "rolled_back", "paused"), timeout=300)
            finally:
                stop.set()
            for worker in workers:
                worker.result()
        after = c.post("/v1/images/generations", json={"prompt": "a red circle", "steps": 2, "response_format": "url"})
    assert all(status == 200 for status, _ in seen), [s for s in seen if s[0] != 200][:3]
    assert {model for _, model in seen} == {"tiny-mmdit@v1", diffusers_model}  # both backends answered
    assert info["status"] == "promoted", info["last_decision"]
    assert [d["action"] for d in info["history"] if d["action"] != "hold"] == ["advance", "promote"]
    promote = info["history"][-1]
    checks = {ch["name"]: ch for ch in promote["checks"]}
    assert checks["quality"]["status"] == "not_applicable"
    assert f"the adherence scorer cannot judge {diffusers_model}" in checks["quality"]["detail"]
    # Below evidence_from_percent a step needs point estimates within the margins, not proof.
    assert checks["error_rate"]["status"] in ("pass", "inconclusive") and checks["error_rate"]["within_margin"]
    assert "quality: not applicable" in promote["reason"]
    stats = {v["variant"]: v for v in info["variants"]}
    assert stats["stable"]["quality_n"] > 0 and stats["canary"]["quality_n"] == 0  # the canary is never scored
    assert stats["canary"]["requests"] >= 16 and stats["canary"]["errors"] == 0
    # Promoted: every request now reaches the diffusers variant.
    assert after.status_code == 200 and after.json()["data"][0]["model"] == diffusers_model
    # The report draws a rollout whose canary has no quality scores.
    assert rollout_cli.main(["report", rollout_id, "--base-url", app.base_url, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"rollout {rollout_id}: promoted" in out and "not applicable" in out
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["latency.png", "quality.png", "traffic.png"]

"""A diffusers Qwen-Image variant through the whole deployed application, driven by clients nobody here
wrote (the official ``openai`` client) and plain HTTP: generation (b64 and url), edits with a mask,
progress and cancellation over jobs, batching, validation before queueing, LoRA versions in the cache."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from helpers import decode_png, png_bytes, sse_events, wait_job

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def qwen_app(deploy_app: Any, tiny_qwen: Path, tiny_lora: Path) -> Any:
    """Two LoRA scales of one tiny Qwen-Image: stable at 0.5 and canary at 1.0 (no traffic unless asked)."""
    model = f"diffusers:{tiny_qwen}"
    return deploy_app(
        variants={
            "stable": {"model": model, "lora": [{"path": str(tiny_lora), "scale": 0.5}]},
            "canary": {"model": model, "lora": [{"path": str(tiny_lora), "scale": 1.0}], "weight": 0},
        },
        model={"max_batch_size": 4},
    )


def models(app: Any) -> dict[str, Any]:
    with app.client() as c:
        return {m["id"]: m for m in c.get("/v1/models").json()["data"]}


def test_models_name_the_backend_pipeline_and_limits(qwen_app: Any, tiny_qwen: Path) -> None:
    listed = models(qwen_app)
    assert len(listed) == 2 and all(m.startswith(f"diffusers:{tiny_qwen}+lora-") for m in listed)
    for model in listed.values():
        assert (model["backend"], model["pipeline"], model["dtype"]) == ("diffusers", "QwenImagePipeline", "float32")
        sampling = model["sampling"]
        assert sampling["size_multiple"] == 8 and sampling["operations"] == ["generate", "inpaint", "img2img"]
        assert (sampling["steps"], sampling["guidance_scale"]) == (4, 4.0)  # the tests' gateway default steps


def test_the_official_openai_client_generates_and_edits(qwen_app: Any) -> None:
    client = openai.OpenAI(base_url=f"{qwen_app.base_url}/v1", api_key="unused", max_retries=0)
    b64 = client.images.generate(
        prompt="a red circle", size="32x32", response_format="b64_json", extra_body={"seed": 3}
    )
    first = decode_png(base64.b64decode(b64.data[0].b64_json or ""))
    assert first.shape == (32, 32, 3)
    url = client.images.generate(prompt="a red circle", size="48x32", response_format="url", n=2)
    pictures = [decode_png(httpx.get(d.url or "").content) for d in url.data]
    assert [p.shape for p in pictures] == [(32, 48, 3)] * 2 and not np.array_equal(*pictures)

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.full((32, 32, 4), 255, dtype=np.uint8)
    mask[8:24, 8:24, 3] = 0  # transparent = repaint
    edited = client.images.edit(
        image=("i.png", png_bytes(image), "image/png"),
        mask=("m.png", png_bytes(mask, "RGBA"), "image/png"),
        prompt="a yellow star",
        response_format="b64_json",
    )
    result = decode_png(base64.b64decode(edited.data[0].b64_json or ""))
    repainted = mask[..., 3] == 0
    assert np.array_equal(result[~repainted], image[~repainted])  # byte-exact outside the mask
    assert (result[repainted] != image[repainted]).mean() > 0.5

    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="x", size="36x36")  # this pipeline needs multiples of 8
    assert info.value.body["param"] == "size" and "multiple of 8" in info.value.body["message"]  # type: ignore[index]


def test_job_progress_reports_every_step_and_cancel_stops_between_steps(qwen_app: Any) -> None:
    with qwen_app.client() as c:
        job_id = c.post("/v1/jobs", json={"kind": "generate", "prompt": "a green square", "steps": 6}).json()["id"]
        events = sse_events(c, job_id)
        progress = [(e["step"], e["total"]) for e in events if e["type"] == "progress"]
        assert progress == [(i, 6) for i in range(1, 7)], events
        assert events[-1]["status"] == "succeeded", events

        body = {"kind": "generate", "prompt": "a slow one", "steps": 100, "size": "64x64", "cache": "bypass"}
        job_id = c.post("/v1/jobs", json=body).json()["id"]
        deadline = time.monotonic() + 60
        while (c.get(f"/v1/jobs/{job_id}").json().get("progress") or {}).get("step", 0) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert c.delete(f"/v1/jobs/{job_id}").status_code == 200
        job = wait_job(c, job_id)
        steps = [e["step"] for e in sse_events(c, job_id) if e["type"] == "progress"]
    assert job["status"] == "canceled" and steps and max(steps) < 100, (job, steps)


def test_concurrent_jobs_share_a_batch_and_each_equals_its_lone_result(qwen_app: Any) -> None:
    body = {"kind": "generate", "size": "32x32", "steps": 30, "cache": "bypass", "response_format": "b64_json"}
    with qwen_app.client() as c:
        # A long job occupies the model, so the next ones queue up and are batched together.
        blocker = c.post("/v1/jobs", json={**body, "prompt": "hold the model", "steps": 100, "seed": 1}).json()["id"]
        ids = [c.post("/v1/jobs", json={**body, "prompt": f"shape {i}", "seed": 10 + i}).json()["id"] for i in range(3)]
        jobs = [wait_job(c, i) for i in [blocker, *ids]][1:]
        batched = [j["result"]["data"][0] for j in jobs]
        assert max(int(d["metadata"]["batch_size"]) for d in batched) > 1
        for i, data in enumerate(batched):
            lone = c.post("/v1/jobs", json={**body, "prompt": f"shape {i}", "seed": 10 + i}).json()["id"]
            alone = wait_job(c, lone)["result"]["data"][0]
            assert int(alone["metadata"]["batch_size"]) == 1
            together, single = (decode_png(base64.b64decode(d["b64_json"])) for d in (data, alone))
            assert np.abs(together.astype(int) - single.astype(int)).max() <= 1  # docs/MODELS.md: CPU float32


def test_each_lora_scale_is_its_own_version_in_the_cache(qwen_app: Any) -> None:
    stable, canary = sorted(models(qwen_app), key=lambda m: m != qwen_app.settings.variants["stable"].model_id)

    def generate(model: str) -> dict[str, Any]:
        with qwen_app.client() as c:
            body = {"prompt": "a cached circle", "seed": 5, "size": "32x32", "model": model}
            r = c.post("/v1/images/generations", json=body)
            assert r.status_code == 200, r.text
            return r.json()["data"][0]

    first, other, again = generate(stable), generate(canary), generate(stable)
    assert not first["cached"] and not other["cached"] and again["cached"]
    assert first["b64_json"] != other["b64_json"]


def test_concurrent_mixed_sizes_succeed_and_bad_ones_are_told_what_to_fix(qwen_app: Any) -> None:
    """Concurrent requests of three sizes, one of them invalid for this pipeline: the valid ones are
    served (in separate calls per size), the invalid ones get a 400 before anything is queued."""
    statuses: list[int] = []

    def hit(i: int) -> None:
        with qwen_app.client() as c:
            size = ["32x32", "40x24", "44x44"][i % 3]
            statuses.append(c.post("/v1/images/generations", json={"prompt": f"p{i}", "size": size}).status_code)

    threads = [threading.Thread(target=hit, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(statuses)) == [200, 400] and statuses.count(400) == 3

"""The Prometheus metrics documented in docs/OBSERVABILITY.md, scraped from Ray's metrics export
port after real traffic through the traced application."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.serve, pytest.mark.slow]

LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>.*)\} (?P<value>\S+)$")  # values may hold braces


def scrape(app_name: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of this application: (name, labels, value)."""
    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = []
    for line in text.splitlines():
        match = LINE.match(line)
        if match and match["name"].startswith("ray_huabu_"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            if labels.get("app") == app_name:
                samples.append((match["name"], labels, float(match["value"])))
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, tags, v in samples if n == name and all(tags.get(k) == w for k, w in labels.items()))


def test_metrics_are_scraped_from_the_ray_metrics_port(traced_app) -> None:
    with traced_app.client() as c:
        body = {"prompt": f"a red circle {uuid.uuid4().hex[:6]}", "seed": 5, "steps": 2, "size": "32x32"}
        assert c.post("/v1/images/generations", json=body).status_code == 200
        assert c.post("/v1/images/generations", json=body).json()["data"][0]["cached"]
        assert c.post("/v1/images/generations", json={"prompt": "a photo of a naked woman"}).status_code == 400
        r = c.get("/v1/jobs/job_" + "0" * 24)  # well formed, unknown: the route answers 404
        assert r.status_code == 404 and "traceparent" in r.headers  # a traced request returns its traceparent

    expected = {
        ("ray_huabu_requests_total", (("route", "/v1/images/generations"), ("status", "200"))),
        ("ray_huabu_requests_total", (("route", "/v1/images/generations"), ("status", "400"))),
        ("ray_huabu_requests_total", (("route", "/v1/jobs/{job_id}"), ("status", "404"))),
        ("ray_huabu_request_latency_s_count", (("route", "/v1/images/generations"),)),
        ("ray_huabu_stage_latency_s_count", (("stage", "model.inference"),)),
        ("ray_huabu_stage_latency_s_count", (("stage", "cache.lookup"),)),
        ("ray_huabu_stage_latency_s_count", (("stage", "prompt_filter.check"),)),
        ("ray_huabu_stage_latency_s_count", (("stage", "storage.put"),)),
        ("ray_huabu_model_batch_size_count", (("variant", "stable"),)),
        ("ray_huabu_model_queue_wait_s_count", (("variant", "stable"),)),
        ("ray_huabu_cache_requests_total", (("result", "hits"),)),
        ("ray_huabu_cache_requests_total", (("result", "misses"),)),
        ("ray_huabu_filter_blocks_total", (("filter", "prompt"), ("category", "sexual"))),
        ("ray_huabu_filter_decisions_total", (("filter", "image"), ("decision", "allowed"))),
        ("ray_huabu_variant_requests_total", (("variant", "stable"), ("outcome", "ok"))),
        ("ray_huabu_variant_latency_s_count", (("variant", "stable"),)),
    }
    deadline = time.monotonic() + 90  # replicas report to the node's agent every few seconds
    while True:
        samples = scrape(traced_app.name)
        missing = [(n, ls) for n, ls in expected if total(samples, n, **dict(ls)) <= 0]
        gauges = {n for n, _, _ in samples if n == "ray_huabu_model_queue_depth"}
        if not missing and gauges:
            break
        requests = [(t["method"], t["route"], t["status"]) for n, t, _ in samples if n == "ray_huabu_requests_total"]
        assert time.monotonic() < deadline, f"missing: {missing}, gauges: {gauges}, requests: {requests}"
        time.sleep(1)


def test_every_metric_is_documented() -> None:
    """docs/OBSERVABILITY.md names every metric that deployments/core/metrics.py defines."""
    root = Path(__file__).resolve().parents[2]
    defined = set(re.findall(r'"(huabu_[a-z_]+)"', (root / "deployments" / "core" / "metrics.py").read_text()))
    documented = (root / "docs" / "OBSERVABILITY.md").read_text()
    assert defined and not [name for name in defined if name not in documented]

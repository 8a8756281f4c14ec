"""The Kafka door against a real broker (tansu) and the deployed app: requests in, results out with
fetchable images; malformed messages dead-lettered with reasons while the good ones around them are
served; a consumer-group member killed mid-stream loses no request and creates no job twice; a burst
larger than the pending-job bound pauses and resumes the partitions and fails nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka_helpers import Broker, TopicReader
from PIL import Image

from huabu.deployments.core.settings import AuthSettings
from huabu.deployments.core.state import RedisStore
from huabu.deployments.gateway.auth import KeyStore
from huabu.sdk.types import ApiKeyCreated, ApiKeyCreateRequest

pytestmark = [pytest.mark.serve, pytest.mark.slow]

REQUESTS, RESULTS, DEAD = "ingest-requests", "ingest-results", "ingest-dead"
PARTITIONS = {REQUESTS: 4, RESULTS: 2, DEAD: 1}
MAX_PENDING = 8
MAX_MESSAGE_BYTES = 4096


@pytest.fixture(scope="module")
def kafka(kafka_broker: Broker) -> Broker:
    kafka_broker.create_topics(PARTITIONS)
    return kafka_broker


@pytest.fixture(scope="module")
def tenant(redis_url: str) -> tuple[str, ApiKeyCreated]:
    """A state-store namespace and the API key the topic's jobs count against, created before the app
    (its id goes into the settings): (namespace, the key)."""
    namespace = f"kafka-{uuid.uuid4().hex[:8]}"

    async def create() -> ApiKeyCreated:
        keys = KeyStore(RedisStore(redis_url, namespace), AuthSettings())
        return await keys.create(ApiKeyCreateRequest(name="catalogue", rate="100000/min", max_concurrent=200))

    return namespace, asyncio.run(create())


@pytest.fixture(scope="module")
def app(deploy_app: Any, kafka: Broker, redis_url: str, tenant: tuple[str, ApiKeyCreated]) -> Any:
    namespace, key = tenant
    ingest = {
        "enabled": True,
        "key_id": key.id,
        "bootstrap_servers": kafka.bootstrap,
        "requests_topic": REQUESTS,
        "results_topic": RESULTS,
        "dead_letter_topic": DEAD,
        "group_id": f"g-{uuid.uuid4().hex[:8]}",
        "replicas": 2,  # two members of one consumer group share the partitions
        "max_pending_jobs": MAX_PENDING,
        "max_message_bytes": MAX_MESSAGE_BYTES,
        "result_poll_s": 0.2,
        # A group join takes about half the session timeout; librdkafka's default is 45 s.
        "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
    }
    return deploy_app(
        ingest={"kafka": ingest},
        gateway={"default_steps": 2},
        auth={"enabled": True},  # the topic's jobs are the key's: its scope, limits, usage and ownership
        state={"backend": "redis", "redis_url": redis_url, "namespace": namespace},
    )


@pytest.fixture(scope="module")
def reader(kafka: Broker) -> Iterator[TopicReader]:
    reader = TopicReader(kafka.bootstrap, {RESULTS: 2, DEAD: 1}).start()
    yield reader
    reader.stop()


def members(app: Any, calls: int = 30) -> dict[str, dict[str, Any]]:
    """Each ingress replica's stats, by replica (the handle picks a replica per call)."""
    from ray import serve

    handle = serve.get_deployment_handle("KafkaIngress", app.name)
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(calls):
        stats = handle.stats.remote().result(timeout_s=30)
        seen[stats["replica"]] = stats
    return seen


def wait_for_members_with_partitions(app: Any, count: int, timeout_s: float = 60.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = members(app)
        owning = {r: s for r, s in seen.items() if s["partitions"]}
        if len(owning) >= count and sum(len(s["partitions"]) for s in owning.values()) == PARTITIONS[REQUESTS]:
            return owning
        assert time.monotonic() < deadline, f"partitions not shared by {count} members: {seen}"
        time.sleep(1)


def request(correlation_id: str, prompt: str, **job: Any) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    body = {
        "version": 1,
        "correlation_id": correlation_id,
        "job": {"kind": "generate", "prompt": prompt, "size": "64x64", **job},
    }
    return correlation_id.encode(), json.dumps(body).encode(), []


def results_of(reader: TopicReader, prefix: str, count: int, timeout_s: float) -> list[dict[str, Any]]:
    found = reader.wait(RESULTS, lambda r: (r.get("correlation_id") or "").startswith(prefix), count, timeout_s)
    assert len({r["correlation_id"] for r in found}) >= count, f"{len(found)} of {count} results for {prefix}"
    return found


def test_members_share_the_partitions(app: Any) -> None:
    owning = wait_for_members_with_partitions(app, 2)
    partitions = sorted(p for s in owning.values() for p in s["partitions"])
    assert partitions == list(range(PARTITIONS[REQUESTS]))  # each partition has exactly one owner


def test_fifty_requests_give_fifty_results_with_fetchable_images(
    app: Any, kafka: Broker, reader: TopicReader, tenant: tuple[str, ApiKeyCreated]
) -> None:
    prefix = f"fifty-{uuid.uuid4().hex[:6]}-"
    shapes = ["circle", "square", "triangle"]
    colours = ["red", "green", "blue", "yellow", "purple"]
    kafka.produce([request(f"{prefix}{i}", f"a {colours[i % 5]} {shapes[i % 3]}", seed=i) for i in range(50)], REQUESTS)
    results = results_of(reader, prefix, 50, timeout_s=240)
    by_id = {r["correlation_id"]: r for r in results}
    assert sorted(by_id) == sorted(f"{prefix}{i}" for i in range(50))
    assert len({r["job_id"] for r in by_id.values()}) == 50
    with httpx.Client(timeout=30) as http:
        for r in by_id.values():
            assert r["status"] == "succeeded", r
            assert r["version"] == 1 and r["id"] == r["job_id"] and r["model"]
            assert r["source"]["topic"] == REQUESTS and r["timings"]["total_s"] >= 0
            [image] = r["images"]
            png = http.get(image["url"])
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG"), image["url"]
            # The job is the HTTP API's job: the same record answers GET /v1/jobs/{id}.
    # The jobs are the configured key's, as if it had posted them: it reads them and is billed for them.
    _, key = tenant
    with app.client() as c:
        c.headers["authorization"] = f"Bearer {key.key}"
        job = c.get(f"/v1/jobs/{results[0]['job_id']}").json()
        assert job["status"] == "succeeded" and job["kind"] == "generate"
        usage = c.get("/v1/usage").json()
        assert usage["key_id"] == key.id and usage["total"]["images"] >= 50
        c.headers["authorization"] = "Bearer hb_000000000000_not-a-key"
        assert c.get(f"/v1/jobs/{results[0]['job_id']}").status_code == 401
    # Keyed by the correlation id, so a partitioned consumer of results sees one request's answers in order.
    keys = {m.key().decode() for m in reader.messages[RESULTS] if m.key().decode().startswith(prefix)}
    assert keys == set(by_id)


def test_malformed_messages_are_dead_lettered_and_the_good_ones_served(
    app: Any, kafka: Broker, reader: TopicReader
) -> None:
    prefix = f"mixed-{uuid.uuid4().hex[:6]}-"

    def raw(name: str, value: bytes | None) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
        return f"{prefix}{name}".encode(), value, []

    def envelope(name: str, **fields: Any) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        return f"{prefix}{name}".encode(), json.dumps({"correlation_id": f"{prefix}{name}", **fields}).encode(), []

    bad = {
        # name: (message, the reason's param, its code)
        "not-json": (raw("not-json", b"\xff\xfe not json"), "value", "invalid_message"),
        "no-value": (raw("no-value", None), "value", "invalid_message"),
        "array": (raw("array", b"[1, 2]"), "value", "invalid_message"),
        "no-job": (envelope("no-job"), "job", "invalid_message"),
        "unknown-field": (envelope("unknown-field", job={"prompt": "x"}, colour="red"), "colour", "invalid_message"),
        "version": (envelope("version", version=2, job={"prompt": "x"}), "version", "invalid_message"),
        "bad-size": (
            envelope("bad-size", job={"kind": "generate", "prompt": "a red circle", "size": "7x7"}),
            "size",
            None,
        ),
        "b64": (envelope("b64", job={"prompt": "x", "response_format": "b64_json"}), "job.response_format", None),
        "too-large": (envelope("too-large", job={"prompt": "x" * MAX_MESSAGE_BYTES}), "value", "request_too_large"),
        "blocked": (
            envelope("blocked", job={"kind": "generate", "prompt": "a photo of a naked woman", "size": "64x64"}),
            "prompt",
            None,
        ),
    }
    good = [request(f"{prefix}good-{i}", f"a blue square {i}", seed=100 + i) for i in range(5)]
    messages = []
    for i, (message, _, _) in enumerate(bad.values()):
        messages.append(message)
        if i % 2:
            messages.append(good[i // 2])
    kafka.produce(messages, REQUESTS)

    served = results_of(reader, f"{prefix}good-", 5, timeout_s=120)
    assert all(r["status"] == "succeeded" for r in served)
    letters = reader.wait(DEAD, lambda d: (d.get("key") or "").startswith(prefix), len(bad), timeout_s=120)
    by_name = {d["key"].removeprefix(prefix): d for d in letters}
    assert sorted(by_name) == sorted(bad), sorted(by_name)
    for name, (_, param, code) in bad.items():
        reason = by_name[name]["reason"]
        assert reason["message"], name
        assert reason.get("param") == param, (name, reason)
        if code is not None:
            assert reason.get("code") == code, (name, reason)
        assert by_name[name]["source"]["topic"] == REQUESTS
    assert by_name["blocked"]["reason"]["type"] == "content_policy_violation"
    assert by_name["not-json"]["value_b64"]  # the original bytes, for a person to look at
    # The blocked request had a job; its result says why it failed.
    [blocked] = reader.json_of(RESULTS, lambda r: r.get("correlation_id") == f"{prefix}blocked")
    assert blocked["status"] == "failed" and blocked["error"]["type"] == "content_policy_violation"


def test_a_member_killed_mid_stream_loses_nothing_and_creates_no_job_twice(
    app: Any, kafka: Broker, reader: TopicReader
) -> None:
    owning = wait_for_members_with_partitions(app, 2)
    prefix = f"kill-{uuid.uuid4().hex[:6]}-"
    count = 40
    kafka.produce([request(f"{prefix}{i}", f"a green triangle {i}", seed=200 + i) for i in range(count)], REQUESTS)
    results_of(reader, prefix, 8, timeout_s=120)  # mid-stream
    victim = next(iter(owning.values()))
    os.kill(victim["pid"], signal.SIGKILL)
    results = results_of(reader, prefix, count, timeout_s=300)
    job_of: dict[str, set[str]] = {}
    for r in results:
        assert r["status"] == "succeeded", r
        job_of.setdefault(r["correlation_id"], set()).add(r["job_id"])
    assert len(job_of) == count  # no request lost
    assert all(len(jobs) == 1 for jobs in job_of.values()), job_of  # no request made two jobs
    assert len({j for jobs in job_of.values() for j in jobs}) == count
    # Serve replaced the killed member, and it rejoined the group.
    owning = wait_for_members_with_partitions(app, 2)
    assert victim["pid"] not in {s["pid"] for s in owning.values()}


def test_a_burst_pauses_and_resumes_the_partitions_and_fails_nothing(
    app: Any, kafka: Broker, reader: TopicReader
) -> None:
    before = members(app)
    prefix = f"burst-{uuid.uuid4().hex[:6]}-"
    count = 80  # well above what the members may hold unfinished together (the last assertion)
    burst = [request(f"{prefix}{i}", f"a red square {i}", seed=1000 + i, size="32x32", steps=2) for i in range(count)]
    kafka.produce(burst, REQUESTS)
    results = results_of(reader, prefix, count, timeout_s=480)
    assert {r["status"] for r in results} == {"succeeded"}
    after = members(app)
    pauses = sum(s["pauses"] - before.get(r, {}).get("pauses", 0) for r, s in after.items())
    resumes = sum(s["resumes"] - before.get(r, {}).get("resumes", 0) for r, s in after.items())
    assert pauses >= 1 and resumes >= 1, after
    # The backlog waited in the topic, not in the job store: each member keeps what it last saw of the
    # group's unfinished jobs plus its own in hand below the bound, so together they stay near it.
    assert max(s["peak_unfinished"] for s in after.values()) <= len(after) * MAX_PENDING < count


def test_the_kafka_batch_example_makes_a_contact_sheet(app: Any, kafka: Broker, tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "kafka_batch" / "kafka_batch.py"
    out = tmp_path / "catalogue"
    args = ["--bootstrap", kafka.bootstrap, "--requests-topic", REQUESTS, "--results-topic", RESULTS]
    args += ["--count", "20", "--steps", "2", "--run", uuid.uuid4().hex, "--timeout", "240", "--out", str(out)]
    done = subprocess.run([sys.executable, str(example), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["correlation_id"] for r in lines] == [f"sku-{i:04d}" for i in range(20)]
    assert {r["status"] for r in lines} == {"succeeded"}
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > 10 * 96 and sheet.height > 2 * 96  # 10 columns, 2 rows

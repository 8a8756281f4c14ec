"""ab_testing's StateStore on the project's KeyValueStore: the embedded Ray actor and a real Redis.

Same contract as the in-memory reference store; concurrent replicas flushing metrics lose nothing;
a rollout written through one store object is read back by a fresh one (a gateway restart)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from huabu.ab_testing import MetricsBuffer, Rollout, RolloutRepository, TrafficSplit, load_metrics
from huabu.deployments.core.settings import StateSettings
from huabu.deployments.core.state import open_store
from huabu.deployments.gateway.experiments import KVStateStore


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop in a thread: the gateway's loop, with the test as the worker thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture(params=["embedded", "redis"])
def make_store(request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop) -> Any:
    if request.param == "embedded":
        request.getfixturevalue("serve_port")  # the session's Ray
        settings = StateSettings(namespace=f"kv{uuid.uuid4().hex[:8]}")
    else:
        url = request.getfixturevalue("redis_url")
        settings = StateSettings(backend="redis", redis_url=url, namespace=f"kv{uuid.uuid4().hex[:8]}")

    def make() -> KVStateStore:
        # The client is created on the loop that will drive it (a Redis connection belongs to one loop).
        kv = asyncio.run_coroutine_threadsafe(_open(settings), loop).result(30)
        return KVStateStore(kv, loop)

    return make


async def _open(settings: StateSettings) -> Any:
    return open_store(settings)


def test_store_contract(make_store: Any) -> None:
    store = make_store()
    assert store.get("huabu:ab:k") is None
    assert store.compare_and_set("huabu:ab:k", None, {"v": 1, "z": [1.5, "x"]})
    assert not store.compare_and_set("huabu:ab:k", None, {"v": 2})
    assert not store.compare_and_set("huabu:ab:k", {"v": 0}, {"v": 2})
    # Equality is of decoded values: key order does not matter.
    assert store.compare_and_set("huabu:ab:k", {"z": [1.5, "x"], "v": 1}, {"v": 2})
    assert store.get("huabu:ab:k") == {"v": 2}
    store.set("huabu:ab:other", [1, 2])
    assert sorted(store.keys("huabu:ab:")) == ["huabu:ab:k", "huabu:ab:other"]
    store.delete("huabu:ab:k")
    assert store.get("huabu:ab:k") is None and store.keys("huabu:ab:k") == []
    with pytest.raises(ValueError):
        store.set("huabu:ab:bad", {"x": float("inf")})


def test_counters_add_up_and_expire(make_store: Any) -> None:
    """incr_many (usage metering's one round trip per request) adds and sets the expiry."""
    store = make_store()

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, store.loop).result(30)

    run(store.kv.incr_many({"u:a": 2, "u:b": 5}, 60))
    run(store.kv.incr_many({"u:a": 3}, 0.3))
    assert run(store.kv.get("u:a")) == b"5" and run(store.kv.get("u:b")) == b"5"
    time.sleep(0.5)
    assert run(store.kv.get("u:a")) is None and run(store.kv.get("u:b")) == b"5"


def test_concurrent_replicas_lose_no_metrics_and_state_survives_a_restart(make_store: Any) -> None:
    split = TrafficSplit.canary("exp-kv", stable_model="m@1", canary_model="m@2", canary_percent=50)
    stores = [make_store(), make_store()]  # two gateway replicas, each with its own client
    buffers = [MetricsBuffer("gw-a"), MetricsBuffer("gw-b")]

    def replica(k: int) -> None:
        for i in range(200):
            buffers[k].record_request(split.assign(f"u{k}-{i}"), latency_ms=10.0 + i)
            if i % 20 == 0:
                buffers[k].flush(stores[k])
        buffers[k].flush(stores[k])

    threads = [threading.Thread(target=replica, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals = load_metrics(make_store(), "exp-kv").totals()
    assert sum(m.requests for m in totals.values()) == 400

    rollout = Rollout.start("ro-kv", stable_model="m@1", canary_model="m@2", now=1.0)
    RolloutRepository(stores[0]).create(rollout)
    RolloutRepository(stores[1]).update("ro-kv", lambda r: r.pause(2.0))
    restarted = RolloutRepository(make_store()).get("ro-kv")
    assert restarted is not None and restarted.status == "paused" and restarted.history[-1].code == "manual_pause"


def test_calling_on_the_loop_itself_is_refused(make_store: Any, loop: asyncio.AbstractEventLoop) -> None:
    store = make_store()

    async def on_loop() -> None:
        store.get("huabu:ab:x")

    with pytest.raises(RuntimeError, match="worker thread"):
        asyncio.run_coroutine_threadsafe(on_loop(), loop).result(10)

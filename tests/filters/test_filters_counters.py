"""Counters under concurrency, and prompt fingerprints."""

from __future__ import annotations

import threading

from huabu.filters import Category, Decision, FilterCounters, Stage, prompt_fingerprint

BLOCKED = Decision(allowed=False, stage=Stage.BLOCKLIST, category=Category.SEXUAL, rule_id="en.sexual.nudity")
SEMANTIC = Decision(allowed=False, stage=Stage.SEMANTIC, category=Category.HATE, rule_id="semantic.hate")
ALLOWED = Decision(allowed=True, stage=Stage.SEMANTIC, score=0.1)
SKIPPED = Decision(allowed=True, stage=Stage.SKIPPED)


def test_counts_per_rule_category_and_stage() -> None:
    c = FilterCounters()
    c.record_many([BLOCKED, BLOCKED, SEMANTIC, ALLOWED, SKIPPED])
    snap = c.snapshot()
    assert snap == {
        "checked": 5,
        "allowed": 2,
        "blocked": 3,
        "skipped": 1,
        "blocked_by_category": {"sexual": 2, "hate": 1},
        "blocked_by_rule": {"en.sexual.nudity": 2, "semantic.hate": 1},
        "blocked_by_stage": {"blocklist": 2, "semantic": 1},
        "unavailable": 0,
        "unavailable_by_reason": {},
    }
    c.record_unavailable("load")
    c.record_unavailable("timeout")
    c.record_unavailable("load")
    assert c.snapshot()["unavailable"] == 3 and c.snapshot()["unavailable_by_reason"] == {"load": 2, "timeout": 1}
    snap["blocked_by_rule"]["en.sexual.nudity"] = 99  # a snapshot is a copy
    assert c.snapshot()["blocked_by_rule"]["en.sexual.nudity"] == 2
    c.reset()
    assert c.snapshot()["checked"] == 0 and c.snapshot()["blocked_by_rule"] == {}


def test_thread_safe() -> None:
    c = FilterCounters()
    n_threads, per_thread = 8, 2000
    snapshots: list[int] = []

    def work() -> None:
        for i in range(per_thread):
            c.record(BLOCKED if i % 2 else ALLOWED)
            if i % 500 == 0:
                s = c.snapshot()
                assert s["blocked"] == sum(s["blocked_by_category"].values())  # consistent across keys
                snapshots.append(s["checked"])

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = c.snapshot()
    assert snap["checked"] == n_threads * per_thread
    assert snap["blocked"] == snap["blocked_by_rule"]["en.sexual.nudity"] == n_threads * per_thread // 2
    assert snapshots


def test_prompt_fingerprint() -> None:
    fp = prompt_fingerprint("a secret prompt")
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp == prompt_fingerprint("a secret prompt") == prompt_fingerprint(b"a secret prompt")
    assert fp != prompt_fingerprint("a secret prompt ")
    assert len(prompt_fingerprint("x", length=64)) == 64
    keyed = prompt_fingerprint("a secret prompt", key=b"k1")
    assert keyed != fp and keyed != prompt_fingerprint("a secret prompt", key=b"k2")
    assert "secret" not in fp
    assert prompt_fingerprint("中文提示词") != prompt_fingerprint("中文提示")

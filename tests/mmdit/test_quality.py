"""The shipped checkpoints load, fit the size budget and follow prompts (floors measured minus margin)."""

from __future__ import annotations

import json

import pytest

from huabu.deployments.mmdit import synthetic
from huabu.deployments.mmdit.adherence import evaluate
from huabu.deployments.mmdit.checkpoint import BUNDLED_ROOT, load_checkpoint
from huabu.deployments.mmdit.pipeline import Pipeline
from huabu.deployments.mmdit.quality import DEFAULT_GUIDANCE, DEFAULT_STEPS, Settings, format_table, measure
from huabu.deployments.mmdit.requests import generation

MAX_BYTES = 20 * 1024 * 1024
# Measured on the 24 prompts below (see docs/MODEL.md), minus a margin for other CPUs' last bits.
FLOORS = {"tiny-mmdit@v1": {"color": 0.08, "color_position": 0.0}}  # measured 4/24 and 1/24


@pytest.fixture(scope="module")
def v1() -> Pipeline:
    return Pipeline(load_checkpoint("tiny-mmdit@v1"))


@pytest.mark.parametrize("model_id", ["tiny-mmdit@v1", "tiny-mmdit@v2"])
def test_shipped_checkpoint_is_small_and_recorded(model_id: str) -> None:
    path = BUNDLED_ROOT / model_id
    assert sum(f.stat().st_size for f in path.iterdir()) <= MAX_BYTES
    record = json.loads((path / "record.json").read_text())
    assert record["data_version"] == synthetic.DATA_VERSION and record["steps"] > 0
    assert record["command"].startswith("huabu train") and "--seed" in record["command"]
    assert load_checkpoint(model_id).model_id == model_id


def test_v1_follows_held_out_prompts(v1: Pipeline) -> None:
    items = synthetic.eval_items(held_out=True, seed=0)[:24]  # 8 held-out triples x (en, zh, mixed)
    requests = [
        generation(it.prompt, seed=i, size=(32, 32), steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE)
        for i, it in enumerate(items)
    ]
    scores = [evaluate(r.pixels, it.spec) for r, it in zip(v1(requests), items, strict=True)]
    color = sum(s.color for s in scores) / len(scores)
    color_position = sum(s.color_position for s in scores) / len(scores)
    floor = FLOORS["tiny-mmdit@v1"]
    assert color >= floor["color"], f"colour right in {color:.0%} of 24 held-out prompts"
    assert color_position >= floor["color_position"], f"colour+position right in {color_position:.0%}"


def test_quality_table_runs(v1: Pipeline) -> None:
    report = measure(v1.bundle, Settings(steps=2, repeats=1, edit_cases=2))
    table = format_table(report)
    for row in ("held-out", "held-in zh", "inpainting", "outpainting"):
        assert row in table
    assert report["adherence"]["held-out"]["n"] == 3 * len(synthetic.HELD_OUT)

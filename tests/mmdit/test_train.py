"""The training script on a tiny config: determinism, learning, checkpoint record, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from huabu.deployments.backends.mmdit.checkpoint import ModelBundle, load_checkpoint
from huabu.deployments.backends.mmdit.training import synthetic
from huabu.deployments.backends.mmdit.training.train import (
    TrainArgs,
    flow_loss,
    lr_at,
    main,
    model_config,
    parse_args,
    rope_axes_for,
    train,
)

TINY = [
    "--width",
    "32",
    "--num-heads",
    "2",
    "--depth",
    "1",
    "--text-width",
    "32",
    "--text-depth",
    "1",
    "--batch-size",
    "2",
    "--warmup",
    "2",
    "--eval-every",
    "0",
    "--log-every",
    "1",
    "--threads",
    "1",
]


def _args(tmp_path: Path, *extra: str) -> TrainArgs:
    return parse_args(["--out", str(tmp_path), "--model-id", "t@v1", "--steps", "3", *TINY, *extra])


def _same(a: ModelBundle, b: ModelBundle) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_weights(tmp_path: Path) -> None:
    first = train(_args(tmp_path / "a"), log=lambda _: None)
    second = train(_args(tmp_path / "b"), log=lambda _: None)
    other = train(_args(tmp_path / "c", "--seed", "1"), log=lambda _: None)
    assert _same(first.ema, second.ema) and _same(first.bundle, second.bundle)
    assert not _same(first.bundle, other.bundle)


def test_loss_decreases_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    args = parse_args([*TINY])
    bundle = ModelBundle(model_config(args), "t@v1")
    batch = synthetic.sample_batch(np.random.default_rng(0), 4)
    gen = torch.Generator().manual_seed(0)
    t, noise = torch.rand(4, generator=gen), torch.randn(4, 3, 32, 32, generator=gen)
    opt = torch.optim.AdamW(bundle.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = flow_loss(bundle, batch.images, batch.captions, t, noise, torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_and_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--model-id", "t@v2", "--steps", "3", "--seed", "7", *TINY]
    assert main(argv) == 0
    assert "loss" in capsys.readouterr().out
    path = tmp_path / "t@v2"
    record = json.loads((path / "record.json").read_text())
    assert record["seed"] == 7 and record["steps"] == 3 and record["argv"] == argv
    assert record["data_version"] == synthetic.DATA_VERSION and record["weights"] == "EMA"
    assert record["command"].startswith("huabu train")
    assert "git_commit" in record and record["wall_time_s"] >= 0
    assert all(v.dtype == torch.float16 for v in load_file(str(path / "model.safetensors")).values())
    assert (path / "curve.csv").read_text().startswith("step,")
    bundle = load_checkpoint("t@v2", [tmp_path])
    assert bundle.config.width == 32 and bundle.model_id == "t@v2"


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight = train(_args(tmp_path / "s"), log=lambda _: None)
    state = tmp_path / "state.pt"
    part = train(_args(tmp_path / "p", "--until", "2", "--state", str(state)), log=lambda _: None)
    assert part.step == 2 and part.stopped_by == "until"
    resumed = train(_args(tmp_path / "r", "--resume", str(state)), log=lambda _: None)
    assert resumed.step == 3
    assert _same(straight.bundle, resumed.bundle) and _same(straight.ema, resumed.ema)


def test_snapshot_mid_run(tmp_path: Path) -> None:
    result = train(_args(tmp_path, "--save-at", "2:t@v0"), log=lambda _: None)
    assert [p.name for p in result.saved] == ["t@v0", "t@v1"]
    assert json.loads((tmp_path / "t@v0" / "record.json").read_text())["steps"] == 2


def test_fine_tune_starts_from_the_checkpoint_and_stores_sampling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(_args(tmp_path), log=lambda _: None)  # t@v1
    monkeypatch.setenv("HUABU_MODEL_DIR", str(tmp_path))
    fine = ["--model-id", "t@v2", "--init-from", "t@v1", "--sampling-steps", "12", "--sampling-guidance", "4.5"]
    start = train(_args(tmp_path, *fine, "--until", "0"), log=lambda _: None)
    assert _same(start.ema, load_checkpoint("t@v1"))  # fp16 round trip of base's EMA: the start point
    tuned = train(_args(tmp_path, *fine, "--grammar-share", "1.0"), log=lambda _: None)
    assert tuned.step == 3 and not _same(tuned.bundle, start.bundle)
    record = json.loads((tmp_path / "t@v2" / "record.json").read_text())
    assert record["init_from"] == "t@v1" and "grammar" in record["data_version"]
    limits = load_checkpoint("t@v2").config.limits()
    assert (limits.steps, limits.guidance) == (12, 4.5)  # what the server uses when a request names neither


def test_schedule_and_rope_split() -> None:
    args = TrainArgs(steps=100, warmup=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, args) == pytest.approx(1e-4) and lr_at(9, args) == pytest.approx(1e-3)
    assert lr_at(100, args) == pytest.approx(1e-4)
    assert lr_at(50, args) < lr_at(20, args)
    for head_dim in (16, 24, 32, 48):
        text, row, col = rope_axes_for(head_dim)
        assert text + row + col == head_dim and row == col and all(a % 2 == 0 for a in (text, row, col))

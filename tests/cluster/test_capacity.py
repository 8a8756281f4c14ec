"""The capacity model (huabu.cluster.capacity): its cost law, its plans, and that the fixed-latency
model replica (``model.fixed_latency``) follows the same law."""

from __future__ import annotations

import math

import pytest

from huabu.cluster.capacity import ModelProfile, batch_seconds, plan
from huabu.cluster.cli import main as cli_main
from huabu.deployments.core.settings import Settings


def test_batch_cost_spans_no_gain_to_free_batching() -> None:
    assert batch_seconds(2.0, 1, 0.3) == 2.0  # one image costs its latency whatever the efficiency
    assert batch_seconds(2.0, 4, 0.0) == pytest.approx(8.0)  # no gain: four images, four times
    assert batch_seconds(2.0, 4, 1.0) == pytest.approx(2.0)  # free batching: four for the price of one
    assert batch_seconds(2.0, 4, 0.75) == pytest.approx(2.0 * (1 + 3 * 0.25))
    with pytest.raises(ValueError):
        batch_seconds(1.0, 0, 1.0)


def test_replica_throughput_grows_with_batch_size_and_efficiency() -> None:
    profile = ModelProfile(per_image_s=0.5, batching_efficiency=0.75, max_batch_size=4)
    assert profile.replica_throughput(1) == pytest.approx(2.0)
    assert profile.replica_throughput() == pytest.approx(4 / 0.875)
    assert ModelProfile(0.5, 0.0, 4).replica_throughput() == pytest.approx(2.0)  # batching gains nothing


def test_plan_rounds_replicas_up_at_the_planned_utilization() -> None:
    profile = ModelProfile(per_image_s=1.0, batching_efficiency=1.0, max_batch_size=4)  # 4 images/s each
    exact = plan(16, profile, utilization=1.0)
    assert (exact.replicas, exact.gpus, exact.capacity_rps, exact.utilization) == (4, 4.0, 16.0, 1.0)
    headroom = plan(16, profile, utilization=0.8)
    assert headroom.replicas == 5 and headroom.utilization == pytest.approx(0.8)
    assert plan(0, profile).replicas == 0
    assert plan(0.1, profile).replicas == 1
    half_full = plan(16, profile, utilization=1.0, batch_size=2)  # batches reach 2 of 4: half the rate
    assert half_full.replicas == 8 and half_full.target_ongoing_requests == 8  # autoscaling still aims at 2 x 4


def test_plan_packs_replicas_into_whole_nodes() -> None:
    half = ModelProfile(per_image_s=1.0, max_batch_size=1, num_gpus=0.5)  # two replicas per GPU
    result = plan(10, half, gpus_per_node=4, utilization=1.0)
    assert (result.replicas, result.gpus, result.nodes) == (10, 5.0, 2)
    big = ModelProfile(per_image_s=1.0, max_batch_size=1, num_gpus=3)  # one per 4-GPU node, 1 GPU idle
    assert plan(3, big, gpus_per_node=4, utilization=1.0).nodes == 3
    with pytest.raises(ValueError, match="needs 3"):
        plan(1, big, gpus_per_node=2)


@pytest.mark.parametrize(
    "bad",
    [
        {"per_image_s": 0},
        {"per_image_s": 1, "batching_efficiency": 1.5},
        {"per_image_s": 1, "max_batch_size": 0},
        {"per_image_s": 1, "num_gpus": -1},
    ],
)
def test_profile_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ModelProfile(**bad)  # type: ignore[arg-type]


def test_fixed_latency_setting_is_validated() -> None:
    settings = Settings.load(environ={"HUABU__MODEL__FIXED_LATENCY": '{"seconds": 0.5, "batching_efficiency": 0.8}'})
    assert settings.model.fixed_latency is not None
    assert settings.model.fixed_latency.seconds == 0.5
    assert Settings.load(environ={}).model.fixed_latency is None
    with pytest.raises(ValueError):
        Settings.load(environ={}, model={"fixed_latency": {"seconds": 0}})


def test_capacity_command(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["cluster", "capacity", "--rps", "12", "--latency", "1", "--batch", "4", "--efficiency", "1"]
    assert cli_main([*args, "--utilization", "0.75", "--gpus-per-node", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("4 replicas on 4 GPUs (2 nodes of 2 GPUs)"), out
    assert cli_main(["cluster", "capacity", "--rps", "1", "--latency", "-1"]) == 2
    assert "per_image_s must be positive" in capsys.readouterr().err
    assert math.isfinite(plan(1, ModelProfile(1.0)).batch_latency_s)


def test_the_fixed_latency_backend_follows_the_planners_law() -> None:
    from huabu.deployments.backends import fixed_latency

    for size, efficiency in ((1, 0.3), (4, 0.0), (4, 0.75), (8, 1.0)):
        assert fixed_latency.batch_seconds(2.0, size, efficiency) == pytest.approx(batch_seconds(2.0, size, efficiency))

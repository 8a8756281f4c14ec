"""A test and benchmark backend: the real pipeline, each batch held to a known cost.

With ``model.fixed_latency`` set, the model stage holds a batch of ``n`` images for at least
``seconds * (1 + (n - 1) * (1 - batching_efficiency))`` whatever the real computation took (the
real pipeline still runs and its time counts), so placement, autoscaling and the capacity model
(``huabu.cluster.capacity``, the same law) can be checked with known costs on any machine.
``memory_pixels`` gives it a card that small, so that the answer to a GPU out of memory can be too.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from huabu.deployments.backends.contract import Backend, CancelCheck, ModelLimits, ProgressCallback, SampleResult
from huabu.deployments.backends.requests import SampleRequest


def batch_seconds(per_image_s: float, batch_size: int, batching_efficiency: float) -> float:
    return per_image_s * (1.0 + (batch_size - 1) * (1.0 - batching_efficiency))


class FixedLatencyPipeline:
    def __init__(
        self, pipeline: Backend, seconds: float, batching_efficiency: float, memory_pixels: int | None = None
    ) -> None:
        self.pipeline = pipeline
        self.seconds = seconds
        self.batching_efficiency = batching_efficiency
        self.memory_pixels = memory_pixels
        self.model_id = pipeline.model_id
        self.limits: ModelLimits = pipeline.limits

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    def describe(self) -> dict[str, Any]:
        return {**self.pipeline.describe(), "fixed_latency_s": self.seconds}

    def __call__(
        self,
        requests: list[SampleRequest],
        on_step: ProgressCallback | None = None,
        is_cancelled: CancelCheck | None = None,
    ) -> list[SampleResult]:
        pixels = sum(r.height * r.width for r in requests)
        if self.memory_pixels is not None and pixels > self.memory_pixels:
            raise torch.OutOfMemoryError(
                f"out of memory: a batch of {pixels} pixels on a card that holds {self.memory_pixels}"
            )
        return self.pipeline(requests, on_step, is_cancelled)

    def remaining_s(self, batch_size: int, started: float) -> float:
        """How much longer a batch begun at ``started`` (perf_counter) must be held. The model stage
        waits it out on its event loop, not in its compute thread, so the next batch can compute
        meanwhile, as on a GPU whose batches overlap their host work."""
        cost = batch_seconds(self.seconds, batch_size, self.batching_efficiency)
        return max(0.0, cost - (time.perf_counter() - started))

"""The Router: serves every model variant (stable, canary, ...) and forwards each request to the
one its A/B assignment chose.

The weights themselves live in the state store and are read every ``ab.refresh_interval_s`` by the
gateway (``deployments/gateway/experiments.py``), which assigns the variant: it must be chosen before the
cache key is computed (the key names the model), and the gateway is where the user is known. A
weight change is therefore a state-store write; no deployment is redeployed or reconfigured, so no
replica restarts (re-running ``serve.run`` with a new ``user_config`` would restart them in Ray 2.60).

Requests without an assignment go to the variant serving their pinned model, else to ``stable``.
Each variant may inject faults (``variants.<name>.inject_error_rate`` / ``inject_latency_s``) for
canary drills and tests.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from huabu.deployments.core import telemetry
from huabu.deployments.core.handles import Answering, call, connect
from huabu.deployments.core.messages import ModelOverloaded, ModelRequest, ModelResult, UnknownModel
from huabu.deployments.core.settings import Settings


class InjectedFault(RuntimeError):
    """A failure injected by ``variants.<name>.inject_error_rate`` (drills and tests)."""


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
class Router(Answering):
    def __init__(self, variants: dict[str, DeploymentHandle], settings: Settings) -> None:
        telemetry.configure(settings, "router")
        self.variants = {name: connect(handle, settings) for name, handle in variants.items()}
        self.models = {name: v.model_id for name, v in settings.variants.items()}
        self.faults = {
            name: (v.inject_error_rate, v.inject_latency_s)
            for name, v in settings.variants.items()
            if v.inject_error_rate or v.inject_latency_s
        }
        self.random = random.Random()

    async def describe(self) -> dict[str, dict[str, Any]]:
        """variant -> the model stage's ``describe()``: served id, reference, limits, backend details."""
        return {name: await call(handle, "describe") for name, handle in self.variants.items()}

    def replica_id(self) -> str:
        """This replica's id (tests check that weight changes restart nothing)."""
        return serve.get_replica_context().replica_id.unique_id

    def choose(self, request: ModelRequest) -> str:
        if request.variant is not None and request.variant in self.variants:
            return request.variant
        if request.model is None:
            return "stable"
        for name, model_id in self.models.items():
            if request.model == model_id:
                return name
        raise UnknownModel(request.model)

    async def _inject(self, variant: str) -> None:
        error_rate, latency_s = self.faults.get(variant, (0.0, 0.0))
        if latency_s:
            await asyncio.sleep(latency_s)
        if error_rate and self.random.random() < error_rate:
            raise InjectedFault(f"fault injected into variant {variant!r}")

    async def generate(self, request: ModelRequest) -> ModelResult:
        with telemetry.hop("router", request) as hop:  # the span names the variant; metrics count per variant
            return await self._generate(request, hop)

    async def _generate(self, request: ModelRequest, hop: telemetry.StageSpan) -> ModelResult:
        hop.variant = variant = self.choose(request)
        hop.set(variant=variant, model=self.models.get(variant))
        await self._inject(variant)
        try:
            result: ModelResult = await call(self.variants[variant], "generate", request)
        except BackPressureError as exc:
            raise ModelOverloaded(str(exc)) from None
        result.variant = variant
        return result

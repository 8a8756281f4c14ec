"""The Router: picks the model variant that serves a request and forwards it. One stable
variant for now; canary traffic splitting builds on this."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from huabu.deployments.messages import ModelRequest, ModelResult
from huabu.deployments.settings import Settings


class ModelOverloaded(Exception):
    """Every replica of the chosen model is busy and its queue is full."""


class UnknownModel(LookupError):
    pass


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
class Router:
    def __init__(self, variants: dict[str, DeploymentHandle], settings: Settings) -> None:
        self.variants = variants
        self.models = {name: v.model for name, v in settings.variants.items()}

    async def describe(self) -> dict[str, dict[str, Any]]:
        """variant -> {"model": name@version, "config": MMDiTConfig dict}."""
        return {name: await handle.describe.remote() for name, handle in self.variants.items()}

    def choose(self, request: ModelRequest) -> str:
        if request.model is None:
            return "stable"
        for name, model_id in self.models.items():
            if request.model == model_id:
                return name
        raise UnknownModel(request.model)

    async def generate(self, request: ModelRequest) -> ModelResult:
        variant = self.choose(request)
        try:
            result: ModelResult = await self.variants[variant].generate.remote(request)
        except BackPressureError as exc:
            raise ModelOverloaded(str(exc)) from None
        result.variant = variant
        return result

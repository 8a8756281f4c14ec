"""What the prompt and image filter stages share: telemetry under the stage's name, a handle on
the next stage, a span per request, the filter's warm-up and its decision counters."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Protocol, TypeVar

from ray.serve.handle import DeploymentHandle

from huabu.deployments.core import telemetry
from huabu.deployments.core.handles import Answering, connect
from huabu.deployments.core.messages import ModelRequest, ModelResult
from huabu.deployments.core.settings import Settings
from huabu.filters import FilterCounters


class Screen(Protocol):
    counters: FilterCounters

    def warmup(self) -> None: ...


ScreenT = TypeVar("ScreenT", bound=Screen)


class FilterStage(Answering, Generic[ScreenT]):
    stage: ClassVar[str]  # telemetry service, span and admin statistics key

    def __init__(self, next_stage: DeploymentHandle, settings: Settings, screen: ScreenT) -> None:
        telemetry.configure(settings, self.stage)
        self.next_stage = connect(next_stage, settings)
        self.filter = screen
        self.filter.warmup()

    async def generate(self, request: ModelRequest) -> ModelResult:
        with telemetry.hop(self.stage, request):
            return await self._generate(request)

    async def _generate(self, request: ModelRequest) -> ModelResult:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return dict(self.filter.counters.snapshot())

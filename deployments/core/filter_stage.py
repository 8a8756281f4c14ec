"""What the prompt and image filter stages share: telemetry under the stage's name, a handle on
the next stage, a span per request, and the filter itself behind a :class:`GuardedFilter`, which
fails closed (a filter that cannot load, errors or overruns answers 503 with Retry-After, logged
and counted; nothing unscreened goes on)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic

from ray.serve.handle import DeploymentHandle

from huabu.deployments.core import telemetry
from huabu.deployments.core.handles import Answering, connect
from huabu.deployments.core.messages import ModelRequest, ModelResult
from huabu.deployments.core.settings import Settings
from huabu.filters.counters import FilterCounters
from huabu.filters.failclosed import GuardedFilter, ScreenT
from huabu.filters.settings import ImageFilterSettings, PromptFilterSettings


class FilterStage(Answering, Generic[ScreenT]):
    stage: ClassVar[str]  # telemetry service, span and admin statistics key

    def __init__(
        self,
        next_stage: DeploymentHandle,
        settings: Settings,
        build: Callable[[FilterCounters], ScreenT],
        limits: PromptFilterSettings | ImageFilterSettings,
    ) -> None:
        telemetry.configure(settings, self.stage)
        self.next_stage = connect(next_stage, settings)
        self.guard = GuardedFilter(
            self.stage, build, timeout_s=limits.check_timeout_s, retry_after_s=limits.retry_after_s
        )
        # A model that does not load leaves the replica up and refusing (503), not crash-looping: the
        # load is retried by requests, so a fixed file is picked up without a redeploy.
        self.guard.load()

    async def generate(self, request: ModelRequest) -> ModelResult:
        with telemetry.hop(self.stage, request):
            return await self._generate(request)

    async def _generate(self, request: ModelRequest) -> ModelResult:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {**self.guard.counters.snapshot(), "available": self.guard.available}

"""The image filter stage, wrapping ``huabu.filters.ImageFilter`` (an NSFW classifier). It runs
after the model and before storage and cache writes, so a blocked image is never stored, cached
or returned. A block raises ``ContentBlocked`` (400 ``content_policy_violation`` at the gateway);
a classifier that cannot load, errors or overruns raises ``FilterUnavailable`` (503 with
Retry-After), so an unscreened image is never returned, stored or cached either.
"""

from __future__ import annotations

import logging

from ray import serve
from ray.serve.handle import DeploymentHandle

from huabu.deployments.core import telemetry
from huabu.deployments.core.filter_stage import FilterStage
from huabu.deployments.core.handles import call
from huabu.deployments.core.messages import ContentBlocked, ModelRequest, ModelResult
from huabu.deployments.core.settings import Settings
from huabu.filters import ImageFilter

logger = logging.getLogger("huabu.safety")


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
class ImageFilterStage(FilterStage[ImageFilter]):
    stage = "image_filter"

    def __init__(self, next_stage: DeploymentHandle, settings: Settings) -> None:
        s = settings.safety.image
        super().__init__(next_stage, settings, lambda counters: ImageFilter(s, counters=counters), s)

    async def _generate(self, request: ModelRequest) -> ModelResult:
        result: ModelResult = await call(self.next_stage, "generate", request)
        if result.cancelled or not result.png:
            return result
        with telemetry.work("image_filter.check") as check:
            # Decoding a 1024x1024 PNG takes ~25 ms: in a worker thread, so other requests keep moving.
            decision = await self.guard.run(lambda f: f.check_png(result.png))
            telemetry.filter_decision(check, "image", decision)
        if decision.blocked:
            logger.info(
                "image blocked: layer=%s category=%s score=%s request=%s",
                decision.stage.value,
                decision.category,
                decision.score,
                request.request_id,
            )
            raise ContentBlocked.from_decision(decision)
        return result

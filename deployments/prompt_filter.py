"""The prompt filter stage, wrapping ``huabu.filters.PromptFilter``. It runs before the cache, so
a blocked prompt never reaches cache or model. A block raises ``ContentBlocked``; the gateway
answers it with a 400 ``content_policy_violation`` naming the category. Only a fingerprint of a
blocked prompt is logged, never its text, with the layer that decided (blocklist, intent, semantic).
A filter that cannot screen raises ``FilterUnavailable`` (503 with Retry-After): fail closed.
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
from huabu.filters import PromptFilter

logger = logging.getLogger("huabu.safety")


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
class PromptFilterStage(FilterStage[PromptFilter]):
    stage = "prompt_filter"

    def __init__(self, next_stage: DeploymentHandle, settings: Settings) -> None:
        s = settings.safety.prompt
        super().__init__(next_stage, settings, lambda counters: PromptFilter(s, counters=counters), s)

    async def _generate(self, request: ModelRequest) -> ModelResult:
        with telemetry.work("prompt_filter.check") as check:
            # In a worker thread: the encoder merges concurrent callers into one model pass.
            decision = await self.guard.run(lambda f: f.check_request(request.prompt, request.negative_prompt))
            telemetry.filter_decision(check, "prompt", decision)
        if decision.blocked:
            logger.info(
                "prompt blocked: layer=%s category=%s rule=%s prompt_sha256=%s request=%s",
                decision.stage.value,
                decision.category,
                decision.rule_id,
                decision.fingerprint,
                request.request_id,
            )
            raise ContentBlocked.from_decision(decision)
        result: ModelResult = await call(self.next_stage, "generate", request)
        return result

"""Safety stages of the request path, wrapping ``huabu.filters``.

``PromptScreen`` runs before the cache, so a blocked prompt never reaches cache or model.
``ImageScreen`` runs after the model and before storage and cache writes, so a blocked image is
never stored or returned. A block raises ``ContentBlocked``; the gateway answers it with a 400
``content_policy_violation`` naming the category. Only a fingerprint of a blocked prompt is
logged, never its text.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from huabu.deployments import telemetry
from huabu.deployments.handles import call, connect
from huabu.deployments.messages import ModelRequest, ModelResult
from huabu.deployments.settings import SafetySettings, Settings
from huabu.filters import Decision, ImageFilter, PromptFilter
from huabu.filters.image import bundled_model_path

logger = logging.getLogger("huabu.safety")


def screening_policy(settings: SafetySettings) -> str:
    """A digest of everything that decides whether a prompt or an image passes: the settings and
    the bytes of every block list, exemplar file and classifier they name. A cached result was
    screened under one policy; keyed by it, a hit can skip both screens, and any policy change
    makes every older entry a miss."""
    digest = hashlib.sha256(settings.model_dump_json().encode())

    def add_file(path: str | Path, bundled: str) -> None:
        local = Path(path)
        if local.suffix in (".yaml", ".yml", ".json") or local.exists():
            digest.update(local.read_bytes())
        else:
            digest.update(resources.files("huabu.filters").joinpath(bundled.format(path)).read_bytes())

    for name in settings.prompt.blocklists:
        add_file(name, "data/blocklist_{}.yaml")
    for name in settings.prompt.exemplars:
        add_file(name, "data/exemplars_{}.yaml")
    classifier = Path(settings.image.model_path or bundled_model_path())
    digest.update(f"{classifier}:{classifier.stat().st_size}".encode())
    return digest.hexdigest()[:16]


class ContentBlocked(Exception):
    """A prompt or an image was blocked by policy (it carries no prompt text)."""

    def __init__(self, stage: str, category: str, rule_id: str | None, fingerprint: str | None) -> None:
        super().__init__(f"{stage} blocked: {category}")
        self.stage = stage
        self.category = category
        self.rule_id = rule_id
        self.fingerprint = fingerprint

    @classmethod
    def from_decision(cls, decision: Decision) -> ContentBlocked:
        category = decision.category.value if decision.category is not None else "unsafe"
        return cls(decision.stage.value, category, decision.rule_id, decision.fingerprint)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across Ray with all fields
        return (ContentBlocked, (self.stage, self.category, self.rule_id, self.fingerprint))


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
class PromptScreen:
    def __init__(self, next_stage: DeploymentHandle, settings: Settings) -> None:
        telemetry.configure(settings, "prompt_filter")
        self.next_stage = connect(next_stage, settings)
        self.filter = PromptFilter(settings.safety.prompt)
        self.filter.warmup()

    async def generate(self, request: ModelRequest) -> ModelResult:
        with telemetry.hop("prompt_filter", request):
            return await self._generate(request)

    async def _generate(self, request: ModelRequest) -> ModelResult:
        with telemetry.work("prompt_filter.check") as check:
            # The encoder merges concurrent callers into one model pass; run it off the event loop.
            decision = await asyncio.to_thread(self.filter.check_request, request.prompt, request.negative_prompt)
            telemetry.filter_decision(check, "prompt", decision)
        if decision.blocked:
            logger.info(
                "prompt blocked: category=%s rule=%s prompt_sha256=%s request=%s",
                decision.category,
                decision.rule_id,
                decision.fingerprint,
                request.request_id,
            )
            raise ContentBlocked.from_decision(decision)
        result: ModelResult = await call(self.next_stage.generate.remote(request))
        return result

    def stats(self) -> dict[str, Any]:
        return dict(self.filter.counters.snapshot())


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
class ImageScreen:
    def __init__(self, next_stage: DeploymentHandle, settings: Settings) -> None:
        telemetry.configure(settings, "image_filter")
        self.next_stage = connect(next_stage, settings)
        self.filter = ImageFilter(settings.safety.image)
        self.filter.warmup()

    async def generate(self, request: ModelRequest) -> ModelResult:
        with telemetry.hop("image_filter", request):
            return await self._generate(request)

    async def _generate(self, request: ModelRequest) -> ModelResult:
        result: ModelResult = await call(self.next_stage.generate.remote(request))
        if result.cancelled or not result.png:
            return result
        with telemetry.work("image_filter.check") as check:
            # Decoding a 1024x1024 PNG takes ~25 ms: in a thread, so other requests keep moving.
            decision = await asyncio.to_thread(self.filter.check_png, result.png)
            telemetry.filter_decision(check, "image", decision)
        if decision.blocked:
            logger.info(
                "image blocked: category=%s score=%s request=%s", decision.category, decision.score, request.request_id
            )
            raise ContentBlocked.from_decision(decision)
        return result

    def stats(self) -> dict[str, Any]:
        return dict(self.filter.counters.snapshot())

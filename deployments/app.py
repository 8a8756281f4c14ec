"""The application builder: the whole request path, top to bottom.

    HTTP -> Gateway -(miss)-> PromptFilterStage -> CacheStage -(miss)-> ImageFilterStage
              │                                                    -> Router -> ModelStage[variant]
              └─(hit)─> result: the gateway reads the cache index itself (core.result_cache.ResultCache)

The gateway's own middleware and routes, in request order: ``gateway/routes.py``.

Each stage is its own Serve deployment holding a handle to the next; the builder below wires
them from the model outwards, so each stage is bound to the one after it.
"""

from __future__ import annotations

from typing import Any, cast

from ray.serve import Application, Deployment

from huabu.deployments.cache import CacheStage
from huabu.deployments.core.handles import replica_actor_options
from huabu.deployments.core.settings import Settings
from huabu.deployments.gateway.routes import Gateway
from huabu.deployments.image_filter import ImageFilterStage
from huabu.deployments.model import ModelStage
from huabu.deployments.prompt_filter import PromptFilterStage
from huabu.deployments.router import Router


def model_options(settings: Settings, variant: str) -> dict[str, Any]:
    m = settings.model
    return {
        "name": f"MMDiT-{variant}",
        "ray_actor_options": replica_actor_options(settings, m.env_vars, num_gpus=m.num_gpus, num_cpus=m.num_cpus),
        "autoscaling_config": m.autoscaling.to_serve(),
        "max_ongoing_requests": m.max_ongoing_requests,
        "max_queued_requests": m.max_queued_requests,
        "health_check_period_s": m.health_check_period_s,
        "health_check_timeout_s": m.health_check_timeout_s,
        "graceful_shutdown_timeout_s": settings.graceful_shutdown_timeout_s,
    }


def build_app(settings: Settings) -> Application:
    settings.require_secrets()  # every way in (serve deploy, KubeRay, huabu up) fails here, naming the fix
    gw = settings.gateway
    small: dict[str, Any] = {
        "ray_actor_options": replica_actor_options(settings, num_cpus=0),
        "max_ongoing_requests": 1000,
    }
    # The Serve decorators hide .options() from type checkers; the casts restore it.
    model, router_cls, gateway = cast(Deployment, ModelStage), cast(Deployment, Router), cast(Deployment, Gateway)
    # 1. One autoscaled, batched model deployment per variant (stable; canary with A/B).
    models = {
        variant: model.options(**model_options(settings, variant)).bind(v, settings)
        for variant, v in settings.variants.items()
    }
    # 2. The router picks the variant for each request.
    router = router_cls.options(**small).bind(models, settings)
    stages: dict[str, Any] = {}
    entry: Any = router
    # 3. Every image is screened before it is stored, cached or returned.
    if settings.safety.image.enabled:
        entry = stages["image_filter"] = cast(Deployment, ImageFilterStage).options(**small).bind(entry, settings)
    # 4. The cache coalesces identical misses and indexes results (the gateway answers hits).
    if settings.cache.enabled:
        entry = stages["cache"] = cast(Deployment, CacheStage).options(**small).bind(entry, settings)
    # 5. Prompts are screened before they cost a cache lookup or GPU time.
    if settings.safety.prompt_enabled:
        entry = stages["prompt_filter"] = cast(Deployment, PromptFilterStage).options(**small).bind(entry, settings)
    # 6. Kafka (when enabled): a consumer group turning a topic's requests into the gateway's jobs.
    if settings.ingest.kafka.enabled:
        from huabu.deployments.ingest.kafka import KafkaIngress  # the confluent-kafka extra, only here

        ingress = cast(Deployment, KafkaIngress).options(num_replicas=settings.ingest.kafka.replicas, **small)
        stages["kafka"] = ingress.bind(settings)
    # 7. The gateway validates, runs jobs and answers HTTP.
    return gateway.options(
        num_replicas=gw.num_replicas,
        ray_actor_options=replica_actor_options(settings, num_cpus=gw.num_cpus),
        max_ongoing_requests=gw.max_ongoing_requests,
        health_check_period_s=gw.health_check_period_s,
        health_check_timeout_s=gw.health_check_timeout_s,
        graceful_shutdown_timeout_s=settings.graceful_shutdown_timeout_s,
    ).bind(entry, router, stages, settings)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for ``serve run`` / ``serve deploy`` (``import_path: huabu.deployments.app:app_builder``).
    ``args`` may name a YAML ``settings_file`` and/or carry settings inline."""
    args = dict(args)
    return build_app(Settings.load(args.pop("settings_file", None), **args))

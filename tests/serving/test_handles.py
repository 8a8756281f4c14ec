"""Stages call each other over Serve's gRPC transport (deployments/core/handles.py): an edit's canvas
and a large PNG must pass between them, which Serve's default 4 MiB gRPC message limit refuses; a
call is accepted by its replica long before a slow answer, so the replica's liveness can be watched."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from ray import serve
from ray.serve.handle import DeploymentHandle

from huabu.deployments.app import model_options
from huabu.deployments.core import handles
from huabu.deployments.core.handles import Answering, call, connect, replica_actor_options
from huabu.deployments.core.messages import ModelRequest, ModelResult
from huabu.deployments.core.settings import Settings

SIDE = 1536  # a 1536x1536 canvas: 7 MB of pixels and 2.4 MB of mask


@serve.deployment(max_ongoing_requests=4)
class Back(Answering):
    async def generate(self, request: ModelRequest) -> ModelResult:
        assert request.image is not None and request.mask is not None
        png = request.image.tobytes()[: 6 * 1024 * 1024]  # an answer above 4 MiB too
        return ModelResult(png=png, seed=int(request.image.sum() % 1000), model="echo", prompt_truncated=False)


@serve.deployment(max_ongoing_requests=4)
class Front:
    def __init__(self, next_stage: DeploymentHandle, settings: Settings) -> None:
        self.next_stage = connect(next_stage, settings)

    async def generate(self, request: ModelRequest) -> ModelResult:
        result: ModelResult = await call(self.next_stage, "generate", request)
        return result


def big_request() -> ModelRequest:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    mask = rng.random((SIDE, SIDE)) < 0.5
    return ModelRequest("edit", "a cat", 1, SIDE, SIDE, 20, 1.0, image=image, mask=mask)


def deploy_pair(name: str, settings: Settings, options: dict[str, Any]) -> DeploymentHandle:
    app = Front.options(ray_actor_options=options).bind(Back.options(ray_actor_options=options).bind(), settings)
    return serve.run(app, name=name, route_prefix=None)


def test_an_edit_canvas_and_a_large_png_pass_between_stages(serve_port: int) -> None:
    settings = Settings.load(environ={})
    request = big_request()
    handle = deploy_pair("handles-big", settings, replica_actor_options(settings, num_cpus=0))
    try:
        result: ModelResult = handle.generate.remote(request).result(timeout_s=120)
        assert len(result.png) == 6 * 1024 * 1024
        assert result.png == request.image.tobytes()[: len(result.png)]  # type: ignore[union-attr]
        assert result.seed == int(request.image.sum() % 1000)  # type: ignore[union-attr]
    finally:
        serve.delete("handles-big")


def test_without_the_raised_limit_serve_refuses_the_same_request(serve_port: int) -> None:
    """Why replica_actor_options sets the limit: the same pair on Serve's default fails."""
    settings = Settings.load(environ={})
    handle = deploy_pair("handles-default", settings, {"num_cpus": 0})
    try:
        with pytest.raises(Exception, match=r"RESOURCE_EXHAUSTED.*larger than max"):
            handle.generate.remote(big_request()).result(timeout_s=120)
    finally:
        serve.delete("handles-default")


def test_the_actor_transport_carries_the_same_request_without_a_raised_limit(serve_port: int) -> None:
    """``handle_transport: actor`` (Serve's default transport) goes through Ray's object store."""
    settings = Settings.load(environ={}, handle_transport="actor")
    request = big_request()
    handle = deploy_pair("handles-actor", settings, {"num_cpus": 0})
    try:
        result: ModelResult = handle.generate.remote(request).result(timeout_s=120)
        assert result.png == request.image.tobytes()[: 6 * 1024 * 1024]  # type: ignore[union-attr]
    finally:
        serve.delete("handles-actor")


@serve.deployment(max_ongoing_requests=4)
class ServeConstants:
    def metrics_export_interval_ms(self) -> int:
        from ray.serve._private import constants

        return constants.RAY_SERVE_METRICS_EXPORT_INTERVAL_MS

    def environ(self, name: str) -> str | None:
        import os

        return os.environ.get(name)


def test_replicas_export_serve_metrics_at_the_configured_interval(serve_port: int) -> None:
    """Serve reads the interval once, when a replica's process imports it: the setting must reach
    the replica's environment, not the caller's."""
    settings = Settings.load(environ={}, telemetry={"serve_metrics_interval_ms": 2500})
    options = replica_actor_options(settings, {"MALLOC_ARENA_MAX": "1"}, num_cpus=0)
    handle = serve.run(
        ServeConstants.options(ray_actor_options=options).bind(), name="handles-metrics", route_prefix=None
    )
    default = serve.run(
        ServeConstants.options(ray_actor_options={"num_cpus": 0}).bind(),
        name="handles-metrics-default",
        route_prefix=None,
    )
    try:
        assert handle.metrics_export_interval_ms.remote().result(timeout_s=60) == 2500
        assert handle.environ.remote("MALLOC_ARENA_MAX").result(timeout_s=60) == "1"  # a deployment's own
        assert default.metrics_export_interval_ms.remote().result(timeout_s=60) == 100  # Serve's own default
    finally:
        serve.delete("handles-metrics")
        serve.delete("handles-metrics-default")


def test_model_replicas_get_their_own_environment() -> None:
    settings = Settings.load(environ={}, model={"env_vars": {"MALLOC_ARENA_MAX": "1"}})
    env = model_options(settings, "stable")["ray_actor_options"]["runtime_env"]["env_vars"]
    assert env["MALLOC_ARENA_MAX"] == "1"
    assert "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH" in env  # added to, not replaced


@serve.deployment(max_ongoing_requests=4)
class Slow(Answering):
    async def generate(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async def secret(self) -> str:
        return "not for callers"


@serve.deployment(max_ongoing_requests=4)
class Caller:
    def __init__(self, slow: DeploymentHandle, settings: Settings) -> None:
        self.slow = connect(slow, settings)

    async def timed(self, seconds: float) -> tuple[float, float, Any, str | None]:
        """-> (s until a replica accepted the call, s until it answered, the answer, its actor id)."""
        start = time.monotonic()
        stream, routed = await handles._accepted(self.slow, "generate", (seconds,), poll_s=0.5)
        accepted = time.monotonic() - start
        answer = await stream.__anext__()
        return accepted, time.monotonic() - start, answer, handles._routed_actor(routed)

    async def forbidden(self) -> str:
        try:
            await call(self.slow, "secret")
        except ValueError as exc:
            return str(exc)
        return "answered"


def test_a_call_is_accepted_before_its_answer_so_liveness_covers_the_wait(serve_port: int) -> None:
    """Serve reports a unary call's replica only with its answer; the one-item stream of
    ``Answering.answer`` reports it on acceptance, so ``call`` watches the replica while it works."""
    settings = Settings.load(environ={}, state={"namespace": "accepted"})
    options = replica_actor_options(settings, num_cpus=0)
    app = Caller.options(ray_actor_options=options).bind(Slow.options(ray_actor_options=options).bind(), settings)
    handle = serve.run(app, name="accepted", route_prefix=None)
    try:
        accepted, answered, answer, actor_id = handle.timed.remote(3.0).result(timeout_s=60)
        assert answer == 3.0 and answered >= 3.0
        assert accepted < 1.5, f"accepted only after {accepted:.1f} s: the liveness watch would start too late"
        assert actor_id is not None  # the gRPC transport names the replica it went to
        # Only the stage methods a caller may reach are answered.
        assert "does not answer 'secret'" in handle.forbidden.remote().result(timeout_s=60)
    finally:
        serve.delete("accepted")

"""How one deployment calls the next.

Serve's default handle call is a Ray actor task: the request and the answer go through Ray's
object layer and the caller's core worker. Serve can instead send them over a gRPC channel
straight to the replica (``_by_reference=False``), which measured ~3.5 ms less per hop here
(an empty chain of five hops: 70.7 -> 53.4 ms, docs/ARCHITECTURE.md "Serving overhead").
Stages pass plain dataclasses (``messages.py``) and picklable errors, so standard pickle
carries them; nothing passes object references between stages, which gRPC cannot carry.
"""

from __future__ import annotations

from typing import Any

from ray.serve.handle import DeploymentHandle

from huabu.deployments.core.settings import Settings

# gRPC's own limit; Serve's default (4 MiB) is below an edit request's canvas at ~1200x1200.
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1


def connect(handle: DeploymentHandle, settings: Settings) -> DeploymentHandle:
    """The handle a stage keeps for its next stage, on the transport the settings choose."""
    if settings.handle_transport == "actor":
        return handle
    return handle.options(_by_reference=False, request_serialization="pickle", response_serialization="pickle")


def max_message_bytes(settings: Settings) -> int:
    """The largest request or answer between stages: an edit carries its canvas (3 bytes a pixel)
    and mask (1 byte a pixel) at the gateway's pixel limit; a PNG answer is smaller than that."""
    return min(GRPC_MAX_MESSAGE_BYTES, 4 * settings.gateway.max_image_pixels + settings.gateway.max_request_bytes)


def replica_actor_options(settings: Settings, env_vars: dict[str, str] | None = None, **options: Any) -> dict[str, Any]:
    """``ray_actor_options`` for every deployment of the app: Serve reads the gRPC message limit
    (on both ends of a channel) and its metrics export interval from each replica's environment;
    ``env_vars`` adds a deployment's own."""
    env = {
        "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(max_message_bytes(settings)),
        "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": str(settings.telemetry.serve_metrics_interval_ms),
        **(env_vars or {}),
    }
    return {**options, "runtime_env": {"env_vars": env}}

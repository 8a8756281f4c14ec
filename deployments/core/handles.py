"""How one deployment calls the next.

Serve's default handle call is a Ray actor task: the request and the answer go through Ray's
object layer and the caller's core worker. Serve can instead send them over a gRPC channel
straight to the replica (``_by_reference=False``), which measured ~3.5 ms less per hop here
(an empty chain of five hops: 70.7 -> 53.4 ms, docs/ARCHITECTURE.md "Serving overhead").
Stages pass plain dataclasses (``messages.py``) and picklable errors, so standard pickle
carries them; nothing passes object references between stages, which gRPC cannot carry.

A call is awaited with ``call``, bounded by the liveness of the replica it was routed to. Over the
gRPC transport an answer arrives only on the channel to that replica: when its node is lost, no
reset comes from a machine that is gone, Serve sets no deadline, and the channel's keepalive
(Ray's ``grpc_client_keepalive_time_ms``, 300 s, plus a 120 s timeout) notices only minutes later,
long after the cluster has replaced the replica. Ray's
control store (GCS) does know: it marks the replica's actor DEAD once the node misses its health
checks. ``call`` asks it every ``LIVENESS_POLL_S`` while a routed call is unanswered and fails the
call with ``ReplicaLost`` when the replica is dead; callers retry (the job runner, the SDK on 503).
The actor transport needs no watch: Ray fails its calls to a dead actor itself.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, cast

import ray
from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

from huabu.deployments.core.settings import Settings

# gRPC's own limit; Serve's default (4 MiB) is below an edit request's canvas at ~1200x1200.
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1
LIVENESS_POLL_S = 1.0  # one control-store lookup per replica with calls in flight, this often
DEAD_REMEMBERED = 256  # replicas known dead, kept so that a late call to one fails without a lookup


class ReplicaLost(RuntimeError):
    """The replica a call was routed to died before answering (its node was lost, or it was killed).
    Nothing was answered, so the call may be sent again: the job runner retries it; the gateway
    answers a synchronous request 503 with Retry-After."""


def _actor_dead(actor_id: str) -> bool:
    """Whether the control store has the actor as DEAD (blocking: run it in a thread)."""
    from ray._private import state  # no public, dashboard-free way to read one actor's state

    info = state.actors(actor_id=actor_id)
    return bool(info) and info.get("State") == "DEAD"


class _Liveness:
    """Replica liveness for one event loop: concurrent checks of one replica share one lookup."""

    def __init__(self) -> None:
        self.checks: dict[str, asyncio.Future[bool]] = {}
        self.dead: dict[str, None] = {}  # insertion-ordered, bounded by DEAD_REMEMBERED

    async def dead_now(self, actor_id: str) -> bool:
        if actor_id in self.dead:
            return True
        check = self.checks.get(actor_id)
        if check is None:
            check = self.checks[actor_id] = asyncio.ensure_future(asyncio.to_thread(_actor_dead, actor_id))
            check.add_done_callback(lambda _: self.checks.pop(actor_id, None))
        try:
            dead = await asyncio.shield(check)
        except asyncio.CancelledError:
            raise
        except Exception:  # the control store is unreachable: no verdict, ask again next poll
            return False
        if dead:
            self.dead[actor_id] = None
            while len(self.dead) > DEAD_REMEMBERED:
                self.dead.pop(next(iter(self.dead)))
        return dead


_liveness: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Liveness] = weakref.WeakKeyDictionary()


def _routed_actor(replica_result: object) -> str | None:
    """The actor id of the replica a gRPC call went to; None on the actor transport."""
    actor_id = getattr(replica_result, "_actor_id", None)
    return cast(str, actor_id.hex()) if isinstance(actor_id, ray.ActorID) else None


async def call(
    response: DeploymentResponse[Any] | DeploymentResponseGenerator[Any], poll_s: float = LIVENESS_POLL_S
) -> Any:
    """The answer to a handle call; ``ReplicaLost`` when the replica it was routed to dies first.
    Waiting to be routed (every replica busy) is not bounded here: that queue is the caller's own
    and is served by whichever replicas are alive."""
    if not isinstance(response, DeploymentResponse):
        raise TypeError("call() takes a unary handle call; stages do not stream to each other")
    # The replica that holds the call is known once Serve has routed it.
    routed = await response._fetch_future_result_async()
    actor_id = _routed_actor(routed)
    if actor_id is None:
        return await response
    liveness = _liveness.setdefault(asyncio.get_running_loop(), _Liveness())
    answer: asyncio.Future[Any] = asyncio.ensure_future(response)
    try:
        while True:
            done, _ = await asyncio.wait({answer}, timeout=poll_s)
            if done:
                return answer.result()
            if await liveness.dead_now(actor_id):
                raise ReplicaLost(f"replica actor {actor_id} died before answering")
    finally:
        answer.cancel()


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

"""How one deployment calls the next.

Serve's default handle call is a Ray actor task: the request and the answer go through Ray's
object layer and the caller's core worker. Serve can instead send them over a gRPC channel
straight to the replica (``_by_reference=False``), which measured ~3.5 ms less per hop here
(an empty chain of five hops: 70.7 -> 53.4 ms, docs/ARCHITECTURE.md "Serving overhead").
Stages pass plain dataclasses (``messages.py``) and picklable errors, so standard pickle
carries them; nothing passes object references between stages, which gRPC cannot carry.

A call is awaited with ``call``, bounded by the liveness of the replica it was routed to. Over the
gRPC transport an answer arrives only on the channel to that replica: when its machine is lost, no
reset comes from it, Serve sets no deadline, and the channel's keepalive (Ray's
``grpc_client_keepalive_time_ms``, 300 s, plus a 120 s timeout) notices only minutes later, long
after the cluster has replaced the replica. Ray's control store (GCS) does know: it marks the
replica's actor DEAD once the node misses its health checks.

Serve tells which replica holds a call only once the replica has accepted it, and for a unary call
the acceptance arrives with the answer (gRPC delivers a unary call's initial metadata with its
response: measured, a 4 s call is "routed" after 4 s). So every call goes through a one-item
stream (``Answering.answer``): the replica's acceptance comes as soon as it takes the call, and from
then on ``call`` asks the control store every ``LIVENESS_POLL_S`` whether that replica is alive,
failing the call with ``ReplicaLost`` when it is DEAD; callers retry (the job runner, the SDK on 503).

Before acceptance a call waits in the caller's router queue (every replica busy) or on a replica
that has not answered yet. A lost machine's replicas stay in the router's set for a few seconds, and
a call sent to one then is never accepted. So while a node death is recent (``RESEND_WINDOW_S``),
a call still unaccepted ``RESEND_AFTER_S`` after it was sent is withdrawn and sent again: queued
calls lose their place, nothing fails. The actor transport needs no watch: Ray fails calls to a
dead actor itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any, ClassVar, cast

import ray
from ray.serve.handle import DeploymentHandle

from huabu.deployments.core.settings import Settings

# gRPC's own limit; Serve's default (4 MiB) is below an edit request's canvas at ~1200x1200.
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1
LIVENESS_POLL_S = 1.0  # one control-store lookup per replica with calls in flight, this often
logger = logging.getLogger("huabu.handles")
DEAD_REMEMBERED = 256  # replicas known dead, kept so that a late call to one fails without a lookup


RESEND_WINDOW_S = 30.0  # after a node death is seen, unaccepted calls are re-sent for this long
RESEND_AFTER_S = 3.0  # a call not accepted this long after it was sent, in that window, is re-sent


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


class Answering:
    """The entry every stage offers its callers: one of its methods, answered as a one-item stream,
    so that the replica's acceptance reaches the caller before the answer (see the module's doc)."""

    answered_methods: ClassVar[frozenset[str]] = frozenset({"generate", "describe"})

    async def answer(self, method: str, *args: Any) -> AsyncIterator[Any]:
        if method not in self.answered_methods:  # only the stage methods a caller may reach
            raise ValueError(f"{type(self).__name__} does not answer {method!r}")
        result = getattr(self, method)(*args)
        yield await result if inspect.isawaitable(result) else result


class _NodeDeaths:
    """When this process first saw a node die, from the control store's node table: one lookup per
    ``LIVENESS_POLL_S`` at most, started by calls."""

    def __init__(self) -> None:
        self.alive: set[str] | None = None
        self.seen_at = -math.inf  # monotonic time the latest death was first seen
        self.checked_at = -math.inf
        self.check: asyncio.Future[set[str]] | None = None

    def refresh(self, poll_s: float) -> None:
        """Start a lookup unless one is running or the last is recent. Every call starts one, so
        that the nodes alive before a death are known when calls begin to wait on a lost node."""
        if self.check is None and time.monotonic() - self.checked_at >= poll_s:
            self.check = asyncio.ensure_future(asyncio.to_thread(_alive_nodes))
            self.check.add_done_callback(self._record)

    async def latest(self, poll_s: float) -> float:
        self.refresh(poll_s)
        if self.check is not None:
            with contextlib.suppress(Exception):  # the control store is unreachable: ask next poll
                await asyncio.shield(self.check)
        return self.seen_at

    def _record(self, check: asyncio.Future[set[str]]) -> None:
        self.check, self.checked_at = None, time.monotonic()
        if check.cancelled() or check.exception() is not None:
            return
        alive = check.result()
        if self.alive is not None and self.alive - alive:
            self.seen_at = time.monotonic()
        self.alive = alive


def _alive_nodes() -> set[str]:
    """The ids of the nodes the control store has alive (blocking: run it in a thread)."""
    return {node["NodeID"] for node in ray.nodes() if node.get("Alive")}


_node_deaths: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _NodeDeaths] = weakref.WeakKeyDictionary()


async def _accepted(handle: DeploymentHandle, method: str, args: tuple[Any, ...], poll_s: float) -> Any:
    """Send the call and wait until a replica accepts it; -> (the stream, Serve's replica result).
    Re-sent while a recent node death may have left it with a replica that will never answer."""
    deaths = _node_deaths.setdefault(asyncio.get_running_loop(), _NodeDeaths())
    deaths.refresh(poll_s)
    while True:
        stream = handle.options(stream=True).answer.remote(method, *args)
        sent_at = time.monotonic()
        routing = asyncio.ensure_future(stream._fetch_future_result_async())
        try:
            while True:
                done, _ = await asyncio.wait({routing}, timeout=poll_s)
                if done:
                    return stream, routing.result()
                waited = time.monotonic() - sent_at
                if waited >= RESEND_AFTER_S and time.monotonic() - await deaths.latest(poll_s) < RESEND_WINDOW_S:
                    break  # withdraw it and send it again
        finally:
            if not routing.done():
                routing.cancel()
                stream.cancel()
        logger.info("a %s call not accepted %.0f s after it was sent, a node lost: sent again", method, waited)


async def call(handle: DeploymentHandle, method: str, *args: Any, poll_s: float = LIVENESS_POLL_S) -> Any:
    """``handle.<method>(*args)`` answered by the next stage (an ``Answering`` deployment);
    ``ReplicaLost`` when the replica that accepted it dies before answering."""
    stream, routed = await _accepted(handle, method, args, poll_s)
    answer: asyncio.Future[Any] = asyncio.ensure_future(stream.__anext__())
    try:
        actor_id = _routed_actor(routed)
        if actor_id is None:  # the actor transport: Ray fails calls to a dead actor itself
            return await answer
        liveness = _liveness.setdefault(asyncio.get_running_loop(), _Liveness())
        while True:
            done, _ = await asyncio.wait({answer}, timeout=poll_s)
            if done:
                return answer.result()
            if await liveness.dead_now(actor_id):
                raise ReplicaLost(f"replica actor {actor_id} died before answering")
    finally:
        if not answer.done():
            answer.cancel()
            stream.cancel()


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

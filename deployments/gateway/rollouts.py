"""Canary rollouts in the gateway: the admin and feedback endpoints and the control loop.

- ``RolloutService`` starts, reads and changes rollouts (``huabu.ab_testing.Rollout`` in the state
  store, updated by compare-and-set) and runs the controller: every ``ab.controller_interval_s`` the
  gateway replica holding the controller lease flushes its metrics, loads everyone's, and lets the
  policy decide (hold, advance, promote, roll back, pause). Every decision is stored in the
  rollout's history with its reason and numbers. A replica that dies loses the lease after
  ``ab.controller_lease_s``; another takes over, and because all state is in the store, nothing is
  lost (a gateway restart resumes the rollout where it was).
- ``router`` is a FastAPI ``APIRouter`` the gateway includes: ``POST /v1/feedback`` and
  ``/v1/admin/rollouts`` (start, list, status, pause, resume, promote, rollback). The status is also
  the report's data: per-variant numbers, latency histograms, quality intervals, traffic history.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import ValidationError

from huabu.ab_testing import (
    CANARY,
    STABLE,
    ConflictError,
    Decision,
    ExperimentMetrics,
    LatencyHistogram,
    Rollout,
    RolloutExistsError,
    RolloutPolicy,
    RolloutRepository,
    StaleDecisionError,
    VariantMetrics,
    evaluate_rollout,
    load_metrics,
)
from huabu.ab_testing._base import check_identifier
from huabu.deployments.core.settings import DIFFUSERS_PREFIX
from huabu.deployments.core.state import hold_lease
from huabu.deployments.gateway.auth import ANONYMOUS_KEY_ID, current_principal
from huabu.deployments.gateway.errors import APIError, invalid, not_found
from huabu.deployments.gateway.experiments import ACTIVE_KEY, Experiments
from huabu.sdk.types import (
    FeedbackRequest,
    FeedbackResponse,
    LatencyBucket,
    RolloutActionRequest,
    RolloutCheck,
    RolloutDecision,
    RolloutInfo,
    RolloutList,
    RolloutStartRequest,
    VariantStats,
)
from huabu.sdk.validation import describe

logger = logging.getLogger("huabu.rollouts")
Action = Literal["pause", "resume", "promote", "rollback"]
LEASE_KEY = "ab:controller:lease"
Z95 = 1.959963984540054


def conflict(message: str) -> APIError:
    return APIError(message, "conflict_error", status=409)


# --- wire views ------------------------------------------------------------------------------------


def _latency_buckets(hist: LatencyHistogram) -> list[LatencyBucket]:
    out = []
    for index in sorted(hist.counts):
        low, high = LatencyHistogram.bounds(index)
        out.append(
            LatencyBucket(low_ms=low, high_ms=high if math.isfinite(high) else low * 1.05, count=hist.counts[index])
        )
    return out


def variant_stats(name: str, model: str | None, weight_bp: int, m: VariantMetrics) -> VariantStats:
    q = m.quality
    half = Z95 * q.std / math.sqrt(q.n) if q.n > 1 else None
    return VariantStats(
        variant=name,
        model=model,
        weight_percent=weight_bp / 100.0,
        requests=m.requests,
        errors=m.errors,
        error_rate=m.error_rate,
        filter_blocks=m.filter_blocks,
        filter_block_rate=m.filter_block_rate,
        latency_mean_ms=m.latency_ms.mean if m.latency_ms.n else None,
        latency_p50_ms=m.latency_quantile(0.5),
        latency_p95_ms=m.p95_latency_ms,
        latency_histogram=_latency_buckets(m.latency_hist),
        quality_n=q.n,
        quality_mean=q.mean if q.n else None,
        quality_ci_low=None if half is None else q.mean - half,
        quality_ci_high=None if half is None else q.mean + half,
        feedback_total=m.feedback_total,
        feedback_accepted=m.feedback_accepted,
        acceptance_rate=m.acceptance_rate,
    )


def decision_view(d: Decision) -> RolloutDecision:
    checks = [RolloutCheck.model_validate(c.model_dump()) for c in d.checks]
    return RolloutDecision.model_validate({**d.model_dump(exclude={"checks"}), "checks": checks})


def rollout_info(rollout: Rollout, metrics: ExperimentMetrics, *, active: bool) -> RolloutInfo:
    totals = metrics.totals()
    weights = rollout.split.weights
    models = {STABLE: rollout.stable_model, CANARY: rollout.canary_model}
    return RolloutInfo(
        id=rollout.id,
        status=rollout.status,
        stable_model=rollout.stable_model,
        canary_model=rollout.canary_model,
        canary_percent=rollout.canary_percent,
        step=rollout.step_index,
        steps=list(rollout.policy.steps),
        created_at=rollout.created_at,
        updated_at=rollout.updated_at,
        active=active,
        policy=json.loads(rollout.policy.model_dump_json()),
        variants=[
            variant_stats(name, models[name], weights[name], totals.get(name) or VariantMetrics())
            for name in (STABLE, CANARY)
        ],
        last_decision=None if rollout.last_decision is None else decision_view(rollout.last_decision),
        history=[decision_view(d) for d in rollout.history],
        traffic=rollout.traffic_history(),
    )


# --- the service ------------------------------------------------------------------------------------


def default_rollout_id(canary: str, now: float) -> str:
    """``<canary>.<unix time>``, keeping of a diffusers reference only its last path part (an id
    holds no ':' and at most 128 characters)."""
    name = canary.removeprefix(DIFFUSERS_PREFIX).rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._@+-]", "-", name).lstrip("._@+-")[:100] or "canary"
    return f"{name}.{int(now)}"


class RolloutService:
    def __init__(self, experiments: Experiments, owner: str) -> None:
        self.experiments = experiments
        self.config = experiments.config
        self.owner = owner

    @property
    def repo(self) -> RolloutRepository:
        return RolloutRepository(self.experiments.store)

    def start(self) -> None:
        self.experiments.spawn(self._control_loop())

    async def _active_id(self) -> str | None:
        raw = await self.experiments.kv.get(ACTIVE_KEY)
        return None if raw is None else str(json.loads(raw)["id"])

    async def info(self, rollout_id: str) -> RolloutInfo:
        if rollout_id == "active":
            active = await self._active_id()
            if active is None:
                raise not_found("no rollout has been started; start one with POST /v1/admin/rollouts", "rollout_id")
            rollout_id = active
        rollout, metrics = await asyncio.to_thread(self._load, rollout_id)
        return rollout_info(rollout, metrics, active=rollout_id == await self._active_id())

    def _load(self, rollout_id: str) -> tuple[Rollout, ExperimentMetrics]:
        try:
            rollout = self.repo.get(rollout_id)
        except ValueError:  # not a valid id
            rollout = None
        if rollout is None:
            raise not_found(f"no rollout {rollout_id!r}", "rollout_id")
        return rollout, load_metrics(self.experiments.store, rollout_id)

    async def list(self) -> RolloutList:
        active = await self._active_id()

        def load() -> list[RolloutInfo]:
            store = self.experiments.store
            return [rollout_info(r, load_metrics(store, r.id), active=r.id == active) for r in self.repo.list()]

        return RolloutList(data=await asyncio.to_thread(load))

    async def create(self, body: RolloutStartRequest, actor: str) -> RolloutInfo:
        served = self.experiments.variants
        stable = body.stable_model or served[STABLE]
        canary = body.canary_model or served.get(CANARY)
        if canary is None:
            raise invalid("no canary variant is served: deploy one (variants.canary.model) or name canary_model")
        for param, model in (("stable_model", stable), ("canary_model", canary)):
            if model not in served.values():
                raise invalid(f"{param} {model!r} is not served here; served: {sorted(set(served.values()))}", param)
        if stable == canary:
            raise invalid("stable_model and canary_model must differ", "canary_model")
        try:
            policy = RolloutPolicy.model_validate(body.policy or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            problem = describe({**first, "loc": ("policy", *first["loc"])})
            raise invalid(problem.message, problem.param) from None
        unjudged = self.experiments.unjudged_quality([stable, canary])
        if unjudged is not None and policy.quality.enabled:
            policy = policy.model_copy(
                update={"quality": policy.quality.model_copy(update={"not_applicable": unjudged})}
            )
        now = time.time()
        rollout_id = body.id or default_rollout_id(canary, now)
        try:
            check_identifier(rollout_id, "rollout id")
        except ValueError as exc:
            raise invalid(str(exc), "id") from None
        rollout = Rollout.start(rollout_id, stable_model=stable, canary_model=canary, now=now, policy=policy)
        await asyncio.to_thread(self._create, rollout)
        logger.info("rollout %s started by %s: %s -> %s at %g%%", rollout.id, actor, stable, canary, policy.steps[0])
        await self.experiments.refresh()
        return rollout_info(rollout, ExperimentMetrics(experiment_id=rollout.id), active=True)

    def _create(self, rollout: Rollout) -> None:
        store = self.experiments.store
        pointer = store.get(ACTIVE_KEY)
        current = None if pointer is None else self.repo.get(pointer["id"])
        if current is not None and not current.terminal:
            raise conflict(f"rollout {current.id!r} is {current.status}: promote or roll it back first")
        try:
            self.repo.create(rollout)
        except RolloutExistsError:
            raise conflict(f"a rollout named {rollout.id!r} already exists; choose another id") from None
        if not store.compare_and_set(ACTIVE_KEY, pointer, {"id": rollout.id}):
            self.repo.delete(rollout.id)
            raise conflict("another rollout was started at the same moment; look at GET /v1/admin/rollouts")

    async def act(self, rollout_id: str, action: Action, reason: str | None, actor: str) -> RolloutInfo:
        def change(rollout: Rollout) -> Rollout:
            kwargs: dict[str, Any] = {"actor": actor}
            if reason:
                kwargs["reason"] = reason
            updated: Rollout = getattr(rollout, action)(time.time(), **kwargs)
            return updated

        def run() -> Rollout:
            try:
                return self.repo.update(rollout_id, change)
            except KeyError:
                raise not_found(f"no rollout {rollout_id!r}", "rollout_id") from None
            except StaleDecisionError as exc:
                raise conflict(str(exc)) from None
            except ConflictError as exc:
                raise conflict(f"{exc}; retry") from None

        rollout = await asyncio.to_thread(run)
        logger.info("rollout %s: %s by %s", rollout_id, action, actor)
        await self.experiments.refresh()
        return await self.info(rollout.id)

    # --- the controller ---------------------------------------------------------------------------

    async def _lease(self) -> bool:
        """Hold the controller lease (one acting replica at a time)."""
        return await hold_lease(self.experiments.kv, LEASE_KEY, self.owner, self.config.controller_lease_s)

    async def tick(self) -> Decision | None:
        """One policy evaluation of the active rollout, if it is running."""
        rollout_id = await self._active_id()
        if rollout_id is None:
            return None
        await self.experiments.flush()

        def evaluate() -> Decision | None:
            rollout = self.repo.get(rollout_id)
            if rollout is None or rollout.status != "running":
                return None
            return evaluate_rollout(self.experiments.store, rollout_id, now=time.time())[1]

        decision = await asyncio.to_thread(evaluate)
        if decision is not None and decision.action != "hold":
            logger.info("rollout %s: %s (%s): %s", rollout_id, decision.action, decision.code, decision.reason)
            await self.experiments.refresh()
        return decision

    async def _control_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.controller_interval_s)
            try:
                if await self._lease():
                    await self.tick()
            except Exception:
                logger.warning("rollout controller tick failed; retrying", exc_info=True)


# --- HTTP --------------------------------------------------------------------------------------------

router = APIRouter()


def _service(request: Request) -> RolloutService:
    service: RolloutService | None = getattr(request.app.state, "rollouts", None)
    if service is None:
        raise not_found("A/B experiments are disabled in this deployment (ab.enabled)")
    return service


def _actor(request: Request) -> str:
    principal = current_principal.get()  # set by the access middleware
    if principal is None or principal.key_id == ANONYMOUS_KEY_ID:
        return "admin"
    return f"admin:{principal.key_id}"


async def _body(request: Request, model: type[Any]) -> Any:
    raw = await request.body()
    if not raw.strip():
        return model()
    try:
        return model.model_validate(json.loads(raw))
    except json.JSONDecodeError:
        raise invalid("request body is not valid JSON") from None


@router.post("/v1/feedback", response_model=FeedbackResponse)
async def feedback(request: Request) -> FeedbackResponse:
    body = await _body(request, FeedbackRequest)
    principal = current_principal.get()  # set by the access middleware
    caller = principal.key_id if principal is not None else ANONYMOUS_KEY_ID
    return await _service(request).experiments.feedback(caller, body.image_id, body.job_id, body.accepted)


@router.post("/v1/admin/rollouts", response_model=RolloutInfo, status_code=201)
async def start_rollout(request: Request) -> RolloutInfo:
    return await _service(request).create(await _body(request, RolloutStartRequest), _actor(request))


@router.get("/v1/admin/rollouts", response_model=RolloutList)
async def list_rollouts(request: Request) -> RolloutList:
    return await _service(request).list()


@router.get("/v1/admin/rollouts/{rollout_id}", response_model=RolloutInfo)
async def get_rollout(rollout_id: str, request: Request) -> RolloutInfo:
    """A rollout by id, or ``active`` for the one being served."""
    return await _service(request).info(rollout_id)


@router.post("/v1/admin/rollouts/{rollout_id}/{action}", response_model=RolloutInfo)
async def rollout_action(rollout_id: str, action: str, request: Request) -> RolloutInfo:
    if action not in ("pause", "resume", "promote", "rollback"):
        raise not_found(f"no action {action!r}: use pause, resume, promote or rollback", "action")
    service = _service(request)
    if rollout_id == "active":
        rollout_id = (await service.info("active")).id
    body = await _body(request, RolloutActionRequest)
    return await service.act(rollout_id, action, body.reason, _actor(request))  # type: ignore[arg-type]

"""A/B experiments in the gateway: live weights, sticky assignment and per-variant metrics.

The statistics and the rollout state machine are plain Python in ``huabu.ab_testing``; this module
connects them to the serving path:

- ``KVStateStore`` is ab_testing's ``StateStore`` on the project's ``KeyValueStore`` (the embedded
  named Ray actor or Redis), so rollout state and metrics survive gateway restarts and every gateway
  replica sees the same ones. Its key listing (the controller's, every tick) reads index sets it
  keeps as it writes, never the store's keyspace (a SCAN over every job, usage and cache key).
- ``Experiments`` (one per gateway replica) re-reads the active rollout's traffic split every
  ``ab.refresh_interval_s`` (weights change without restarting any replica), assigns each request
  to a variant by a sticky hash of (rollout id, user), pins the variant's model on the request
  *before* the cache key is computed (so each variant has its own cache entries), records latency,
  errors, filter blocks and a quality score per variant, and remembers which variant made each
  image so that ``POST /v1/feedback`` can be attributed later.

The unit of assignment, most specific first: the ``x-huabu-user`` header, the request body's
``user``, a hash of the API key (``Authorization: Bearer``), else a random id (not sticky). A
caller-chosen id (header or body) names a unit *within* the caller's API key: two keys sending the
same user id are two units, so no tenant can steer into (or read) another's arm. The
``x-huabu-variant`` header forces a variant (or model) for testing and needs the admin scope;
forced requests are served and labelled but not counted in the statistics.

Feedback belongs to whoever made the image: the image -> assignment record is kept per API key
(``ab:image:<key id>:<image id>``) and a job's feedback needs the job's owner, so another key's
feedback is a 404 that says nothing of the image, the job or its variant.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import importlib
import io
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from starlette.datastructures import Headers

from huabu.ab_testing import Assignment, MetricsBuffer, Rollout, TrafficSplit, UnknownVariantError
from huabu.ab_testing.store import KEY_PREFIX, JSONValue
from huabu.deployments.core.messages import ContentBlocked, ModelRequest, ModelResult
from huabu.deployments.core.settings import DIFFUSERS_PREFIX, Settings
from huabu.deployments.core.state import KeyValueStore
from huabu.deployments.core.storage import content_key
from huabu.deployments.gateway.access import job_owner
from huabu.deployments.gateway.auth import AB_OVERRIDE, ANONYMOUS_KEY_ID, current_principal
from huabu.deployments.gateway.errors import APIError, invalid, not_found
from huabu.deployments.gateway.security import app_state, send_error
from huabu.sdk.types import FeedbackResponse

logger = logging.getLogger("huabu.experiments")
T = TypeVar("T")

ACTIVE_KEY = f"{KEY_PREFIX}:active"  # {"id": rollout id}: the rollout whose split is served
# Set <INDEX_PREFIX><P> lists the keys KVStateStore wrote under each ':'-ended prefix P of theirs.
INDEX_PREFIX = f"{KEY_PREFIX}:index:"
INDEX_BUILT_KEY = f"{KEY_PREFIX}:index-built"  # set once keys written before the index are in it
NO_EXPERIMENT = "none"  # experiment id of forced assignments while no rollout is active


def rollout_key(rollout_id: str) -> str:
    return f"{KEY_PREFIX}:rollout:{rollout_id}"


def index_levels(key: str) -> list[str]:
    """The ':'-ended prefixes of ``key`` under KEY_PREFIX, each with an index set listing it."""
    parts = key.split(":")[:-1]
    levels = (":".join(parts[:i]) + ":" for i in range(1, len(parts) + 1))
    return [level for level in levels if level.startswith(KEY_PREFIX + ":")]


async def index_key(kv: KeyValueStore, key: str) -> None:
    for level in index_levels(key):
        await kv.sadd(INDEX_PREFIX + level, key)


async def build_index(kv: KeyValueStore) -> int:
    """Index the keys written before the index existed: one keyspace scan per deployment (each
    starting replica until one finishes), never per tick. Returns the number of keys indexed."""
    if await kv.get(INDEX_BUILT_KEY) is not None:
        return 0
    keys = [k for k in await kv.keys(KEY_PREFIX + ":*") if not k.startswith(INDEX_PREFIX) and k != INDEX_BUILT_KEY]
    for key in keys:
        await index_key(kv, key)
    await kv.put(INDEX_BUILT_KEY, b"1")
    return len(keys)


def encode(value: JSONValue) -> bytes:
    # Canonical bytes: compare-and-set compares bytes, so equal values must encode identically.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


class KVStateStore:
    """ab_testing's synchronous ``StateStore`` on an async ``KeyValueStore``.

    ab_testing's code is synchronous and runs in worker threads (``asyncio.to_thread``); each call
    is handed to the event loop that owns the async client (a Redis connection belongs to one loop)
    and waited for. Calling it on that loop itself would deadlock, so that raises instead.
    """

    def __init__(self, kv: KeyValueStore, loop: asyncio.AbstractEventLoop, timeout_s: float = 10.0) -> None:
        self.kv = kv
        self.loop = loop
        self.timeout_s = timeout_s

    def _run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise RuntimeError("KVStateStore is synchronous: call it from a worker thread (asyncio.to_thread)")
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(self.timeout_s)

    def get(self, key: str) -> JSONValue | None:
        raw = self._run(lambda: self.kv.get(key))
        return None if raw is None else json.loads(raw)

    def set(self, key: str, value: JSONValue) -> None:
        data = encode(value)

        async def put() -> None:
            await index_key(self.kv, key)  # first: a listed key that is not there yet reads as None
            await self.kv.put(key, data)

        self._run(put)

    def delete(self, key: str) -> None:
        async def delete() -> None:
            await self.kv.delete(key)
            for level in index_levels(key):
                await self.kv.srem(INDEX_PREFIX + level, key)

        self._run(delete)

    def keys(self, prefix: str) -> list[str]:
        level = prefix[: prefix.rfind(":") + 1]
        if not level.startswith(KEY_PREFIX + ":"):
            raise ValueError(f"KVStateStore lists keys under {KEY_PREFIX}: only, not {prefix!r}")
        return [k for k in self._run(lambda: self.kv.smembers(INDEX_PREFIX + level)) if k.startswith(prefix)]

    def compare_and_set(self, key: str, expected: JSONValue | None, value: JSONValue) -> bool:
        old = None if expected is None else encode(expected)
        new = encode(value)
        if expected is None:  # may create the key: listed first, as in set
            self._run(lambda: index_key(self.kv, key))
        return self._run(lambda: self.kv.compare_and_set(key, old, new))


# --- the unit of assignment ---------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """Who sent a request, as far as assignment cares."""

    user: str | None = None  # the user header
    key: str | None = None  # a hash of the API key
    override: str | None = None  # the override header
    owner: str | None = None  # the authenticated API key's id (kept with a job's unit: runners have no caller)

    def id(self, body_user: str | None) -> str | None:
        owner = self.owner or _key_id()
        chosen = self.user or body_user
        if chosen:
            # Scoped to the key: an id another key chooses too is another unit (and bucket).
            return f"{owner}/{chosen}" if owner else chosen
        return f"key:{owner}" if owner else self.key


def _key_id() -> str | None:
    """The authenticated API key's id, where the auth layer identified one."""
    principal = current_principal.get()
    if principal is None or principal.key_id == ANONYMOUS_KEY_ID:
        return None
    return principal.key_id


CURRENT_UNIT: contextvars.ContextVar[Unit | None] = contextvars.ContextVar("huabu_ab_unit", default=None)


def unit_from_headers(headers: Mapping[str, str], settings: Settings) -> Unit:
    auth = headers.get("authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    return Unit(
        user=headers.get(settings.ab.user_header) or None,
        # A hash, not the key (keys must not reach the state store or logs); used where no auth
        # layer has identified the key.
        key="keyhash:" + hashlib.sha256(token.encode()).hexdigest()[:24] if token else None,
        override=headers.get(settings.ab.override_header) or None,
        owner=_key_id(),
    )


def override_refused(header: str) -> APIError | None:
    """Forcing an arm is for operators: any caller could otherwise pick the variant it likes (or
    dodge the canary), and its choice would be served and labelled as the experiment's."""
    principal = current_principal.get()
    if principal is not None and principal.has(AB_OVERRIDE):  # admin keys have every scope
        return None
    return APIError(
        f"{header} forces an A/B variant and needs the 'admin' or '{AB_OVERRIDE}' scope; leave it out",
        "permission_error",
        param=header,
        code="insufficient_scope",
        status=403,
    )


class UnitMiddleware:
    """ASGI middleware that makes the request's unit visible to the generation path (a context
    variable, set in the task that runs the endpoint)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        experiments: Experiments | None = app_state(scope, "experiments")
        if scope["type"] != "http" or experiments is None:
            await self.app(scope, receive, send)
            return
        unit = unit_from_headers(Headers(scope=scope), experiments.settings)
        refused = override_refused(experiments.settings.ab.override_header) if unit.override else None
        if refused is not None:
            await send_error(scope, receive, send, refused)
            return
        token = CURRENT_UNIT.set(unit)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT_UNIT.reset(token)


# --- quality scorers ----------------------------------------------------------------------------

ScoreFunction = Callable[[bytes, str], float | None]  # (PNG, prompt) -> score, None when it cannot judge


@dataclass(frozen=True)
class Scorer:
    """An automatic quality score and the models it can judge. A rollout whose stable or canary
    model it cannot judge reports its quality guardrail "not applicable" and decides on the others."""

    name: str
    score: ScoreFunction
    judges: Callable[[str], bool]  # model id -> can the score mean anything for its images


def adherence_score(png: bytes, prompt: str) -> float | None:
    """Prompt adherence of the bundled models, judged from the image alone (colour, position,
    shape, size per object, in [0, 1]); None for prompts outside the synthetic caption language."""
    import numpy as np
    from PIL import Image

    from huabu.deployments.backends.mmdit.eval.adherence import score

    with Image.open(io.BytesIO(png)) as image:
        pixels = np.asarray(image.convert("RGB"))
    result = score(pixels, prompt)
    return None if result is None else float(result.value)


def judges_own_models(model_id: str) -> bool:
    """The adherence judge knows the synthetic caption language the own checkpoints are trained on;
    a diffusers pipeline's images say nothing in it."""
    return not model_id.startswith(DIFFUSERS_PREFIX)


def load_scorer(name: str) -> Scorer | None:
    """``adherence``, ``none`` or ``package.module:function``; a function may carry a ``judges``
    attribute (model id -> bool) naming the models it can judge (default: every model)."""
    if name == "none":
        return None
    if name == "adherence":
        return Scorer(name, adherence_score, judges_own_models)
    module, _, attr = name.partition(":")
    if not attr:
        raise ValueError(f"ab.scorer must be 'adherence', 'none' or 'package.module:function', got {name!r}")
    function: ScoreFunction = getattr(importlib.import_module(module), attr)
    return Scorer(name, function, getattr(function, "judges", lambda _model_id: True))


# --- the gateway side -----------------------------------------------------------------------------


class Experiments:
    """Assignment and measurement in one gateway replica."""

    def __init__(self, kv: KeyValueStore, settings: Settings, replica_id: str) -> None:
        self.kv = kv
        self.settings = settings
        self.config = settings.ab
        self.variants = {name: v.model_id for name, v in settings.variants.items()}
        self.buffer = MetricsBuffer(replica_id)
        self.scorer = load_scorer(self.config.scorer)
        self.rollout: Rollout | None = None  # the active rollout as last read
        self._raw: bytes | None = None
        self._store: KVStateStore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def unjudged_quality(self, models: list[str]) -> str | None:
        """Why the quality guardrail cannot compare these models (None when it can)."""
        if self.scorer is None:
            return "no quality scorer is configured (ab.scorer: none)"
        unjudged = [m for m in models if not self.scorer.judges(m)]
        if unjudged:
            return f"the {self.scorer.name} scorer cannot judge {', '.join(unjudged)}"
        return None

    @property
    def store(self) -> KVStateStore:
        if self._store is None:
            raise RuntimeError("Experiments.start() must run first")
        return self._store

    @property
    def split(self) -> TrafficSplit | None:
        return None if self.rollout is None else self.rollout.split

    def start(self) -> None:
        """Bind to the running loop and start the refresh and flush loops."""
        self._store = KVStateStore(self.kv, asyncio.get_running_loop())
        self.spawn(self._build_index())
        self.spawn(self._every(self.config.refresh_interval_s, self.refresh))
        self.spawn(self._every(self.config.flush_interval_s, self.flush))

    async def _build_index(self) -> None:
        try:
            if indexed := await build_index(self.kv):
                logger.info("indexed %d A/B keys written before the key index existed", indexed)
        except Exception:  # those keys stay unlisted until a replica starts and succeeds
            logger.warning("could not index the A/B keys written before the key index", exc_info=True)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.flush()

    @staticmethod
    async def _every(interval_s: float, action: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await action()
            except Exception:  # the store may be briefly unreachable; keep serving the last split
                logger.warning("%s failed; retrying", getattr(action, "__name__", action), exc_info=True)
            await asyncio.sleep(interval_s)

    async def refresh(self) -> None:
        """Re-read the active rollout (the live weights)."""
        pointer = await self.kv.get(ACTIVE_KEY)
        raw = None if pointer is None else await self.kv.get(rollout_key(json.loads(pointer)["id"]))
        if raw != self._raw:
            self.rollout = None if raw is None else Rollout.model_validate_json(raw)
            self._raw = raw

    async def flush(self) -> None:
        await asyncio.to_thread(self.buffer.flush, self.store)

    # --- assignment ----------------------------------------------------------------------------

    def _forced(self, override: str) -> Assignment:
        """An override while no rollout is active: any served variant, by name or model."""
        for name, model in self.variants.items():
            if override in (name, model):
                return Assignment(NO_EXPERIMENT, 0, name, model, None, True, "override")
        raise UnknownVariantError(
            f"override {override!r} is not one of {sorted({*self.variants, *self.variants.values()})}"
        )

    async def assign(self, requested_model: str | None, body_user: str | None, job_id: str | None) -> Assignment | None:
        """The variant of one request; None when it is not part of an experiment (a model was
        named explicitly, or no rollout is active and nothing is forced)."""
        if requested_model is not None or not self.config.enabled:
            return None
        unit = CURRENT_UNIT.get()
        if unit is None and job_id is not None:
            unit = await self._job_unit(job_id)
        unit = unit or Unit()
        split = self.split
        try:
            if split is None:
                return self._forced(unit.override) if unit.override else None
            unit_id = unit.id(body_user) or "anonymous:" + secrets.token_hex(8)
            return split.assign(unit_id, unit.override)
        except UnknownVariantError as exc:
            raise invalid(f"{self.config.override_header}: {exc}", self.config.override_header) from None

    async def remember_job(self, job_id: str) -> None:
        """Keep the submitting request's unit, so the job is assigned like a direct request."""
        unit = CURRENT_UNIT.get()
        if unit is not None and unit != Unit():
            await self.kv.put(f"ab:jobunit:{job_id}", encode(asdict(unit)), ttl_s=self.config.assignment_ttl_s)

    async def _job_unit(self, job_id: str) -> Unit | None:
        raw = await self.kv.get(f"ab:jobunit:{job_id}")
        return None if raw is None else Unit(**json.loads(raw))

    # --- measurement ---------------------------------------------------------------------------

    async def track(self, requests: list[ModelRequest], call: Awaitable[list[ModelResult]]) -> list[ModelResult]:
        """Await the model call and record its outcome for the request's variant."""
        assignment = requests[0].assignment if requests else None
        if assignment is None:
            return await call
        started = time.perf_counter()
        try:
            results = await call
        except ContentBlocked:
            for _ in requests:
                self.buffer.record_request(assignment, filter_blocked=True)
            raise
        except Exception:
            for _ in requests:
                self.buffer.record_request(assignment, error=True)
            raise
        if any(r.cancelled for r in results):
            return results
        latency_ms = 1000.0 * (time.perf_counter() - started)
        for result in results:
            # Cache hits are not generations: their latency would flatter the variant.
            self.buffer.record_request(assignment, latency_ms=None if result.cached else latency_ms)
        self.spawn(self._after(assignment, requests, results))
        return results

    async def _after(self, assignment: Assignment, requests: list[ModelRequest], results: list[ModelResult]) -> None:
        """Off the response path: remember image -> assignment for feedback, score quality."""
        try:
            value = encode(assignment.to_dict())
            ttl = self.config.assignment_ttl_s
            job_id = requests[0].job_id if requests else None
            # The caller of a direct request (this task copied its context); a job's submitter.
            owner = _key_id() or (await job_owner(self.kv, job_id) if job_id else None) or ANONYMOUS_KEY_ID
            for request, result in zip(requests, results, strict=True):
                image_id = (result.storage_key or content_key(result.png)).removesuffix(".png")
                await self.kv.put(f"ab:image:{owner}:{image_id}", value, ttl_s=ttl)
                if request.job_id:
                    await self.kv.put(f"ab:job:{request.job_id}", value, ttl_s=ttl)
                scorer = self.scorer
                if scorer is not None and scorer.judges(result.model) and result.png and not result.cached:
                    score = await asyncio.to_thread(scorer.score, result.png, request.prompt)  # hits: scored once
                    if score is not None:
                        self.buffer.record_quality(assignment, score)
        except Exception:
            logger.warning("could not record the assignment or quality of a result", exc_info=True)

    async def feedback(self, caller: str, image_id: str | None, job_id: str | None, accepted: bool) -> FeedbackResponse:
        """Adoption: did the user keep the image. The first answer per image or job counts; only
        the key that made the image or job (``caller``, a key id) may answer."""
        target = f"image:{caller}:{image_id}" if image_id is not None else f"job:{job_id}"
        raw = await self.kv.get(f"ab:{target}")
        if job_id is not None and self.settings.auth.enabled and await job_owner(self.kv, job_id) != caller:
            raw = None  # another key's job: answered exactly as an unknown one
        if raw is None:
            what = "image_id" if image_id is not None else "job_id"
            raise not_found(f"no {what} {image_id or job_id!r} was served to this API key recently; check the id", what)
        assignment = Assignment.from_dict(json.loads(raw))
        first = await self.kv.put(
            f"ab:feedback:{target}", b"1", ttl_s=self.config.assignment_ttl_s, only_if_absent=True
        )
        recorded = first and self.buffer.record_feedback(assignment, accepted)
        return FeedbackResponse(recorded=recorded, variant=assignment.variant)

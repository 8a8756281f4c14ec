"""Access control of the gateway: ``AccessMiddleware`` (API key, scope, job ownership, rate / quota /
concurrency), behind ``SecurityHeaders`` and ``RequestLimits`` in the middleware order that
``routes.py`` lists.

``Access`` is one gateway replica's state for it (keys, limits, usage meter); every replica
shares the same store, so limits hold across replicas. The gateway calls ``job_created`` when a
job is submitted and the generation service calls ``record_usage`` with every result.

What a costly request pays, in two steps: the middleware (``admit``) takes one rate-limit token
and a concurrency slot before anything is parsed, so even an invalid request costs a token; once
the route knows the request's work (its validated model requests), ``charged`` takes the rest of
``ratelimit.request_cost`` and reserves its images against the daily quota, both before any work.
Job event streams (SSE, WebSocket) each hold a stream slot while open.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.datastructures import Headers, MutableHeaders, UploadFile
from starlette.formparsers import MultiPartParser

from huabu.deployments.core.messages import ModelRequest, ModelResult
from huabu.deployments.core.settings import Settings
from huabu.deployments.core.state import KeyValueStore
from huabu.deployments.gateway import auth
from huabu.deployments.gateway.auth import (
    ADMIN,
    ANONYMOUS_KEY_ID,
    Authenticator,
    KeyStore,
    Principal,
    current_principal,
)
from huabu.deployments.gateway.errors import APIError, invalid, not_found
from huabu.deployments.gateway.jobs import JobStore, job_owner_key
from huabu.deployments.gateway.ratelimit import (
    REFERENCE_WORK_TEXT,
    BucketResult,
    LimitStore,
    Rate,
    open_limits,
    request_cost,
    retry_after_header,
)
from huabu.deployments.gateway.security import (
    BODY_SCOPE_KEY,
    JSON_SCOPE_KEY,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    app_state,
    install_log_redaction,
    parse_json,
    path_id_problem,
    route_path,
    send_error,
)
from huabu.deployments.gateway.usage import UsageMeter, seconds_to_utc_midnight, utc_day
from huabu.sdk.types import encode_b64_image

logger = logging.getLogger("huabu.access")
# POST to these runs the model: they cost a rate-limit token and hold a concurrency slot.
COSTLY = frozenset({"/v1/images/generations", "/v1/images/edits", "/v1/images/outpaint", "/v1/jobs"})
# Idempotency-Key scoped to the caller's key and bound to the request: every route whose call may
# create a job (an images call does with Prefer: wait or a webhook header).
IDEMPOTENT = COSTLY
JOB_PATH = re.compile(r"^/v1/jobs/([^/]+)")
STREAM_PATH = re.compile(r"^/v1/jobs/[^/]+/(events|ws)$")  # SSE and WebSocket: held open for a job's life
REQUEST_SLOT_TTL_S = 900.0  # a crashed replica's request slot frees itself after this
JOB_SLOT_TTL_S = 86400.0  # finished jobs' slots are freed earlier, when a key reaches its limit
# Open event streams per key: this many per concurrency slot (watchers, reconnects, a browser
# tab per job). A stream's slot frees itself this long after a replica dies holding it.
STREAMS_PER_SLOT = 4
STREAM_SLOT_TTL_S = 3600.0
QUOTA_TTL_S = 2 * 86400.0  # a UTC day's image reservations, kept past its end
MAX_IDEMPOTENCY_KEY = 255
WS_KEY_PROTOCOL = "huabu.key."


async def job_owner(kv: KeyValueStore, job_id: str) -> str | None:
    """The id of the API key that submitted the job (None: not recorded)."""
    raw = await kv.get(job_owner_key(job_id))
    return raw.decode() if raw else None


def rate_limited(message: str, code: str, retry_after_s: float, headers: dict[str, str] | None = None) -> APIError:
    retry = retry_after_header(retry_after_s)
    return APIError(
        message, "rate_limit_error", code=code, status=429, headers={**(headers or {}), "Retry-After": retry}
    )


def store_unavailable() -> APIError:
    return APIError(
        "the state store (API keys, limits, jobs, usage) is unavailable; retry shortly",
        "service_unavailable",
        code="store_unavailable",
        status=503,
        headers={"Retry-After": "1"},
    )


def quota_exceeded(principal: Principal) -> APIError:
    return rate_limited(
        f"this API key's daily quota of {principal.daily_images} images is used up (or too little of it is left "
        "for this request's n); it resets at 00:00 UTC",
        "daily_quota_exceeded",
        seconds_to_utc_midnight(),
    )


def rate_headers(rate: Rate, bucket: BucketResult) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(rate.limit),
        "x-ratelimit-remaining-requests": str(bucket.remaining),
        "x-ratelimit-reset-requests": retry_after_header(bucket.reset_s),
    }


@dataclass
class Admission:
    """A request let in: its rate-limit headers and the slot to free when it ends."""

    headers: dict[str, str] = field(default_factory=dict)
    release: Callable[[], Awaitable[None]] | None = None


# The admission of the request being served: ``charged`` updates its rate-limit headers.
current_admission: contextvars.ContextVar[Admission | None] = contextvars.ContextVar("admission", default=None)


@dataclass
class Charge:
    """Images a request reserved against its key's daily quota, to give back if its work fails."""

    limits: LimitStore | None = None
    quota_key: str | None = None
    images: int = 0

    async def give_back(self) -> None:
        if self.limits is None or self.quota_key is None or not self.images:
            return
        images, self.images = self.images, 0
        try:
            await self.limits.reserve(self.quota_key, -images, 0, QUOTA_TTL_S)
        except Exception:  # the quota errs on the tenant's side until tomorrow; never fail the answer
            logger.warning("could not give back %d reserved images", images, exc_info=True)


class Access:
    def __init__(self, settings: Settings, kv: KeyValueStore, jobs: JobStore) -> None:
        self.settings = settings
        self.kv = kv
        self.jobs = jobs
        self.keys = KeyStore(kv, settings.auth)
        self.authenticator = Authenticator(self.keys, settings.auth)
        self.usage = UsageMeter(kv)
        # Open deployments (tests, --no-auth) have no per-key limits to keep.
        self.limits: LimitStore | None = open_limits(settings.state) if settings.auth.enabled else None
        install_log_redaction()

    # --- limits ----------------------------------------------------------------------------

    async def admit(self, principal: Principal) -> Admission:
        if self.limits is None:
            return Admission()
        limits, key_id = self.limits, principal.key_id
        if principal.daily_images is not None:  # refused before any parsing when nothing is left
            reserved = await limits.reserve(quota_key(key_id), 0, principal.daily_images, QUOTA_TTL_S)
            if reserved.used >= principal.daily_images:
                raise quota_exceeded(principal)
        admission = Admission()
        if principal.max_concurrent is not None:
            # Named by the server, one per request: named after the client's X-Request-Id, N
            # requests sending one id would share one slot (that id is only echoed and logged).
            slots, member = f"slots:{key_id}", f"r:{uuid.uuid4().hex}"
            result = await limits.acquire(slots, member, principal.max_concurrent, REQUEST_SLOT_TTL_S)
            if not result.acquired and await self._free_finished_jobs(slots, result.members):
                result = await limits.acquire(slots, member, principal.max_concurrent, REQUEST_SLOT_TTL_S)
            if not result.acquired:
                raise rate_limited(
                    f"this API key already has {len(result.members)} jobs or requests in flight (limit "
                    f"{principal.max_concurrent}); wait for one to finish",
                    "concurrency_limit_exceeded",
                    self.settings.model.retry_after_s,
                )

            async def release() -> None:
                await limits.release(slots, member)

            admission.release = release
        if principal.rate is not None:
            bucket = await limits.take(f"rate:{key_id}", principal.rate)
            admission.headers = rate_headers(principal.rate, bucket)
            if not bucket.allowed:
                if admission.release is not None:
                    await admission.release()
                raise rate_limited(
                    f"rate limit of {principal.rate.text} exceeded for this API key; retry after "
                    f"{retry_after_header(bucket.retry_after_s)} s",
                    "rate_limit_exceeded",
                    bucket.retry_after_s,
                    admission.headers,
                )
        return admission

    @asynccontextmanager
    async def charged(self, requests: Sequence[ModelRequest]) -> AsyncIterator[Charge]:
        """The rest of a request's cost, once its work is known and before any of it runs: tokens
        beyond the one ``admit`` took, and its images reserved against the daily quota in the same
        atomic step that checks it. The images are given back if the work fails."""
        charge = await self._charge(requests)
        try:
            yield charge
        except BaseException:
            await charge.give_back()
            raise

    async def _charge(self, requests: Sequence[ModelRequest]) -> Charge:
        principal = current_principal.get()
        if self.limits is None or principal is None or not requests:
            return Charge()
        limits, key_id = self.limits, principal.key_id
        charge = Charge()
        if principal.daily_images is not None:
            key = quota_key(key_id)
            if not (await limits.reserve(key, len(requests), principal.daily_images, QUOTA_TTL_S)).allowed:
                raise quota_exceeded(principal)
            charge = Charge(limits, key, len(requests))
        rate = principal.rate
        cost = request_cost(requests, rate.limit) if rate is not None else 1
        if rate is None or cost <= 1:
            return charge
        bucket = await limits.take(f"rate:{key_id}", rate, cost - 1)  # admit took the first token
        headers = rate_headers(rate, bucket)
        admission = current_admission.get()
        if admission is not None:
            admission.headers.update(headers)
        if not bucket.allowed:
            await charge.give_back()
            raise rate_limited(
                f"this request costs {cost} rate-limit tokens (n x steps x pixels / {REFERENCE_WORK_TEXT}) and this "
                f"API key's rate limit of {rate.text} has {bucket.remaining + 1} left; retry after "
                f"{retry_after_header(bucket.retry_after_s)} s, or ask for fewer, smaller or fewer-step images",
                "rate_limit_exceeded",
                bucket.retry_after_s,
                headers,
            )
        return charge

    async def open_stream(self, principal: Principal) -> Admission:
        """A slot for one open event stream (SSE or WebSocket) of the key, freed when it closes."""
        if self.limits is None:
            return Admission()
        limits, streams, member = self.limits, f"streams:{principal.key_id}", uuid.uuid4().hex
        limit = STREAMS_PER_SLOT * (principal.max_concurrent or self.settings.auth.default_max_concurrent)
        result = await limits.acquire(streams, member, limit, STREAM_SLOT_TTL_S)
        if not result.acquired:
            raise rate_limited(
                f"this API key already has {len(result.members)} job event streams open (limit {limit}); close one, "
                "or poll GET /v1/jobs/{id}",
                "too_many_streams",
                self.settings.model.retry_after_s,
            )

        async def release() -> None:
            await limits.release(streams, member)

        return Admission(release=release)

    async def _free_finished_jobs(self, slots: str, members: list[str]) -> int:
        """Release the slots of jobs that have finished (they are not released as they finish)."""
        assert self.limits is not None
        done = []
        for member in members:
            if member.startswith("j:"):
                job = await self.jobs.get(member[2:])
                if job is None or job.status.is_terminal:
                    done.append(member)
        if done:
            await self.limits.release(slots, *done)
        return len(done)

    # --- jobs ------------------------------------------------------------------------------

    def owner_of_new_job(self) -> str | None:
        """The key a job submitted now belongs to (None without auth): ``JobStore.create`` writes
        it before the job itself, so no job is ever readable without an owner."""
        principal = current_principal.get()
        if principal is None or not self.settings.auth.enabled:
            return None
        return principal.key_id

    async def job_created(self, job_id: str) -> None:
        """Called by ``POST /v1/jobs`` once the job exists: it holds one of the caller's slots."""
        principal = current_principal.get()
        if principal is None or not self.settings.auth.enabled:
            return
        try:
            if self.limits is not None and principal.max_concurrent is not None:
                await self.limits.add(f"slots:{principal.key_id}", f"j:{job_id}", JOB_SLOT_TTL_S)
        except Exception:
            # The job exists and is owned; a retry with the same Idempotency-Key (the SDK always
            # sends one) returns it and takes the slot then.
            logger.warning("could not take a slot for job %s", job_id, exc_info=True)
            raise store_unavailable() from None

    async def may_see_job(self, principal: Principal, job_id: str) -> bool:
        if principal.has(ADMIN) or not self.settings.auth.enabled:
            return True
        # Fail closed: a job without an owner record (lost, expired, never written) is nobody's.
        owner = await job_owner(self.kv, job_id)
        return owner is not None and owner == principal.key_id

    # --- usage -----------------------------------------------------------------------------

    async def record_usage(self, requests: list[ModelRequest], results: list[ModelResult]) -> None:
        """Meter results for the key that asked: the caller of a synchronous request, a job's owner."""
        try:
            principal = current_principal.get()
            key_id = principal.key_id if principal is not None else None
            job_id = requests[0].job_id if requests else None
            if key_id is None and job_id is not None:
                key_id = await job_owner(self.kv, job_id)
            await self.usage.record(key_id or ANONYMOUS_KEY_ID, list(zip(requests, results, strict=True)))
        except Exception:  # metering must never fail a generation that succeeded
            logger.warning("usage metering failed", exc_info=True)

    # --- idempotency -----------------------------------------------------------------------

    async def check_idempotency(
        self, principal: Principal, idem: str, content: object, *, raw: bytes | None = None
    ) -> tuple[str, str]:
        """-> (the key the job store sees, the fingerprint key). Keys are scoped to the API key, and
        a key reused with another request is refused (IETF idempotency-key draft: 422). ``content``:
        what ``request_fingerprint`` takes (a body's bytes, or the request's fields); ``raw``: the
        body's bytes when ``content`` is not them (HTTP), for fingerprints stored before it."""
        if len(idem) > MAX_IDEMPOTENCY_KEY:
            raise invalid(f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters", "Idempotency-Key")
        scoped = f"{principal.key_id}:{hashlib.sha256(idem.encode()).hexdigest()}"
        fingerprint_key = f"idemfp:{scoped}"
        seen = await self.kv.get(fingerprint_key)
        legacy = raw if raw is not None else content if isinstance(content, bytes) else None
        if (
            seen is not None
            and seen.decode() != request_fingerprint(content)
            # Written before request_fingerprint (the sha256 of the body's bytes): a retry of a
            # request made before the upgrade (a Kafka re-read) is still the same request. Such
            # records expire within jobs.result_ttl_s of the upgrade; then this test can go.
            and (legacy is None or seen.decode() != hashlib.sha256(legacy).hexdigest())
        ):
            raise APIError(
                "this Idempotency-Key was already used with a different request body; use a new key",
                param="Idempotency-Key",
                code="idempotency_key_reused",
                status=422,
            )
        return scoped, fingerprint_key

    async def remember_idempotency(self, fingerprint_key: str, content: object) -> None:
        digest = request_fingerprint(content).encode()
        await self.kv.put(fingerprint_key, digest, ttl_s=self.settings.jobs.result_ttl_s, only_if_absent=True)


def request_fingerprint(content: object) -> str:
    """What an Idempotency-Key is bound to: the sha256 of the request's canonical form, the same for
    every door (HTTP JSON and multipart, gRPC messages, Kafka records), so a retry through another
    door with the same content is the same request (docs/GRPC.md, Idempotency keys).

    ``content`` is the request's fields as REST's JSON body has them (a gRPC message's
    ``rest_fields``, a parsed JSON body, a multipart form with its files as base64), or a body's
    bytes, read as JSON when they are JSON (else hashed as they are). The canonical form: keys
    sorted, null members dropped (as if left out), scalars as text (integral floats as ints, other
    floats by their shortest repr): key order, whitespace, float spelling and a form's text fields
    do not make a retry a different request (2, 2.0 and "2" alike, as the request models read them)."""
    if isinstance(content, bytes | bytearray):
        raw = bytes(content)
        try:
            content = parse_json(raw)
        except APIError:  # not JSON: only the very same bytes are the same request
            return "raw:" + hashlib.sha256(raw).hexdigest()
    canonical = json.dumps(_canonical(content), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return value if isinstance(value, str) else repr(value)


async def form_fields(headers: Headers, body: bytes) -> dict[str, object] | None:
    """A multipart body (POST /v1/images/edits) as its fields, files as base64 as in a JSON edit
    job; a repeated name as a list. None when it does not parse (the route refuses it)."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        parser = MultiPartParser(headers, stream(), max_files=4, max_fields=32, max_part_size=len(body) + 1)
        form = await parser.parse()
    except Exception:
        return None
    fields: dict[str, object] = {}
    try:
        for name, value in form.multi_items():
            item: object = encode_b64_image(await value.read()) if isinstance(value, UploadFile) else value
            seen = fields.get(name)
            fields[name] = item if seen is None else [*(seen if isinstance(seen, list) else [seen]), item]
    finally:
        await form.close()
    return fields


async def http_request_content(scope: Scope) -> object:
    """An HTTP request's content for ``request_fingerprint``: the JSON ``RequestLimits`` parsed, a
    multipart form's fields, else the body's bytes."""
    if JSON_SCOPE_KEY in scope:
        return scope[JSON_SCOPE_KEY]
    body: bytes = scope.get(BODY_SCOPE_KEY, b"")
    headers = Headers(scope=scope)
    if headers.get("content-type", "").startswith("multipart/form-data"):
        fields = await form_fields(headers, body)
        if fields is not None:
            return fields
    return body


class AccessMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        access: Access | None = app_state(scope, "access")
        path = route_path(scope) if scope["type"] in ("http", "websocket") else ""
        needed = auth.required_scope(path) if path else None
        if access is None or needed is None or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        authorization, protocol = headers.get("authorization"), websocket_key_protocol(scope)
        if authorization is None and protocol is not None:
            authorization = "Bearer " + protocol.removeprefix(WS_KEY_PROTOCOL)
        admission: Admission | None = None
        fingerprint: str | None = None
        content: object = b""
        try:
            principal = await access.authenticator.authenticate(authorization)
            if not principal.has(needed):
                raise auth.forbidden(needed)
            bad_id = path_id_problem(path)
            if bad_id is not None and scope["type"] == "http":
                raise bad_id  # the WebSocket route answers it after accepting, so browsers can read it
            job = JOB_PATH.match(path)
            if job and bad_id is None and not await access.may_see_job(principal, job.group(1)):
                refusal = not_found(f"no job {job.group(1)!r}", "job_id")
                if scope["type"] == "websocket":  # as the route answers an unknown id: one answer for both
                    await refuse_after_accept(receive, send, refusal, protocol)
                    return
                raise refusal
            if scope["type"] == "http" and scope["method"] == "POST" and path in COSTLY:
                idem = headers.get("idempotency-key")
                # Images calls too: with Prefer: wait the key names the job they create.
                if path in IDEMPOTENT and idem and access.settings.auth.enabled:
                    content = await http_request_content(scope)
                    raw = scope.get(BODY_SCOPE_KEY, b"")
                    scoped, fingerprint = await access.check_idempotency(principal, idem, content, raw=raw)
                    MutableHeaders(scope=scope)["idempotency-key"] = scoped
                admission = await access.admit(principal)
            elif STREAM_PATH.match(path) and bad_id is None and scope.get("method", "GET") == "GET":
                admission = await access.open_stream(principal)
        except APIError as exc:
            await send_error(scope, receive, send, exc)
            return
        except Exception:  # the store is down or overloaded: refuse (fail closed), never a 500
            logger.warning("access control unavailable for %s", path, exc_info=True)
            await send_error(scope, receive, send, store_unavailable())
            return
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if admission is not None:
                    response_headers = MutableHeaders(scope=message)
                    for name, value in admission.headers.items():
                        response_headers.setdefault(name, value)
            elif message["type"] == "websocket.accept" and protocol is not None and not message.get("subprotocol"):
                message = {**message, "subprotocol": protocol}  # browsers require the offered protocol back
            await send(message)

        token, admission_token = current_principal.set(principal), current_admission.set(admission)
        try:
            await self.app(scope, receive, send_with_headers)
            if fingerprint is not None and status in (200, 202):  # 200: a job that ended within Prefer: wait
                await access.remember_idempotency(fingerprint, content)
        finally:
            current_principal.reset(token)
            current_admission.reset(admission_token)
            if admission is not None and admission.release is not None:
                try:
                    await admission.release()
                except Exception:  # the slot expires on its own (REQUEST_SLOT_TTL_S, STREAM_SLOT_TTL_S)
                    logger.warning("could not release a concurrency or stream slot", exc_info=True)


async def refuse_after_accept(receive: Receive, send: Send, exc: APIError, protocol: str | None) -> None:
    """Accept a WebSocket, send the error body and close with 4000 + status, so that a browser
    can read why (a refused handshake tells it nothing)."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept", "subprotocol": protocol})
    await send({"type": "websocket.send", "text": json.dumps(exc.response_body())})
    await send({"type": "websocket.close", "code": 4000 + exc.status})


def quota_key(key_id: str) -> str:
    return f"quota:{key_id}:{utc_day()}"


def websocket_key_protocol(scope: Scope) -> str | None:
    """Browsers cannot set headers on a WebSocket: they may offer the key as the subprotocol
    ``huabu.key.<key>`` (``new WebSocket(url, ["huabu.key." + key])``)."""
    if scope["type"] != "websocket":
        return None
    return next((p for p in scope.get("subprotocols", []) if p.startswith(WS_KEY_PROTOCOL)), None)

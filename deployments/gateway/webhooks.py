"""Job webhooks: per-key signing secrets, URL checks, and durable at-least-once delivery.

A job submitted with ``webhook: {url, events?, secret_id?}`` gets one message per event it asked
for (``succeeded``, ``failed``, ``canceled``; ``progress`` if named). A message is written to the
state store before the job leaves the active set (``JobStore.transition``), so a gateway that dies
in between leaves the job to a runner that writes it again: the message's id is derived from the
job and the event, and writing it twice keeps one message. Every gateway replica runs a
``WebhookDispatcher`` that takes due messages under a short lease and POSTs them, signed as the
Standard Webhooks specification says (``huabu.sdk.webhooks``): the same ``webhook-id`` on every
attempt, a fresh timestamp and signature each time. A failed attempt (no answer, or not 2xx) is
retried with exponential backoff and jitter until ``webhooks.retry_window_s`` after the first; all
attempts are kept on the message (``GET /v1/jobs/{id}/deliveries``). A receiver that is down never
holds a job: delivery runs beside the job runner and only reads the store.

Secrets (``POST /v1/admin/keys/{key_id}/webhook-secrets``, shown once) sign the deliveries of jobs
that key submits: the one a webhook names by ``secret_id``, else every secret the key holds at the
time of the attempt, so rotation is create new -> receiver switches -> delete old, with no message
failing verification on the way. The store keeps secrets as they are (HMAC needs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import ipaddress
import json
import logging
import random
import secrets
import socket
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request
from pydantic import ValidationError

from huabu.deployments.core.settings import WebhookSettings
from huabu.deployments.core.state import KeyValueStore
from huabu.deployments.gateway.auth import ADMIN, ANONYMOUS_KEY_ID, require_scope
from huabu.deployments.gateway.errors import invalid, not_found
from huabu.sdk import webhooks as signing
from huabu.sdk.types import (
    Job,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSecretCreated,
    WebhookSecretInfo,
    WebhookSecretList,
    WebhookSpec,
)
from huabu.sdk.validation import first_problem

logger = logging.getLogger("huabu.webhooks")
PENDING = "webhooks:pending"
IDLE_POLL_MAX_S = 2.0
RESOLVE_TIMEOUT_S = 2.0
USER_AGENT = "huabu-webhooks/1"


def job_webhook_key(job_id: str) -> str:
    return f"job:{job_id}:webhook"


def _delivery_key(msg_id: str) -> str:
    return f"whdelivery:{msg_id}"


def _job_deliveries_key(job_id: str) -> str:
    return f"job:{job_id}:deliveries"


def message_id(job_id: str, event: str) -> str:
    """The webhook-id of one event of one job: the same however often it is written or sent."""
    return "msg_" + hashlib.sha256(f"{job_id}:{event}".encode()).hexdigest()[:32]


# --- where a webhook may point -------------------------------------------------------------------


def _internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


async def destination_problem(url: str, allow_private: bool, *, unresolved_ok: bool) -> str | None:
    """Why ``url`` must not be called (None: it may); see ``checked_destination``."""
    problem, _ = await checked_destination(url, allow_private, unresolved_ok=unresolved_ok)
    return problem


async def checked_destination(url: str, allow_private: bool, *, unresolved_ok: bool) -> tuple[str | None, str | None]:
    """-> (why ``url`` must not be called or None, the address it was checked at when its host is a
    name). Loopback, link-local and private addresses are refused unless ``allow_private``; a name
    is resolved and each of its addresses checked (again at every attempt, so a name that later
    points inside is refused then), and the attempt connects to the checked address itself: a
    resolver that answers differently a moment later (DNS rebinding) is never asked again. A name
    that does not resolve is allowed at submission when ``unresolved_ok`` (DNS may be down)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if allow_private:
        return None, None
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is a loopback address", None
    try:
        return (f"{host} is a loopback, link-local or private address" if _internal(host) else None), None
    except ValueError:
        pass  # a name, not an address
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT_S,
        )
    except (OSError, asyncio.TimeoutError):
        return (None if unresolved_ok else f"{host} does not resolve"), None
    for info in infos:
        address = str(info[4][0])
        if _internal(address):
            return f"{host} resolves to {address}, a loopback, link-local or private address", None
    return None, str(infos[0][4][0]) if infos else None


def pinned(url: str, address: str | None) -> tuple[str, dict[str, str], dict[str, str]]:
    """-> (the URL with its host replaced by the checked ``address``, the Host header, the request's
    extensions): TLS still checks the certificate against the name (``sni_hostname``)."""
    if address is None:
        return url, {}, {}
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{address}]" if ":" in address else address
    if parts.port is not None:
        netloc += f":{parts.port}"
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), {"host": host_header}, extensions


# --- signing secrets -------------------------------------------------------------------------------


class WebhookSecrets:
    """Per-key signing secrets: ``whsecret:<id>`` (the record) and ``whsecrets:<key id>`` (the key's ids)."""

    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    async def create(self, key_id: str) -> WebhookSecretCreated:
        secret_id = f"whs_{secrets.token_hex(8)}"
        created = WebhookSecretCreated(id=secret_id, key_id=key_id, created_at=time.time(), secret=signing.new_secret())
        await self.kv.put(f"whsecret:{secret_id}", created.model_dump_json().encode())
        await self.kv.sadd(f"whsecrets:{key_id}", secret_id)
        return created

    async def _record(self, secret_id: str) -> WebhookSecretCreated | None:
        raw = await self.kv.get(f"whsecret:{secret_id}")
        return WebhookSecretCreated.model_validate_json(raw) if raw else None

    async def of_key(self, key_id: str) -> list[WebhookSecretCreated]:
        """The key's secrets, newest first."""
        records = [await self._record(i) for i in await self.kv.smembers(f"whsecrets:{key_id}")]
        return sorted((r for r in records if r is not None), key=lambda r: r.created_at, reverse=True)

    async def delete(self, key_id: str, secret_id: str) -> WebhookSecretInfo:
        record = await self._record(secret_id)
        if record is None or record.key_id != key_id:
            raise not_found(f"no webhook secret {secret_id!r} for key {key_id!r}", "secret_id")
        await self.kv.srem(f"whsecrets:{key_id}", secret_id)
        await self.kv.delete(f"whsecret:{secret_id}")
        return WebhookSecretInfo(**record.model_dump(exclude={"secret"}))

    async def signing(self, key_id: str, secret_id: str | None) -> list[str]:
        """The secrets that sign a delivery now: the named one, else all the key holds."""
        if secret_id is not None:
            record = await self._record(secret_id)
            return [record.secret] if record is not None and record.key_id == key_id else []
        return [r.secret for r in await self.of_key(key_id)]


# Where a webhook's fields come from, to name them in a 400: the ``webhook`` object of a job body, or
# the headers of the OpenAI-compatible image routes (whose bodies have no room for it).
WEBHOOK_HEADER = "X-Huabu-Webhook"  # the URL
WEBHOOK_EVENTS_HEADER = "X-Huabu-Webhook-Events"  # comma-separated event names
WEBHOOK_SECRET_HEADER = "X-Huabu-Webhook-Secret-Id"
BODY_PARAMS = {"": "webhook", "url": "webhook.url", "events": "webhook.events", "secret_id": "webhook.secret_id"}
HEADER_PARAMS = {
    "": WEBHOOK_HEADER,
    "url": WEBHOOK_HEADER,
    "events": WEBHOOK_EVENTS_HEADER,
    "secret_id": WEBHOOK_SECRET_HEADER,
}


def webhook_from_headers(headers: Mapping[str, str]) -> WebhookSpec | None:
    """The webhook asked for by headers (``X-Huabu-Webhook: <url>``, optional ``...-Events`` and
    ``...-Secret-Id``), validated by the body's own model; 400 naming the header."""
    url = headers.get(WEBHOOK_HEADER)
    if url is None:
        for extra in (WEBHOOK_EVENTS_HEADER, WEBHOOK_SECRET_HEADER):
            if headers.get(extra) is not None:
                raise invalid(f"{extra} needs {WEBHOOK_HEADER}: the URL to send the job's events to", WEBHOOK_HEADER)
        return None
    fields: dict[str, object] = {"url": url.strip()}
    events = headers.get(WEBHOOK_EVENTS_HEADER)
    if events is not None:
        fields["events"] = [e.strip() for e in events.split(",") if e.strip()]
    secret_id = headers.get(WEBHOOK_SECRET_HEADER)
    if secret_id is not None:
        fields["secret_id"] = secret_id.strip()
    try:
        return WebhookSpec.model_validate(fields)
    except ValidationError as exc:
        problem = first_problem(exc)
        param = problem.param or ""
        header = HEADER_PARAMS.get(param.split(".")[0], WEBHOOK_HEADER)
        # "url must be ..." -> "X-Huabu-Webhook must be ..."
        said = problem.message[len(param) :] if param and problem.message.startswith(param) else f": {problem.message}"
        raise invalid(f"{header}{said}", header) from None


async def checked_webhook(
    spec: WebhookSpec,
    key_id: str | None,
    kv: KeyValueStore,
    settings: WebhookSettings,
    params: Mapping[str, str] = BODY_PARAMS,
) -> str:
    """The webhook of a job being submitted, checked, as stored with the job (JSON); 400 naming the
    field as ``params`` names it (the body's, or ``HEADER_PARAMS``)."""
    problem = await destination_problem(spec.url, settings.allow_private, unresolved_ok=True)
    if problem is not None:
        raise invalid(
            f"{params['url']} is refused: {problem}; use a public http(s) receiver "
            "(webhooks.allow_private lets an operator allow internal ones)",
            params["url"],
        )
    owner = key_id or ANONYMOUS_KEY_ID
    store = WebhookSecrets(kv)
    if spec.secret_id is not None:
        if not await store.signing(owner, spec.secret_id):
            raise invalid(
                f"{params['secret_id']} {spec.secret_id!r} is not a signing secret of this API key",
                params["secret_id"],
            )
    elif not await store.of_key(owner):
        create = "POST /v1/admin/keys/{key_id}/webhook-secrets" if key_id else "API keys (webhooks are signed per key)"
        raise invalid(f"this API key has no webhook signing secret: create one with {create}", params[""])
    return json.dumps({**spec.model_dump(mode="json"), "key_id": owner})


# --- messages --------------------------------------------------------------------------------------


class StoredDelivery(WebhookDelivery):
    """The record under ``whdelivery:<id>``: the wire view plus what sending needs."""

    key_id: str
    secret_id: str | None = None
    payload: str

    def view(self) -> WebhookDelivery:
        return WebhookDelivery(**self.model_dump(exclude={"key_id", "secret_id", "payload"}))


def payload(job: Job, event: str) -> str:
    """The message body: ``{"type": "job.<event>", "timestamp", "data": <the job>}``. Images travel as
    URLs or not at all: a receiver fetches ``GET /v1/jobs/{id}`` for base64 results (a webhook body
    stays small)."""
    data = job.model_dump(mode="json", exclude_none=True)
    for image in (data.get("result") or {}).get("data", []):
        image.pop("b64_json", None)
    stamp = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    return json.dumps({"type": f"job.{event}", "timestamp": stamp, "data": data}, separators=(",", ":"))


class WebhookOutbox:
    """Messages of jobs' webhooks in the state store: written by ``notify``, sent by the dispatcher."""

    def __init__(self, kv: KeyValueStore, settings: WebhookSettings, ttl_s: float) -> None:
        self.kv = kv
        self.settings = settings
        self.ttl_s = max(ttl_s, settings.retry_window_s + 3600)
        self.wake = asyncio.Event()

    async def notify(self, job: Job, event: str | None = None) -> None:
        """Write the message of ``job``'s current state (or of ``event``) if its webhook asked for it.
        Idempotent: called again for the same event, it keeps the one message."""
        raw = await self.kv.get(job_webhook_key(job.id))
        if raw is None:
            return
        hook = json.loads(raw)
        name = event or job.status.value
        if name.split(":")[0] not in hook["events"]:
            return
        msg_id = message_id(job.id, name)
        record = StoredDelivery(
            id=msg_id,
            job_id=job.id,
            event=f"job.{name.split(':')[0]}",
            url=hook["url"],
            status="pending",
            created_at=time.time(),
            next_attempt_at=time.time(),
            key_id=hook["key_id"],
            secret_id=hook.get("secret_id"),
            payload=payload(job, name.split(":")[0]),
        )
        created = await self.kv.put(_delivery_key(msg_id), record.model_dump_json().encode(), self.ttl_s, True)
        await self.kv.sadd(_job_deliveries_key(job.id), msg_id)
        await self.kv.expire(_job_deliveries_key(job.id), self.ttl_s)
        if created or await self._status(msg_id) == "pending":
            await self.kv.sadd(PENDING, msg_id)
            self.wake.set()

    async def _status(self, msg_id: str) -> str | None:
        loaded = await self.load(msg_id)
        return loaded.status if loaded else None

    async def load(self, msg_id: str) -> StoredDelivery | None:
        raw = await self.kv.get(_delivery_key(msg_id))
        return StoredDelivery.model_validate_json(raw) if raw else None

    async def of_job(self, job_id: str) -> list[WebhookDelivery]:
        loaded = [await self.load(i) for i in await self.kv.smembers(_job_deliveries_key(job_id))]
        return sorted((d.view() for d in loaded if d is not None), key=lambda d: d.created_at)

    async def save(self, record: StoredDelivery) -> None:
        await self.kv.put(_delivery_key(record.id), record.model_dump_json().encode(), ttl_s=self.ttl_s)


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with jitter: between half and all of ``base * 2^(attempts-1)``, capped."""
    ceiling = min(max_s, base_s * 2 ** min(attempts - 1, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class WebhookDispatcher:
    """Sends due messages; one per gateway replica, each message under a lease so one replica sends it."""

    def __init__(self, outbox: WebhookOutbox, secrets_: WebhookSecrets, owner: str) -> None:
        self.outbox = outbox
        self.secrets = secrets_
        self.settings = outbox.settings
        self.owner = owner
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        s = self.settings
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(s.read_timeout_s, connect=s.connect_timeout_s), follow_redirects=False
        )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        for task in [self._task, *self.inflight.values()]:
            if task is not None:
                task.cancel()
        await self._http.aclose()

    async def _loop(self) -> None:
        idle = self.settings.poll_interval_s
        while True:
            try:
                found = await self._dispatch_due()
            except Exception:  # store briefly unavailable: keep going
                logger.warning("webhook outbox unavailable; retrying", exc_info=True)
                found = False
            idle = self.settings.poll_interval_s if found else min(IDLE_POLL_MAX_S, idle * 2)
            self.outbox.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.outbox.wake.wait(), timeout=idle)

    async def _dispatch_due(self) -> bool:
        kv, pending = self.outbox.kv, await self.outbox.kv.smembers(PENDING)
        now = time.time()
        for msg_id in sorted(pending):
            if msg_id in self.inflight:
                continue
            if len(self.inflight) >= self.settings.concurrency:
                break
            record = await self.outbox.load(msg_id)
            if record is None or record.status != "pending":
                await kv.srem(PENDING, msg_id)
                continue
            if (record.next_attempt_at or 0) > now:
                continue
            lease_s = self.settings.connect_timeout_s + self.settings.read_timeout_s + 5
            if not await kv.put(f"{_delivery_key(msg_id)}:lease", self.owner.encode(), lease_s, True):
                continue  # another replica is sending it
            task = asyncio.get_running_loop().create_task(self._deliver(msg_id))
            self.inflight[msg_id] = task
            task.add_done_callback(functools.partial(self._done, msg_id))
        return bool(pending)

    def _done(self, msg_id: str, _task: asyncio.Task[None]) -> None:
        self.inflight.pop(msg_id, None)

    async def _deliver(self, msg_id: str) -> None:
        kv = self.outbox.kv
        try:
            record = await self.outbox.load(msg_id)  # again, under the lease: another replica may have sent it
            if record is None or record.status != "pending":
                return
            attempt = await self._attempt(record)
            record.attempts.append(attempt)
            now = time.time()
            s = self.settings
            if attempt.status_code is not None and 200 <= attempt.status_code < 300:
                record.status, record.next_attempt_at = "delivered", None
            else:
                later = now + backoff_s(len(record.attempts), s.backoff_base_s, s.backoff_max_s)
                if later > record.created_at + s.retry_window_s:
                    record.status, record.next_attempt_at = "failed", None
                    logger.warning(
                        "webhook %s of job %s failed for good after %d attempts",
                        msg_id,
                        record.job_id,
                        len(record.attempts),
                    )
                else:
                    record.next_attempt_at = later
            await self.outbox.save(record)
            if record.status != "pending":
                await kv.srem(PENDING, msg_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # the store failed mid-way: the lease lapses and the message is sent again
            logger.warning("webhook %s: delivery bookkeeping failed", msg_id, exc_info=True)
        finally:
            with contextlib.suppress(Exception):
                await kv.delete(f"{_delivery_key(msg_id)}:lease")

    async def _attempt(self, record: StoredDelivery) -> WebhookAttempt:
        started = time.time()

        def failed(error: str, status: int | None = None) -> WebhookAttempt:
            return WebhookAttempt(
                at=started, status_code=status, error=error, duration_ms=(time.time() - started) * 1000
            )

        problem, address = await checked_destination(record.url, self.settings.allow_private, unresolved_ok=False)
        if problem is not None:
            return failed(f"refused: {problem}")
        url, host, extensions = pinned(record.url, address)
        keys = await self.secrets.signing(record.key_id, record.secret_id)
        if not keys:
            return failed("no signing secret: the key's webhook secrets were deleted")
        body = record.payload.encode()
        headers = {
            **signing.signed_headers(keys, record.id, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **host,
        }
        try:
            request = self._http.build_request("POST", url, content=body, headers=headers, extensions=extensions)
            async with contextlib.aclosing(await self._http.send(request, stream=True)) as response:
                read = 0
                async for chunk in response.aiter_bytes():  # at most max_response_bytes of the answer
                    read += len(chunk)
                    if read >= self.settings.max_response_bytes:
                        break
                status = response.status_code
        except httpx.HTTPError as exc:
            return failed(f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= status < 300:
            return WebhookAttempt(at=started, status_code=status, duration_ms=(time.time() - started) * 1000)
        return failed(f"the receiver answered {status}", status)


# --- the admin API: /v1/admin/keys/{key_id}/webhook-secrets -----------------------------------------

router = APIRouter(prefix="/v1/admin/keys/{key_id}/webhook-secrets", tags=["admin"])


async def _existing_key(request: Request, key_id: str) -> str:
    await request.app.state.access.keys.get(key_id)  # 404 naming key_id
    return key_id


def _secrets(request: Request) -> WebhookSecrets:
    return WebhookSecrets(request.app.state.access.kv)


@router.post("", response_model=WebhookSecretCreated, status_code=201, dependencies=[require_scope(ADMIN)])
async def create_secret(key_id: str, request: Request) -> WebhookSecretCreated:
    """A new signing secret for the key's webhooks (rotation: create, switch the receiver, delete the
    old one). The response is the only time the secret is shown."""
    return await _secrets(request).create(await _existing_key(request, key_id))


@router.get("", response_model=WebhookSecretList, dependencies=[require_scope(ADMIN)])
async def list_secrets(key_id: str, request: Request) -> WebhookSecretList:
    records = await _secrets(request).of_key(await _existing_key(request, key_id))
    return WebhookSecretList(data=[WebhookSecretInfo(**r.model_dump(exclude={"secret"})) for r in records])


@router.delete("/{secret_id}", response_model=WebhookSecretInfo, dependencies=[require_scope(ADMIN)])
async def delete_secret(key_id: str, secret_id: str, request: Request) -> WebhookSecretInfo:
    return await _secrets(request).delete(await _existing_key(request, key_id), secret_id)

"""API keys: creation, lookup, revocation, scopes.

A key is ``hb_<id>_<secret>``: a public 12-hex-digit id and 256 random bits. The store keeps
only the SHA-256 of the whole key (a slow password hash buys nothing against 256 random bits)
under ``apikey:<id>``, and compares hashes in constant time. The id is what logs, usage and
the admin API name; the key itself is shown once, when it is created.

Scopes: ``generate`` (the images and jobs API, usage) and ``admin`` (``/v1/admin/*``, includes
generate). Settings may name a bootstrap admin key by its hash, so the first keys can be created.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from huabu.deployments.core.settings import AuthSettings
from huabu.deployments.core.state import KeyValueStore
from huabu.deployments.gateway.errors import APIError, not_found
from huabu.deployments.gateway.ratelimit import Rate
from huabu.sdk.types import ApiKeyCreated, ApiKeyCreateRequest, ApiKeyInfo, ApiKeyList

KEY_PREFIX = "hb_"
ADMIN, GENERATE = "admin", "generate"
AB_OVERRIDE = "ab_override"  # may force an A/B arm (deployments/gateway/experiments.py)
BOOTSTRAP_KEY_ID = "bootstrap-admin"
ANONYMOUS_KEY_ID = "anonymous"  # every request when auth is disabled
_INDEX = "apikeys"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """-> (key id, key)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The id part of a well-formed key, else None (nothing is looked up for malformed keys)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or not secret or len(key_id) != 12 or any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id


class StoredKey(BaseModel):
    """The record under ``apikey:<id>``: the wire info plus the key's hash."""

    model_config = ConfigDict(extra="ignore")

    info: ApiKeyInfo
    sha256: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's id, scopes and limits (None: no limit)."""

    key_id: str
    scopes: frozenset[str]
    rate: Rate | None = None
    max_concurrent: int | None = None
    daily_images: int | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes


ANONYMOUS = Principal(ANONYMOUS_KEY_ID, frozenset({ADMIN, GENERATE}))
# The caller of the request being served (set by the access middleware, read by handlers and metering).
current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def caller() -> Principal | None:
    """The caller of the request being served (a ContextVar itself cannot be pickled with the app)."""
    return current_principal.get()


def unauthorized(message: str) -> APIError:
    return APIError(
        message, "authentication_error", code="invalid_api_key", status=401, headers={"WWW-Authenticate": "Bearer"}
    )


class KeyStore:
    def __init__(self, kv: KeyValueStore, settings: AuthSettings) -> None:
        self.kv = kv
        self.settings = settings

    async def create(self, req: ApiKeyCreateRequest) -> ApiKeyCreated:
        if any(k.name == req.name and not k.revoked for k in await self.list()):
            raise APIError(
                f"an active key named {req.name!r} exists: pick another name or revoke it first",
                "conflict_error",
                param="name",
                code="key_name_taken",
                status=409,
            )
        key_id, key = new_key()
        info = ApiKeyInfo(
            id=key_id,
            name=req.name,
            scopes=sorted(set(req.scopes)),
            prefix=key[: len(KEY_PREFIX) + 16],
            rate=req.rate or self.settings.default_rate,
            max_concurrent=req.max_concurrent or self.settings.default_max_concurrent,
            daily_images=req.daily_images or self.settings.default_daily_images,
            created_at=time.time(),
        )
        record = StoredKey(info=info, sha256=key_hash(key))
        await self.kv.put(f"apikey:{key_id}", record.model_dump_json().encode(), only_if_absent=True)
        await self.kv.sadd(_INDEX, key_id)
        return ApiKeyCreated(**info.model_dump(), key=key)

    async def record(self, key_id: str) -> StoredKey | None:
        raw = await self.kv.get(f"apikey:{key_id}")
        return StoredKey.model_validate_json(raw) if raw else None

    async def get(self, key_id: str) -> ApiKeyInfo:
        record = await self.record(key_id)
        if record is None:
            raise not_found(f"no API key {key_id!r}", "key_id")
        return record.info

    async def list(self) -> list[ApiKeyInfo]:
        records = [await self.record(key_id) for key_id in sorted(await self.kv.smembers(_INDEX))]
        return sorted((r.info for r in records if r is not None), key=lambda i: i.created_at)

    async def revoke(self, key_id: str) -> ApiKeyInfo:
        record = await self.record(key_id)
        if record is None:
            raise not_found(f"no API key {key_id!r}", "key_id")
        if record.info.revoked_at is None:
            record.info.revoked_at = time.time()
            await self.kv.put(f"apikey:{key_id}", record.model_dump_json().encode())
        return record.info

    async def verify(self, key: str) -> ApiKeyInfo | None:
        """The key's info if the key is genuine and not revoked."""
        key_id = key_id_of(key)
        record = await self.record(key_id) if key_id else None
        # Compared even without a record, so a wrong id and a wrong secret take the same time.
        genuine = hmac.compare_digest(key_hash(key), record.sha256 if record else "0" * 64)
        if record is None or not genuine or record.info.revoked_at is not None:
            return None
        return record.info


class Authenticator:
    """``Authorization: Bearer <key>`` -> Principal, or a 401 that says what is wrong."""

    def __init__(self, keys: KeyStore, settings: AuthSettings) -> None:
        self.keys = keys
        self.settings = settings
        self.default_rate = Rate.parse(settings.default_rate)

    def _principal(self, key_id: str, scopes: list[str], rate: str, concurrent: int, daily: int | None) -> Principal:
        return Principal(key_id, frozenset(scopes), Rate.parse(rate), concurrent, daily)

    async def authenticate(self, authorization: str | None) -> Principal:
        if not self.settings.enabled:
            return ANONYMOUS
        if not authorization:
            raise unauthorized(
                "no API key: send it as the header 'Authorization: Bearer <key>' (a server started by "
                "`huabu up` prints its development admin key and keeps it in $HUABU_HOME/dev-admin-key, "
                "default ~/.huabu)"
            )
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise unauthorized("send the API key as 'Authorization: Bearer <key>'")
        s = self.settings
        if s.admin_key_sha256 and hmac.compare_digest(key_hash(key), s.admin_key_sha256):
            # The operator's key (`huabu up`'s development key): no rate, concurrency or daily limit,
            # so load tests and walkthroughs run on it; tenants get keys with limits (`huabu keys`).
            return Principal(BOOTSTRAP_KEY_ID, frozenset([ADMIN]))
        info = await self.keys.verify(key)
        if info is None:
            raise unauthorized("the API key is invalid or revoked")
        return self._principal(info.id, info.scopes, info.rate, info.max_concurrent, info.daily_images)

    async def principal_of(self, key_id: str | None) -> Principal:
        """The principal of a stored key named by its id: a door that is configured with a key's id
        (the Kafka ingress), not the key, acts as that key. A missing or revoked key is a 401."""
        if not self.settings.enabled:
            return ANONYMOUS
        record = await self.keys.record(key_id) if key_id else None
        if record is None or record.info.revoked_at is not None:
            raise unauthorized(f"the configured API key id {key_id!r} does not name an active key")
        info = record.info
        return self._principal(info.id, info.scopes, info.rate, info.max_concurrent, info.daily_images)


def required_scope(path: str) -> str | None:
    """The scope a route needs (``path`` without the app's route prefix); None = open. Everything
    under /v1 needs a key except signed file URLs, whose signature is the credential."""
    if path == "/v1/admin" or path.startswith("/v1/admin/"):
        return ADMIN
    if path.startswith("/v1/files/"):
        return None
    if path == "/v1" or path.startswith("/v1/"):
        return GENERATE
    return None  # health, OpenAPI document, docs, the playground page


def forbidden(scope: str) -> APIError:
    return APIError(
        f"this API key lacks the {scope!r} scope", "permission_error", code="insufficient_scope", status=403
    )


class _ScopeCheck:
    """The dependency behind ``require_scope``. A module-level class, not a closure: Ray pickles
    closures in the FastAPI app by value, and their string annotations would not resolve."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    async def __call__(self, request: Request) -> Principal:
        principal = caller()
        if principal is None:
            access = getattr(request.app.state, "access", None)
            if access is None:
                raise APIError("the gateway is starting; retry", "service_unavailable", status=503)
            principal = await access.authenticator.authenticate(request.headers.get("authorization"))
        if not principal.has(self.scope):
            raise forbidden(self.scope)
        return principal


def require_scope(scope: str) -> Any:
    """A FastAPI dependency for routes that need a scope: ``dependencies=[require_scope("admin")]``,
    or a parameter ``principal: Annotated[Principal, require_scope("admin")]``. It uses the caller
    the access middleware authenticated (all of /v1), or authenticates itself elsewhere."""
    return Depends(_ScopeCheck(scope))


# --- the admin API: /v1/admin/keys -----------------------------------------------------------

router = APIRouter(prefix="/v1/admin/keys", tags=["admin"])


def _keys(request: Request) -> KeyStore:
    keys: KeyStore = request.app.state.access.keys
    return keys


@router.post("", response_model=ApiKeyCreated, status_code=201, dependencies=[require_scope(ADMIN)])
async def create_key(body: ApiKeyCreateRequest, request: Request) -> ApiKeyCreated:
    """Create a key; the response is the only time the key itself is shown."""
    return await _keys(request).create(body)


@router.get("", response_model=ApiKeyList, dependencies=[require_scope(ADMIN)])
async def list_keys(request: Request) -> ApiKeyList:
    return ApiKeyList(data=await _keys(request).list())


@router.get("/{key_id}", response_model=ApiKeyInfo, dependencies=[require_scope(ADMIN)])
async def get_key(key_id: str, request: Request) -> ApiKeyInfo:
    return await _keys(request).get(key_id)


@router.delete("/{key_id}", response_model=ApiKeyInfo, dependencies=[require_scope(ADMIN)])
async def revoke_key(key_id: str, request: Request) -> ApiKeyInfo:
    """Revoke a key: it stops working at once on every gateway replica (nothing caches keys)."""
    return await _keys(request).revoke(key_id)


__all__ = [
    "ANONYMOUS",
    "Authenticator",
    "KeyStore",
    "Principal",
    "current_principal",
    "key_hash",
    "new_key",
    "require_scope",
    "required_scope",
    "router",
]

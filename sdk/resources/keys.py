"""``client.keys``: API keys (``/v1/admin/keys``; needs a key with the ``admin`` scope).

The key itself is in the ``ApiKeyCreated`` that ``create`` returns, and nowhere else: the server
stores only its hash."""

from __future__ import annotations

from collections.abc import Sequence

from huabu.sdk._base import RequestOptions
from huabu.sdk._params import CallOptions, Unpack, request_options, wire_request
from huabu.sdk.resources._resource import AsyncResource, SyncResource
from huabu.sdk.types import ApiKeyCreated, ApiKeyCreateRequest, ApiKeyInfo, ApiKeyList, ApiKeyScope

PATH = "/v1/admin/keys"


def create_options(
    name: str,
    scopes: Sequence[ApiKeyScope],
    rate: str | None,
    max_concurrent: int | None,
    daily_images: int | None,
    call: CallOptions,
) -> RequestOptions:
    body = wire_request(
        ApiKeyCreateRequest,
        name=name,
        scopes=list(scopes),
        rate=rate,
        max_concurrent=max_concurrent,
        daily_images=daily_images,
    )
    return request_options("POST", PATH, "keys.create", call, json=body.model_dump(mode="json", exclude_none=True))


def _key_path(key_id: str) -> str:
    if not key_id or "/" in key_id:
        raise ValueError(f"invalid key id {key_id!r}")
    return f"{PATH}/{key_id}"


class Keys(SyncResource):
    def create(
        self,
        name: str,
        *,
        scopes: Sequence[ApiKeyScope] = ("generate",),
        rate: str | None = None,
        max_concurrent: int | None = None,
        daily_images: int | None = None,
        **call: Unpack[CallOptions],
    ) -> ApiKeyCreated:
        """A new key; ``rate`` like ``"60/min"``; unset limits take the server's defaults."""
        options = create_options(name, scopes, rate, max_concurrent, daily_images, call)
        return self._client._request_model(options, ApiKeyCreated)

    def list(self, **call: Unpack[CallOptions]) -> ApiKeyList:
        return self._client._request_model(request_options("GET", PATH, "keys.list", call), ApiKeyList)

    def retrieve(self, key_id: str, **call: Unpack[CallOptions]) -> ApiKeyInfo:
        options = request_options("GET", _key_path(key_id), "keys.retrieve", call)
        return self._client._request_model(options, ApiKeyInfo)

    def revoke(self, key_id: str, **call: Unpack[CallOptions]) -> ApiKeyInfo:
        options = request_options("DELETE", _key_path(key_id), "keys.revoke", call)
        return self._client._request_model(options, ApiKeyInfo)


class AsyncKeys(AsyncResource):
    async def create(
        self,
        name: str,
        *,
        scopes: Sequence[ApiKeyScope] = ("generate",),
        rate: str | None = None,
        max_concurrent: int | None = None,
        daily_images: int | None = None,
        **call: Unpack[CallOptions],
    ) -> ApiKeyCreated:
        """A new key; ``rate`` like ``"60/min"``; unset limits take the server's defaults."""
        options = create_options(name, scopes, rate, max_concurrent, daily_images, call)
        return await self._client._request_model(options, ApiKeyCreated)

    async def list(self, **call: Unpack[CallOptions]) -> ApiKeyList:
        return await self._client._request_model(request_options("GET", PATH, "keys.list", call), ApiKeyList)

    async def retrieve(self, key_id: str, **call: Unpack[CallOptions]) -> ApiKeyInfo:
        options = request_options("GET", _key_path(key_id), "keys.retrieve", call)
        return await self._client._request_model(options, ApiKeyInfo)

    async def revoke(self, key_id: str, **call: Unpack[CallOptions]) -> ApiKeyInfo:
        options = request_options("DELETE", _key_path(key_id), "keys.revoke", call)
        return await self._client._request_model(options, ApiKeyInfo)

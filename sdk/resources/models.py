"""``client.models``: the served models (OpenAI's ``GET /v1/models``)."""

from __future__ import annotations

from huabu.sdk._params import CallOptions, Unpack, request_options
from huabu.sdk.resources._resource import AsyncResource, SyncResource
from huabu.sdk.types import ModelList


class Models(SyncResource):
    def list(self, **call: Unpack[CallOptions]) -> ModelList:
        return self._client._request_model(request_options("GET", "/v1/models", "models.list", call), ModelList)


class AsyncModels(AsyncResource):
    async def list(self, **call: Unpack[CallOptions]) -> ModelList:
        return await self._client._request_model(request_options("GET", "/v1/models", "models.list", call), ModelList)

"""``client.usage``: the calling key's metered usage per UTC day (``GET /v1/usage``)."""

from __future__ import annotations

from huabu.sdk._base import RequestOptions
from huabu.sdk._params import CallOptions, Unpack, request_options
from huabu.sdk.resources._resource import AsyncResource, SyncResource
from huabu.sdk.types import UsageReport


def usage_options(days: int, key_id: str | None, call: CallOptions) -> RequestOptions:
    params = {"days": str(days), **({"key_id": key_id} if key_id else {})}
    return request_options("GET", "/v1/usage", "usage.retrieve", call, params=params)


class Usage(SyncResource):
    def retrieve(self, *, days: int = 7, key_id: str | None = None, **call: Unpack[CallOptions]) -> UsageReport:
        """Images, cached images, steps and generation seconds per day, newest first (``key_id``: admin only)."""
        return self._client._request_model(usage_options(days, key_id, call), UsageReport)


class AsyncUsage(AsyncResource):
    async def retrieve(self, *, days: int = 7, key_id: str | None = None, **call: Unpack[CallOptions]) -> UsageReport:
        """Images, cached images, steps and generation seconds per day, newest first (``key_id``: admin only)."""
        return await self._client._request_model(usage_options(days, key_id, call), UsageReport)

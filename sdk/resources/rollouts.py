"""``client.rollouts``: canary rollouts (admin key): start, status, pause, resume, promote, rollback.

>>> client.rollouts.start(canary_model="tiny-mmdit@v2", policy={"steps": [5, 25, 100]})  # doctest: +SKIP
>>> client.rollouts.status().status  # the active rollout  # doctest: +SKIP
'running'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from huabu.sdk._base import RequestOptions
from huabu.sdk._params import CallOptions, Unpack, request_options, wire_request
from huabu.sdk.resources._resource import AsyncResource, SyncResource
from huabu.sdk.types import RolloutActionRequest, RolloutInfo, RolloutList, RolloutStartRequest

Action = Literal["pause", "resume", "promote", "rollback"]
BASE = "/v1/admin/rollouts"
ACTIVE = "active"  # the rollout whose weights are being served


def start_options(
    canary_model: str | None,
    stable_model: str | None,
    rollout_id: str | None,
    policy: Mapping[str, Any] | None,
    call: CallOptions,
) -> RequestOptions:
    body = wire_request(
        RolloutStartRequest,
        id=rollout_id,
        canary_model=canary_model,
        stable_model=stable_model,
        policy=dict(policy) if policy is not None else None,
    )
    return request_options("POST", BASE, "rollouts.start", call, json=body.model_dump(mode="json", exclude_none=True))


def status_options(rollout_id: str | None, call: CallOptions) -> RequestOptions:
    return request_options("GET", f"{BASE}/{rollout_id or ACTIVE}", "rollouts.status", call)


def action_options(rollout_id: str | None, action: Action, reason: str | None, call: CallOptions) -> RequestOptions:
    body = wire_request(RolloutActionRequest, reason=reason).model_dump(mode="json", exclude_none=True)
    return request_options("POST", f"{BASE}/{rollout_id or ACTIVE}/{action}", f"rollouts.{action}", call, json=body)


def list_options(call: CallOptions) -> RequestOptions:
    return request_options("GET", BASE, "rollouts.list", call)


class Rollouts(SyncResource):
    """Rollout ids default to the active rollout."""

    def start(
        self,
        *,
        canary_model: str | None = None,
        stable_model: str | None = None,
        rollout_id: str | None = None,
        policy: Mapping[str, Any] | None = None,
        **call: Unpack[CallOptions],
    ) -> RolloutInfo:
        options = start_options(canary_model, stable_model, rollout_id, policy, call)
        return self._client._request_model(options, RolloutInfo)

    def list(self, **call: Unpack[CallOptions]) -> RolloutList:
        return self._client._request_model(list_options(call), RolloutList)

    def status(self, rollout_id: str | None = None, **call: Unpack[CallOptions]) -> RolloutInfo:
        return self._client._request_model(status_options(rollout_id, call), RolloutInfo)

    def _act(self, rollout_id: str | None, action: Action, reason: str | None, call: CallOptions) -> RolloutInfo:
        return self._client._request_model(action_options(rollout_id, action, reason, call), RolloutInfo)

    def pause(
        self, rollout_id: str | None = None, *, reason: str | None = None, **call: Unpack[CallOptions]
    ) -> RolloutInfo:
        return self._act(rollout_id, "pause", reason, call)

    def resume(
        self, rollout_id: str | None = None, *, reason: str | None = None, **call: Unpack[CallOptions]
    ) -> RolloutInfo:
        return self._act(rollout_id, "resume", reason, call)

    def promote(
        self, rollout_id: str | None = None, *, reason: str | None = None, **call: Unpack[CallOptions]
    ) -> RolloutInfo:
        return self._act(rollout_id, "promote", reason, call)

    def rollback(
        self, rollout_id: str | None = None, *, reason: str | None = None, **call: Unpack[CallOptions]
    ) -> RolloutInfo:
        return self._act(rollout_id, "rollback", reason, call)


class AsyncRollouts(AsyncResource):
    """Rollout ids default to the active rollout."""

    async def start(
        self,
        *,
        canary_model: str | None = None,
        stable_model: str | None = None,
        rollout_id: str | None = None,
        policy: Mapping[str, Any] | None = None,
        **call: Unpack[CallOptions],
    ) -> RolloutInfo:
        options = start_options(canary_model, stable_model, rollout_id, policy, call)
        return await self._client._request_model(options, RolloutInfo)

    async def list(self, **call: Unpack[CallOptions]) -> RolloutList:
        return await self._client._request_model(list_options(call), RolloutList)

    async def status(self, rollout_id: str | None = None, **call: Unpack[CallOptions]) -> RolloutInfo:
        return await self._client._request_model(status_options(rollout_id, call), RolloutInfo)

    async def _act(self, rollout_id: str | None, action: Action, reason: str | None, call: CallOptions) -> RolloutInfo:
        return await self._client._request_model(action_options(rollout_id, action, reason, call), RolloutInfo)

    async def pause(
        self, rollout_id: str | None = None, *, reason: str | None = None, **call: Unpack[CallOptions]
    ) -> RolloutInfo:
        return await self._act(rollout_id, "pause", reason, call)

    async def resume(
        self, rollout_id: str | None = None, *, reason: str | None = None, **call: Unpack[CallOptions]
    ) -> RolloutInfo:
        return await self._act(rollout_id, "resume", reason, call)

    async def promote(
        self, rollout_id: str | None = None, *, reason: str | None = None, **call: Unpack[CallOptions]
    ) -> RolloutInfo:
        return await self._act(rollout_id, "promote", reason, call)

    async def rollback(
        self, rollout_id: str | None = None, *, reason: str | None = None, **call: Unpack[CallOptions]
    ) -> RolloutInfo:
        return await self._act(rollout_id, "rollback", reason, call)

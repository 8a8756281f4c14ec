"""Job events over WebSocket (``WS /v1/jobs/{id}/ws``), with the optional ``websockets`` package.

Each text message is one ``JobEvent`` JSON. Failures map to the same exceptions as the HTTP paths, so
the job handle's reconnect logic treats both transports alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import pydantic

from huabu.sdk._errors import APIConnectionError, APITimeoutError, HuabuError, error_from_response
from huabu.sdk.types import JobEvent


def _require_websockets() -> Any:
    try:
        import websockets
    except ImportError as exc:  # optional dependency
        raise HuabuError("transport='ws' needs the websockets package: pip install websockets") from exc
    return websockets


def ws_url(http_url: httpx.URL) -> str:
    return str(http_url.copy_with(scheme="wss" if http_url.scheme == "https" else "ws"))


def _parse(message: str | bytes) -> JobEvent:
    try:
        return JobEvent.model_validate_json(message)
    except pydantic.ValidationError as exc:
        raise HuabuError(f"malformed job event on the WebSocket: {exc}") from exc


def _map_error(exc: BaseException) -> HuabuError:
    websockets = _require_websockets()
    if isinstance(exc, websockets.exceptions.InvalidStatus):  # the handshake got an HTTP error answer
        response = exc.response
        return error_from_response(
            httpx.Response(response.status_code, headers=dict(response.headers), content=response.body or b"")
        )
    if isinstance(exc, TimeoutError):
        return APITimeoutError(f"websocket timed out: {exc}")
    return APIConnectionError(f"websocket connection error: {exc or type(exc).__name__}")


def iter_events(url: str, headers: Mapping[str, str], open_timeout: float, read_timeout: float) -> Iterator[JobEvent]:
    websockets = _require_websockets()
    from websockets.sync.client import connect

    try:
        with connect(url, additional_headers=dict(headers), open_timeout=open_timeout) as ws:
            while True:
                try:
                    message = ws.recv(timeout=read_timeout)
                except websockets.exceptions.ConnectionClosedOK:
                    return
                yield _parse(message)
    except HuabuError:
        raise
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        raise _map_error(exc) from exc


async def aiter_events(
    url: str, headers: Mapping[str, str], open_timeout: float, read_timeout: float
) -> AsyncIterator[JobEvent]:
    websockets = _require_websockets()
    from websockets.asyncio.client import connect

    try:
        async with connect(url, additional_headers=dict(headers), open_timeout=open_timeout) as ws:
            while True:
                try:
                    message = await asyncio.wait_for(ws.recv(), read_timeout)
                except websockets.exceptions.ConnectionClosedOK:
                    return
                yield _parse(message)
    except HuabuError:
        raise
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        raise _map_error(exc) from exc

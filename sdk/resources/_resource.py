from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from huabu.sdk._client import AsyncClient, Client


class SyncResource:
    def __init__(self, client: Client) -> None:
        self._client = client


class AsyncResource:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

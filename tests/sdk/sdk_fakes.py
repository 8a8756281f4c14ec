"""Clients wired to the in-process FakeServer, a clock that only moves when they sleep, and the
contract tests' backend (imported by name: every test directory has its own conftest)."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from fake_server import FakeServer

from huabu.sdk import AsyncClient, Client


class FakeClock:
    """Monotonic time that only moves when the client 'sleeps', so retry tests never wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


def fake_client(server: FakeServer, clock: FakeClock | None = None, **kwargs: object) -> Client:
    client = Client(server.base_url, http_client=httpx.Client(transport=server.transport()), **kwargs)
    if clock is not None:
        client._clock = clock
        client._sleep = clock.sleep
    return client


def fake_async_client(server: FakeServer, clock: FakeClock | None = None, **kwargs: object) -> AsyncClient:
    http = httpx.AsyncClient(transport=server.transport())
    client = AsyncClient(server.base_url, http_client=http, **kwargs)
    if clock is not None:
        client._clock = clock
        client._sleep = clock.asleep
    return client


@dataclass
class Backend:
    """Where the contract tests send their requests: the fake, or a real server."""

    client: Client
    aclient: AsyncClient
    fake: FakeServer | None
    size: str = "32x32"
    steps: int = 2
    closers: list[object] = field(default_factory=list)

    @property
    def wh(self) -> tuple[int, int]:
        w, h = self.size.split("x")
        return int(w), int(h)

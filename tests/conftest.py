"""Shared fixtures: one real local Ray + Serve per test session (several apps per start), and
real redis-server and S3-compatible servers on free ports on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from huabu.cluster.local import serve_proxy_env

# Autoscaling metrics are pushed every 10 s by default; tests need them fast. Set before ray.init.
os.environ.setdefault("RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# HUABU_HA_PROXY=1 runs the tests behind HAProxy, as `huabu up` would (cluster/local.py).
for _name, _value in serve_proxy_env(Path(f"/tmp/huabu-tests-{os.getpid()}"), stop_after_s=5).items():
    os.environ.setdefault(_name, _value)
# Credentials for the local S3-compatible server; set before Ray starts so replicas inherit them.
for _name, _value in (
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
):
    os.environ.setdefault(_name, _value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


GRPC_PORT = free_port()


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


@pytest.fixture(scope="session")
def serve_port() -> Iterator[int]:
    import ray
    from ray import serve

    from huabu.sdk.grpc_api import SERVICER_FUNCTIONS

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="huabu-tests")
    # gRPC options apply only at Serve's first start, like HTTP's; every app then also answers gRPC.
    grpc_options = {"port": GRPC_PORT, "grpc_servicer_functions": list(SERVICER_FUNCTIONS)}
    serve.start(http_options={"host": "127.0.0.1", "port": port}, grpc_options=grpc_options)
    yield port
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def grpc_port(serve_port: int) -> int:
    """The port of Serve's gRPC proxy (huabu.v1.Images of every deployed app; pick one with the
    ``application`` metadata)."""
    return GRPC_PORT


@dataclass
class ServedApp:
    name: str
    base_url: str  # http://127.0.0.1:PORT/<name>
    settings: Any

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)


@dataclass
class _Deployment:
    name: str
    lifetime: str  # "test", "module", "dir" or "session"
    owner: pytest.Item | None  # the test running (or being set up) when it was deployed


# Every app a session deploys keeps its replicas and background loops; on 2 cores a dozen idle apps
# starve the model replicas of later tests. So apps live only as long as the tests that use them.
_DEPLOYED: list[_Deployment] = []
_CURRENT_ITEM: list[pytest.Item] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With HUABU_TEST_TIMES=<file>, every phase's duration is appended as it ends, so that a run
    cut short (or still going) already tells where its time went (``--durations`` waits for the end)."""
    path = os.environ.get("HUABU_TEST_TIMES")
    if path:
        with open(path, "a") as out:
            out.write(f"{report.duration:.2f}\t{report.when}\t{report.outcome}\t{report.nodeid}\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    _CURRENT_ITEM.append(item)
    try:
        return (yield)
    finally:
        _CURRENT_ITEM.pop()
        _delete_apps_done_after(item, nextitem)


def _delete_apps_done_after(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    def done(d: _Deployment) -> bool:
        if d.owner is None or d.lifetime == "session":
            return False
        if d.lifetime == "test":
            return d.owner is item
        if nextitem is None:
            return True
        if d.lifetime == "module":
            return nextitem.path != d.owner.path
        return d.owner.path.parent not in nextitem.path.parents  # "dir"

    finished = [d for d in _DEPLOYED if done(d)]
    if finished:
        from ray import serve

        for d in finished:
            _DEPLOYED.remove(d)
            serve.delete(d.name)


class AppDeployer:
    """deploy_app(lifetime=..., **settings overrides) -> ServedApp, under its own route prefix.

    lifetime: "module" (default: deleted when the module that deployed it ends), "test" (when the
    test ends), "dir" (when the tests of its directory end) or "session"."""

    def __init__(self, port: int, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.port = port
        self.tmp_path_factory = tmp_path_factory

    def __call__(self, lifetime: str = "module", **overrides: Any) -> ServedApp:
        from ray import serve

        from huabu.deployments.app import build_app
        from huabu.deployments.core.settings import Settings

        assert lifetime in ("test", "module", "dir", "session"), lifetime
        name = f"t{uuid.uuid4().hex[:8]}"
        base_url = f"http://127.0.0.1:{self.port}/{name}"
        defaults: dict[str, Any] = {
            "app_name": name,
            "state": {"namespace": name},
            "storage": {"local_dir": str(self.tmp_path_factory.mktemp(name)), "public_base_url": base_url},
            # Tests may sign file URLs with the public development secret (build_app refuses it otherwise);
            # tests/security/test_secrets.py covers the refusal.
            "development": True,
            "model": {
                "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                "health_check_period_s": 1,
                "health_check_timeout_s": 5,
            },
            "gateway": {"default_steps": 4, "health_check_period_s": 1, "health_check_timeout_s": 5},
            "jobs": {"lease_s": 2.0, "stall_timeout_s": 10.0},
            # Production runs with API keys; tests opt in with deploy_app(auth={"enabled": True, ...}).
            "auth": {"enabled": False},
            # Idle gateways would poll the A/B state every 0.5 s; canary tests pass their own intervals.
            "ab": {"refresh_interval_s": 5.0, "flush_interval_s": 5.0, "controller_interval_s": 10.0},
            "graceful_shutdown_timeout_s": 1,
        }
        settings = Settings.load(environ={}, **_merge(defaults, overrides))
        owner = _CURRENT_ITEM[-1] if _CURRENT_ITEM else None
        _DEPLOYED.append(_Deployment(name, lifetime, owner))
        serve.run(build_app(settings), name=name, route_prefix=f"/{name}", blocking=False)
        _wait_ready(base_url)
        return ServedApp(name=name, base_url=base_url, settings=settings)


@pytest.fixture(scope="session")
def deploy_app(serve_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppDeployer]:
    from ray import serve

    yield AppDeployer(serve_port, tmp_path_factory)
    for d in _DEPLOYED:
        serve.delete(d.name)
    _DEPLOYED.clear()


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _wait_ready(base_url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{base_url}/readyz", timeout=5)
            if last.status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{base_url} not ready: {last}")


@pytest.fixture(scope="session")
def app(deploy_app: Any) -> ServedApp:
    """The default application (embedded state, local storage), shared by API tests."""
    return deploy_app(lifetime="session")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """A real redis-server on 127.0.0.1:port, without persistence."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: run `make setup` (it installs it)"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return proc


@pytest.fixture(scope="session")
def redis_launcher() -> Any:
    """start_redis(port, workdir), for tests that stop and restart their own server."""
    return start_redis


@pytest.fixture(scope="session")
def free_tcp_port() -> Any:
    return free_port


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent

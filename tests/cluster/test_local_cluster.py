"""``huabu up`` / ``status`` / a generation over HTTP / ``huabu down``, run as the user runs them:
as subprocesses, against a Ray head of their own.

The test session's Ray (``ray.init`` in tests/conftest.py) is left alone: the CLI's cluster has its
own HUABU_HOME, Ray temp dir and OS-chosen ports, and ``huabu down`` stops only its processes.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from huabu.cluster.local import STATE_FILE, ClusterState, LocalCluster, free_port

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "huabu.cluster.cli"]


@pytest.fixture
def home() -> Iterator[Path]:
    # Short, under /tmp: the Ray temp dir is derived from it and must stay short for Unix sockets.
    path = Path(tempfile.mkdtemp(prefix="hbt-"))
    yield path
    cluster = LocalCluster(path)
    state = cluster.load_state()
    if state is not None and state.started_by_huabu:  # the test failed before `huabu down` worked
        cluster.stop_processes(state, grace_s=1)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)


def cli_env(home: Path) -> dict[str, str]:
    # No RAY_ADDRESS (the session's Ray), no RAY_AUTH_MODE: the CLI's default token mode is tested.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUABU__", "RAY_ADDRESS", "RAY_AUTH"))}
    env.update(HUABU_HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    return env


def run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    print(
        f"$ {' '.join(args[2:])}  ({time.monotonic() - started:.1f} s, exit {proc.returncode})\n{proc.stdout}"
        f"{proc.stderr[-3000:]}"
    )
    return proc


def test_up_status_generate_down(home: Path, tmp_path: Path) -> None:
    env = cli_env(home)
    port = free_port()
    settings = tmp_path / "settings.yaml"
    # Fast health checks and one model replica keep it quick on two cores.
    settings.write_text(
        yaml.safe_dump(
            {
                "storage": {"local_dir": str(tmp_path / "files")},
                "model": {
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                    "health_check_period_s": 1,
                    "health_check_timeout_s": 5,
                },
                "gateway": {"default_steps": 4, "health_check_period_s": 1, "health_check_timeout_s": 5},
                "graceful_shutdown_timeout_s": 1,
            }
        )
    )

    up = run([*CLI, "up", "--settings", str(settings), "--port", str(port), "--timeout", "400"], env, timeout=480)
    assert up.returncode == 0, up.stderr
    url = f"http://127.0.0.1:{port}"
    assert f"huabu is serving at {url}" in up.stdout
    state = ClusterState(**json.loads((home / STATE_FILE).read_text()))
    assert state.started_by_huabu and state.url == url and state.auth_mode == "token"
    assert state.temp_dir == str(LocalCluster(home).temp_dir)
    assert (home / "ray-auth-token").stat().st_mode & 0o077 == 0  # the token is owner-only

    # Status through the SDK's `huabu` entry point, which delegates server commands here.
    huabu = Path(sys.executable).with_name("huabu")
    status = run(
        [str(huabu) if huabu.exists() else CLI[0], *([] if huabu.exists() else CLI[1:]), "status", "--json"],
        env,
        timeout=180,
    )
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    app = report["applications"]["huabu"]
    assert app["status"] == "RUNNING"
    assert set(app["deployments"]) >= {"Gateway", "Router", "MMDiT-stable"}
    assert all(d["status"] == "HEALTHY" and d["replicas"].get("RUNNING", 0) >= 1 for d in app["deployments"].values())

    # API keys are on by default: `huabu up` prints its development admin key and keeps it in HUABU_HOME.
    dev_key = (home / "dev-admin-key").read_text().strip()
    assert f"HUABU_API_KEY={dev_key}" in up.stdout and (home / "dev-admin-key").stat().st_mode & 0o077 == 0
    body = {"prompt": "右边有个 yellow triangle", "size": "32x32", "seed": 1}
    anonymous = httpx.post(f"{url}/v1/images/generations", timeout=180, json=body)
    assert anonymous.status_code == 401, anonymous.text
    response = httpx.post(
        f"{url}/v1/images/generations", timeout=180, json=body, headers={"Authorization": f"Bearer {dev_key}"}
    )
    assert response.status_code == 200, response.text
    assert base64.b64decode(response.json()["data"][0]["b64_json"]).startswith(b"\x89PNG")

    processes = LocalCluster(home)._processes(state)
    assert processes, "the cluster's processes should be found by its temp dir"
    down = run([*CLI, "down"], env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "Stopped the local Ray cluster" in down.stdout
    assert not (home / STATE_FILE).exists()
    assert not any(p.is_running() and p.status() != "zombie" for p in processes)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/healthz", timeout=2)

    after = run([*CLI, "status"], env, timeout=90)
    assert after.returncode == 1 and "huabu up" in after.stderr

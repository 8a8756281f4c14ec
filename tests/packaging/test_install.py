"""The project as a stranger installs it: ``python -m build`` makes an sdist and a wheel (the wheel
from the sdist, as build does), each goes into a fresh venv with plain ``pip``, and the installed
commands run. Nothing here imports the checkout: every check runs in the new venv's interpreter.

An SDK-only install must import ``huabu.sdk`` and run ``huabu --help`` without ray or torch; a
``[server]`` install from the wheel must bring up a local cluster and serve an image, which needs the
package data (weights, block lists, exemplars, playground, cluster YAML) inside the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from huabu.cluster.local import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
SDK_CHECK = """
import sys
import huabu.sdk
from huabu.sdk import AsyncClient, Client, masks
from huabu.sdk.resources import images, jobs
heavy = sorted(m for m in ("ray", "torch", "numpy", "fastapi") if m in sys.modules)
assert not heavy, f"the SDK imported {heavy}"
print("sdk ok")
"""


def run(args: list[str], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    started = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False)
    print(f"$ {' '.join(args)}  ({time.monotonic() - started:.1f} s, exit {proc.returncode})")
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def clean_env(**extra: str) -> dict[str, str]:
    # Nothing of the test session leaks in: no venv, no PYTHONPATH, no Ray or huabu settings.
    prefixes = ("HUABU", "RAY_", "VIRTUAL_ENV", "PYTHON")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


# pip would byte-compile every module of torch and ray up front (minutes of the suite); Python
# compiles what the installed commands import when they import it.
NO_COMPILE = ("--no-compile",)


def fresh_venv(where: Path) -> Path:
    """A new venv (outside the checkout, so the checkout is never importable from its cwd)."""
    run([sys.executable, "-m", "venv", str(where)], timeout=120)
    return where / "bin"


@pytest.fixture(scope="module")
def dists() -> Iterator[dict[str, Path]]:
    out = Path(tempfile.mkdtemp(prefix="huabu-dist-"))
    # A copy of the tracked tree: building in the checkout would leave build/ and egg-info behind.
    tree = out / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    run([sys.executable, "-m", "build", "--outdir", str(out), str(tree)], timeout=600, env=clean_env())
    wheel, sdist = next(out.glob("huabu-*.whl")), next(out.glob("huabu-*.tar.gz"))
    yield {"wheel": wheel, "sdist": sdist}
    shutil.rmtree(out, ignore_errors=True)


def test_the_wheel_carries_every_package_and_its_data(dists: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(dists["wheel"]).namelist())
    tracked = subprocess.run(["git", "ls-files", "*__init__.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    packages = [str(Path(p).parent) for p in tracked.stdout.split()]
    shipped = [p for p in packages if p.split("/")[0] in ("sdk", "deployments", "filters", "ab_testing", "cluster")]
    assert "sdk/resources" in shipped
    for package in shipped:
        assert f"huabu/{package}/__init__.py" in names, f"package {package} is missing from the wheel"
    for tracked in ("mmdit/weights", "playground/index.html", "filters/data", "cluster/"):
        assert any(tracked in n and not n.endswith(".py") for n in names), f"no {tracked} data in the wheel"


@pytest.mark.parametrize("dist", ["wheel", "sdist"])
def test_sdk_only_install_imports_and_runs_the_cli(dists: dict[str, Path], dist: str, tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    run([str(bin_dir / "pip"), "install", "-q", *NO_COMPILE, str(dists[dist])], timeout=600, env=clean_env())
    env = clean_env()
    assert "sdk ok" in run([str(bin_dir / "python"), "-c", SDK_CHECK], timeout=60, env=env, cwd=tmp_path)
    help_text = run([str(bin_dir / "huabu"), "--help"], timeout=60, env=env, cwd=tmp_path)
    # Every command has its line, the server ones too, with what they need installed.
    assert all(f"    {command} " in help_text for command in ("generate", "jobs", "usage", "up", "keys")), help_text
    assert "need `pip install 'huabu[server]'`" in help_text, help_text
    assert "--guidance-scale" in run([str(bin_dir / "huabu"), "generate", "--help"], timeout=60, env=env, cwd=tmp_path)
    # A server command without the extra says what to install instead of a traceback.
    proc = subprocess.run(
        [str(bin_dir / "huabu"), "up"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 2 and "pip install 'huabu[server]'" in proc.stderr, proc.stderr


def test_server_install_from_the_wheel_serves_an_image(dists: dict[str, Path], tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    pip = str(bin_dir / "pip")
    # torch first, pinned: any other torch requirement pulls a multi-GB CUDA build.
    run([pip, "install", "-q", *NO_COMPILE, "torch==2.13.0"], timeout=900, env=clean_env())
    run([pip, "install", "-q", *NO_COMPILE, f"{dists['wheel']}[server]"], timeout=900, env=clean_env())

    home = Path(tempfile.mkdtemp(prefix="hbw-"))  # short: the Ray temp dir derives from it (socket paths)
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "storage": {"local_dir": str(tmp_path / "files")},
                "model": {"autoscaling": {"min_replicas": 1, "max_replicas": 1}},
                "graceful_shutdown_timeout_s": 1,
            }
        )
    )
    port = free_port()
    env = clean_env(HUABU_HOME=str(home))
    huabu = str(bin_dir / "huabu")
    try:
        up_args = ["up", "--settings", str(settings), "--port", str(port), "--timeout", "400"]
        up = run([huabu, *up_args], 480, env, tmp_path)
        assert f"http://127.0.0.1:{port}" in up
        key = (home / "dev-admin-key").read_text().strip()
        # The installed SDK's CLI generates through the installed server, as a user would.
        out = tmp_path / "fox.png"
        client_env = clean_env(HUABU_BASE_URL=f"http://127.0.0.1:{port}", HUABU_API_KEY=key)
        printed = run(
            [huabu, "generate", "一只红色的圆形 on the left", "--seed", "3", "--json", "--no-progress", "-o", str(out)],
            300,
            client_env,
            tmp_path,
        )
        assert out.read_bytes().startswith(b"\x89PNG"), printed
        assert json.loads(printed.strip().splitlines()[-1])
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()  # the playground's package data
        response = httpx.get(
            f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert response.status_code == 200 and response.json()["data"], response.text
        config = run([huabu, "serve-config"], 120, env, tmp_path)
        assert "import_path: huabu.deployments" in config
        shipped = "import importlib.resources as r; print((r.files('huabu.cluster') / 'serve_config.yaml').read_text())"
        assert "import_path" in run([str(bin_dir / "python"), "-c", shipped], 60, env, tmp_path)
    finally:
        subprocess.run([huabu, "down"], env=env, capture_output=True, timeout=180, check=False)
        shutil.rmtree(home, ignore_errors=True)

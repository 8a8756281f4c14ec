"""The walkthroughs of README.md, docs/ and examples/, pasted in order as a newcomer would paste them.

Every fenced ``bash`` or ``python`` block right after a ``<!-- walkthrough: NAME -->`` line is
extracted verbatim and run, walkthrough by walkthrough, in document order, against one deployed
application set up as a fresh ``huabu up --settings examples/canary_rollout/settings.yaml`` leaves
things: API keys on, the development admin key in ``$HUABU_HOME/dev-admin-key`` and the server's URL
in ``$HUABU_HOME/local-cluster.json``. ``HUABU_BASE_URL`` and ``HUABU_API_KEY`` are unset, so every
block finds the server and the key as it would on the user's machine. The application stands in for
the lines that manage the local cluster (``huabu up``, ``huabu down``, ``huabu status``) and for
installing (``pip install``, ``make``): those lines are not run. A block fails the test on its
first failing line (``set -e``), so docs and code cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytestmark = [pytest.mark.serve, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").glob("*/README.md"))]
MARKER = re.compile(r"^<!-- walkthrough: ([\w-]+) -->\n```(bash|python)\n(.*?)^```", re.M | re.S)
STAND_INS = ("huabu up", "huabu down", "huabu status", "pip install", "make ")
DEV_KEY = "hb_dev_walkthrough-key-for-the-docs-test"


@dataclass
class Block:
    walkthrough: str
    language: str
    code: str
    source: str  # file:line, for the failure message


def walkthrough_blocks() -> dict[str, list[Block]]:
    found: dict[str, list[Block]] = {}
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in MARKER.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            block = Block(m[1], m[2], m[3], f"{path.relative_to(ROOT)}:{line}")
            found.setdefault(m[1], []).append(block)
    return found


BLOCKS = walkthrough_blocks()


def runnable(block: Block) -> str:
    if block.language == "python":
        return block.code
    lines = [ln for ln in block.code.splitlines() if not ln.lstrip().startswith(STAND_INS)]
    return "set -euo pipefail\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def local_server(deploy_app: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a shell on a machine where `huabu up --settings <the canary example's>` ran."""
    import yaml

    from huabu.deployments.gateway.auth import key_hash

    settings = yaml.safe_load((ROOT / "examples/canary_rollout/settings.yaml").read_text())
    app = deploy_app(
        variants=settings["variants"],
        # The example's controller interval; state read back faster than the 5 s the suite's idle apps use.
        ab={**settings["ab"], "refresh_interval_s": 0.5, "flush_interval_s": 0.5},
        auth={"enabled": True, "admin_key_sha256": key_hash(DEV_KEY)},
        safety={"prompt_enabled": False, "image": {"enabled": False}},  # the CPU goes to the model
    )
    home = tmp_path_factory.mktemp("huabu-home")
    (home / "dev-admin-key").write_text(DEV_KEY + "\n")
    (home / "dev-admin-key").chmod(0o600)
    record = {"address": "127.0.0.1:1", "temp_dir": None, "started_by_huabu": False, "auth_mode": "disabled"}
    record |= {"auth_token_path": None, "url": app.base_url, "app_name": app.name}
    (home / "local-cluster.json").write_text(json.dumps(record))
    env = {k: v for k, v in os.environ.items() if k not in ("HUABU_BASE_URL", "HUABU_API_KEY")}
    env.update(
        HUABU_HOME=str(home),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # huabu and python of this venv
        MPLBACKEND="Agg",
        PYTHONUNBUFFERED="1",
    )
    return env


def paste(walkthrough: str, env: dict[str, str], cwd: Path, timeout: float = 600) -> str:
    """Run every block of a walkthrough in order in ``cwd``; -> the combined output."""
    blocks = BLOCKS[walkthrough]
    (cwd / "examples").symlink_to(ROOT / "examples")  # the blocks' relative paths, outputs in cwd
    output = []
    for block in blocks:
        code = runnable(block)
        command = ["bash", "-c", code] if block.language == "bash" else [sys.executable, "-c", code]
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        output.append(done.stdout + done.stderr)
        assert done.returncode == 0, f"{block.source} failed ({done.returncode}):\n{code}\n{output[-1][-4000:]}"
    return "\n".join(output)


def test_every_walkthrough_is_collected() -> None:
    assert set(BLOCKS) == {"quickstart", "blog_cover", "product_variants", "canary"}
    for blocks in BLOCKS.values():
        assert all(b.code.strip() for b in blocks)


def test_quickstart(local_server: dict[str, str], tmp_path: Path) -> None:
    out = paste("quickstart", local_server, tmp_path)
    with Image.open(tmp_path / "fox.png") as image:
        assert image.format == "PNG"
    assert "cached" in out  # the second, identical generate is a cache hit and its progress says so
    assert "created key" in out and "generation s" in out  # keys create and usage ran with the dev key
    assert "usage" in out and "rollout" in out  # --help lists server commands too

    # The development admin key is not rate-limited (the app's default rate is 60/min per key).
    from huabu.sdk import Client

    url = json.loads((Path(local_server["HUABU_HOME"]) / "local-cluster.json").read_text())["url"]
    with Client(url, api_key=DEV_KEY, max_retries=0) as client:
        for _ in range(65):
            client.images.generate("a red circle on the left", seed=1, size="32x32", steps=2)

    # Where the server `huabu up` started is not known (another HUABU_HOME): the 401 says where the key is.
    elsewhere = {**local_server, "HUABU_HOME": str(tmp_path / "empty"), "HUABU_BASE_URL": url}
    done = subprocess.run(
        ["huabu", "generate", "x", "--max-retries", "0"], env=elsewhere, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "401 no API key" in done.stderr and "dev-admin-key" in done.stderr


def test_blog_cover(local_server: dict[str, str], tmp_path: Path) -> None:
    out = paste("blog_cover", local_server, tmp_path)
    assert "5 articles: 5 covered" in out and "5 skipped" in out
    assert "(already has a cover" in out


def test_product_variants(local_server: dict[str, str], tmp_path: Path) -> None:
    paste("product_variants", local_server, tmp_path)
    assert (tmp_path / "variants" / "contact_sheet.png").exists()


def test_canary(local_server: dict[str, str], tmp_path: Path) -> None:
    out = paste("canary", local_server, tmp_path, timeout=900)
    assert out.count("ended promoted") == 1, out[-3000:]  # the script's rollout
    assert "promoted, canary tiny-mmdit@v2 at 100%" in out, out[-3000:]  # the command line's
    for report in ("canary-report", "rollout-report"):
        for name in ("traffic.png", "latency.png", "quality.png"):
            with Image.open(tmp_path / report / name) as image:
                assert image.size == (640, 360)
    # The rollback recipe's mistake: a canary the server does not serve is refused in a sentence.
    done = subprocess.run(
        [sys.executable, "examples/canary_rollout/canary_rollout.py", "--canary", "random-init@v3"],
        cwd=tmp_path,
        env=local_server,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "canary_model 'random-init@v3' is not served here" in done.stderr

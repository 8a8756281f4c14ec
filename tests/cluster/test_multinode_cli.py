"""``huabu cluster ...`` without a cluster (clear messages, nothing started) and teardown by PID."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from huabu.cluster.cli import main as cli_main
from huabu.cluster.local import _psutil
from huabu.cluster.multinode import kill_tree


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HUABU_HOME", str(tmp_path))
    return tmp_path


def test_commands_say_what_to_do_without_a_cluster(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["cluster", "status"]) == 1
    assert "start one with `huabu cluster up`" in capsys.readouterr().err
    assert cli_main(["cluster", "kill-node", "worker-1"]) == 1
    assert "no multi-node cluster is recorded" in capsys.readouterr().err
    assert cli_main(["cluster", "kill-node", "head"]) == 1
    assert "kill a worker node instead" in capsys.readouterr().err
    assert cli_main(["cluster", "down"]) == 0
    assert "nothing to stop" in capsys.readouterr().out
    assert cli_main(["cluster", "up", "--nodes", "0"]) == 1
    assert "--nodes must be at least 1" in capsys.readouterr().err
    assert not list(home.iterdir()), "nothing is started or recorded"


def test_kill_tree_takes_the_children_too() -> None:
    psutil = _psutil()
    parent = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    deadline = time.monotonic() + 10
    while len(psutil.Process(parent.pid).children()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    children = psutil.Process(parent.pid).children(recursive=True)
    assert kill_tree(parent.pid) == 3
    parent.wait(5)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert kill_tree(parent.pid) == 0  # gone: nothing to do, no error

"""docs/SDK.md stays true: its python blocks and `$ huabu` lines run, in order, against the fake server."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import httpx
import pytest
from fake_server import FakeServer
from sdk_fakes import fake_client

import huabu.sdk as hs
from huabu.sdk import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "SDK.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(kind: str) -> list[str]:
    return [body for lang, info, body in FENCE.findall(DOC.read_text()) if lang == kind and "no-run" not in info]


def test_doc_has_snippets() -> None:
    assert len(_blocks("python")) >= 8 and len(_blocks("console")) >= 1


def test_python_snippets_run(server: FakeServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    transport = server.transport()

    class DocClient(hs.Client):
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs.setdefault("http_client", httpx.Client(transport=transport))
            super().__init__(*args, **kwargs)

    class DocAsyncClient(hs.AsyncClient):
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs.setdefault("http_client", httpx.AsyncClient(transport=transport))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(hs, "Client", DocClient)
    monkeypatch.setattr(hs, "AsyncClient", DocAsyncClient)
    namespace: dict[str, object] = {"__name__": "__doc__"}
    for index, block in enumerate(_blocks("python")):
        try:
            exec(compile(block, f"{DOC.name}[python block {index}]", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message names the failing block
            raise AssertionError(f"block {index} of {DOC.name} failed: {exc!r}\n{block}") from exc
    assert (tmp_path / "fox.png").exists() and (tmp_path / "boat.png").exists()


def test_console_snippets_run(server: FakeServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "client_factory", lambda args: fake_client(server))
    for block in _blocks("console"):
        for line in block.splitlines():
            if line.startswith("$ huabu "):
                assert cli.main(shlex.split(line)[2:]) == 0, line
    assert (tmp_path / "cli-wide.png").exists()

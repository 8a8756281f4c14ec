"""The ``huabu`` CLI: parsing, help, delegation of server commands, and each client command on the fake."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import pytest
from fake_server import FakeServer
from PIL import Image
from sdk_fakes import fake_client

from huabu.sdk import cli
from huabu.sdk._results import ImageResults
from huabu.sdk.types import ImageData, ImagesResponse, JobEvent


@pytest.fixture
def run(server: FakeServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "client_factory", lambda args: fake_client(server))

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


# --- parsing and help --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["generate"], ["edit"], ["outpaint"], ["jobs"], ["jobs", "submit"], ["jobs", "events"], ["models"]],
)
def test_help_reads_well(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: huabu")
    if not argv:
        assert "generate" in out and "HUABU_BASE_URL" in out and "up" in out


def test_parse_generate_options() -> None:
    args = cli.build_parser().parse_args(
        [
            "--base-url",
            "http://x",
            "generate",
            "狐狸",
            "--seed",
            "7",
            "--steps",
            "3",
            "-o",
            "a.png",
            "--size",
            "64x32",
            "--cfg",
            "2.5",
            "--api-key",
            "k",
            "--json",
        ]
    )
    assert (args.base_url, args.api_key, args.prompt, args.output, args.json) == (
        "http://x",
        "k",
        "狐狸",
        ["a.png"],
        True,
    )
    assert cli._generation_params(args) == {"seed": 7, "steps": 3, "size": "64x32", "guidance_scale": 2.5}
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["generate", "x", "--steps", "0"])
    edit = cli.build_parser().parse_args(["edit", "in.png", "p", "--rect", "1,2,3,4"])
    assert edit.rect == (1, 2, 3, 4) and edit.mask is None
    out = cli.build_parser().parse_args(["outpaint", "in.png", "p", "--extend", "right:8", "--extend", "up:4"])
    assert sum(out.extend, start=type(out.extend[0])()) == (0, 8, 4, 0)


def test_output_paths() -> None:
    two = ImageResults(ImagesResponse(created=1, data=[ImageData(seed=5, id="a"), ImageData(seed=6, id="b")]))
    assert cli.output_paths([], two) == [Path("huabu-5.png"), Path("huabu-6.png")]
    assert cli.output_paths(["out/x.png"], two) == [Path("out/x-0.png"), Path("out/x-1.png")]
    assert cli.output_paths(["{id}_{seed}.png"], two) == [Path("a_5.png"), Path("b_6.png")]
    assert cli.output_paths(["1.png", "2.png"], two) == [Path("1.png"), Path("2.png")]
    with pytest.raises(ValueError):
        cli.output_paths(["1.png", "2.png", "3.png"], two)
    with pytest.raises(ValueError, match="collide"):
        cli.output_paths(["same.png", "same.png"], two)


def test_progress_bar() -> None:
    stream = io.StringIO()
    bar = cli.ProgressBar("job_1", stream)
    for step in (0, 1, 2):
        bar.update(JobEvent(type="progress", job_id="job_1", seq=step, status="running", step=step, total=4))
    bar.update(JobEvent(type="result", job_id="job_1", seq=3, status="succeeded", step=4, total=4))
    lines = stream.getvalue().splitlines()
    assert lines == [bar.render(0, 4, "running"), bar.render(4, 4, "succeeded")]  # not a tty: status changes only
    assert bar.render(2, 4, "running").startswith("[" + "#" * 15 + "-" * 15 + "] 2/4 running")


# --- server command delegation -----------------------------------------------------------------


def test_server_commands_are_delegated(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    fake = types.ModuleType("huabu.cluster.cli")

    def server_main(argv: list[str]) -> int:
        calls.append(argv)
        return 3

    fake.main = server_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huabu.cluster.cli", fake)
    assert cli.main(["up", "--port", "9000"]) == 3
    assert calls == [["up", "--port", "9000"]]


def test_server_commands_without_the_server_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "huabu.cluster.cli", None)  # makes the import fail
    assert cli.main(["status"]) == 2
    assert "this command needs the server extra: pip install 'huabu[server]'" in capsys.readouterr().err


# --- client commands on the fake ---------------------------------------------------------------


def test_generate_saves_and_reports(run, server: FakeServer, tmp_path: Path) -> None:
    code, out, err = run("generate", "a red fox", "--seed", "7", "--steps", "2", "-o", "fox.png")
    assert code == 0 and out == "fox.png\n"
    assert Image.open(tmp_path / "fox.png").size == (32, 32)
    assert err.startswith("job job_") and "2/2 succeeded" in err
    code, out, _ = run("generate", "a red fox", "--seed", "7", "-n", "2", "--json", "--no-progress", "--url")
    doc = json.loads(out)
    assert code == 0 and [i["seed"] for i in doc["images"]] == [7, 8] and doc["job_id"].startswith("job_")
    assert all((tmp_path / i["path"]).exists() for i in doc["images"])
    code, out, err = run("generate", "a red fox", "--direct", "-o", "direct.png")
    assert code == 0 and out == "direct.png\n" and err == ""


def test_errors_exit_non_zero_with_the_server_message(run) -> None:
    code, out, err = run("generate", "forbidden fruit", "--no-progress")
    assert code == 1 and "blocked by the content policy" in err and out == ""
    code, _, err = run("generate", "x", "--direct", "--model", "nope@1")
    assert code == 1 and "unknown model" in err and "param=model" in err
    code, _, err = run("generate", "x", "--size", "huge")
    assert code == 2 and "size" in err
    code, _, err = run("jobs", "get", "job_nope")
    assert code == 1 and "404" in err
    code, _, err = run("edit", "missing.png", "x")
    assert code == 2 and "missing.png" in err


def test_edit_and_outpaint(run, tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (1, 2, 3)).save(tmp_path / "in.png")
    code, out, _ = run("edit", "in.png", "a scarf", "--rect", "2,2,8,8", "-o", "e.png", "--no-progress")
    assert code == 0 and out == "e.png\n" and Image.open(tmp_path / "e.png").size == (16, 16)
    code, _, _ = run("outpaint", "in.png", "wider", "--extend", "horizontal:8", "-o", "w.png", "--direct")
    assert code == 0 and Image.open(tmp_path / "w.png").size == (32, 16)
    code, _, _ = run("outpaint", "in.png", "tall", "--aspect", "1:2", "-o", "t.png", "--no-progress")
    assert code == 0 and Image.open(tmp_path / "t.png").size == (16, 32)
    code, _, err = run("outpaint", "in.png", "nothing")
    assert code == 2 and "how far" in err


def test_jobs_commands(run, tmp_path: Path) -> None:
    code, out, _ = run("jobs", "submit", "a lighthouse", "--steps", "2")
    job_id = out.strip()
    assert code == 0 and job_id.startswith("job_")
    code, out, _ = run("jobs", "get", job_id)
    assert code == 0 and out.split()[:3] == [job_id, "queued", "generate"]
    code, out, _ = run("jobs", "events", job_id, "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [e["type"] for e in events] == ["status", "progress", "progress", "result"]
    code, out, _ = run("jobs", "result", job_id, "-o", "r.png", "--no-progress")
    assert code == 0 and (tmp_path / "r.png").exists()
    code, out, _ = run("jobs", "get", job_id, "--json")
    assert json.loads(out)["status"] == "succeeded"
    _, out, _ = run("jobs", "submit", "x")
    code, out, _ = run("jobs", "cancel", out.strip())
    assert code == 0 and "canceled" in out
    _, out, _ = run("jobs", "submit", "forbidden x")
    code, _, err = run("jobs", "events", out.strip(), "--no-progress")
    assert code == 1 and "failed" in err
    code, out, err = run("jobs", "submit", "y", "--wait", "-o", "w.png", "--no-progress")
    assert code == 0 and out == "w.png\n"


def test_models(run) -> None:
    assert run("models") == (0, "tiny@1\n", "")
    _code, out, _ = run("models", "--json")
    assert json.loads(out)["data"][0]["id"] == "tiny@1"

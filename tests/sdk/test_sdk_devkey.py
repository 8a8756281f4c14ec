"""The development key of a local `huabu up` server: found on its loopback URL only, explicit keys
win, a 401 says where the key is; and the command line's seams (global options anywhere, every
command in the help, errors naming the URL and what to do)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import httpx
import pytest

import huabu.sdk as hs
from huabu.sdk import _devkey, cli

KEY = "hb_dev_local"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HUABU_HOME where `huabu up` recorded a server at http://127.0.0.1:8123/app."""
    monkeypatch.setenv("HUABU_HOME", str(tmp_path))
    monkeypatch.delenv("HUABU_API_KEY", raising=False)
    monkeypatch.delenv("HUABU_BASE_URL", raising=False)
    (tmp_path / "local-cluster.json").write_text(json.dumps({"url": "http://127.0.0.1:8123/app"}))
    (tmp_path / "dev-admin-key").write_text(KEY + "\n")
    return tmp_path


def test_the_dev_key_goes_to_the_local_server_only(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hs.Client().base_url == "http://127.0.0.1:8123/app"  # nothing given: the recorded server
    assert hs.Client().api_key == KEY
    assert hs.Client("http://localhost:8123/app/").api_key == KEY  # the same loopback server
    for elsewhere in (
        "http://127.0.0.1:8124/app",  # another port: not the server huabu up started
        "http://127.0.0.1:8123/other",  # another app under the same proxy
        "https://127.0.0.1:8123/app",
        "http://10.0.0.5:8123/app",  # never off this machine
        "http://huabu.example.com:8123/app",
    ):
        assert hs.Client(elsewhere).api_key is None, elsewhere
    assert hs.Client(api_key="mine").api_key == "mine"  # an explicit key wins
    monkeypatch.setenv("HUABU_API_KEY", "from-env")
    assert hs.Client().api_key == "from-env"  # and so does HUABU_API_KEY
    (home / "local-cluster.json").write_text(json.dumps({"url": "http://10.0.0.5:8123/app"}))
    monkeypatch.delenv("HUABU_API_KEY")
    assert hs.Client("http://10.0.0.5:8123/app").api_key is None  # a non-loopback record never gets it
    (home / "local-cluster.json").unlink()
    assert hs.Client().base_url == "http://127.0.0.1:8000" and hs.Client().api_key is None


def test_the_grpc_client_finds_the_dev_key_by_the_same_rule(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huabu.sdk import grpc as grpc_sdk  # the grpc extra: `make test` installs it (server extra)

    record = {"url": "http://127.0.0.1:8123/app", "grpc_address": "127.0.0.1:9123"}
    (home / "local-cluster.json").write_text(json.dumps(record))
    monkeypatch.delenv(grpc_sdk.GRPC_ADDRESS_ENV, raising=False)
    assert grpc_sdk.GrpcClient().address == "127.0.0.1:9123"  # nothing given: the recorded gRPC port
    assert grpc_sdk.GrpcClient().api_key == KEY

    assert grpc_sdk.AsyncGrpcClient("localhost:9123").api_key == KEY  # the same loopback port; no loop needed
    for elsewhere in ("127.0.0.1:9124", "10.0.0.5:9123", "huabu.example.com:9123", "127.0.0.1:8123"):
        assert grpc_sdk.GrpcClient(elsewhere).api_key is None, elsewhere
    assert grpc_sdk.GrpcClient(api_key="mine").api_key == "mine"  # an explicit key wins
    monkeypatch.setenv("HUABU_API_KEY", "from-env")
    assert grpc_sdk.GrpcClient().api_key == "from-env"  # and so does HUABU_API_KEY
    monkeypatch.delenv("HUABU_API_KEY")
    (home / "local-cluster.json").write_text(json.dumps({**record, "grpc_address": "10.0.0.5:9123"}))
    assert grpc_sdk.GrpcClient("10.0.0.5:9123").api_key is None  # a non-loopback record never gets it
    (home / "local-cluster.json").unlink()
    assert grpc_sdk.GrpcClient().address == grpc_sdk.DEFAULT_GRPC_ADDRESS
    assert grpc_sdk.GrpcClient().api_key is None


def _unauthorized(request: httpx.Request) -> httpx.Response:
    body = {"error": {"message": "no API key", "type": "authentication_error", "code": "invalid_api_key"}}
    return httpx.Response(401, json=body)


def test_a_401_says_where_the_key_is_or_came_from(home: Path) -> None:
    transport = httpx.MockTransport(_unauthorized)  # the status line only; the real 401 is in the docs test
    client = hs.Client("http://127.0.0.1:9999", http_client=httpx.Client(transport=transport))
    with client, pytest.raises(hs.AuthenticationError) as info:
        client.models.list()
    assert info.value.message == "no API key"  # the server's words stay as they were
    assert str(home / "dev-admin-key") in str(info.value) and "HUABU_API_KEY" in str(info.value)
    local = hs.Client(http_client=httpx.Client(transport=transport))
    with local, pytest.raises(hs.AuthenticationError) as info:
        local.models.list()
    assert f"came from {home / 'dev-admin-key'}" in str(info.value)


def test_connection_errors_name_the_url_and_the_next_step(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--base-url", "http://127.0.0.1:1", "models", "--max-retries", "0"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach http://127.0.0.1:1" in err and "`huabu up`" in err


def test_global_options_go_before_or_after_any_command(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    fake = types.ModuleType("huabu.cluster.cli")
    fake.main = lambda argv: calls.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huabu.cluster.cli", fake)
    assert cli.main(["--api-key", "K", "--json", "keys", "list"]) == 0
    assert calls[-1] == ["keys", "list", "--api-key", "K", "--json"]
    args = cli.build_parser().parse_args(["models", "--json", "--base-url", "http://x"])
    assert args.json and args.base_url == "http://x"
    assert cli.build_parser().parse_args(["--json", "usage", "--days", "3"]).json


def test_server_side_global_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from huabu.cluster import cli as server_cli
    from huabu.cluster import keys_cli, rollout_cli

    seen: list[list[str]] = []
    monkeypatch.setattr(keys_cli, "main", lambda argv: seen.append(argv) or 0)
    assert server_cli.main(["keys", "--api-key", "K", "list", "--json"]) == 0
    assert seen[-1] == ["list", "--api-key", "K", "--json"]
    parsed = rollout_cli.build_parser().parse_args(["status", "--json", "--base-url", "http://x"])
    assert parsed.json and parsed.base_url == "http://x"
    parsed = keys_cli.build_parser().parse_args(["list", "--base-url", "http://x"])  # --url is the old name
    assert parsed.base_url == "http://x"


def test_help_lists_every_command_with_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name, line in [*cli.SERVER_COMMANDS.items(), ("usage", "metered"), ("generate", "text to image")]:
        assert name in out and line.split()[0] in out
    with pytest.raises(SystemExit):  # an unknown command
        cli.main(["nosuch"])
    assert "'rollout'" in capsys.readouterr().err  # the list of choices names server commands too


def test_cache_hit_progress_says_cached() -> None:
    import io

    from huabu.sdk.types import JobEvent

    stream = io.StringIO()
    bar = cli.ProgressBar("job_1", stream)
    result = {"created": 1, "data": [{"b64_json": "", "cached": True}]}
    bar.update(JobEvent(type="result", job_id="job_1", seq=0, status="succeeded", result=result))
    assert "cached succeeded" in stream.getvalue() and "0/0" not in stream.getvalue()


def test_policy_options_reach_every_guardrail() -> None:
    from huabu.ab_testing import RolloutPolicy, build_policy

    policy = build_policy("demo", steps=[5, 25, 50, 100], min_samples=20, min_step_seconds=0)
    assert policy.min_samples_per_step == 20 and policy.steps == (5, 25, 50, 100)
    minimums = [policy.error_rate, policy.filter_block_rate, policy.quality, policy.adoption, policy.latency]
    assert {g.min_samples for g in minimums} == {20}
    assert build_policy(min_samples=5).latency.min_samples == 20  # p95 of fewer is noise: the floor holds
    assert build_policy() == RolloutPolicy()
    assert build_policy("demo", overrides={"quality": {"margin": 0.2}}).quality.min_samples == 10
    with pytest.raises(ValueError, match="preset"):
        build_policy("fast")
    assert _devkey.is_loopback_host("::1") and not _devkey.is_loopback_host("example.com")

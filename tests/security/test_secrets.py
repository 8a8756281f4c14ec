"""Secrets stay secret (issue #25, holes 3 and 9): no serving with the public development signing
secret, no secrets in the JSON log lines (messages, args, extras, tracebacks), none in generated
configs or manifests, no open server on the network by accident, no API key in the SDK's reprs."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from huabu.cluster.cli import check_open_server, is_loopback
from huabu.cluster.kuberay import OPTIONAL_SECRETS, RAYSERVICE_PATH, REQUIRED_SECRETS, rayservice
from huabu.deployments.core.logging_json import REDACTED, JsonLineFormatter, add_secret, redact
from huabu.deployments.core.settings import DEV_SIGNING_SECRET, InsecureSettingsError, Settings
from huabu.sdk import AsyncClient, Client

API_KEY = "hb_0123456789ab_" + "S" * 43
REDIS_URL = "rediss://:redis-pw-7c1d@redis.internal:6380/0"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without HUABU__ variables (a developer's shell must not decide a test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUABU__")}
    return {**env, **extra}


# --- hole 3: the signing secret -----------------------------------------------------------------


def test_the_default_signing_secret_is_refused_outside_development() -> None:
    with pytest.raises(InsecureSettingsError) as refused:
        Settings.load(environ={}).require_secrets()
    message = str(refused.value)
    assert "storage.signing_secret" in message and "HUABU__STORAGE__SIGNING_SECRET" in message
    assert "HUABU__DEVELOPMENT=true" in message
    with pytest.raises(InsecureSettingsError, match="too short"):
        Settings.load(environ={}, storage={"signing_secret": "s3cret"}).require_secrets()
    Settings.load(environ={"HUABU__DEVELOPMENT": "true"}).require_secrets()
    Settings.load(environ={"HUABU__STORAGE__SIGNING_SECRET": uuid.uuid4().hex}).require_secrets()


def test_settings_repr_hides_the_signing_secret() -> None:
    secret = uuid.uuid4().hex
    settings = Settings.load(environ={}, storage={"signing_secret": secret})
    assert secret not in repr(settings) and secret not in repr(settings.storage)
    assert DEV_SIGNING_SECRET not in repr(Settings.load(environ={}))


BUILD = "from huabu.deployments.app import app_builder; app_builder({})"  # what `serve deploy` runs


def test_serve_deploy_path_refuses_the_default_secret(tmp_path: Path) -> None:
    """The app builder of the Serve config, in a process of its own: no secret, no app."""
    refused = subprocess.run(
        [sys.executable, "-c", BUILD], env=clean_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert refused.returncode != 0
    assert "InsecureSettingsError" in refused.stderr and "HUABU__STORAGE__SIGNING_SECRET" in refused.stderr


# A replica's logging (telemetry.configure), its storage (which holds the signing secret), and a
# careless log call with every kind of secret, in the message, the args, an extra and a traceback.
LOG_SCRIPT = f"""
import logging
from huabu.deployments.app import app_builder
from huabu.deployments.core import telemetry
from huabu.deployments.core.settings import Settings
from huabu.deployments.core.storage import open_storage

app_builder({{}})
settings = Settings.load()
telemetry.configure(settings, "gateway")
open_storage(settings.storage)
log = logging.getLogger("huabu.gateway")
try:
    raise ConnectionError("Error connecting to {REDIS_URL}")
except ConnectionError:
    log.exception(
        "request with Authorization: Bearer %s failed (secret %s)",
        "{API_KEY}",
        settings.storage.signing_secret,
        extra={{"settings": settings.storage.model_dump(), "url": "{REDIS_URL}"}},
    )
"""


def test_a_replica_log_line_is_redacted(tmp_path: Path) -> None:
    secret = uuid.uuid4().hex
    env = clean_env(HUABU__STORAGE__SIGNING_SECRET=secret, HUABU__STORAGE__LOCAL_DIR=str(tmp_path / "files"))
    run = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    [line] = [json.loads(text) for text in run.stderr.splitlines() if text.startswith("{")]
    assert line["logger"] == "huabu.gateway" and line["component"] == "gateway"
    assert "Traceback" in line["exception"] and "ConnectionError" in line["exception"]
    for leaked in (secret, API_KEY[len("hb_0123456789ab_") :], "redis-pw-7c1d"):
        assert leaked not in run.stderr
    assert REDACTED in line["message"] and REDACTED in line["exception"] and REDACTED in line["url"]


@pytest.mark.parametrize(
    ("text", "kept", "hidden"),
    [
        (f"key {API_KEY} used", "hb_0123456789ab_", API_KEY[16:]),
        ("hb_dev_" + "x" * 40, "hb_dev_", "x" * 40),
        ("authorization: Bearer abc.def-ghi", "Bearer ", "abc.def-ghi"),
        ("Authorization: Basic dXNlcjpwYXNz", "Basic ", "dXNlcjpwYXNz"),
        (f"state at {REDIS_URL} down", "rediss://:", "redis-pw-7c1d"),
        ("redis://user:p@ss@host:6379/0", "@host:6379/0", "p@ss"),
        ("StorageSettings(signing_secret='abc123xyz', url_ttl_s=3600)", "url_ttl_s=3600", "abc123xyz"),
        ('{"signing_secret": "abc123xyz", "bucket": "b"}', '"bucket": "b"', "abc123xyz"),
        ("HUABU__STORAGE__SIGNING_SECRET=abc123xyz next", "next", "abc123xyz"),
        ("RAY_AUTH_TOKEN=abc123xyz", "RAY_AUTH_TOKEN=", "abc123xyz"),
        ("AWS_SECRET_ACCESS_KEY: abc123xyz", "AWS_SECRET_ACCESS_KEY: ", "abc123xyz"),
    ],
)
def test_redact(text: str, kept: str, hidden: str) -> None:
    redacted = redact(text)
    assert hidden not in redacted and kept in redacted and REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    ["redis://redis:6379/0", "http://127.0.0.1:8000/v1/files/ab.png?expires=1&sig=00", "max_tokens=5 steps=4"],
)
def test_redact_leaves_ordinary_text(text: str) -> None:
    assert redact(text) == text


def test_known_secrets_are_masked_anywhere() -> None:
    secret = uuid.uuid4().hex
    add_secret(secret)
    assert redact(f"hmac key {secret}!") == f"hmac key {REDACTED}!"


def test_json_formatter_redacts_args_extras_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter({"component": "test"}))
    log = logging.Logger("huabu.test_secrets")  # not registered: no other handler sees it
    log.addHandler(handler)
    try:
        raise RuntimeError(f"cannot reach {REDIS_URL}")
    except RuntimeError:
        log.error("key %s", API_KEY, exc_info=True, extra={"headers": {"authorization": f"Bearer {API_KEY}"}})
    line: dict[str, Any] = json.loads(stream.getvalue())
    assert API_KEY not in stream.getvalue() and "redis-pw-7c1d" not in stream.getvalue()
    assert line["message"] == f"key hb_0123456789ab_{REDACTED}"
    assert "RuntimeError: cannot reach rediss://:" in line["exception"]


# --- hole 9: manifests, open servers, SDK ---------------------------------------------------------


def test_kuberay_manifest_requires_its_secrets() -> None:
    """The pods do not start without the signing secret and the Redis URL (with its password)."""
    manifest = yaml.safe_load(RAYSERVICE_PATH.read_text())
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
            assert {name: refs[name]["optional"] for name in REQUIRED_SECRETS} == dict.fromkeys(REQUIRED_SECRETS, False)
            assert all(refs[name]["optional"] for name in OPTIONAL_SECRETS)
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert "redis_url" not in serve_config["applications"][0]["args"]["state"]  # the Secret's applies
    with pytest.raises(ValueError, match="HUABU__STATE__REDIS_URL"):
        rayservice(Settings.load(environ={}, state={"redis_url": "redis://redis:6379/0"}))


def test_open_server_only_on_loopback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("huabu.internal")
    open_settings = Settings.load(environ={}, host="0.0.0.0", auth={"enabled": False})
    check_open_server(open_settings, force=True)
    check_open_server(Settings.load(environ={}, host="0.0.0.0"), force=False)  # keys on: fine
    check_open_server(Settings.load(environ={}, auth={"enabled": False}), force=False)  # loopback: fine
    # `huabu up` refuses before it starts anything (HUABU_HOME: a cluster it might find is not ours).
    env = clean_env(HUABU_HOME=str(tmp_path / "home"))
    refused = subprocess.run(
        [sys.executable, "-m", "huabu.cluster.cli", "up", "--no-auth", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "--force-no-auth" in refused.stderr and "Starting" not in refused.stdout
    assert not (tmp_path / "home").exists()


def test_sdk_reprs_hide_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUABU_API_KEY", API_KEY)
    with Client(base_url="http://127.0.0.1:1") as client:
        assert API_KEY not in repr(client) and API_KEY not in repr(client._config)
        assert client.api_key == API_KEY  # still sent, only not shown
    assert API_KEY not in repr(AsyncClient(base_url="http://127.0.0.1:1")._config)


def test_serve_config_cli_keeps_secrets_out(tmp_path: Path) -> None:
    """`huabu serve-config` in its own process, with the secrets in its environment, as an operator's shell."""
    env = clean_env(HUABU__STATE__REDIS_URL=REDIS_URL, HUABU__STORAGE__SIGNING_SECRET="x" * 32)
    run = subprocess.run(
        [sys.executable, "-m", "huabu.cluster.cli", "serve-config"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "redis-pw-7c1d" not in run.stdout and "x" * 32 not in run.stdout
    assert "HUABU__STATE__REDIS_URL carries a password" in run.stderr

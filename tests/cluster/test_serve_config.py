"""cluster/serve_config.yaml: valid for Serve's own schema, generated from the same Settings that
drive ``huabu up``, and it runs: the app built from its import path and args serves an image."""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ray._common.utils import import_attr
from ray.serve.schema import ServeDeploySchema

from huabu.cluster.cli import main as cli_main
from huabu.cluster.serve_config import CONFIG_PATH, IMPORT_PATH, SECRET_FIELDS, render, serve_config
from huabu.deployments.app import app_builder
from huabu.deployments.core.settings import Settings

CORE_DEPLOYMENTS = {"MMDiT-stable", "Router", "Gateway"}
REGENERATE = "regenerate it: huabu serve-config > cluster/serve_config.yaml"


def committed() -> dict[str, Any]:
    return yaml.safe_load(CONFIG_PATH.read_text())


def test_file_validates_against_serve_schema() -> None:
    config = ServeDeploySchema.model_validate(committed())
    [app] = config.applications
    defaults = Settings.load(environ={})
    assert (app.name, app.route_prefix, app.import_path) == (defaults.app_name, defaults.route_prefix, IMPORT_PATH)
    assert (config.http_options.host, config.http_options.port) == (defaults.host, defaults.port)


def test_import_path_resolves_to_the_app_builder() -> None:
    [app] = committed()["applications"]
    assert import_attr(app["import_path"]) is app_builder


def test_file_is_the_generator_output_for_default_settings() -> None:
    assert committed() == serve_config(Settings.load(environ={})), REGENERATE
    assert yaml.safe_load(render(Settings.load(environ={}))) == committed()


@pytest.mark.parametrize("full", [False, True])
def test_args_round_trip_to_the_same_settings(full: bool) -> None:
    """What ``huabu up`` runs from these settings is what ``serve deploy`` of the generated file runs:
    args load back (unknown keys are rejected) into equal settings, secrets aside."""
    settings = Settings.load(
        environ={"HUABU__MODEL__NUM_GPUS": "1"},
        port=9000,
        variants={"stable": {"model": "tiny-mmdit@v1"}},
        state={"backend": "redis"},
        storage={"signing_secret": "s3cret"},
    )
    config = ServeDeploySchema.model_validate(serve_config(settings, full=full))
    args = config.applications[0].args
    assert "s3cret" not in str(args)
    loaded = Settings.load(environ={}, **args)
    assert loaded.model_dump(exclude=SECRET_FIELDS) == settings.model_dump(exclude=SECRET_FIELDS)
    assert (config.http_options.port, loaded.port) == (9000, 9000)
    if not full:  # only what was set: a default changed in code reaches the cluster too
        assert args == {
            "port": 9000,
            "variants": {"stable": {"model": "tiny-mmdit@v1"}},
            "model": {"num_gpus": 1.0},
            "state": {"backend": "redis"},
            "storage": {},
        }


def test_serve_config_command_follows_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in [k for k in os.environ if k.startswith("HUABU__")]:
        monkeypatch.delenv(key)
    assert cli_main(["serve-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == committed()
    assert cli_main(["serve-config", "--full"]) == 0
    full_args = yaml.safe_load(capsys.readouterr().out)["applications"][0]["args"]
    assert full_args == Settings.load(environ={}).model_dump(mode="json", exclude=SECRET_FIELDS)

    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text("variants: {stable: {model: random-init@v3}}\nstorage: {signing_secret: s3cret}\n")
    monkeypatch.setenv("HUABU__GATEWAY__DEFAULT_STEPS", "7")
    assert cli_main(["serve-config", "--settings", str(settings_file), "--port", "9100"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    config = ServeDeploySchema.model_validate(yaml.safe_load(out))
    args = config.applications[0].args
    assert config.http_options.port == 9100 and args["port"] == 9100
    assert args["variants"]["stable"]["model"] == "random-init@v3"
    assert args["gateway"]["default_steps"] == 7
    assert set(SECRET_FIELDS["storage"]).isdisjoint(args["storage"])


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_a_redis_password_stays_out_of_the_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Redis URL with a password is left out (the cluster's environment gives it); one without stays."""
    for key in [k for k in os.environ if k.startswith("HUABU__")]:
        monkeypatch.delenv(key)
    url = "rediss://:hunter2-redis-pw@redis.internal:6380/0"
    settings = Settings.load(environ={}, state={"backend": "redis", "redis_url": url}, cache={"redis_url": url})
    for full in (False, True):
        args = serve_config(settings, full=full)["applications"][0]["args"]
        assert "hunter2" not in str(args)
        assert "redis_url" not in args["state"] and "redis_url" not in args.get("cache", {})
        assert args["state"]["backend"] == "redis"
    text = render(settings)
    assert "hunter2" not in text
    assert "set HUABU__STATE__REDIS_URL in the cluster's environment" in text

    monkeypatch.setenv("HUABU__STATE__REDIS_URL", url)
    assert cli_main(["serve-config"]) == 0
    out, err = capsys.readouterr()
    assert "hunter2" not in out + err
    assert "HUABU__STATE__REDIS_URL carries a password" in err

    plain = Settings.load(environ={}, state={"redis_url": "redis://redis:6379/0"})
    assert serve_config(plain)["applications"][0]["args"]["state"] == {"redis_url": "redis://redis:6379/0"}


@pytest.mark.serve
def ready(base_url: str) -> bool:
    """Whether the app answers /readyz 200; not yet while its proxy route or replicas start (a
    connection refused or a read timeout on a loaded machine is "not yet", not a failure)."""
    try:
        return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_config_runs_on_serve(serve_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Build the app the way ``serve run``/``serve deploy`` do (import path + args), run it under its
    own name and route prefix in the session's Ray, and generate an image over HTTP."""
    from ray import serve
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    [app_config] = ServeDeploySchema.model_validate(committed()).applications
    name = f"cfg{uuid.uuid4().hex[:8]}"
    base_url = f"http://127.0.0.1:{serve_port}/{name}"
    admin_key = f"hb_dev_{uuid.uuid4().hex}"
    # Only what a shared test Ray needs differs from the file: isolation and fast health checks.
    args = _merge(
        app_config.args,
        {
            "app_name": name,
            "state": {"namespace": name},
            "storage": {"local_dir": str(tmp_path / "files"), "public_base_url": base_url},
            "model": {
                "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                "health_check_period_s": 1,
                "health_check_timeout_s": 5,
            },
            "gateway": {"default_steps": 4, "health_check_period_s": 1, "health_check_timeout_s": 5},
            # API keys are on in the file's defaults: a bootstrap admin key, given by its hash.
            "auth": {"admin_key_sha256": hashlib.sha256(admin_key.encode()).hexdigest()},
            "graceful_shutdown_timeout_s": 1,
        },
    )
    # The signing secret comes from the environment, as on a cluster (the file never carries it).
    monkeypatch.setenv("HUABU__STORAGE__SIGNING_SECRET", uuid.uuid4().hex)
    app = call_user_app_builder_with_args_if_necessary(import_attr(app_config.import_path), args)
    serve.run(app, name=name, route_prefix=f"/{name}", blocking=False)
    try:
        deadline = time.monotonic() + 120
        while not ready(base_url):
            assert time.monotonic() < deadline, f"{base_url} not ready"
            time.sleep(0.3)
        deployments = set(serve.status().applications[name].deployments)
        assert deployments >= CORE_DEPLOYMENTS  # filter and cache stages join as they are built
        # Overrides listed in the file (none are needed today) must name deployments the app has.
        overrides = {d.name for d in app_config.deployments}
        assert overrides <= deployments, f"unknown deployments in {CONFIG_PATH.name}: {overrides - deployments}"
        response = httpx.post(
            f"{base_url}/v1/images/generations",
            timeout=120,
            json={"prompt": "左边一个 red circle", "size": "32x32", "seed": 3},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        assert response.status_code == 200, response.text
        image = response.json()["data"][0]
        assert base64.b64decode(image["b64_json"]).startswith(b"\x89PNG")
        assert image["model"] == Settings.load(environ={}).stable_model
    finally:
        serve.delete(name)

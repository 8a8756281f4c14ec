"""The cloud configs (KubeRay RayService, Ray cluster launcher) are valid for their schemas and agree
with the application: generated from the same settings, deployment names and resources as
``build_app`` makes them, GPU nodes that fit the model replicas, import paths that resolve."""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray._common.utils import import_attr
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve._private.build_app import build_app as serve_build_app
from ray.serve.schema import ServeDeploySchema

from huabu.cluster.kuberay import GPU_GROUP, GPU_SETTINGS_PATH, RAYSERVICE_PATH, gpus_needed, rayservice, render
from huabu.cluster.serve_config import IMPORT_PATH, SECRET_FIELDS
from huabu.deployments.app import app_builder
from huabu.deployments.core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
LAUNCHER_PATH = REPO / "cluster" / "launcher" / "gpu-cluster.yaml"
REGENERATE = "regenerate it: python -m huabu.cluster.kuberay -o cluster/kuberay/rayservice.yaml"


def gpu_settings() -> Settings:
    return Settings.load(GPU_SETTINGS_PATH, environ={})


def manifest() -> dict[str, Any]:
    return yaml.safe_load(RAYSERVICE_PATH.read_text())


def serve_config_v2() -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load(manifest()["spec"]["serveConfigV2"]))


def built_deployments(app_config: Any) -> dict[str, Any]:
    """What Serve deploys from this application config: the app built from its import path and args."""
    app = call_user_app_builder_with_args_if_necessary(import_attr(app_config.import_path), app_config.args)
    return {d.name: d for d in serve_build_app(app, name=app_config.name).deployments}


# --- KubeRay -----------------------------------------------------------------------------------


def test_rayservice_is_the_generator_output() -> None:
    assert RAYSERVICE_PATH.read_text() == render(gpu_settings()), REGENERATE


def test_rayservice_shape() -> None:
    doc = manifest()
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    cluster = doc["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert isinstance(doc["spec"]["serveConfigV2"], str)  # KubeRay wants the Serve config as a string
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert all(c["image"] for c in head["template"]["spec"]["containers"])
    [group] = cluster["workerGroupSpecs"]
    assert group["groupName"] == GPU_GROUP
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    # REST and gRPC reach every pod's proxy, through the Service KubeRay fronts them with.
    grpc_port = yaml.safe_load(doc["spec"]["serveConfigV2"])["grpc_options"]["port"]
    for pod in (head, group):
        ports = {p["name"]: p["containerPort"] for p in pod["template"]["spec"]["containers"][0]["ports"]}
        assert ports["grpc"] == grpc_port and "serve" in ports
    service_ports = {p["name"]: p["port"] for p in doc["spec"]["serveService"]["spec"]["ports"]}
    assert service_ports == {"serve": ports["serve"], "grpc": grpc_port}


def test_serve_config_v2_validates_and_carries_the_settings() -> None:
    config = serve_config_v2()
    [app] = config.applications
    assert app.import_path == IMPORT_PATH and import_attr(app.import_path) is app_builder
    loaded = Settings.load(environ={}, **app.args)
    settings = gpu_settings()
    assert loaded.model_dump(exclude=SECRET_FIELDS) == settings.model_dump(exclude=SECRET_FIELDS)
    assert (config.http_options.host, config.http_options.port) == (settings.host, settings.port)
    assert not SECRET_FIELDS["storage"] & set(app.args.get("storage", {}))


def test_serve_config_v2_deployments_match_build_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every deployment the config names exists in the app, with the options build_app gives it."""
    monkeypatch.setenv("HUABU__STORAGE__SIGNING_SECRET", "x" * 32)  # what the Secret gives the pods
    [app] = serve_config_v2().applications
    built = built_deployments(app)
    assert {"Gateway", "Router", "MMDiT-stable"} <= set(built)
    assert app.deployments, "the model deployments' resources should be visible in the manifest"
    for entry in app.deployments:
        assert entry.name in built, f"{entry.name} is not a deployment of the app: {sorted(built)}"
        deployment = built[entry.name]
        options = entry.ray_actor_options.model_dump(exclude_defaults=True)
        assert options == deployment.ray_actor_options, entry.name
        autoscaling = deployment._deployment_config.autoscaling_config
        assert entry.autoscaling_config == {k: getattr(autoscaling, k) for k in entry.autoscaling_config}
        assert entry.max_ongoing_requests == deployment.max_ongoing_requests


def test_gpu_workers_fit_the_model_replicas() -> None:
    settings = gpu_settings()
    [group] = manifest()["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    gpus_per_pod = int(group["rayStartParams"]["num-gpus"])
    [container] = group["template"]["spec"]["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == gpus_per_pod
    assert settings.model.num_gpus <= gpus_per_pod
    # At every variant's max replicas the group can grow enough, replicas not spanning pods.
    per_pod = math.floor(gpus_per_pod / settings.model.num_gpus)
    assert group["maxReplicas"] * per_pod * settings.model.num_gpus >= gpus_needed(settings)


def test_a_replica_larger_than_a_pod_is_refused() -> None:
    with pytest.raises(ValueError, match=r"needs 2\.0 GPUs"):
        rayservice(Settings.load(environ={}, model={"num_gpus": 2}), gpus_per_pod=1)


# --- Ray cluster launcher ----------------------------------------------------------------------


def launcher() -> dict[str, Any]:
    return yaml.safe_load(LAUNCHER_PATH.read_text())


def test_launcher_config_validates_against_ray_schema() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    # What `ray up` does first: fill in Ray's defaults, then check the result against its JSON schema.
    validate_config(prepare_config(launcher()))


def test_launcher_gpu_nodes_fit_the_model_replicas() -> None:
    config, settings = launcher(), gpu_settings()
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types, "no GPU node type"
    capacity = 0.0
    for node_type in gpu_types.values():
        assert node_type["resources"]["GPU"] >= settings.model.num_gpus
        per_node = math.floor(node_type["resources"]["GPU"] / settings.model.num_gpus)
        capacity += min(node_type["max_workers"], config["max_workers"]) * per_node * settings.model.num_gpus
    assert capacity >= gpus_needed(settings)
    assert "--num-gpus=0" in " ".join(config["head_start_ray_commands"])


def test_launcher_deploys_the_settings_file() -> None:
    """The head deploys the checked-in settings file, mounted from this repository."""
    config = launcher()
    [remote_root] = [remote for remote, local in config["file_mounts"].items() if (REPO / local).resolve() == REPO]
    deploy = next(c for c in config["head_start_ray_commands"] if "serve deploy" in c)
    words = shlex.split(deploy)
    settings_arg = words[words.index("--settings") + 1]
    assert Path(settings_arg).relative_to(remote_root) == GPU_SETTINGS_PATH.relative_to(REPO)
    output = words[words.index("-o") + 1]
    assert words[words.index("deploy") + 1] == output

"""``cluster/kuberay/rayservice.yaml``: a KubeRay ``RayService`` generated from huabu's Settings.

``serveConfigV2`` is ``serve_config(settings)`` (the same generator as ``huabu serve-config``, so the
same settings drive ``huabu up``, ``serve deploy`` and KubeRay) plus the model deployments' resource
and autoscaling options, written out from ``app.model_options`` so that an operator reading the
manifest sees what each replica needs. The Ray cluster has a CPU head (``num-cpus: 0``: no replica
lands there except Serve's own) and one GPU worker group sized from the settings: each pod has as
many GPUs as ``gpus_per_pod``, and the group may grow to hold ``max_replicas`` of every variant.
KubeRay's in-tree autoscaler adds and removes GPU pods as Serve's replicas ask for GPUs.

    python -m huabu.cluster.kuberay [--settings FILE] [--image IMAGE] -o cluster/kuberay/rayservice.yaml
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from huabu.cluster.serve_config import GRPC_PORT, serve_config
from huabu.cluster.serve_proxy import PROXY_CALLBACK, PROXY_CALLBACK_ENV
from huabu.deployments.app import model_options
from huabu.deployments.core.settings import Settings

RAYSERVICE_PATH = Path(__file__).parent / "kuberay" / "rayservice.yaml"
GPU_SETTINGS_PATH = Path(__file__).with_name("gpu-settings.yaml")
RAY_VERSION = "2.60.0"
DEFAULT_IMAGE = "huabu:0.1.0-gpu"  # cluster/docker/Dockerfile; push it to your registry and set --image
GPU_GROUP = "gpu"

HEADER = """\
# huabu on Kubernetes with KubeRay: a RayService whose serveConfigV2 comes from the same Settings as
# `huabu up`. Generated; regenerate with
#   python -m huabu.cluster.kuberay --settings cluster/gpu-settings.yaml > cluster/kuberay/rayservice.yaml
# Needs: the KubeRay operator, the NVIDIA device plugin, a Redis with a password and an S3 bucket
# (docs/DEPLOY.md). Secrets come from the Secret `huabu-secrets`: HUABU__STORAGE__SIGNING_SECRET and
# HUABU__STATE__REDIS_URL (redis://:PASSWORD@host:6379/0, or rediss:// for TLS) are required, the pods
# do not start without them; AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are optional (leave them out
# with IAM roles for service accounts).
"""


def model_deployments(settings: Settings) -> list[dict[str, Any]]:
    """The model deployments' options as Serve config ``deployments`` entries (what build_app sets)."""
    keys = ("name", "ray_actor_options", "autoscaling_config", "max_ongoing_requests", "max_queued_requests")
    return [{k: model_options(settings, variant)[k] for k in keys} for variant in settings.variants]


def gpus_needed(settings: Settings) -> float:
    """GPUs when every variant runs at its max replicas."""
    return len(settings.variants) * settings.model.autoscaling.max_replicas * settings.model.num_gpus


SECRET_NAME = "huabu-secrets"
# Secret keys the pods need (a missing one keeps them from starting, rather than serving with the
# public development secret or an open Redis), and keys that other credentials may replace.
REQUIRED_SECRETS = ("HUABU__STORAGE__SIGNING_SECRET", "HUABU__STATE__REDIS_URL")
# HUABU__INGEST__KAFKA__SECURITY: the Kafka ingress's SASL/TLS client settings (JSON), when it is enabled.
OPTIONAL_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HUABU__INGEST__KAFKA__SECURITY")


def _env() -> list[dict[str, Any]]:
    def from_secret(name: str, optional: bool) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": name, "optional": optional}}}

    return [
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
        # Serve's proxy: 503 + Retry-After for a request whose gateway replica died (cluster/serve_proxy.py).
        {"name": PROXY_CALLBACK_ENV, "value": PROXY_CALLBACK},
        *(from_secret(name, optional=False) for name in REQUIRED_SECRETS),
        *(from_secret(name, optional=True) for name in OPTIONAL_SECRETS),
    ]


def _container(name: str, image: str, resources: dict[str, Any], ports: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": image, "resources": resources, "env": _env()}
    if ports:
        container["ports"] = ports
    # Serve drains replicas before the pod goes (KubeRay's recommended preStop).
    container["lifecycle"] = {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}}
    return container


def rayservice(
    settings: Settings, image: str = DEFAULT_IMAGE, gpus_per_pod: int = 1, name: str = "huabu"
) -> dict[str, Any]:
    """The RayService manifest for these settings."""
    if settings.model.num_gpus > gpus_per_pod:
        raise ValueError(f"a model replica needs {settings.model.num_gpus} GPUs but a pod has {gpus_per_pod}")
    if "redis_url" in settings.state.model_fields_set:  # in args it would override the Secret's
        raise ValueError(
            f"state.redis_url comes from the Secret {SECRET_NAME} (HUABU__STATE__REDIS_URL, with its password) "
            "in the KubeRay manifest: leave it out of the settings"
        )
    config = serve_config(settings)
    config["proxy_location"] = "EveryNode"  # the Service routes to any pod's proxy
    config["applications"][0]["deployments"] = model_deployments(settings)
    replicas_per_pod = math.floor(gpus_per_pod / settings.model.num_gpus) if settings.model.num_gpus else 1
    max_pods = max(1, math.ceil(len(settings.variants) * settings.model.autoscaling.max_replicas / replicas_per_pod))
    gpu_cpus = max(1, math.ceil(replicas_per_pod * settings.model.num_cpus)) + 1  # +1 for the raylet and agents
    port = settings.port
    head = {
        "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {
            "spec": {
                "containers": [
                    _container(
                        "ray-head",
                        image,
                        {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
                        [
                            {"containerPort": 6379, "name": "gcs-server"},
                            {"containerPort": 8265, "name": "dashboard"},
                            {"containerPort": 10001, "name": "client"},
                            {"containerPort": port, "name": "serve"},
                            {"containerPort": GRPC_PORT, "name": "grpc"},
                        ],
                    )
                ]
            }
        },
    }
    gpu_limits = {"cpu": str(gpu_cpus), "memory": "24Gi", "nvidia.com/gpu": str(gpus_per_pod)}
    worker = {
        "groupName": GPU_GROUP,
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": max_pods,
        "rayStartParams": {"num-gpus": str(gpus_per_pod)},
        "template": {
            "spec": {
                "containers": [
                    _container(
                        "ray-worker",
                        image,
                        {"requests": dict(gpu_limits), "limits": gpu_limits},
                        # Every node runs a proxy (proxy_location EveryNode): the Service may route here.
                        [{"containerPort": port, "name": "serve"}, {"containerPort": GRPC_PORT, "name": "grpc"}],
                    )
                ],
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            }
        },
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
            # The Service KubeRay puts in front of the ready proxies (it sets the selector): REST
            # and huabu.v1.Images gRPC beside it.
            "serveService": {
                "metadata": {"name": f"{name}-serve-svc"},
                "spec": {
                    "ports": [
                        {"name": "serve", "port": port, "targetPort": port},
                        {
                            "name": "grpc",
                            "port": GRPC_PORT,
                            "targetPort": GRPC_PORT,
                            "appProtocol": "kubernetes.io/h2c",
                        },
                    ]
                },
            },
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                # GPU pods idle this long after their last replica are removed.
                "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 120},
                "headGroupSpec": head,
                "workerGroupSpecs": [worker],
            },
        },
    }


class _Literal(str):
    """A string written as a YAML block (``|``), so serveConfigV2 reads as YAML in the manifest."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)


def render(settings: Settings, image: str = DEFAULT_IMAGE, gpus_per_pod: int = 1) -> str:
    manifest = rayservice(settings, image, gpus_per_pod)
    manifest["spec"]["serveConfigV2"] = _Literal(manifest["spec"]["serveConfigV2"])
    return HEADER + yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m huabu.cluster.kuberay", description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=str(GPU_SETTINGS_PATH), help="settings YAML (default: the GPU example)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="container image with huabu[server] installed")
    parser.add_argument("--gpus-per-pod", type=int, default=1)
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    args = parser.parse_args(argv)
    # The file alone decides: variables in this shell must not leak into a checked-in manifest.
    text = render(Settings.load(args.settings, environ={}), args.image, args.gpus_per_pod)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ingest.kafka in the settings, the generated Serve config and the KubeRay manifest (no broker, no Ray)."""

from __future__ import annotations

import yaml

from huabu.cluster.kuberay import render as render_rayservice
from huabu.cluster.serve_config import KAFKA_SECURITY_ENV, left_out, render, serve_config
from huabu.deployments.core.settings import Settings

KAFKA = {
    "enabled": True,
    "bootstrap_servers": "broker-1:9093",
    "group_id": "shop",
    "security": {"security.protocol": "SASL_SSL", "sasl.username": "huabu", "sasl.password": "hunter2-kafka"},
}


def test_off_by_default() -> None:
    assert Settings.load(environ={}).ingest.kafka.enabled is False


def test_serve_config_and_kuberay_carry_kafka_but_never_its_credentials() -> None:
    settings = Settings.load(environ={}, ingest={"kafka": KAFKA})
    kafka = serve_config(settings)["applications"][0]["args"]["ingest"]["kafka"]
    assert kafka == {"enabled": True, "bootstrap_servers": "broker-1:9093", "group_id": "shop"}
    assert left_out(settings) == [KAFKA_SECURITY_ENV]
    text = render(settings)
    assert "hunter2-kafka" not in text and KAFKA_SECURITY_ENV in text
    manifest = yaml.safe_load(render_rayservice(settings))
    assert "hunter2-kafka" not in str(manifest)
    serve_args = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert serve_args["ingest"]["kafka"]["bootstrap_servers"] == "broker-1:9093"
    env = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": KAFKA_SECURITY_ENV, "optional": True} in [
        {"name": e["name"], "optional": e["valueFrom"]["secretKeyRef"]["optional"]} for e in env if "valueFrom" in e
    ]


def test_credentials_from_the_environment() -> None:
    environ = {"HUABU__INGEST__KAFKA__SECURITY": '{"sasl.password": "from-env"}'}
    assert Settings.load(environ=environ).ingest.kafka.security == {"sasl.password": "from-env"}

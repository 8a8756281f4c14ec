"""One typed settings object for the whole application. It drives ``huabu up`` and the
``serve deploy`` config alike: read from a YAML file, then overridden by environment
variables ``HUABU__SECTION__FIELD=value`` (``HUABU__STATE__BACKEND=redis``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from huabu.filters.settings import ImageFilterSettings, PromptFilterSettings

ENV_PREFIX = "HUABU__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class AutoscalingSettings(_Section):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    initial_replicas: int | None = None
    target_ongoing_requests: float = Field(4.0, gt=0)
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 60.0
    downscale_to_zero_delay_s: float | None = None
    look_back_period_s: float = 10.0

    def to_serve(self) -> dict[str, Any]:
        config = self.model_dump(exclude_none=True)
        if self.min_replicas == 0 and self.initial_replicas is None:
            config["initial_replicas"] = 0
        return config


class ModelDeploymentSettings(_Section):
    """The MMDiT replicas: resources, batching and the bounds that turn overload into 503s."""

    num_gpus: float = Field(0.0, ge=0)
    # Replicas reserve 1 CPU by default; on a 2-core machine the third deployment would never
    # schedule. Serving the tiny model needs no reservation.
    num_cpus: float = Field(0.0, ge=0)
    torch_threads: int | None = Field(None, ge=1)
    max_batch_size: int = Field(8, ge=1)
    # Batches form while the previous one runs; a long wait would only add latency to lone requests.
    batch_wait_timeout_s: float = Field(0.002, ge=0)
    max_ongoing_requests: int = Field(16, ge=1)
    max_queued_requests: int = Field(64, ge=1)
    autoscaling: AutoscalingSettings = AutoscalingSettings()
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0
    retry_after_s: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _batch_fits(self) -> ModelDeploymentSettings:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"model.max_ongoing_requests ({self.max_ongoing_requests}) caps batches: raise it to at least "
                f"max_batch_size ({self.max_batch_size})"
            )
        return self


class VariantSettings(_Section):
    model: str = "random-init@v0"  # checkpoint name@version
    weight: float = Field(100.0, ge=0, le=100)  # percent of traffic


class StateSettings(_Section):
    backend: Literal["embedded", "redis"] = "embedded"
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = "huabu"  # key prefix; also the embedded store actor's name


class StorageSettings(_Section):
    backend: Literal["local", "s3"] = "local"
    local_dir: str = "outputs/files"
    bucket: str = "huabu-images"
    prefix: str = "images/"
    endpoint_url: str | None = None
    region: str = "us-east-1"
    cdn_base_url: str | None = None
    url_ttl_s: int = Field(3600, ge=1)
    # Secret for the gateway's own signed file URLs; the embedded default is for development.
    signing_secret: str = "huabu-dev-signing-secret"
    public_base_url: str = "http://127.0.0.1:8000"


class CacheSettings(_Section):
    enabled: bool = True
    backend: Literal["embedded", "redis"] = "embedded"
    redis_url: str | None = None  # default: the state store's Redis
    max_bytes: int = Field(256 * 1024 * 1024, ge=0)  # embedded: budget of referenced image bytes
    max_entries: int = Field(100_000, ge=1)
    ttl_s: int = Field(7 * 24 * 3600, ge=1)  # Redis entries expire
    timeout_s: float = Field(0.5, gt=0)  # a slower index counts as unavailable


class SafetySettings(_Section):
    """Which safety stages run, and their own settings (see ``huabu.filters``)."""

    prompt_enabled: bool = True
    prompt: PromptFilterSettings = PromptFilterSettings()
    image: ImageFilterSettings = ImageFilterSettings()


class JobSettings(_Section):
    lease_s: float = Field(5.0, gt=0)  # a job whose runner stops renewing is taken over after this
    concurrency: int = Field(8, ge=1)  # jobs each gateway replica runs at once
    max_attempts: int = Field(3, ge=1)  # retries when a model replica dies mid-job
    poll_interval_s: float = Field(0.1, gt=0)
    result_ttl_s: int = Field(7 * 24 * 3600, ge=60)


class GatewaySettings(_Section):
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.0, ge=0)
    max_ongoing_requests: int = Field(256, ge=1)
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(4096 * 4096, ge=64)
    default_steps: int = Field(20, ge=1)
    default_guidance: float = Field(1.0, ge=0)
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0


class Settings(_Section):
    app_name: str = "huabu"
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = 8000
    variants: dict[str, VariantSettings] = Field(default_factory=lambda: {"stable": VariantSettings()})
    model: ModelDeploymentSettings = ModelDeploymentSettings()
    model_dirs: list[str] = Field(default_factory=list)  # extra checkpoint roots
    state: StateSettings = StateSettings()
    storage: StorageSettings = StorageSettings()
    cache: CacheSettings = CacheSettings()
    safety: SafetySettings = SafetySettings()
    jobs: JobSettings = JobSettings()
    gateway: GatewaySettings = GatewaySettings()
    graceful_shutdown_timeout_s: float = 5.0

    @model_validator(mode="after")
    def _has_stable(self) -> Settings:
        if "stable" not in self.variants:
            raise ValueError("variants must include 'stable'")
        return self

    @property
    def stable_model(self) -> str:
        return self.variants["stable"].model

    @classmethod
    def load(cls, path: str | Path | None = None, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        data: dict[str, Any] = {}
        if path is not None:
            data = yaml.safe_load(Path(path).read_text()) or {}
        for key, value in (os.environ if environ is None else environ).items():
            if key.startswith(ENV_PREFIX):
                _set_path(data, key[len(ENV_PREFIX) :].lower().split("__"), _parse_env_value(value))
        _deep_update(data, overrides)
        return cls.model_validate(data)


def _parse_env_value(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        data = data.setdefault(part, {})
    data[path[-1]] = value


def _deep_update(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            _deep_update(data[key], value)
        else:
            data[key] = value

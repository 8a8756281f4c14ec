"""One typed settings object for the whole application. It drives ``huabu up`` and the
``serve deploy`` config alike: read from a YAML file, then overridden by environment
variables ``HUABU__SECTION__FIELD=value`` (``HUABU__STATE__BACKEND=redis``)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from huabu.filters.settings import ImageFilterSettings, PromptFilterSettings
from huabu.sdk.types import RATE_LIMIT_PATTERN, CacheSteps

ENV_PREFIX = "HUABU__"
# Public, so it signs nothing outside development (Settings.require_secrets).
DEV_SIGNING_SECRET = "huabu-dev-signing-secret"
MIN_SECRET_CHARS = 16  # HMAC-SHA256 keys shorter than this are guessable offline from one signed URL
DIFFUSERS_PREFIX = "diffusers:"  # a variant model served by the diffusers backend
TRANSFORMER_PATTERN = r"^(diffusers|own|own:.+)$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


SERVE_METRICS_INTERVAL_S = 10.0  # Serve's default metric push interval


def metric_push_interval_s() -> float:
    """How often replicas and handles push autoscaling metrics (the larger of Serve's two settings)."""
    names = ("REPLICA", "HANDLE")
    return max(
        float(os.environ.get(f"RAY_SERVE_{name}_AUTOSCALING_METRIC_PUSH_INTERVAL_S", SERVE_METRICS_INTERVAL_S))
        for name in names
    )


class AutoscalingSettings(_Section):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    initial_replicas: int | None = None
    target_ongoing_requests: float = Field(4.0, gt=0)
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 60.0
    downscale_to_zero_delay_s: float | None = None
    look_back_period_s: float = Field(30.0, gt=0)  # Serve's default window

    def to_serve(self) -> dict[str, Any]:
        config = self.model_dump(exclude_none=True)
        if self.min_replicas == 0 and self.initial_replicas is None:
            config["initial_replicas"] = 0
        # Serve checks the window against its deprecated metrics_interval_s (10 s unless given),
        # though replicas push at the interval of RAY_SERVE_*_AUTOSCALING_METRIC_PUSH_INTERVAL_S.
        # A shorter window is valid when that interval is shorter still: state it, so the config
        # validates instead of warning at every start.
        if self.look_back_period_s <= SERVE_METRICS_INTERVAL_S:
            push_s = metric_push_interval_s()
            if push_s >= self.look_back_period_s:
                raise ValueError(
                    f"autoscaling.look_back_period_s ({self.look_back_period_s}) must be longer than the metric push "
                    f"interval ({push_s} s, RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S)"
                )
            config["metrics_interval_s"] = push_s
        return config


class FixedLatencySettings(_Section):
    """A model of known cost for capacity checks and cluster tests: each batch of ``n`` images takes at
    least ``seconds * (1 + (n - 1) * (1 - batching_efficiency))`` (the ``fixed_latency`` backend,
    ``huabu.deployments.backends.fixed_latency``), whatever the real computation took. Off unless set."""

    seconds: float = Field(gt=0)  # one image alone
    batching_efficiency: float = Field(1.0, ge=0, le=1)  # 1: a batch costs one image; 0: no gain
    # A card this small: a batch of more pixels in all fails as a GPU's would (torch.OutOfMemoryError),
    # so that the replica's answer to it (503, the replica serves on) is drilled on any machine.
    memory_pixels: int | None = Field(None, ge=1)


# glibc keeps freed memory in the process instead of handing each step's large activations back to
# the system and faulting them in again (measurements: docs/ARCHITECTURE.md "Serving overhead").
MODEL_MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_TRIM_THRESHOLD_": str(2**32), "MALLOC_MMAP_THRESHOLD_": str(2**32)}


class ModelDeploymentSettings(_Section):
    """The MMDiT replicas: resources, batching and the bounds that turn overload into 503s."""

    num_gpus: float = Field(0.0, ge=0)
    # Replicas reserve 1 CPU by default; on a 2-core machine the third deployment would never
    # schedule. Serving the tiny model needs no reservation.
    num_cpus: float = Field(0.0, ge=0)
    torch_threads: int | None = Field(None, ge=1)
    # Weights and activations; bfloat16 halves memory and is what GPUs serve big MMDiTs in.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # zlib level of the PNGs served: 1 is several times faster than 6 for slightly larger files, and
    # at GPU speeds the PNG is a noticeable part of the request (docs/ARCHITECTURE.md, png.py).
    png_compress_level: int = Field(1, ge=0, le=9)
    # Environment of the model replicas' processes (allocator, OpenMP or CUDA variables, read when
    # the process starts); setting it replaces the default below.
    env_vars: dict[str, str] = Field(default_factory=lambda: dict(MODEL_MALLOC_ENV))
    max_batch_size: int = Field(8, ge=1)
    # "request": @serve.batch batches run to their end; "step": requests join and leave a running
    # batch between denoising steps (deployments/step_scheduler.py; own MMDiT models, others fall
    # back to request); max_batch_size caps the requests in one step.
    scheduler: Literal["request", "step"] = "request"
    # Batches form while the previous one runs; a long wait would only add latency to lone requests.
    batch_wait_timeout_s: float = Field(0.002, ge=0)
    max_ongoing_requests: int = Field(16, ge=1)
    max_queued_requests: int = Field(64, ge=1)
    autoscaling: AutoscalingSettings = AutoscalingSettings()
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0
    retry_after_s: int = Field(2, ge=1)
    fixed_latency: FixedLatencySettings | None = None
    # diffusers models: move each component to the GPU only while it runs (for cards smaller than
    # the model; slower), and the limits a pipeline does not state itself.
    cpu_offload: bool = False
    # diffusers Qwen-Image models: "diffusers" runs the pipeline's own transformer; "own" runs
    # huabu's MMDiT on the same weights (converted at load), "own:<folder>" one `huabu convert` wrote.
    # The default of every diffusers variant; a variant's own ``transformer`` overrides it.
    transformer: str = Field("diffusers", pattern=TRANSFORMER_PATTERN)
    max_side: int = Field(2048, ge=16)
    max_steps: int = Field(100, ge=1)
    max_prompt_bytes: int = Field(2048, ge=8)

    @model_validator(mode="after")
    def _batch_fits(self) -> ModelDeploymentSettings:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"model.max_ongoing_requests ({self.max_ongoing_requests}) caps batches: raise it to at least "
                f"max_batch_size ({self.max_batch_size})"
            )
        return self


class LoraSettings(_Section):
    """A LoRA adapter fused into a diffusers variant's transformer at load (``load_lora_weights``)."""

    path: str  # a .safetensors file, or a folder holding one
    scale: float = Field(1.0, ge=-4, le=4)


class VariantSettings(_Section):
    # The bundled, trained default. Or another own checkpoint ``name@version``, or
    # ``diffusers:<folder or hub id>`` for any diffusers pipeline (backends/diffusers).
    model: str = "tiny-mmdit@v1"
    lora: list[LoraSettings] = Field(default_factory=list)  # diffusers models only
    # Defaults for requests that leave them out, over the model's own (a few-step distillation such
    # as Qwen-Image-Lightning: steps 8, guidance 1).
    steps: int | None = Field(None, ge=1)
    guidance: float | None = Field(None, ge=0)
    # Step caching for requests that leave cache_steps out (own MMDiT models; mmdit/stepping.py): a
    # request's own cache_steps wins, and {threshold: 0} turns it off for that request.
    cache_steps: CacheSteps | None = None
    # diffusers Qwen-Image models: this variant's transformer (see model.transformer, the default
    # when unset); "own" beside "diffusers" on the same weights A/B-tests huabu's MMDiT.
    transformer: str | None = Field(None, pattern=TRANSFORMER_PATTERN)
    weight: float = Field(100.0, ge=0, le=100)  # percent of traffic
    # Fault injection in the Router, for canary drills and tests: a failing or slow variant.
    inject_error_rate: float = Field(0.0, ge=0, le=1)
    inject_latency_s: float = Field(0.0, ge=0, le=60)

    @model_validator(mode="after")
    def _lora_needs_diffusers(self) -> VariantSettings:
        if self.lora and not self.model.startswith(DIFFUSERS_PREFIX):
            raise ValueError(f"lora adapters need a {DIFFUSERS_PREFIX}<folder or hub id> model, not {self.model!r}")
        if self.transformer is not None and not self.model.startswith(DIFFUSERS_PREFIX):
            raise ValueError(
                f"transformer {self.transformer!r} picks a diffusers pipeline's transformer: it needs a "
                f"{DIFFUSERS_PREFIX}<folder or hub id> model, not {self.model!r}"
            )
        return self

    @model_validator(mode="after")
    def _cache_steps_needs_own_model(self) -> VariantSettings:
        if self.cache_steps is not None and self.model.startswith(DIFFUSERS_PREFIX):
            raise ValueError(f"cache_steps needs an own name@version model (step caching), not {self.model!r}")
        return self

    @property
    def model_id(self) -> str:
        """The served version, which the cache key and the router name: the model reference, plus
        a digest of its LoRA set, so that another adapter or scale never answers from the cache."""
        served = self.model
        if self.lora:
            adapters = json.dumps([[adapter.path, adapter.scale] for adapter in self.lora])
            served += f"+lora-{hashlib.sha256(adapters.encode()).hexdigest()[:12]}"
        # The own transformer computes the same function within float tolerance, not the same bits:
        # its images get their own id (and cache keys) beside diffusers' on the same weights.
        if self.transformer == "own":
            served += "+own"
        elif self.transformer and self.transformer.startswith("own:"):
            served += f"+own-{hashlib.sha256(self.transformer.encode()).hexdigest()[:12]}"
        return served


class ExperimentSettings(_Section):
    """Canary rollouts and A/B tests (``huabu.ab_testing`` in the gateway, see deployments/gateway/rollouts.py)."""

    enabled: bool = True
    refresh_interval_s: float = Field(0.5, gt=0)  # how often each gateway re-reads the live weights
    flush_interval_s: float = Field(1.0, gt=0)  # how often each gateway writes its metrics
    controller_interval_s: float = Field(2.0, gt=0)  # rollout policy ticks (one gateway holds the lease)
    controller_lease_s: float = Field(10.0, gt=0)
    scorer: str = "adherence"  # quality scorer: "adherence", "none" or "package.module:function"
    user_header: str = "x-huabu-user"  # sticky unit id; else the body's `user`, else the API key
    override_header: str = "x-huabu-variant"  # force a variant (or model) for testing; not counted
    assignment_ttl_s: int = Field(7 * 24 * 3600, ge=60)  # image -> variant, for late feedback


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
    # Secret for the gateway's own signed file URLs. The default is public: build_app refuses it
    # unless `development` is set (`huabu up` makes a random one per machine). Kept out of reprs.
    signing_secret: str = Field(DEV_SIGNING_SECRET, repr=False)
    public_base_url: str = "http://127.0.0.1:8000"


class CacheSettings(_Section):
    enabled: bool = True
    backend: Literal["embedded", "redis"] = "embedded"
    redis_url: str | None = None  # default: the state store's Redis
    max_bytes: int = Field(256 * 1024 * 1024, ge=0)  # embedded: budget of referenced image bytes
    max_entries: int = Field(100_000, ge=1)
    ttl_s: int = Field(7 * 24 * 3600, ge=1)  # Redis entries expire
    timeout_s: float = Field(0.5, gt=0)  # a slower index counts as unavailable
    # Each gateway and cache replica remembers the results it saw last (PNGs included), so a hot
    # prompt is answered without an index or storage round trip; 0 s turns it off.
    recent_s: float = Field(10.0, ge=0)
    recent_entries: int = Field(256, ge=1)
    recent_bytes: int = Field(64 * 1024 * 1024, ge=0)


class SafetySettings(_Section):
    """Which safety stages run, and their own settings (see ``huabu.filters``)."""

    prompt_enabled: bool = True
    prompt: PromptFilterSettings = PromptFilterSettings()
    image: ImageFilterSettings = ImageFilterSettings()


class JobSettings(_Section):
    lease_s: float = Field(5.0, gt=0)  # a job whose runner stops renewing is taken over after this
    concurrency: int = Field(8, ge=1)  # jobs each gateway replica runs at once
    max_attempts: int = Field(3, ge=1)  # retries when a model replica dies mid-job
    # Backstops only: a call whose replica dies fails within seconds by that replica's liveness
    # (handles.call) and is retried at once. An attempt still waiting after attempt_timeout_s, or a
    # started one whose progress stops for stall_timeout_s, is abandoned and retried all the same,
    # so that no unforeseen hang can hold a job (and its lease) forever.
    attempt_timeout_s: float = Field(600.0, gt=0)
    stall_timeout_s: float = Field(60.0, gt=0)
    # An attempt with no first step when another attempt of this runner fails on a lost replica is
    # abandoned and retried this long after that loss (unless it starts moving meanwhile): its call
    # may wait on the lost replica in a way that no error reaches.
    requeue_after_loss_s: float = Field(10.0, gt=0)
    poll_interval_s: float = Field(0.1, gt=0)
    result_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    queue_update_s: float = Field(1.0, gt=0)  # how often waiting jobs' queue positions and ETAs are updated


class WebhookSettings(_Section):
    """Job webhooks (``deployments/gateway/webhooks.py``): durable, retried, signed deliveries."""

    # Loopback, link-local and private addresses are refused (a webhook must not reach inside the
    # cluster) unless this is on (tests, a receiver on the same private network).
    allow_private: bool = False
    retry_window_s: float = Field(24 * 3600.0, gt=0)  # retries stop this long after the first attempt
    backoff_base_s: float = Field(5.0, gt=0)  # first retry after about this, doubling each time
    backoff_max_s: float = Field(3600.0, gt=0)
    connect_timeout_s: float = Field(3.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    max_response_bytes: int = Field(64 * 1024, ge=0)  # read at most this much of a receiver's answer
    poll_interval_s: float = Field(0.5, gt=0)  # how often each gateway looks for due deliveries
    concurrency: int = Field(16, ge=1)  # deliveries in flight per gateway replica


class GatewaySettings(_Section):
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.0, ge=0)
    max_ongoing_requests: int = Field(256, ge=1)
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(4096 * 4096, ge=64)
    # A request without steps or guidance gets the served model's recommendation (GET /v1/models);
    # set these only to override every model's (e.g. few steps in tests).
    default_steps: int | None = Field(None, ge=1)
    default_guidance: float | None = Field(None, ge=0)
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0


class AuthSettings(_Section):
    """API keys and per-key limits (``deployments/gateway/auth.py``, ``ratelimit.py``). On unless turned off
    explicitly (``huabu up --no-auth``, ``HUABU__AUTH__ENABLED=false``)."""

    enabled: bool = True
    # SHA-256 (hex) of a bootstrap admin key that creates the first keys. Settings carry only the
    # hash: they are rendered into Serve configs and shipped to every replica.
    admin_key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    default_rate: str = Field("60/min", pattern=RATE_LIMIT_PATTERN)  # generation requests per key; burst = N
    default_max_concurrent: int = Field(8, ge=1)  # jobs and generation requests in flight per key
    default_daily_images: int | None = Field(None, ge=1)  # images per key per UTC day; None = unlimited


class SecuritySettings(_Section):
    """Browser-facing hardening (``deployments/gateway/security.py``); body and pixel limits are in ``gateway``."""

    cors_origins: list[str] = Field(default_factory=list)  # origins allowed to call the API; ["*"] = any
    cors_max_age_s: int = Field(600, ge=0)
    headers: bool = True  # nosniff, frame denial, referrer policy, CSP on API responses
    hsts: bool = False  # Strict-Transport-Security: only behind TLS


class TelemetrySettings(_Section):
    """Traces, metrics and logs. Every unset field falls back to the standard ``OTEL_*`` variable
    in each replica's environment; traces stay off unless an exporter or endpoint is configured."""

    traces: Literal["auto", "otlp", "console", "none"] = "auto"  # auto: OTEL_TRACES_EXPORTER, else otlp iff endpoint
    endpoint: str | None = None  # OTLP/HTTP base URL (OTEL_EXPORTER_OTLP_ENDPOINT); /v1/traces is appended
    service_name: str | None = None  # OTEL_SERVICE_NAME, else "huabu"
    sampler: str | None = None  # OTEL_TRACES_SAMPLER, e.g. parentbased_traceidratio
    sampler_arg: float | None = Field(None, ge=0, le=1)  # OTEL_TRACES_SAMPLER_ARG
    export_delay_ms: int | None = Field(None, ge=1)  # OTEL_BSP_SCHEDULE_DELAY
    metrics: bool = True  # Prometheus metrics through Ray's metrics export port
    # How often each replica hands Serve's own metrics (request counts, latencies, queue gauges)
    # to Ray's exporter. Serve's default, 100 ms, costs every idle replica CPU ten times a second;
    # Prometheus scrapes every 15 s or so (docs/ARCHITECTURE.md "Serving overhead").
    serve_metrics_interval_ms: int = Field(1000, ge=0)
    json_logs: bool = True  # huabu.* loggers write JSON lines with request and trace ids


class KafkaIngestSettings(_Section):
    """The Kafka door (``deployments/ingest/``): generation requests from a topic become durable jobs,
    their outcomes go to a results topic. Off unless enabled (``huabu up --kafka BOOTSTRAP``)."""

    enabled: bool = False
    bootstrap_servers: str = "127.0.0.1:9092"
    requests_topic: str = "huabu.requests"
    results_topic: str = "huabu.results"
    dead_letter_topic: str = "huabu.dead-letter"
    group_id: str = "huabu-ingest"
    # The API key whose scopes, limits and usage the topic's jobs count against (auth on): its id,
    # never the key itself. Without auth every job is anonymous.
    key_id: str | None = Field(None, pattern=r"^[0-9a-f]{12}$")
    # librdkafka settings for both clients as they are spelled there (security.protocol,
    # sasl.mechanism, sasl.username, sasl.password, ssl.ca.location, ...). Kept out of reprs.
    security: dict[str, str] = Field(default_factory=dict, repr=False)
    # Extra librdkafka settings of the consumer (session.timeout.ms, fetch.max.bytes, ...).
    consumer: dict[str, str | int | float | bool] = Field(default_factory=dict)
    replicas: int = Field(1, ge=1)  # consumer group members (Serve replicas of KafkaIngress)
    # Backpressure: the consumer pauses its partitions while this many of the group's jobs are
    # unfinished, and resumes below resume_below (jobs wait in the topic, not in the job store).
    max_pending_jobs: int = Field(64, ge=1)
    resume_below: int | None = Field(None, ge=0)  # default: half of max_pending_jobs
    submit_concurrency: int = Field(8, ge=1)  # messages being turned into jobs at once per replica
    max_message_bytes: int = Field(1024 * 1024, ge=64)  # larger requests are dead-lettered
    result_poll_s: float = Field(0.5, gt=0)  # how often finished jobs are looked for
    create_topics: bool = False  # create missing topics at start (development; production creates them)
    partitions: int = Field(4, ge=1)  # of topics it creates

    @property
    def resume_at(self) -> int:
        if self.resume_below is None:
            return self.max_pending_jobs // 2
        return min(self.resume_below, self.max_pending_jobs - 1)


class IngestSettings(_Section):
    """Doors besides HTTP and gRPC that create jobs from a message stream."""

    kafka: KafkaIngestSettings = KafkaIngestSettings()


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
    webhooks: WebhookSettings = WebhookSettings()
    gateway: GatewaySettings = GatewaySettings()
    auth: AuthSettings = AuthSettings()
    security: SecuritySettings = SecuritySettings()
    ab: ExperimentSettings = ExperimentSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    ingest: IngestSettings = IngestSettings()
    graceful_shutdown_timeout_s: float = 5.0
    # How stages call each other (deployments/core/handles.py): "grpc" straight to the replica, or
    # "actor" for Ray actor tasks (Serve's default).
    handle_transport: Literal["grpc", "actor"] = "grpc"
    # Development mode (HUABU__DEVELOPMENT=true): accept the public development signing secret.
    development: bool = False

    @model_validator(mode="after")
    def _has_stable(self) -> Settings:
        if "stable" not in self.variants:
            raise ValueError("variants must include 'stable'")
        return self

    @model_validator(mode="after")
    def _variant_transformers(self) -> Settings:
        # Each diffusers variant states its transformer (model.transformer unless it set its own), so
        # that its served id tells the two apart wherever the variant alone is passed on.
        for name, variant in self.variants.items():
            if variant.transformer is None and variant.model.startswith(DIFFUSERS_PREFIX):
                self.variants[name] = variant.model_copy(update={"transformer": self.model.transformer})
        return self

    def require_secrets(self) -> None:
        """Refuse to serve with a signing secret anyone can know, outside development mode. Checked
        by the app builder, so that `serve deploy`, KubeRay and the launcher fail at once, naming the fix."""
        if self.development:
            return
        secret = self.storage.signing_secret
        if secret == DEV_SIGNING_SECRET or len(secret) < MIN_SECRET_CHARS:
            what = "is the public development default" if secret == DEV_SIGNING_SECRET else "is too short"
            raise InsecureSettingsError(
                f"storage.signing_secret {what}: anyone could sign file URLs. Set "
                f"{ENV_PREFIX}STORAGE__SIGNING_SECRET to a random value of at least {MIN_SECRET_CHARS} "
                "characters (e.g. `openssl rand -hex 32`) in the environment of the process that builds the "
                f"app (KubeRay: the Secret huabu-secrets), or set {ENV_PREFIX}DEVELOPMENT=true "
                "(settings: `development: true`) for a development deployment."
            )

    @property
    def stable_model(self) -> str:
        return self.variants["stable"].model_id

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


class InsecureSettingsError(ValueError):
    """Settings that would serve with a known or guessable secret."""


def url_has_password(url: str | None) -> bool:
    """Whether a URL carries a password (``redis://:pw@host``), which must not be written into files."""
    return url is not None and urlsplit(url).password is not None


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

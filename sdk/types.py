"""Wire models shared by the server and the SDK: the single source of truth for the HTTP API.

The gateway validates requests with these classes and serialises responses with them; the SDK
builds requests and parses responses with the same classes. Keep names and fields stable: both
sides import them. Rules of thumb:

- Request models forbid unknown fields, so a typo (``stpes``) is a 400 that names the param
  instead of a silently ignored option.
- Response models ignore unknown fields, so an older SDK keeps parsing a newer server.
- Shapes follow OpenAI's images API where one exists (``ImagesResponse``, ``ModelList``, the
  error body), so the official ``openai`` client works unmodified; huabu's extensions are
  optional fields next to OpenAI's.
- Only pydantic here: no ray, torch or numpy (the SDK is installed without them).
"""

from __future__ import annotations

import base64
import binascii
import re
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, field_validator, model_validator

__all__ = [
    "ERROR_STATUS",
    "ERROR_TYPES",
    "IMAGE_ID_PATTERN",
    "JOB_ID_PATTERN",
    "MAX_IMAGE_B64_CHARS",
    "MAX_JOB_TIMEOUT_S",
    "MAX_OUTPAINT_EXTENT",
    "MAX_PREFER_WAIT_S",
    "MAX_PROMPT_CHARS",
    "MAX_SIDE",
    "MAX_STEPS",
    "RATE_LIMIT_PATTERN",
    "ApiKeyCreateRequest",
    "ApiKeyCreated",
    "ApiKeyInfo",
    "ApiKeyList",
    "ApiKeyScope",
    "CacheMode",
    "EditJobRequest",
    "ErrorBody",
    "ErrorResponse",
    "ErrorType",
    "EventType",
    "FeedbackRequest",
    "FeedbackResponse",
    "GenerateJobRequest",
    "ImageData",
    "ImageEditRequest",
    "ImageGenerationRequest",
    "ImagesResponse",
    "Job",
    "JobEvent",
    "JobKind",
    "JobPreview",
    "JobProgress",
    "JobRequest",
    "JobStatus",
    "LatencyBucket",
    "ModelInfo",
    "ModelList",
    "ModelSampling",
    "OutpaintJobRequest",
    "OutpaintRequest",
    "ResponseFormat",
    "RolloutActionRequest",
    "RolloutCheck",
    "RolloutDecision",
    "RolloutInfo",
    "RolloutList",
    "RolloutStartRequest",
    "UsageDay",
    "UsageReport",
    "VariantStats",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookDeliveryList",
    "WebhookEventName",
    "WebhookSecretCreated",
    "WebhookSecretInfo",
    "WebhookSecretList",
    "WebhookSpec",
    "decode_b64_image",
    "encode_b64_image",
    "job_request_adapter",
    "parse_size",
]

# --- limits (the server may be stricter per model, never looser) -------------------------------

MAX_PROMPT_CHARS = 4000  # characters, like OpenAI's dall-e-3 limit; token truncation is separate
MAX_SIDE = 4096  # pixels per side accepted on the wire; models restrict further
MAX_STEPS = 200
MAX_GUIDANCE = 30.0
MAX_N = 4
MAX_SEED = 2**63 - 1
MAX_OUTPAINT_EXTENT = 2048  # pixels added on one side
MAX_IMAGE_B64_CHARS = 32 * 1024 * 1024  # ~24 MiB of image bytes in a JSON body

CacheMode = Literal["use", "bypass", "refresh"]
Priority = Literal["interactive", "batch"]  # model.scheduler step: interactive requests go first
ResponseFormat = Literal["b64_json", "url"]
JobKind = Literal["generate", "edit", "outpaint"]
EventType = Literal["progress", "status", "result", "error"]
ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "conflict_error",
    "rate_limit_error",
    "content_policy_violation",
    "server_error",
    "service_unavailable",
]

# The HTTP status the server answers for each error type (one table for both sides).
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "rate_limit_error": 429,
    "content_policy_violation": 400,
    "server_error": 500,
    "service_unavailable": 503,
}
ERROR_TYPES: tuple[str, ...] = tuple(ERROR_STATUS)

_SIZE_RE = re.compile(r"^([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")
_OWN_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # own checkpoints: name@version
_DIFFUSERS_ID = r"diffusers:[A-Za-z0-9._/~-]{1,255}(\+lora-[0-9a-f]{12})?"  # folders and hub ids (+ LoRA set)
_MODEL_RE = re.compile(rf"^{_OWN_NAME}(@{_OWN_NAME})?$|^{_DIFFUSERS_ID}$")  # what a request may name
SERVED_MODEL_RE = re.compile(rf"^{_OWN_NAME}@{_OWN_NAME}$|^{_DIFFUSERS_ID}$")  # what /v1/models lists
_DATA_URL_RE = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


def parse_size(size: str) -> tuple[int, int]:
    """``"64x32"`` -> ``(64, 32)`` (width, height); ValueError on anything else."""
    match = _SIZE_RE.match(size.strip().lower())
    if match is None:
        raise ValueError(f"size must look like '512x512' (WIDTHxHEIGHT in pixels), got {size!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ValueError(f"size {size!r} exceeds the wire limit of {MAX_SIDE} pixels per side")
    return width, height


def decode_b64_image(data: str) -> bytes:
    """Decode a base64 image, tolerating a ``data:image/...;base64,`` prefix; ValueError if invalid."""
    try:
        return base64.b64decode(_DATA_URL_RE.sub("", data.strip()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("image must be base64-encoded image bytes (PNG recommended)") from exc


def encode_b64_image(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


# --- requests ----------------------------------------------------------------------------------


class CacheSteps(_Request):
    """Step caching: a step reuses the transformer's cached residual while the first block's output
    changed less than ``threshold`` (relative) since the last full evaluation; 0 = off."""

    threshold: float = Field(ge=0.0, le=1.0)


class _GenerationParams(_Request):
    """Fields every image operation accepts (OpenAI's plus huabu's native extensions)."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str | None = Field(
        default=None,
        description="'name@version', 'name' (latest) or a served 'diffusers:...' id; default model if unset",
    )
    n: int = Field(default=1, ge=1, le=MAX_N)
    response_format: ResponseFormat = "b64_json"
    user: str | None = Field(default=None, max_length=256)
    # native extensions
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=MAX_GUIDANCE)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    cache: CacheMode = "use"
    priority: Priority | None = Field(default=None, description="'interactive' (default) or 'batch' (jobs' default)")
    cache_steps: CacheSteps | None = Field(default=None, description="step caching: fewer full evaluations")

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str | None) -> str | None:
        if value is not None and not _MODEL_RE.match(value):
            raise ValueError(
                "model must look like 'name' or 'name@version' (letters, digits, '.', '_', '-'), "
                "or 'diffusers:<folder or hub id>' as GET /v1/models lists it"
            )
        return value


class _Sized(_Request):
    size: str | None = Field(default=None, description="'WIDTHxHEIGHT'; the model's default size if unset")

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: str | None) -> str | None:
        if value is None:
            return None
        width, height = parse_size(value)
        return f"{width}x{height}"

    @property
    def dimensions(self) -> tuple[int, int] | None:
        """(width, height) or None when the model default applies."""
        return parse_size(self.size) if self.size else None


class ImageGenerationRequest(_GenerationParams, _Sized):
    """``POST /v1/images/generations`` (JSON)."""


class ImageEditRequest(_GenerationParams, _Sized):
    """The non-file fields of ``POST /v1/images/edits`` (multipart).

    The files come as multipart parts: ``image`` (or ``image[]``) and optional ``mask``, where
    transparent mask pixels mark the area to repaint (OpenAI's convention).
    """

    strength: float | None = Field(default=None, ge=0.0, le=1.0, description="img2img strength; 1.0 repaints fully")


def _check_b64(value: str) -> str:
    if len(value) > MAX_IMAGE_B64_CHARS:
        raise ValueError(f"image is larger than {MAX_IMAGE_B64_CHARS} base64 characters")
    decode_b64_image(value)
    return _DATA_URL_RE.sub("", value.strip())


class OutpaintRequest(_GenerationParams):
    """``POST /v1/images/outpaint`` (JSON): extend ``image`` by the given pixels on each side.

    The output size is the input size plus the extents; the prompt describes the whole canvas.
    """

    image: str = Field(description="base64 image (PNG recommended); a data: URL prefix is accepted")
    left: int = Field(default=0, ge=0, le=MAX_OUTPAINT_EXTENT)
    right: int = Field(default=0, ge=0, le=MAX_OUTPAINT_EXTENT)
    top: int = Field(default=0, ge=0, le=MAX_OUTPAINT_EXTENT)
    bottom: int = Field(default=0, ge=0, le=MAX_OUTPAINT_EXTENT)

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str) -> str:
        return _check_b64(value)

    @model_validator(mode="after")
    def _some_extent(self) -> OutpaintRequest:
        if not (self.left or self.right or self.top or self.bottom):
            raise ValueError("outpaint needs at least one of left, right, top, bottom > 0")
        return self

    def image_bytes(self) -> bytes:
        return decode_b64_image(self.image)


# --- jobs --------------------------------------------------------------------------------------


MAX_WEBHOOK_URL_CHARS = 2048
MAX_PREFER_WAIT_S = 60  # Prefer: wait=N on POST /v1/jobs answers within this many seconds at most
MAX_JOB_TIMEOUT_S = 7 * 24 * 3600
# What a webhook may be called for: the terminal statuses, and optionally progress.
WebhookEventName = Literal["succeeded", "failed", "canceled", "progress"]
DEFAULT_WEBHOOK_EVENTS: tuple[WebhookEventName, ...] = ("succeeded", "failed", "canceled")
_SECRET_ID_RE = re.compile(r"^whs_[0-9a-f]{16}$")


class WebhookSpec(_Request):
    """Where to POST a job's events, signed as Standard Webhooks do (``huabu.sdk.webhooks.verify``)."""

    url: str = Field(max_length=MAX_WEBHOOK_URL_CHARS, description="http(s) URL the events are POSTed to")
    events: list[WebhookEventName] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS), min_length=1, max_length=4
    )
    secret_id: str | None = Field(default=None, description="the key's signing secret to use; default: its newest")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        problem = webhook_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("events", mode="before")
    @classmethod
    def _spelling(cls, value: Any) -> Any:
        # The British spelling is what many integrators write; the job status is "canceled".
        if isinstance(value, list):
            return list(dict.fromkeys("canceled" if v == "cancelled" else v for v in value))
        return value

    @field_validator("secret_id")
    @classmethod
    def _check_secret_id(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET_ID_RE.match(value):
            raise ValueError(f"secret_id must be 'whs_' and 16 hex digits, got {value[:40]!r}")
        return value


def webhook_url_problem(url: str) -> str | None:
    """What is wrong with a webhook URL's form (None: nothing); where it points is checked by the server."""
    from urllib.parse import urlsplit

    if any(c.isspace() for c in url):
        return "url must not contain whitespace"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return f"url is not a valid URL: {url[:60]!r}"
    if parts.scheme not in ("http", "https"):
        return f"url must be an http:// or https:// URL, got scheme {parts.scheme or 'none'!r}"
    if not parts.hostname:
        return "url must name a host, e.g. https://example.com/hooks/huabu"
    if parts.username or parts.password:
        return "url must not carry credentials; authenticate deliveries by their signature"
    return None


class _JobOptions(_Request):
    """What a job takes besides its operation's fields."""

    webhook: WebhookSpec | None = None
    timeout_s: float | None = Field(
        default=None, gt=0, le=MAX_JOB_TIMEOUT_S, description="cancel the job (deadline_exceeded) after this long"
    )
    preview_every: int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="a low-resolution preview in every k-th progress event"
    )


class GenerateJobRequest(ImageGenerationRequest, _JobOptions):
    kind: Literal["generate"] = "generate"


class EditJobRequest(ImageEditRequest, _JobOptions):
    """An edit as a JSON job: the multipart files become base64 fields."""

    kind: Literal["edit"] = "edit"
    image: str = Field(description="base64 image (PNG recommended)")
    mask: str | None = Field(default=None, description="base64 PNG; transparent pixels = repaint")

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str) -> str:
        return _check_b64(value)

    @field_validator("mask")
    @classmethod
    def _check_mask(cls, value: str | None) -> str | None:
        return None if value is None else _check_b64(value)

    def image_bytes(self) -> bytes:
        return decode_b64_image(self.image)

    def mask_bytes(self) -> bytes | None:
        return None if self.mask is None else decode_b64_image(self.mask)


class OutpaintJobRequest(OutpaintRequest, _JobOptions):
    kind: Literal["outpaint"] = "outpaint"


# ``POST /v1/jobs`` body: the operation's own fields plus ``kind``, e.g.
# ``{"kind": "generate", "prompt": "a red fox", "seed": 7}``. FastAPI accepts the annotated
# union as a body type; elsewhere use ``job_request_adapter.validate_python(...)``.
JobRequest = Annotated[
    Union[GenerateJobRequest, EditJobRequest, OutpaintJobRequest],  # noqa: UP007 - runtime alias
    Field(discriminator="kind"),
]
job_request_adapter: TypeAdapter[GenerateJobRequest | EditJobRequest | OutpaintJobRequest] = TypeAdapter(JobRequest)


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled)

    def __str__(self) -> str:
        return self.value


class JobProgress(_Response):
    step: int = 0
    total: int = 0

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


# --- responses ---------------------------------------------------------------------------------


class ErrorBody(_Response):
    message: str
    type: str = "server_error"  # one of ERROR_TYPES; kept ``str`` so an old SDK parses new types
    param: str | None = None
    code: str | None = None  # e.g. the policy category for content_policy_violation


class ErrorResponse(_Response):
    error: ErrorBody


class ImageData(_Response):
    """One image. OpenAI's fields first, then huabu's extensions (all optional on the wire)."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None
    # huabu extensions
    id: str | None = Field(default=None, description="content-addressed image id (for /v1/feedback)")
    seed: int | None = None
    model: str | None = Field(default=None, description="'name@version' that produced the image")
    cached: bool = False
    prompt_truncated: bool = False
    variant: str | None = Field(default=None, description="A/B variant that served the request")
    full_evaluations: int | None = Field(
        default=None, description="with cache_steps: transformer evaluations that ran every block (cond + uncond)"
    )
    metadata: dict[str, str] = Field(default_factory=dict)


class ImagesResponse(_Response):
    """OpenAI's images response: ``{"created": <unix seconds>, "data": [...]}``."""

    created: int
    data: list[ImageData]


class ModelSampling(_Response):
    """What a request to this model gets for what it leaves out, and the model's limits."""

    size: str = Field(description="default 'WIDTHxHEIGHT'")
    steps: int = Field(description="default denoising steps")
    guidance_scale: float = Field(description="default classifier-free guidance (1 = none)")
    max_steps: int
    max_side: int = Field(description="largest width or height in pixels")
    size_multiple: int = Field(description="width and height must be multiples of this many pixels")
    min_side: int | None = Field(default=None, description="smallest width or height in pixels")
    max_prompt_bytes: int = Field(description="UTF-8 bytes of the prompt the model reads; the rest is cut off")
    operations: list[Literal["generate", "inpaint", "img2img"]] | None = Field(
        default=None,
        description="what the model can do: generate; inpaint (edits with a mask, outpaint); "
        "img2img (edits without one)",
    )


class ModelInfo(_Response):
    id: str = Field(description="'name@version', or 'diffusers:<folder or hub id>' (+ '+lora-<digest>')")
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "huabu"
    sampling: ModelSampling | None = Field(default=None, description="huabu extension: the model's defaults")
    backend: str | None = Field(default=None, description="huabu extension: 'mmdit' or 'diffusers'")
    pipeline: str | None = Field(default=None, description="huabu extension: the diffusers pipeline class")
    dtype: str | None = Field(default=None, description="huabu extension: weights' dtype on the replica")
    transformer: str | None = Field(
        default=None, description="huabu extension, diffusers models: 'diffusers', or 'own' for huabu's MMDiT"
    )


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class Job(_Response):
    """``POST /v1/jobs`` (answered at once, status queued) and ``GET /v1/jobs/{id}``."""

    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    kind: JobKind
    created_at: float = Field(description="unix seconds")
    updated_at: float = Field(description="unix seconds")
    progress: JobProgress = Field(default_factory=JobProgress)
    result: ImagesResponse | None = None
    error: ErrorBody | None = None
    model: str | None = None
    variant: str | None = None
    queue_position: int | None = Field(
        default=None, description="jobs ahead of this one that will start first (0: next); waiting jobs only"
    )
    eta_s: float | None = Field(default=None, description="estimated seconds until it finishes; waiting jobs only")
    deadline_at: float | None = Field(default=None, description="unix seconds its timeout_s ends")
    cancel_reason: str | None = Field(
        default=None, description="why a canceled job was: 'requested' or 'deadline_exceeded'"
    )


class JobPreview(_Response):
    """A low-resolution image of what a running job is forming (its current x0 estimate)."""

    width: int
    height: int
    media_type: str = "image/png"
    b64_json: str

    @property
    def bytes(self) -> bytes:
        return base64.b64decode(self.b64_json)


class JobEvent(_Response):
    """One event of ``GET /v1/jobs/{id}/events`` (SSE ``data:`` line) and ``WS /v1/jobs/{id}/ws``.

    ``seq`` increases by one per event of a job; the SSE stream also sends it as the ``id:`` field
    so a reconnecting client resumes with ``Last-Event-ID``. The last event of a job is a
    ``result`` (succeeded) or ``error`` (failed) or ``status`` event with a terminal status.
    """

    type: EventType
    job_id: str
    seq: int = Field(ge=0)
    status: JobStatus
    step: int | None = None
    total: int | None = None
    result: ImagesResponse | None = None
    error: ErrorBody | None = None
    queue_position: int | None = None
    eta_s: float | None = None
    preview: JobPreview | None = None
    reason: str | None = Field(default=None, description="a canceled job's cancel_reason")

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal


class WebhookAttempt(_Response):
    at: float = Field(description="unix seconds")
    status_code: int | None = Field(default=None, description="the receiver's HTTP status; None: no answer")
    error: str | None = None
    duration_ms: float = 0.0


class WebhookDelivery(_Response):
    """One message to a job's webhook and every attempt to deliver it (``GET /v1/jobs/{id}/deliveries``)."""

    id: str = Field(description="the webhook-id header: the same on every attempt")
    object: Literal["webhook_delivery"] = "webhook_delivery"
    job_id: str
    event: str = Field(description="job.succeeded, job.failed, job.canceled or job.progress")
    url: str
    status: Literal["pending", "delivered", "failed"]
    created_at: float
    next_attempt_at: float | None = None
    attempts: list[WebhookAttempt] = Field(default_factory=list)


class WebhookDeliveryList(_Response):
    object: Literal["list"] = "list"
    data: list[WebhookDelivery]


class WebhookSecretInfo(_Response):
    """A key's webhook signing secret as the admin API lists it: never the secret itself."""

    id: str
    object: Literal["webhook_secret"] = "webhook_secret"
    key_id: str
    created_at: float


class WebhookSecretCreated(WebhookSecretInfo):
    secret: str = Field(description="'whsec_...': shown once; verify deliveries with it")


class WebhookSecretList(_Response):
    object: Literal["list"] = "list"
    data: list[WebhookSecretInfo]


# Ids as the server issues them: an image's is the SHA-256 of its PNG (``ImageData.id``), a job's
# is "job_" and 24 hex digits. The gateway checks ids in paths against the same forms.
IMAGE_ID_PATTERN = r"^[0-9a-f]{64}$"
JOB_ID_PATTERN = r"^job_[0-9a-f]{24}$"


class FeedbackRequest(_Request):
    """``POST /v1/feedback``: did the user keep the image (A/B adoption metric)."""

    image_id: str | None = Field(default=None, max_length=256, json_schema_extra={"pattern": IMAGE_ID_PATTERN})
    job_id: str | None = Field(default=None, max_length=256, json_schema_extra={"pattern": JOB_ID_PATTERN})
    accepted: bool

    @field_validator("image_id", "job_id")
    @classmethod
    def _issued_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A readable message (a pattern error would say only "must be a string"), and a malformed
        # id never reaches a store lookup.
        form, words = (
            (IMAGE_ID_PATTERN, "64 hex digits (an image's id)")
            if info.field_name == "image_id"
            else (JOB_ID_PATTERN, "'job_' and 24 hex digits")
        )
        if value is not None and not re.fullmatch(form, value):
            raise ValueError(f"{info.field_name} must be {words}, got {value[:40]!r}")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> FeedbackRequest:
        if (self.image_id is None) == (self.job_id is None):
            raise ValueError("give exactly one of image_id or job_id")
        return self


class FeedbackResponse(_Response):
    recorded: bool = True
    variant: str | None = None


# --- rollouts (canary / A/B; admin) -------------------------------------------------------------


class RolloutStartRequest(_Request):
    """``POST /v1/admin/rollouts``: start moving traffic from the stable model to the canary."""

    id: str | None = Field(default=None, max_length=128, description="default: derived from the canary and time")
    canary_model: str | None = Field(default=None, description="a served model id; default: the served canary variant")
    stable_model: str | None = Field(default=None, description="a served model id; default: the served stable variant")
    policy: dict[str, Any] | None = Field(
        default=None, description="rollout policy fields (steps, min_samples_per_step, guardrails, ...)"
    )


class RolloutActionRequest(_Request):
    """``POST /v1/admin/rollouts/{id}/{pause,resume,promote,rollback}``."""

    reason: str | None = Field(default=None, max_length=500)


class RolloutCheck(_Response):
    """One guardrail of a decision: the numbers behind it."""

    name: str
    status: str  # pass | fail | inconclusive | insufficient_data | disabled | not_applicable
    threshold: float
    stable: float | None = None
    canary: float | None = None
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_stable: int = 0
    n_canary: int = 0
    within_margin: bool | None = None  # the point estimate is not worse than the threshold
    detail: str = ""


class RolloutDecision(_Response):
    action: str  # hold | advance | promote | rollback | pause | resume
    code: str
    reason: str
    at: float = Field(description="unix seconds")
    actor: str = "policy"
    from_percent: float
    to_percent: float
    checks: list[RolloutCheck] = Field(default_factory=list)


class LatencyBucket(_Response):
    low_ms: float
    high_ms: float
    count: int


class VariantStats(_Response):
    """One variant's numbers over the whole rollout (forced/override requests are not counted)."""

    variant: str
    model: str | None = None
    weight_percent: float = 0.0
    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    filter_blocks: int = 0
    filter_block_rate: float | None = None
    latency_mean_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_histogram: list[LatencyBucket] = Field(default_factory=list)
    quality_n: int = 0
    quality_mean: float | None = None
    quality_ci_low: float | None = None  # 95 % normal interval of the mean (for plots)
    quality_ci_high: float | None = None
    feedback_total: int = 0
    feedback_accepted: int = 0
    acceptance_rate: float | None = None


class RolloutInfo(_Response):
    """A rollout: where it stands, the per-variant numbers and every decision with its reason."""

    id: str
    object: Literal["rollout"] = "rollout"
    status: str  # running | paused | promoted | rolled_back
    stable_model: str
    canary_model: str
    canary_percent: float
    step: int
    steps: list[float]
    created_at: float
    updated_at: float
    active: bool = False  # the rollout whose weights the gateways serve
    policy: dict[str, Any] = Field(default_factory=dict)
    variants: list[VariantStats] = Field(default_factory=list)
    last_decision: RolloutDecision | None = None
    history: list[RolloutDecision] = Field(default_factory=list)
    traffic: list[tuple[float, float]] = Field(default_factory=list, description="(unix seconds, canary percent)")


class RolloutList(_Response):
    object: Literal["list"] = "list"
    data: list[RolloutInfo]


# --- API keys and usage (admin keys: /v1/admin/keys; usage: /v1/usage) -------------------------

# admin includes every scope; ab_override may force an A/B arm (the ab.override_header) for QA keys.
ApiKeyScope = Literal["generate", "admin", "ab_override"]
RATE_LIMIT_PATTERN = r"^[1-9][0-9]{0,8}/(s|sec|second|m|min|minute|h|hour|d|day)$"  # "60/min"


class ApiKeyCreateRequest(_Request):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$")
    scopes: list[ApiKeyScope] = Field(
        default_factory=lambda: list[ApiKeyScope](["generate"]), min_length=1, max_length=3
    )
    rate: str | None = Field(
        None, description="e.g. '60/min'; default: server's", json_schema_extra={"pattern": RATE_LIMIT_PATTERN}
    )
    max_concurrent: int | None = Field(None, ge=1, le=10_000, description="jobs and requests in flight")
    daily_images: int | None = Field(None, ge=1, description="images per UTC day; default: server's")

    @field_validator("rate")
    @classmethod
    def _rate_format(cls, value: str | None) -> str | None:
        if value is not None and not re.match(RATE_LIMIT_PATTERN, value):
            raise ValueError(f"rate must look like '60/min' (N/s, N/min, N/hour or N/day), got {value!r}")
        return value


class ApiKeyInfo(_Response):
    """An API key as the admin API shows it: never the key itself (only ``ApiKeyCreated`` has it, once)."""

    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    scopes: list[str]
    prefix: str = Field(description="the key's first characters, to recognise it")
    rate: str
    max_concurrent: int
    daily_images: int | None = None
    created_at: float
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class ApiKeyCreated(ApiKeyInfo):
    key: str = Field(description="the secret key: shown once, stored only as a hash")


class ApiKeyList(_Response):
    object: Literal["list"] = "list"
    data: list[ApiKeyInfo]


class UsageDay(_Response):
    date: str = Field(description="UTC day YYYY-MM-DD, or 'total'")
    images: int = 0
    cached_images: int = 0
    steps: int = 0
    generation_s: float = 0.0


class UsageReport(_Response):
    """``GET /v1/usage``: one key's metered usage per UTC day, newest first."""

    object: Literal["usage"] = "usage"
    key_id: str
    data: list[UsageDay]
    total: UsageDay

"""Everything the sync and async clients share: configuration, request building, and the retry plan.

The retry loop is written once, as a sans-I/O generator (``_plan``): it yields "send this request" or
"sleep this long" steps and receives the outcome. ``Client`` and ``AsyncClient`` only drive it with
blocking or awaiting I/O, so retry decisions, backoff, deadlines, error mapping and tracing cannot
drift apart between the two.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import httpx
import pydantic

from huabu.sdk import _devkey, _tracing, constants
from huabu.sdk._errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    HuabuError,
    error_from_response,
)
from huabu.sdk._retry import retry_delay, should_retry_status
from huabu.sdk.types import ImagesResponse

if TYPE_CHECKING:
    from huabu.sdk._results import ImageResults

__all__ = ["APIResponseValidationError", "BaseClient", "ClientConfig", "RequestOptions", "Timeouts"]

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)
ClientT = TypeVar("ClientT", bound="BaseClient[Any]")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("huabu")
    except Exception:  # not installed (a source checkout on sys.path)
        return "0.0.0"


USER_AGENT = f"huabu-python/{_version()} python/{platform.python_version()}"


class APIResponseValidationError(HuabuError):
    """The server answered 2xx with a body that does not match the wire types."""

    def __init__(self, message: str, *, response: httpx.Response) -> None:
        super().__init__(message)
        self.response = response
        self.request_id = response.headers.get(constants.REQUEST_ID_HEADER)


@dataclass(frozen=True)
class Timeouts:
    """Per-phase socket timeouts plus a ``total`` deadline for a whole call, retries included (seconds).

    All finite on purpose: a generation call must never hang forever on a lost replica.
    """

    connect: float = constants.DEFAULT_CONNECT_TIMEOUT
    read: float = constants.DEFAULT_READ_TIMEOUT
    write: float = constants.DEFAULT_WRITE_TIMEOUT
    pool: float = constants.DEFAULT_POOL_TIMEOUT
    total: float = constants.DEFAULT_DEADLINE

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"timeout {f.name} must be a finite number of seconds > 0, got {value!r}")

    @classmethod
    def coerce(cls, value: float | Timeouts | None, default: Timeouts) -> Timeouts:
        """``None`` -> ``default``; a number -> that total deadline (phases clipped to it); Timeouts as is."""
        if value is None:
            return default
        if isinstance(value, Timeouts):
            return value
        total = float(value)
        return cls(
            connect=min(default.connect, total),
            read=min(default.read, total),
            write=min(default.write, total),
            pool=min(default.pool, total),
            total=total,
        )

    def for_attempt(self, remaining: float) -> httpx.Timeout:
        """Socket timeouts for one attempt, never beyond what is left of the call's deadline."""
        cap = max(remaining, 0.001)
        return httpx.Timeout(
            connect=min(self.connect, cap),
            read=min(self.read, cap),
            write=min(self.write, cap),
            pool=min(self.pool, cap),
        )


TimeoutArg = float | Timeouts | None


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    api_key: str | None = field(repr=False)  # a repr ends up in logs and tracebacks
    timeouts: Timeouts
    max_retries: int
    default_headers: Mapping[str, str] = field(default_factory=dict)
    key_source: str | None = None  # where api_key came from, for a 401's message

    @classmethod
    def from_args(
        cls,
        base_url: str | None,
        api_key: str | None,
        timeout: float | Timeouts | None,
        max_retries: int | None,
        default_headers: Mapping[str, str] | None,
    ) -> ClientConfig:
        # The URL given, then HUABU_BASE_URL, then the local server `huabu up` recorded, then the default.
        resolved_url = (
            base_url
            or os.environ.get(constants.BASE_URL_ENV)
            or _devkey.local_server_url()
            or constants.DEFAULT_BASE_URL
        )
        if not resolved_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {resolved_url!r}")
        retries = constants.DEFAULT_MAX_RETRIES if max_retries is None else max_retries
        if retries < 0:
            raise ValueError("max_retries must be >= 0")
        url = resolved_url.rstrip("/")
        # An explicit key, then HUABU_API_KEY, then the development key of a loopback `huabu up` server.
        key, source = api_key, "the api_key argument"
        if key is None:
            key, source = os.environ.get(constants.API_KEY_ENV) or None, constants.API_KEY_ENV
        if key is None:
            key, source = _devkey.discover_dev_key(url), str(_devkey.dev_key_path())
        return cls(
            base_url=url,
            api_key=key,
            timeouts=Timeouts.coerce(timeout, Timeouts()),
            max_retries=retries,
            default_headers=dict(default_headers or {}),
            key_source=source if key else None,
        )


@dataclass
class RequestOptions:
    """One logical API call (possibly several HTTP attempts)."""

    method: str
    path: str  # "/v1/..." relative to base_url, or an absolute URL (result downloads)
    operation: str | None = None  # span name, e.g. "images.generate"
    params: Mapping[str, str] | None = None
    json: Any = None
    data: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None  # bytes, so every retry re-sends them
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: TimeoutArg = None
    max_retries: int | None = None
    idempotency_key: str | None = None  # fixed for the call: every retry sends the same key
    stream: bool = False


@dataclass(frozen=True)
class _Send:
    request: httpx.Request


@dataclass(frozen=True)
class _Sleep:
    seconds: float


Step = _Send | _Sleep
Outcome = httpx.Response | httpx.TransportError | None
Plan = Generator[Step, Outcome, httpx.Response]


def _transport_error(exc: httpx.TransportError, request: httpx.Request) -> APIConnectionError:
    origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"request to {origin} timed out: {exc or type(exc).__name__}", request=request)
    hint = (
        "start a local server with `huabu up`, or point base_url / --base-url / HUABU_BASE_URL at a running one"
        if _devkey.is_loopback_host(request.url.host)
        else "check the URL (base_url / --base-url / HUABU_BASE_URL) and that the server is up"
    )
    return APIConnectionError(f"cannot reach {origin} ({exc or type(exc).__name__}): {hint}", request=request)


class BaseClient(Generic[HttpT]):
    _http: HttpT
    _config: ClientConfig
    _owns_http: bool
    # Attribute name -> resource class, one per client flavour (sync or async resources).
    _resources: ClassVar[dict[str, Callable[[Any], object]]] = {}

    # Injection points for tests: time source and jitter randomness.
    _clock: Callable[[], float] = staticmethod(time.monotonic)
    _rand: Callable[[], float] = staticmethod(random.random)

    @property
    def base_url(self) -> str:
        return self._config.base_url

    @property
    def api_key(self) -> str | None:
        return self._config.api_key

    @property
    def timeout(self) -> Timeouts:
        return self._config.timeouts

    @property
    def max_retries(self) -> int:
        return self._config.max_retries

    _http_class: ClassVar[type[Any]]  # httpx.Client or httpx.AsyncClient

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | Timeouts | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
        http_client: HttpT | None = None,
    ) -> None:
        config = ClientConfig.from_args(base_url, api_key, timeout, max_retries, default_headers)
        t = config.timeouts
        timeouts = httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool)
        http = http_client or self._http_class(timeout=timeouts, follow_redirects=True)
        self._setup(config, http, owns_http=http_client is None)

    def _setup(self, config: ClientConfig, http: HttpT, *, owns_http: bool) -> None:
        self._config = config
        self._http = http
        self._owns_http = owns_http
        for name, resource in self._resources.items():
            setattr(self, name, resource(self))

    def with_options(
        self: ClientT,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | Timeouts | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> ClientT:
        """A copy with other defaults, sharing this client's connection pool (closing stays with this one)."""
        clone = object.__new__(type(self))
        config = self._replaced_config(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
        )
        clone._setup(config, self._http, owns_http=False)
        return clone

    def _replaced_config(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | Timeouts | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> ClientConfig:
        config = self._config
        return ClientConfig(
            base_url=(base_url or config.base_url).rstrip("/"),
            api_key=config.api_key if api_key is None else api_key,
            timeouts=Timeouts.coerce(timeout, config.timeouts),
            max_retries=config.max_retries if max_retries is None else max_retries,
            default_headers={**config.default_headers, **(default_headers or {})},
            key_source=config.key_source if api_key is None else "the api_key argument",
        )

    def _explain_401(self, error: AuthenticationError) -> None:
        """Say which key was sent and where it came from, or where the key is when none was sent."""
        config = self._config
        if config.api_key is None:
            error.hint = f"no API key was sent: {_devkey.missing_key_hint(config.base_url)}"
        else:
            error.hint = f"the key sent came from {config.key_source}"

    # --- request building -----------------------------------------------------------------

    def _url(self, path: str) -> httpx.URL:
        if path.startswith(("http://", "https://")):
            return httpx.URL(path)
        return httpx.URL(self._config.base_url + ("" if path.startswith("/") else "/") + path)

    def _same_origin(self, url: httpx.URL) -> bool:
        base = httpx.URL(self._config.base_url)
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)

    def _headers(self, options: RequestOptions, url: httpx.URL, attempt: int) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **self._config.default_headers}
        # Never leak the API key to another host (signed result URLs may point at S3 or a CDN).
        if self._config.api_key and self._same_origin(url):
            headers["Authorization"] = f"Bearer {self._config.api_key}"
        if options.idempotency_key:
            headers[constants.IDEMPOTENCY_HEADER] = options.idempotency_key
        if attempt:
            headers[constants.RETRY_COUNT_HEADER] = str(attempt)
        headers.update(options.headers)
        return headers

    def _build_request(
        self, options: RequestOptions, url: httpx.URL, attempt: int, timeout: httpx.Timeout, span: Any
    ) -> httpx.Request:
        headers = self._headers(options, url, attempt)
        _tracing.inject(span, headers)
        return self._http.build_request(
            options.method,
            url,
            params=options.params,
            json=options.json,
            data=options.data,
            files=options.files,
            headers=headers,
            timeout=timeout,
        )

    # --- the retry plan ---------------------------------------------------------------------

    def _plan(self, options: RequestOptions) -> Plan:
        timeouts = Timeouts.coerce(options.timeout, self._config.timeouts)
        max_retries = self._config.max_retries if options.max_retries is None else options.max_retries
        url = self._url(options.path)
        span = _tracing.start_client_span(options.method, url, options.operation)
        deadline = self._clock() + timeouts.total
        attempt = 0
        try:
            while True:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise APITimeoutError(f"deadline of {timeouts.total:g} s exceeded after {attempt} attempt(s)")
                request = self._build_request(options, url, attempt, timeouts.for_attempt(remaining), span)
                outcome = yield _Send(request)
                headers: httpx.Headers | None = None
                error: HuabuError
                if isinstance(outcome, httpx.Response):
                    _tracing.record_response(span, outcome, attempt + 1)
                    if not outcome.is_error:
                        return outcome
                    error = error_from_response(outcome)
                    if isinstance(error, AuthenticationError):
                        self._explain_401(error)
                    retryable = should_retry_status(outcome.status_code, outcome.headers)
                    headers = outcome.headers
                elif isinstance(outcome, httpx.TransportError):
                    error = _transport_error(outcome, request)
                    error.__cause__ = outcome
                    retryable = True
                else:  # pragma: no cover - a driver bug
                    raise TypeError(f"unexpected outcome {outcome!r}")
                if attempt >= max_retries or not retryable:
                    raise error
                delay = retry_delay(attempt, headers, rand=self._rand)
                if self._clock() + delay >= deadline:
                    raise error  # waiting would overrun the deadline: report the real failure now
                attempt += 1
                yield _Sleep(delay)
        except HuabuError as exc:
            _tracing.record_error(span, exc)
            raise
        finally:
            span.end()

    # --- response parsing ---------------------------------------------------------------------

    def _results(
        self, response: ImagesResponse, *, request_id: str | None = None, job_id: str | None = None
    ) -> ImageResults:
        raise NotImplementedError  # each client's: with its own (blocking or awaiting) image loader

    def _images_of(self, response: httpx.Response) -> ImageResults:
        """The images of a 200 from an images route (with the job behind them, under ``Prefer: wait``)."""
        return self._results(
            self._parse(response, ImagesResponse),
            request_id=response.headers.get(constants.REQUEST_ID_HEADER),
            job_id=response.headers.get(constants.JOB_ID_HEADER),
        )

    def _follow_timeout(self, options: RequestOptions, started: float) -> float:
        """How long to follow the job of an images call answered 202: what is left of the call's own
        ``timeout`` when it gave one, else as long as ``JobHandle.wait`` waits by default."""
        if options.timeout is None:
            return constants.DEFAULT_WAIT_TIMEOUT
        total = Timeouts.coerce(options.timeout, self._config.timeouts).total
        return max(total - (self._clock() - started), 0.001)

    @staticmethod
    def _parse(response: httpx.Response, model: type[ModelT]) -> ModelT:
        try:
            return model.model_validate_json(response.content)
        except pydantic.ValidationError as exc:
            raise APIResponseValidationError(
                f"unexpected {model.__name__} body from {response.request.url.path}: {exc}", response=response
            ) from exc

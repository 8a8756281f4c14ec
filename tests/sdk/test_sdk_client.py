"""Client logic over httpx.MockTransport: retries, backoff, idempotency, errors, timeouts, config, tracing."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import httpx
import pytest
from fake_server import FakeServer
from sdk_fakes import FakeClock, fake_async_client, fake_client

import huabu.sdk as hs
from huabu.sdk import _tracing, masks
from huabu.sdk._base import USER_AGENT, Timeouts


def _error(status: int, type: str = "server_error", **extra: object) -> httpx.Response:
    body = {"error": {"message": f"boom {status}", "type": type, "param": extra.pop("param", None), "code": None}}
    return httpx.Response(status, json=body, headers={"x-request-id": "req_x", **extra})  # type: ignore[arg-type]


def _client_with(handler, clock: FakeClock, **kwargs: object) -> hs.Client:
    client = hs.Client("http://api.test", http_client=httpx.Client(transport=httpx.MockTransport(handler)), **kwargs)
    client._clock = clock
    client._sleep = clock.sleep
    return client


# --- configuration -----------------------------------------------------------------------------


def test_config_from_env_and_headers(monkeypatch: pytest.MonkeyPatch, server: FakeServer) -> None:
    monkeypatch.setenv("HUABU_BASE_URL", "http://env.test/")
    monkeypatch.setenv("HUABU_API_KEY", "sk-env")
    assert hs.Client().base_url == "http://env.test"
    assert hs.Client("http://arg.test", "sk-arg").api_key == "sk-arg"
    server.api_key = "sk-env"
    client = hs.Client(server.base_url, http_client=httpx.Client(transport=server.transport()))
    client.models.list()
    sent = server.requests[-1]
    assert sent.headers["authorization"] == "Bearer sk-env"
    assert sent.headers["user-agent"] == USER_AGENT
    with pytest.raises(hs.AuthenticationError):
        client.with_options(api_key="wrong").models.list()


def test_defaults_are_finite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HUABU_BASE_URL", raising=False)
    monkeypatch.setenv("HUABU_HOME", str(tmp_path))  # no local server recorded by `huabu up`
    client = hs.Client()
    assert client.base_url == "http://127.0.0.1:8000"
    assert client.timeout == Timeouts(connect=5, read=120, write=60, pool=10, total=300)
    assert client.max_retries == 2
    with pytest.raises(ValueError, match="finite"):
        Timeouts(read=float("inf"))
    with pytest.raises(ValueError, match="http"):
        hs.Client("ftp://x")


def test_with_options_copies_without_touching_the_original(client: hs.Client) -> None:
    other = client.with_options(timeout=10, max_retries=0, default_headers={"x-a": "1"})
    assert other.max_retries == 0 and other.timeout.total == 10 and other.timeout.read == 10
    assert other.timeout.connect == 5
    assert client.max_retries == 2 and client.timeout.total == 300
    assert other._http is client._http
    other.close()  # does not close the shared pool
    client.models.list()


def test_per_call_timeout_caps_socket_timeouts(client: hs.Client, server: FakeServer) -> None:
    client.models.list(timeout=3)
    sent = server.requests[-1].extensions["timeout"]
    assert sent["read"] <= 3 and sent["connect"] <= 3
    client.models.list(timeout=Timeouts(connect=1, read=2, write=3, pool=4, total=50))
    assert server.requests[-1].extensions["timeout"] == {"connect": 1, "read": 2, "write": 3, "pool": 4}


# --- retries -----------------------------------------------------------------------------------


def test_retries_overload_honouring_retry_after(client: hs.Client, server: FakeServer, clock: FakeClock) -> None:
    server.fail_next("/v1/images/generations", 503, headers={"Retry-After": "2"})
    server.fail_next("/v1/images/generations", 429, headers={"retry-after-ms": "150"})
    images = client.images.generate("a fox", seed=1)
    assert len(images) == 1
    assert clock.sleeps == [2.0, 0.15]
    assert [r.headers.get("x-huabu-retry-count") for r in server.requests] == [None, "1", "2"]


@pytest.mark.parametrize("status", [408, 409, 500, 502, 504])
def test_retryable_statuses_use_backoff(status: int, client: hs.Client, server: FakeServer, clock: FakeClock) -> None:
    server.fail_next("/v1/models", status)
    client.models.list()
    assert len(server.requests) == 2 and len(clock.sleeps) == 1
    assert 0.375 <= clock.sleeps[0] <= 0.5  # first backoff: 0.5 s minus up to 25 % jitter


def test_gives_up_after_max_retries(client: hs.Client, server: FakeServer, clock: FakeClock) -> None:
    server.fail_next("/v1/models", 429, headers={"Retry-After": "1"}, times=5)
    with pytest.raises(hs.RateLimitError) as info:
        client.models.list()
    assert info.value.retry_after == 1.0 and info.value.status_code == 429
    assert len(server.requests) == 3  # 1 + max_retries
    server.requests.clear()
    with pytest.raises(hs.RateLimitError):
        client.models.list(max_retries=0)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [400, 422])
def test_validation_errors_are_never_retried(status: int, clock: FakeClock) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _error(status, "invalid_request_error", param="size", **{"x-should-retry": "true"})

    with pytest.raises((hs.BadRequestError, hs.UnprocessableEntityError)) as info:
        _client_with(handler, clock).images.generate("x")
    assert len(calls) == 1 and clock.sleeps == []
    assert info.value.param == "size"


def test_connection_errors_are_retried_then_raised(server: FakeServer, clock: FakeClock) -> None:
    client = fake_client(server, clock)
    server.raise_next("/v1/models", httpx.ConnectError("refused"))
    assert client.models.list().data
    for _ in range(3):
        server.raise_next("/v1/models", httpx.ConnectError("refused"))
    with pytest.raises(hs.APIConnectionError, match="refused") as info:
        client.models.list()
    assert not isinstance(info.value, hs.APITimeoutError)
    server.raise_next("/v1/models", httpx.ReadTimeout("slow"))
    server.raise_next("/v1/models", httpx.ReadTimeout("slow"))
    server.raise_next("/v1/models", httpx.ReadTimeout("slow"))
    with pytest.raises(hs.APITimeoutError):
        client.models.list()


def test_deadline_bounds_retries(server: FakeServer, clock: FakeClock) -> None:
    client = fake_client(server, clock, max_retries=10)
    server.fail_next("/v1/models", 503, headers={"Retry-After": "30"}, times=10)
    with pytest.raises(hs.ServiceUnavailableError):
        client.models.list(timeout=45)  # waits 30 s once; a second wait would overrun the 45 s deadline
    assert clock.sleeps == [30.0]
    assert len(server.requests) == 2


# --- idempotent job submission -----------------------------------------------------------------


def test_submit_retried_after_lost_response_reuses_idempotency_key(
    client: hs.Client, server: FakeServer, clock: FakeClock
) -> None:
    server.drop_next("/v1/jobs", method="POST")  # the server creates the job, the response is lost
    handle = client.jobs.submit("a lighthouse", seed=3)
    posts = [r for r in server.requests if r.method == "POST" and r.url.path == "/v1/jobs"]
    assert len(posts) == 2
    keys = {r.headers["idempotency-key"] for r in posts}
    assert len(keys) == 1 and len(next(iter(keys))) == 36  # one uuid4 for both attempts
    assert len(server.jobs) == 1 and handle.id in server.jobs  # no second job
    client.jobs.submit("a lighthouse", seed=3)
    assert len(server.jobs) == 2  # a new submit call is a new key
    client.jobs.submit("x", idempotency_key="my-key")
    assert server.requests[-1].headers["idempotency-key"] == "my-key"


async def test_async_submit_retry_reuses_idempotency_key(server: FakeServer, clock: FakeClock) -> None:
    aclient = fake_async_client(server, clock)
    server.fail_next("/v1/jobs", 503)
    server.drop_next("/v1/jobs")
    handle = await aclient.jobs.submit("a lighthouse")
    posts = [r for r in server.requests if r.url.path == "/v1/jobs"]
    assert len(posts) == 3 and len({r.headers["idempotency-key"] for r in posts}) == 1
    assert list(server.jobs) == [handle.id]
    await aclient.close()


# --- error mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "exc"),
    [
        (400, "invalid_request_error", hs.BadRequestError),
        (401, "authentication_error", hs.AuthenticationError),
        (403, "permission_error", hs.PermissionDeniedError),
        (404, "not_found_error", hs.NotFoundError),
        (409, "conflict_error", hs.ConflictError),
        (422, "invalid_request_error", hs.UnprocessableEntityError),
        (429, "rate_limit_error", hs.RateLimitError),
        (400, "content_policy_violation", hs.ContentPolicyViolationError),
        (500, "server_error", hs.InternalServerError),
        (503, "service_unavailable", hs.ServiceUnavailableError),
        (502, "server_error", hs.InternalServerError),
        (418, "teapot", hs.APIStatusError),
    ],
)
def test_status_maps_to_exception(status: int, error_type: str, exc: type[hs.APIStatusError], clock: FakeClock) -> None:
    client = _client_with(lambda request: _error(status, error_type, param="prompt"), clock, max_retries=0)
    with pytest.raises(exc) as info:
        client.images.generate("x")
    err = info.value
    assert type(err) is exc
    assert (err.status_code, err.request_id, err.message, err.param, err.type) == (
        status,
        "req_x",
        f"boom {status}",
        "prompt",
        error_type,
    )
    assert isinstance(err, hs.HuabuError) and "req_x" in str(err)


def test_content_policy_category(client: hs.Client) -> None:
    with pytest.raises(hs.ContentPolicyViolationError) as info:
        client.images.generate("something forbidden")
    assert info.value.category == "test" and isinstance(info.value, hs.BadRequestError)


def test_non_json_error_bodies(clock: FakeClock) -> None:
    client = _client_with(lambda r: httpx.Response(503, text="Service Unavailable: no replicas"), clock, max_retries=0)
    with pytest.raises(hs.ServiceUnavailableError, match="no replicas"):
        client.models.list()
    client = _client_with(lambda r: httpx.Response(404, json={"detail": "Not Found"}), clock)
    with pytest.raises(hs.NotFoundError, match="Not Found"):
        client.models.list()


def test_unexpected_success_body(clock: FakeClock) -> None:
    client = _client_with(lambda r: httpx.Response(200, json={"nope": 1}, headers={"x-request-id": "r1"}), clock)
    with pytest.raises(hs.APIResponseValidationError) as info:
        client.models.list()
    assert info.value.request_id == "r1"


# --- requests and results ----------------------------------------------------------------------


def test_generate_sends_native_extensions(client: hs.Client, server: FakeServer) -> None:
    images = client.images.generate("狐狸", seed=5, steps=3, negative_prompt="blur", cache="bypass", size="16x16")
    body = json.loads(server.requests[-1].content)
    assert body == {
        "prompt": "狐狸",
        "size": "16x16",
        "n": 1,
        "response_format": "b64_json",
        "seed": 5,
        "steps": 3,
        "negative_prompt": "blur",
        "cache": "bypass",
    }
    image = images[0]
    assert (image.seed, image.model, image.cached, images.request_id) == (5, "tiny@1", False, "req_1")
    assert image.image.size == (16, 16) and image.metadata["prompt"] == "狐狸"


@pytest.mark.parametrize(
    ("prompt", "params", "param", "message"),
    [
        ("x", {"size": "big"}, "size", "size must look like '512x512'"),
        ("", {}, "prompt", "prompt must not be empty"),
        ("x", {"cache": "sometimes"}, "cache", "cache must be one of 'use', 'bypass', 'refresh'"),
        ("x", {"steps": 0}, "steps", "steps must be >= 1"),
        ("x", {"n": 5}, "n", "n must be <= 4"),
    ],
)
def test_bad_arguments_fail_before_sending(
    client: hs.Client, server: FakeServer, prompt: str, params: dict, param: str, message: str
) -> None:
    """One error type for a bad argument, whichever side catches it: a BadRequestError (so also a
    HuabuError) and a ValueError, naming the parameter; never pydantic's own exception."""
    with pytest.raises(hs.InvalidParameterError) as caught:
        client.images.generate(prompt, **params)
    error = caught.value
    assert isinstance(error, hs.BadRequestError) and isinstance(error, hs.HuabuError) and isinstance(error, ValueError)
    assert error.param == param and message in error.message and error.request_id is None
    assert type(error.__cause__).__name__ != "ValidationError" and error.__suppress_context__
    with pytest.raises(hs.InvalidParameterError, match=message.split("'")[0]):
        client.jobs.submit(prompt, **params)
    assert server.requests == []


def test_url_results_download_lazily_without_leaking_the_key(clock: FakeClock, tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    data = masks.rectangle((8, 8), (0, 0, 4, 4))  # any PNG

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "cdn.test":
            return httpx.Response(200, content=data)
        return httpx.Response(200, json={"created": 1, "data": [{"url": "https://cdn.test/a.png?sig=1", "seed": 1}]})

    client = _client_with(handler, clock, api_key="sk-secret")
    images = client.images.generate("p", response_format="url")
    assert len(seen) == 1 and not images[0].loaded
    assert images[0].bytes == data and len(seen) == 2
    assert "authorization" not in seen[1].headers and seen[0].headers["authorization"] == "Bearer sk-secret"
    saved = images[0].save(tmp_path / "sub" / "a.jpg")
    assert saved.read_bytes()[:3] == b"\xff\xd8\xff"
    assert images[0].bytes == data and len(seen) == 2  # downloaded once


def test_edit_sends_multipart_with_mask(client: hs.Client, server: FakeServer) -> None:
    src = client.images.generate("p", size="16x16")[0]
    result = client.images.edit(src.image, "q", mask=masks.rectangle((16, 16), (0, 0, 8, 8)), strength=0.5)
    sent = server.requests[-1]
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert b'name="image"; filename="image.png"' in sent.content and b'name="mask"' in sent.content
    assert b'name="strength"\r\n\r\n0.5' in sent.content
    assert result[0].image.size == (16, 16)


# --- tracing -----------------------------------------------------------------------------------


def test_client_span_and_traceparent(client: hs.Client, server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    client.models.list()
    assert "traceparent" not in server.requests[-1].headers  # no OTel SDK configured: a no-op
    sdk_trace = importlib.import_module("opentelemetry.sdk.trace")
    export = importlib.import_module("opentelemetry.sdk.trace.export")
    memory = importlib.import_module("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    exporter = memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_tracing, "_tracer", provider.get_tracer("huabu.sdk"))
    server.fail_next("/v1/models", 503)
    client.models.list()
    (span,) = exporter.get_finished_spans()
    traceparents = {r.headers["traceparent"] for r in server.requests[-2:]}
    assert traceparents == {
        f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"
    }
    assert span.name == "huabu models.list" and span.attributes["huabu.attempts"] == 2
    assert span.attributes["http.response.status_code"] == 200


# --- async twin --------------------------------------------------------------------------------


async def test_async_client_same_surface(server: FakeServer, clock: FakeClock) -> None:
    aclient = fake_async_client(server, clock)
    server.fail_next("/v1/images/generations", 503, headers={"Retry-After": "1"})
    images = await aclient.images.generate("a fox", seed=2, response_format="url")
    assert clock.sleeps == [1.0]
    with pytest.raises(RuntimeError, match="aload"):
        _ = images[0].bytes
    assert (await images[0].aload()).startswith(b"\x89PNG")
    assert images[0].image.size == (32, 32)
    assert (await aclient.models.list()).data[0].id == "tiny@1"
    with pytest.raises(hs.NotFoundError):
        await aclient.jobs.get("missing")
    async with aclient.with_options(max_retries=0) as other:
        assert other.max_retries == 0

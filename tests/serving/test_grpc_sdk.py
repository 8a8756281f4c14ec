"""huabu.sdk.grpc against the deployed app, beside the HTTP SDK: the same results, handles and errors
whichever transport a caller picks (real gRPC through Serve's proxy, no mocks)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from huabu.deployments.gateway.auth import key_hash, new_key
from huabu.sdk import (
    AuthenticationError,
    BadRequestError,
    Client,
    ImageResults,
    JobCanceledError,
    JobHandle,
    NotFoundError,
    masks,
)
from huabu.sdk import cli as sdk_cli
from huabu.sdk.grpc import AsyncGrpcClient, GrpcClient
from huabu.sdk.types import JobStatus

pytestmark = pytest.mark.serve

SMALL: dict[str, Any] = {"size": "32x32", "steps": 4, "cache": "bypass"}


@pytest.fixture(scope="module")
def admin_key() -> str:
    return new_key()[1]


@pytest.fixture(scope="module")
def grpc_app(deploy_app: Any, admin_key: str) -> Any:
    return deploy_app(
        auth={"enabled": True, "admin_key_sha256": key_hash(admin_key), "default_rate": "1000/min"},
        safety={"prompt_enabled": False, "image": {"enabled": False}},
    )


@pytest.fixture(scope="module")
def address(grpc_port: int) -> str:
    return f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="module")
def grpc_client(grpc_app: Any, address: str, admin_key: str) -> Iterator[GrpcClient]:
    with GrpcClient(address, admin_key, application=grpc_app.name, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def http_client(grpc_app: Any, admin_key: str) -> Iterator[Client]:
    with Client(grpc_app.base_url, admin_key, timeout=120) as client:
        yield client


def test_generate_same_png_as_http(grpc_client: GrpcClient, http_client: Client, tmp_path: Path) -> None:
    over_grpc = grpc_client.images.generate("a red circle on blue", seed=11, **SMALL)
    over_http = http_client.images.generate("a red circle on blue", seed=11, **SMALL)
    assert isinstance(over_grpc, ImageResults) and len(over_grpc) == 1
    assert over_grpc[0].bytes == over_http[0].bytes and over_grpc[0].bytes.startswith(b"\x89PNG")
    assert (over_grpc[0].seed, over_grpc[0].model) == (over_http[0].seed, over_http[0].model)
    assert over_grpc[0].metadata["seed"] == "11"  # the PNG's text chunks, as over HTTP
    assert over_grpc[0].save(tmp_path / "fox.png").read_bytes() == over_http[0].bytes
    # url results download (without the key) like the HTTP client's.
    urls = grpc_client.images.generate("a red circle on blue", seed=11, response_format="url", **SMALL)
    assert urls[0].url and not urls[0].loaded and urls[0].bytes == over_http[0].bytes
    models = grpc_client.models.list()
    assert [m.id for m in models.data] == [m.id for m in http_client.models.list().data]
    assert models.data[0].sampling is not None and models.data[0].sampling.max_steps > 0


def test_job_streams_events_and_waits(grpc_client: GrpcClient, http_client: Client) -> None:
    handle = grpc_client.jobs.submit("a lighthouse at dusk", seed=3, size="32x32", steps=6)
    assert isinstance(handle, JobHandle) and handle.id.startswith("job_")
    assert handle.job is not None and handle.job.status is JobStatus.queued
    events = list(handle.events(timeout=120))
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    steps = [e.step for e in events if e.type == "progress"]
    assert steps and steps[-1] == 6 and all(e.total == 6 for e in events if e.type == "progress")
    assert events[-1].type == "result" and events[-1].status is JobStatus.succeeded
    assert handle.wait().status is JobStatus.succeeded  # finished: answered from the last event
    images = handle.result()
    assert images.job_id == handle.id and images[0].bytes.startswith(b"\x89PNG")
    # The same job, reattached over HTTP, has the same image.
    assert http_client.jobs.get(handle.id).result()[0].bytes == images[0].bytes
    # A reconnecting events() asks WatchJob for the events after the last seq it saw.
    resumed = list(grpc_client._watch(handle.id, seqs[-2], timeout=30))
    assert [e.seq for e in resumed] == [seqs[-1]]
    assert grpc_client.jobs.get(handle.id).status().status is JobStatus.succeeded


def test_cancel(grpc_client: GrpcClient) -> None:
    handle = grpc_client.jobs.submit("a long one", size="64x64", steps=200, cache="bypass")  # outlasts its cancel
    seen, cancelled_at = [], None
    for event in handle.events(timeout=120):
        seen.append(event)
        # At the first progress event, whatever status events (queue place, ETA) came before it.
        if event.type == "progress" and cancelled_at is None:
            assert handle.cancel().id == handle.id
            cancelled_at = event.step
    assert cancelled_at is not None, [e.type for e in seen]
    assert seen[-1].status is JobStatus.canceled and max(e.step or 0 for e in seen) < 200
    with pytest.raises(JobCanceledError):
        handle.result()


def test_same_errors_as_http(grpc_app: Any, address: str, http_client: Client, grpc_client: GrpcClient) -> None:
    wrong = "hb_000000000000_wrongsecret"
    with GrpcClient(address, wrong, application=grpc_app.name) as bad, pytest.raises(AuthenticationError) as over_grpc:
        bad.images.generate("x", **SMALL)
    with Client(grpc_app.base_url, wrong) as bad_http, pytest.raises(AuthenticationError) as over_http:
        bad_http.images.generate("x", **SMALL)
    assert over_grpc.value.status_code == over_http.value.status_code == 401
    # Refused by the server (the model's size rules), not by the SDK's own checks: same class and param.
    for call in (http_client.images.generate, grpc_client.images.generate):
        with pytest.raises(BadRequestError) as info:
            call("x", size="33x32", steps=4)
        assert info.value.param == "size" and info.value.message
    with pytest.raises(NotFoundError) as unknown:
        grpc_client.images.generate("x", model="nope@v9")
    assert unknown.value.param == "model"
    with pytest.raises(NotFoundError) as job:
        grpc_client.jobs.get("job_" + "0" * 24)
    assert job.value.param == "job_id"


async def test_async_client(grpc_app: Any, address: str, admin_key: str, http_client: Client) -> None:
    async with AsyncGrpcClient(address, admin_key, application=grpc_app.name, timeout=120) as client:
        images = await client.images.generate("a paper boat", seed=5, **SMALL)
        assert images[0].bytes == http_client.images.generate("a paper boat", seed=5, **SMALL)[0].bytes
        handle = await client.jobs.submit("a paper boat", seed=5, size="32x32", steps=4)
        types = [event.type async for event in handle.events(timeout=120)]
        assert types[-1] == "result" and "progress" in types
        assert (await handle.result())[0].bytes.startswith(b"\x89PNG")
        assert (await client.models.list()).data
        with pytest.raises(BadRequestError) as info:
            await client.images.generate("x", size="33x32", steps=4)
        assert info.value.param == "size"


def test_async_client_is_built_anywhere_and_opens_its_channel_in_the_loop_using_it(
    grpc_app: Any, address: str, admin_key: str, http_client: Client
) -> None:
    """As httpx.AsyncClient: built with no event loop running, then used in ``asyncio.run``, and in a
    second ``asyncio.run`` after the first loop ended (a channel per loop); a loop still running
    elsewhere keeps it (a client per loop)."""
    client = AsyncGrpcClient(address, admin_key, application=grpc_app.name, timeout=120)

    async def generate() -> bytes:
        return (await client.images.generate("a paper boat", seed=6, **SMALL))[0].bytes

    async def models() -> int:
        return len((await client.models.list()).data)

    first, second = asyncio.run(generate()), asyncio.run(generate())
    assert first == second == http_client.images.generate("a paper boat", seed=6, **SMALL)[0].bytes
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        assert asyncio.run_coroutine_threadsafe(models(), other).result(timeout=120) > 0
        with pytest.raises(RuntimeError, match="another running event loop"):
            asyncio.run(models())
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(timeout=30)
    assert asyncio.run(models()) > 0  # that loop stopped: this one opens its own channel
    other.close()

    async def close() -> None:
        await client.close()

    asyncio.run(close())
    assert asyncio.run(models()) > 0  # closed: the next use opens a channel again, as before


def test_cli_transport_grpc(grpc_app: Any, address: str, admin_key: str, tmp_path: Path, monkeypatch: Any) -> None:
    # The CLI's client, pointed at this app (one Serve instance serves several in the tests).
    monkeypatch.setenv("HUABU_API_KEY", admin_key)

    def factory(args: Any) -> Any:
        client = sdk_cli.make_client(args)
        assert isinstance(client, GrpcClient)
        client.application = grpc_app.name
        return client

    monkeypatch.setattr(sdk_cli, "client_factory", factory)
    out = tmp_path / "fox.png"
    argv = ["generate", "a red fox", "--seed", "7", "--steps", "4", "--size", "32x32", "-o", str(out)]
    code = sdk_cli.main([*argv, "--transport", "grpc", "--grpc-address", address, "--no-progress"])
    assert code == 0 and out.read_bytes().startswith(b"\x89PNG")
    direct = tmp_path / "direct.png"
    argv[-1] = str(direct)
    assert sdk_cli.main([*argv, "--transport", "grpc", "--grpc-address", address, "--direct"]) == 0
    assert direct.read_bytes() == out.read_bytes()
    edited = tmp_path / "edited.png"
    edit = ["edit", str(out), "a scarf", "--rect", "8,8,24,24", "--steps", "4", "--seed", "3", "-o", str(edited)]
    assert sdk_cli.main([*edit, "--transport", "grpc", "--grpc-address", address, "--no-progress"]) == 0
    assert Image.open(edited).size == (32, 32)


def test_edit_and_outpaint_same_png_as_http(grpc_client: GrpcClient, http_client: Client) -> None:
    base = http_client.images.generate("a green square on white", seed=2, **SMALL)[0].bytes
    mask = masks.rectangle(base, (8, 8, 24, 24))
    edit = {"mask": mask, "seed": 4, **SMALL}
    over_grpc = grpc_client.images.edit(base, "a blue circle", **edit)[0].bytes
    assert over_grpc == http_client.images.edit(base, "a blue circle", **edit)[0].bytes
    outpaint = {"right": 16, "bottom": 8, "seed": 4, "steps": 4, "cache": "bypass"}
    grown = grpc_client.images.outpaint(base, "more of the same", **outpaint)[0].bytes
    assert Image.open(io.BytesIO(grown)).size == (48, 40)
    assert grown == http_client.images.outpaint(base, "more of the same", **outpaint)[0].bytes
    # The job kinds: the same images as the direct calls.
    job_edit = grpc_client.jobs.submit_edit(base, "a blue circle", **edit).result()[0].bytes
    job_outpaint = grpc_client.jobs.submit_outpaint(base, "more of the same", **outpaint).result()[0].bytes
    assert (job_edit, job_outpaint) == (over_grpc, grown)
    # A mask of the wrong size is the server's 400 naming the mask, over either transport.
    for call in (grpc_client.images.edit, http_client.images.edit):
        with pytest.raises(BadRequestError) as info:
            call(base, "x", mask=masks.rectangle((16, 16), (0, 0, 8, 8)), steps=4)
        assert info.value.param == "mask"

"""Job handles: SSE parsing, event following with reconnects, wait/result/cancel, WebSocket transport."""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fake_server import FakeServer
from sdk_fakes import FakeClock, fake_async_client

import huabu.sdk as hs
from huabu.sdk._sse import SSEDecoder
from huabu.sdk.types import Job, JobEvent, JobStatus

# --- SSE decoding ------------------------------------------------------------------------------


def _decode(text: str) -> list[tuple[str, str, str | None]]:
    decoder = SSEDecoder()
    out = []
    for line in text.splitlines():
        event = decoder.feed(line)
        if event is not None:
            out.append((event.event, event.data, event.id))
    tail = decoder.flush()
    if tail is not None:
        out.append((tail.event, tail.data, tail.id))
    return out


def test_sse_decoder() -> None:
    stream = (
        ': keep-alive\n\nid: 1\nevent: progress\ndata: {"a":\ndata: 1}\n\ndata:plain\r\n\r\nretry: 10\n\ndata: last'
    )
    assert _decode(stream) == [("progress", '{"a":\n1}', "1"), ("message", "plain", None), ("message", "last", None)]
    decoder = SSEDecoder()
    for line in ("id: 7", "data: x", ""):
        decoder.feed(line)
    assert decoder.last_event_id == "7"


# --- following events --------------------------------------------------------------------------


def _events(job_id: str, statuses: list[tuple[str, str, int]], total: int = 3) -> list[JobEvent]:
    return [
        JobEvent(type=t, job_id=job_id, seq=i, status=s, step=step, total=total)
        for i, (t, s, step) in enumerate(statuses)
    ]


def _sse(events: list[JobEvent]) -> str:
    return "".join(f"id: {e.seq}\ndata: {e.model_dump_json()}\n\n" for e in events)


class _BrokenStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Sends some bytes, then the connection dies."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection reset")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection reset")


def _job(job_id: str, status: str, **extra: object) -> dict[str, object]:
    job = Job(id=job_id, status=status, kind="generate", created_at=1, updated_at=1, **extra)
    return json.loads(job.model_dump_json())


def _scripted(clock: FakeClock, responses: dict[str, list[httpx.Response]], seen: list[httpx.Request]) -> hs.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses[request.url.path].pop(0)

    client = hs.Client("http://api.test", http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    client._clock = clock
    client._sleep = clock.sleep
    return client


def test_events_resume_after_a_dropped_stream_without_duplicates(clock: FakeClock) -> None:
    evs = _events(
        "j1",
        [("status", "running", 0), ("progress", "running", 1), ("progress", "running", 2), ("progress", "running", 3)],
    )
    final = JobEvent(type="status", job_id="j1", seq=4, status=JobStatus.succeeded, step=3, total=3)
    seen: list[httpx.Request] = []
    client = _scripted(
        clock,
        {
            "/v1/jobs/j1/events": [
                httpx.Response(200, stream=_BrokenStream(_sse(evs[:3]).encode())),
                httpx.Response(200, text=_sse([*evs[1:], final])),  # the server replays a little: deduped
            ]
        },
        seen,
    )
    handle = hs.JobHandle(client, "j1")
    got = list(handle.events())
    assert [e.seq for e in got] == [0, 1, 2, 3, 4] and got[-1].is_terminal
    assert seen[0].headers["accept"] == "text/event-stream" and "last-event-id" not in seen[0].headers
    assert seen[1].headers["last-event-id"] == "2"
    assert len(clock.sleeps) == 1  # one backoff before reconnecting


def test_stream_closing_early_falls_back_to_the_job_state(clock: FakeClock) -> None:
    seen: list[httpx.Request] = []
    client = _scripted(
        clock,
        {
            "/v1/jobs/j2/events": [httpx.Response(200, text=_sse(_events("j2", [("progress", "running", 1)])))],
            "/v1/jobs/j2": [
                httpx.Response(200, json=_job("j2", "failed", error={"message": "oom", "type": "server_error"}))
            ],
        },
        seen,
    )
    handle = hs.JobHandle(client, "j2")
    got = list(handle.events())
    assert [e.type for e in got] == ["progress", "error"] and got[-1].seq == 1
    with pytest.raises(hs.InternalServerError, match="oom") as info:
        handle.result()
    assert info.value.job_id == "j2"


def test_wait_timeout_leaves_the_job_running(clock: FakeClock) -> None:
    never_done = [httpx.Response(200, text=": ping\n\n") for _ in range(20)]
    running = [httpx.Response(200, json=_job("j3", "running")) for _ in range(20)]
    client = _scripted(clock, {"/v1/jobs/j3/events": never_done, "/v1/jobs/j3": running}, [])
    with pytest.raises(hs.JobTimeoutError) as info:
        hs.JobHandle(client, "j3").wait(timeout=1.0)
    assert info.value.job_id == "j3" and isinstance(info.value, TimeoutError)
    assert sum(clock.sleeps) == pytest.approx(1.0)  # backoff clipped to the deadline, never beyond


def test_wait_by_polling(clock: FakeClock) -> None:
    states = [_job("j4", "queued"), _job("j4", "running"), _job("j4", "canceled")]
    client = _scripted(clock, {"/v1/jobs/j4": [httpx.Response(200, json=s) for s in states]}, [])
    handle = hs.JobHandle(client, "j4")
    assert handle.wait(poll_interval=0.5).status is JobStatus.canceled
    assert clock.sleeps == [0.5, 0.5]
    with pytest.raises(hs.JobCanceledError):
        handle.result()


def test_job_lifecycle_against_the_fake(client: hs.Client, server: FakeServer) -> None:
    handle = client.jobs.submit("a lighthouse", steps=3, seed=9)
    assert handle.job is not None and handle.job.status is JobStatus.queued and handle.request_id
    seen: list[JobEvent] = []
    job = handle.wait(on_event=seen.append)
    assert job.status is JobStatus.succeeded
    assert [e.step for e in seen if e.type == "progress"] == [1, 2, 3]
    assert [e.seq for e in seen] == sorted({e.seq for e in seen})
    images = handle.result()
    assert images.job_id == handle.id and images[0].seed == 9
    again = client.jobs.get(handle.id)  # reattach
    assert again.result()[0].bytes == images[0].bytes
    assert list(again.events())[-1].type == "result"


def test_failed_and_canceled_jobs(client: hs.Client) -> None:
    with pytest.raises(hs.ContentPolicyViolationError) as info:
        client.jobs.submit("forbidden thing").result()
    assert info.value.category == "test" and info.value.job_id
    handle = client.jobs.submit("x")
    assert handle.cancel().status is JobStatus.canceled
    with pytest.raises(hs.JobCanceledError):
        handle.result()
    assert client.jobs.cancel(handle.id).status is JobStatus.canceled
    with pytest.raises(hs.NotFoundError):
        client.jobs.get("job_missing")


def test_edit_and_outpaint_jobs(client: hs.Client) -> None:
    from huabu.sdk import masks

    base = client.images.generate("p", size="16x16")[0].bytes
    edited = client.jobs.submit_edit(base, "q", mask=masks.ellipse((16, 16), (2, 2, 10, 10))).result()
    assert edited[0].metadata["op"] == "edit"
    wide = client.jobs.submit_outpaint(base, "r", **masks.extend("horizontal", 8).as_kwargs()).result()
    assert wide[0].image.size == (32, 16)


async def test_async_job_handle(server: FakeServer, clock: FakeClock) -> None:
    aclient = fake_async_client(server, clock)
    handle = await aclient.jobs.submit("a fox", steps=2)
    types = [e.type async for e in handle.events()]
    assert types == ["status", "progress", "progress", "result"]
    images = await handle.result()
    assert images[0].image.size == (32, 32)
    with pytest.raises(hs.ContentPolicyViolationError):
        await (await aclient.jobs.submit("forbidden")).result()
    polled = await (await aclient.jobs.get(handle.id)).wait(poll_interval=0.1)
    assert polled.status is JobStatus.succeeded
    await aclient.close()


# --- WebSocket ----------------------------------------------------------------------------------


@pytest.fixture
def ws_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    importlib.import_module("websockets")
    from websockets.sync.server import serve

    headers_seen: list[dict[str, str]] = []
    events = _events("jw", [("status", "running", 0), ("progress", "running", 1)])
    events.append(JobEvent(type="result", job_id="jw", seq=2, status=JobStatus.succeeded, step=1, total=1))

    def handler(ws) -> None:
        headers_seen.append(dict(ws.request.headers))
        assert ws.request.path == "/v1/jobs/jw/ws"
        for event in events:
            ws.send(event.model_dump_json())

    with serve(handler, "127.0.0.1", 0) as srv:
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        port = srv.socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}", headers_seen
        srv.shutdown()
        thread.join(5)


def test_events_over_websocket(ws_server: tuple[str, list[dict[str, str]]]) -> None:
    url, headers = ws_server
    with hs.Client(url, api_key="sk-ws", timeout=10) as client:
        got = list(hs.JobHandle(client, "jw").events(transport="ws"))
    assert [e.type for e in got] == ["status", "progress", "result"]
    assert {k.lower(): v for k, v in headers[0].items()}["authorization"] == "Bearer sk-ws"


async def test_async_events_over_websocket(ws_server: tuple[str, list[dict[str, str]]]) -> None:
    url, _ = ws_server
    async with hs.AsyncClient(url, timeout=10) as client:
        got = [e.seq async for e in hs.AsyncJobHandle(client, "jw").events(transport="ws")]
    assert got == [0, 1, 2]


def test_unknown_transport(client: hs.Client) -> None:
    with pytest.raises(ValueError, match="transport"):
        next(hs.JobHandle(client, "x").events(transport="carrier-pigeon"))

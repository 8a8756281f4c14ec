"""Issue #25, holes 1 and 7, against the deployed gateway: a client-chosen X-Request-Id must not
let concurrent requests share one concurrency slot, and odd bytes (deep nesting, invalid UTF-8,
non-finite or 5,000-digit numbers, odd Last-Event-ID values, ids that are not ids) must be a 4xx
with the API's error body, never a 5xx, on every JSON route, and the gateway keeps serving."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from security_helpers import bearer

from huabu.deployments.gateway.auth import new_key
from huabu.deployments.gateway.jobs import new_job_id
from huabu.deployments.gateway.security import path_id_problem

pytestmark = pytest.mark.serve

# Every route that reads a JSON body (the edits route reads multipart: its own test below). None
# of the bodies below is valid, so none can start or change a rollout.
JSON_ROUTES = (
    "/v1/images/generations",
    "/v1/images/outpaint",
    "/v1/jobs",
    "/v1/admin/keys",
    "/v1/feedback",
    "/v1/admin/rollouts",
    "/v1/admin/rollouts/r-1/pause",
)
DEEP = 100_000
HOSTILE_BODIES: dict[str, tuple[bytes, str]] = {  # name: (body, a word the message must contain)
    "deeply nested arrays": (b"[" * DEEP + b"]" * DEEP, "nest"),
    "deeply nested objects": (b'{"a":' * DEEP + b"1" + b"}" * DEEP, "nest"),
    "nesting the parser survives": (b'{"prompt": ' + b"[" * 500 + b"]" * 500 + b"}", "nest"),
    "invalid UTF-8": (b'{"prompt": "caf\xe9 \xff"}', "UTF-8"),
    "truncated UTF-8": (b'{"prompt": "\xe6\x97"}', "UTF-8"),
    "UTF-16": ('{"prompt": "x"}'.encode("utf-16"), "UTF-8"),
    "lone surrogate": (b'{"prompt": "\\ud800 x"}', "surrogate"),
    "5,000-digit integer": (b'{"n": ' + b"9" * 5000 + b"}", "digits"),
    "NaN": (b'{"prompt": "x", "guidance_scale": NaN}', "NaN"),
    "overflowing float": (b'{"prompt": "x", "guidance_scale": 1e999}', "finite"),
    "not JSON": (b"{prompt: x}", "JSON"),
}


def assert_api_error(r: httpx.Response, status: int, word: str = "") -> dict[str, Any]:
    assert r.status_code == status, f"{r.status_code}: {r.text[:300]}"
    error: dict[str, Any] = r.json()["error"]
    assert error["message"] and error["type"], error
    assert word.lower() in error["message"].lower(), error
    return error


@pytest.fixture(scope="module")
def key(make_key) -> str:
    return str(make_key()["key"])


# --- hole 1: concurrency slots ------------------------------------------------------------------


def test_one_request_id_does_not_share_a_concurrency_slot(secure_app, make_key) -> None:
    """Requests that all send one X-Request-Id each take their own slot: with max_concurrent 1,
    the others are 429 while the first runs, and every answer echoes the client's id."""
    limited = make_key(max_concurrent=1)["key"]
    headers = {**bearer(limited), "X-Request-Id": "one-id-for-all"}
    slow = {"prompt": "a slow blue square", "size": "128x128", "steps": 100, "cache": "bypass"}
    bad = {"prompt": "x", "size": "33x32"}  # admitted or not, it never reaches the model
    with secure_app.client() as c, ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        first = pool.submit(c.post, "/v1/images/generations", json=slow, headers=headers)
        time.sleep(0.3)  # let the first take its slot before anything else asks for one
        others = []
        while not first.done() and len(others) < 3:
            r = c.post("/v1/images/generations", json=bad, headers=headers)
            if r.status_code == 429 or not first.done():
                others.append(r)
        first_answer = first.result()
    print(f"the first request took {time.monotonic() - started:.2f} s")
    assert first_answer.status_code == 200, first_answer.text
    assert others, "the first request finished before any other was sent; make it slower"
    for r in others:
        error = assert_api_error(r, 429, "in flight")
        assert error["code"] == "concurrency_limit_exceeded"
    for r in (first_answer, *others):
        assert r.headers["x-request-id"] == "one-id-for-all"
    with secure_app.client() as c:  # the first freed its slot as it finished
        r = c.post("/v1/images/generations", json={**slow, "size": "32x32", "n": 1, "steps": 1}, headers=headers)
        assert r.status_code == 200, r.text


# --- hole 7: odd bytes ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_hostile_json_bodies_are_400(secure_app, admin_key, path: str) -> None:
    with secure_app.client() as c:
        for name, (body, word) in HOSTILE_BODIES.items():
            r = c.post(path, content=body, headers={**bearer(admin_key), "content-type": "application/json"})
            try:
                error = assert_api_error(r, 400, word)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from None
            assert error["type"] == "invalid_request_error"
        assert c.get("/v1/models", headers=bearer(admin_key)).status_code == 200


def test_multipart_edits_with_odd_bytes_are_4xx(secure_app, key) -> None:
    with secure_app.client() as c:
        for fields in (
            {"prompt": b"caf\xe9 \xff"},
            {"prompt": b"x", "n": b"9" * 5000},
            {"prompt": b"x", "size": b"\xff"},
        ):
            r = c.post(
                "/v1/images/edits",
                files={
                    "image": ("a.png", b"\x89PNG\r\n\x1a\n\xff\xfe", "image/png"),
                    **{k: (None, v) for k, v in fields.items()},
                },
                headers=bearer(key),
            )
            assert 400 <= r.status_code < 500 and r.json()["error"]["message"], r.text


def test_last_event_id_must_be_a_decimal_event_id(secure_app, key) -> None:
    from websockets.sync.client import connect

    with secure_app.client() as c:
        job = c.post(
            "/v1/jobs", json={"kind": "generate", "prompt": "x", "size": "32x32", "steps": 1}, headers=bearer(key)
        )
        job_id = job.json()["id"]
        ws_url = secure_app.base_url.replace("http://", "ws://") + f"/v1/jobs/{job_id}/ws"
        for last in ("²", "٣", "9" * 5000, "-1", "1.5", "0x1"):
            r = c.get(f"/v1/jobs/{job_id}/events", headers={**bearer(key), "Last-Event-ID": last.encode()})
            assert_api_error(r, 400, "Last-Event-ID")
            if last.isascii():  # a WebSocket handshake carries ASCII headers
                with connect(ws_url, open_timeout=30, additional_headers={**bearer(key), "Last-Event-ID": last}) as ws:
                    assert "Last-Event-ID" in str(ws.recv(timeout=30))
        # A valid id still resumes after that event.
        r = c.get(f"/v1/jobs/{job_id}/events", headers={**bearer(key), "Last-Event-ID": "0"}, timeout=60)
        assert r.status_code == 200 and "id: 0\n" not in r.text and "event: result" in r.text


def job_id_probes(job_id: str) -> list[str]:
    """Path segments that are not job ids, some naming another record of a real job."""
    return [f"{job_id}:events", f"{job_id}:request", "job_nope", "%ff%fe", "x" * 4000, job_id.upper()]


def assert_job_ids_are_404(app: Any, headers: dict[str, str]) -> None:
    from websockets.sync.client import connect

    with app.client() as c:
        job = c.post("/v1/jobs", json={"kind": "generate", "prompt": "x", "size": "32x32", "steps": 1}, headers=headers)
        assert job.status_code == 202, job.text
        for probe in [*job_id_probes(job.json()["id"]), "job_" + "0" * 24]:
            for method, suffix in (("GET", ""), ("GET", "/events"), ("DELETE", "")):
                assert_api_error(c.request(method, f"/v1/jobs/{probe}{suffix}", headers=headers), 404, "no job")
            ws_url = app.base_url.replace("http://", "ws://") + f"/v1/jobs/{probe}/ws"
            with connect(ws_url, open_timeout=30, additional_headers=headers) as ws:
                assert "not_found_error" in str(ws.recv(timeout=30))
        assert c.get(f"/v1/jobs/{job.json()['id']}", headers=headers).status_code == 200


def test_ids_that_are_not_ids_are_404(secure_app, admin_key, key) -> None:
    assert_job_ids_are_404(secure_app, bearer(key))
    with secure_app.client() as c:
        for probe in ("%ff", "a b", "-leading-dash", "x" * 300, "..%2f.."):
            for method, path in (
                ("GET", f"/v1/admin/rollouts/{probe}"),
                ("POST", f"/v1/admin/rollouts/{probe}/pause"),
                ("GET", f"/v1/admin/keys/{probe}"),
                ("DELETE", f"/v1/admin/keys/{probe}"),
            ):
                r = c.request(method, path, headers=bearer(admin_key))
                assert 400 <= r.status_code < 500 and r.json()["error"]["message"], f"{method} {path}: {r.text}"
        assert c.get("/healthz").status_code == 200


def test_job_ids_never_reach_the_redis_store(deploy_app, redis_url: str) -> None:
    """On Redis, job:<id>:events is a list: GET /v1/jobs/<id>:events was a WRONGTYPE 500."""
    app = deploy_app(lifetime="test", state={"backend": "redis", "redis_url": redis_url}, cache={"enabled": False})
    assert_job_ids_are_404(app, {})


def test_id_patterns_match_the_ids_issued() -> None:
    """The edge knows ids by their form: it must accept every id the issuers make."""
    assert all(path_id_problem(f"/v1/jobs/{new_job_id()}") is None for _ in range(100))
    assert all(path_id_problem(f"/v1/admin/keys/{new_key()[0]}") is None for _ in range(100))
    assert path_id_problem("/v1/admin/rollouts/active/pause") is None
    for probe in job_id_probes(new_job_id()):
        assert path_id_problem(f"/v1/jobs/{probe}") is not None, probe

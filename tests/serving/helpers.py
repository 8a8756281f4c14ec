"""Small helpers for the serving tests: PNG round trips, waiting on jobs and on canary rollouts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
from PIL import Image

from huabu.sdk import webhooks


def png_bytes(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def first_image(response: httpx.Response) -> bytes:
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120.0, until: tuple[str, ...] = ()) -> dict:
    """Poll a job until it is terminal (or reaches one of ``until``); tolerate a gateway that is
    being replaced (connection errors and 5xx while no replica is up)."""
    terminal = until or ("succeeded", "failed", "canceled")
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = client.get(f"/v1/jobs/{job_id}")
            last = r.text
            if r.status_code == 200 and r.json()["status"] in terminal:
                return r.json()
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} not done: {last}")


def sse_events(client: httpx.Client, job_id: str) -> list[dict]:
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


# --- canary rollouts ---------------------------------------------------------------------------

AB = {"refresh_interval_s": 0.2, "flush_interval_s": 0.3, "controller_interval_s": 0.5, "controller_lease_s": 2}
LIGHT = {"safety": {"prompt_enabled": False, "image": {"enabled": False}}, "cache": {"enabled": False}}
# Small samples and no minimum time, so a rollout finishes in seconds; latency is not compared
# (the two checkpoints differ in size).
FAST_POLICY: dict[str, Any] = {
    "steps": [20, 50, 100],
    "min_samples_per_step": 8,
    "min_step_seconds": 0,
    "evidence_from_percent": 100,
    "error_rate": {"margin": 0.1, "min_samples": 8},
    "quality": {"margin": 0.05, "min_samples": 5},
    "filter_block_rate": {"margin": 0.1, "min_samples": 8},
    "latency": {"enabled": False},
    "srm_min_samples": 1000,
    "planned_samples": 50,  # tightest intervals around 50 per arm
}


def wait_rollout(
    client: httpx.Client,
    rollout_id: str,
    statuses: tuple[str, ...],
    timeout: float = 180.0,
    until: Callable[[dict], bool] = lambda info: True,
) -> dict:
    deadline = time.monotonic() + timeout
    info: dict = {}
    while time.monotonic() < deadline:
        try:
            r = client.get(f"/v1/admin/rollouts/{rollout_id}")
        except httpx.HTTPError:  # a gateway being replaced
            r = None
        if r is not None and r.status_code == 200:
            info = r.json()
            if info["status"] in statuses and until(info):
                return info
        time.sleep(0.3)
    raise TimeoutError(f"rollout still {info.get('status')}: {info.get('last_decision')}")


class MemoryKV:
    """The embedded store's semantics (``_MemoryState``) behind the async ``KeyValueStore``
    interface, in-process: job store and runner tests without a Ray actor."""

    def __init__(self) -> None:
        from huabu.deployments.core.state import _MemoryState

        self.state = _MemoryState()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.state, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


# --- a webhook receiver -------------------------------------------------------------------------


def independent_verify(body: bytes, headers: dict[str, str], secret: str) -> bool:
    """The specification's signature, written from its text: base64(HMAC-SHA256(base64decode(secret
    after 'whsec_'), f'{id}.{timestamp}.{body}')), any of the space-separated 'v1,<sig>' entries."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = headers["webhook-id"].encode() + b"." + headers["webhook-timestamp"].encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(part.split(",", 1) == ["v1", expected] for part in headers["webhook-signature"].split(" "))


class Receiver:
    """Answers 500 to the first ``fail_first`` deliveries, then 204 to those that verify (401 otherwise)."""

    def __init__(self, secret: str, fail_first: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.attempts: list[tuple[dict[str, str], bytes, int]] = []  # (headers, body, answered status)
        self.accepted: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    if len(receiver.attempts) < receiver.fail_first:
                        status = 500
                    else:
                        try:
                            event = webhooks.verify(body, headers, receiver.secret)
                            ok = independent_verify(body, headers, receiver.secret)
                        except webhooks.WebhookVerificationError:
                            ok = False
                        status = 204 if ok else 401
                        seen = {a[0]["webhook-id"] for a in receiver.attempts if a[2] == 204}
                        if ok and headers["webhook-id"] not in seen:  # de-duplicated by webhook-id, as the spec asks
                            receiver.accepted.append(event)
                    receiver.attempts.append((headers, body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, predicate: Callable[[], object], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"receiver saw {[a[2] for a in self.attempts]}"
            time.sleep(0.05)

    def succeeded(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The accepted ``job.succeeded`` event of ``job_id``, once it arrives."""

        def done() -> list[dict[str, Any]]:
            return [e for e in self.accepted if e["type"] == "job.succeeded" and e["data"]["id"] == job_id]

        self.wait(done, timeout)
        return done()[0]

"""Small helpers for the serving tests: PNG round trips and waiting on jobs."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
from PIL import Image


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

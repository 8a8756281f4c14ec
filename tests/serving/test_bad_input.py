"""Bad input never reaches the model: every case gets a 4xx with the OpenAI error body."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import numpy as np
import pytest
from helpers import png_bytes

pytestmark = pytest.mark.serve

GOOD_PNG = png_bytes(np.zeros((32, 32, 3), dtype=np.uint8))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring 10^10 pixels, with a tiny compressed payload."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Each message names the parameter and says what is allowed, in the API's words (sdk/validation.py).
GENERATION_CASES = [
    ({"prompt": "x", "size": "33x32"}, 400, "size", "width must be a positive multiple of 8 pixels, got 33"),
    ({"prompt": "x", "size": "big"}, 400, "size", "size must look like '512x512' (WIDTHxHEIGHT in pixels)"),
    ({"prompt": "x", "size": "4096x4096"}, 400, "size", "height 4096 is larger than 512 pixels"),
    ({"prompt": "x", "steps": 0}, 400, "steps", "steps must be >= 1 (got 0)"),
    ({"prompt": "x", "steps": 5000}, 400, "steps", "steps must be <= 200 (got 5000)"),
    ({"prompt": "x", "steps": "many"}, 400, "steps", "steps must be an integer (got 'many')"),
    ({"prompt": "x", "guidance_scale": -1}, 400, "guidance_scale", "guidance_scale must be >= 0"),
    ({"prompt": "x", "guidance_scale": 1e9}, 400, "guidance_scale", "guidance_scale must be <= 30"),
    ({"prompt": ""}, 400, "prompt", "prompt must not be empty"),
    ({"prompt": "   "}, 400, "prompt", "prompt must not be empty"),
    ({"prompt": "x" * 5000}, 400, "prompt", "prompt must have at most 4000 characters (got 5000)"),
    ({"prompt": "x", "n": 9}, 400, "n", "n must be <= 4 (got 9)"),
    ({"prompt": "x", "seed": -3}, 400, "seed", "seed must be >= 0 (got -3)"),
    ({"prompt": "x", "stpes": 3}, 400, "stpes", "unknown parameter 'stpes'"),
    ({"prompt": "x", "model": "dall-e-3"}, 404, "model", "model 'dall-e-3' is not served here; available:"),
    ({"prompt": "x", "response_format": "gif"}, 400, "response_format", "must be one of 'b64_json', 'url' (got 'gif')"),
    ({"prompt": "x", "cache": "sometimes"}, 400, "cache", "cache must be one of 'use', 'bypass', 'refresh'"),
    ({"size": "32x32"}, 400, "prompt", "prompt is required"),
]

JOB_CASES = [
    ({"prompt": "x"}, "kind", "kind is required: one of 'generate', 'edit', 'outpaint'"),
    ({"kind": "paint", "prompt": "x"}, "kind", "kind must be one of 'generate', 'edit', 'outpaint' (got 'paint')"),
    ({"kind": "generate", "prompt": "x", "steps": -1}, "steps", "steps must be >= 1 (got -1)"),
    ({"kind": "edit", "prompt": "x"}, "image", "image is required"),
    ({"kind": "generate"}, "prompt", "prompt is required"),
]


@pytest.mark.parametrize(("body", "param", "message"), JOB_CASES)
def test_jobs_reject_in_the_apis_words(app, body: dict, param: str, message: str) -> None:
    with app.client() as c:
        r = c.post("/v1/jobs", json=body)
    error = r.json()["error"]
    assert r.status_code == 400 and error["type"] == "invalid_request_error", r.text
    assert error["param"] == param and message in error["message"], error
    assert "Input should" not in error["message"] and "Field required" not in error["message"]
    assert "discriminator" not in error["message"] and "Input should" not in error["message"]


@pytest.mark.parametrize(("body", "status", "param", "message"), GENERATION_CASES)
def test_generation_rejects(app, body: dict, status: int, param: str, message: str) -> None:
    with app.client() as c:
        r = c.post("/v1/images/generations", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and message in error["message"], error
    assert error["type"] in ("invalid_request_error", "not_found_error")
    assert r.headers["x-request-id"]


def test_nan_guidance_and_malformed_json(app) -> None:
    with app.client() as c:
        nan = c.post(
            "/v1/images/generations",
            content=b'{"prompt": "x", "guidance_scale": NaN}',
            headers={"content-type": "application/json"},
        )
        broken = c.post("/v1/images/generations", content=b'{"prompt": ', headers={"content-type": "application/json"})
        wrong_type = c.post(
            "/v1/images/generations", content=b"prompt=x", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        not_object = c.post("/v1/images/generations", json=["prompt"])
    assert nan.status_code == 400 and nan.json()["error"]["param"] == "guidance_scale"
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    assert wrong_type.status_code == 415 and "application/json" in wrong_type.json()["error"]["message"]
    assert not_object.status_code == 400


def edit(app, files: dict, data: dict | None = None):
    with app.client() as c:
        return c.post("/v1/images/edits", data={"prompt": "red", "steps": "2", **(data or {})}, files=files)


@pytest.mark.parametrize(
    ("files", "param", "message"),
    [
        ({"image": ("a.png", b"not an image at all")}, "image", "not a readable image"),
        ({"image": ("a.png", GOOD_PNG[: len(GOOD_PNG) // 2])}, "image", "not a readable image"),
        ({"image": ("a.png", bomb_png())}, "image", "pixels"),
        ({"image": ("a.png", b"")}, "image", "empty"),
        (
            {"image": ("a.png", GOOD_PNG), "mask": ("m.png", png_bytes(np.zeros((16, 32), np.uint8), "L"))},
            "mask",
            "same size",
        ),
        (
            {"image": ("a.png", GOOD_PNG), "mask": ("m.png", png_bytes(np.zeros((32, 32), np.uint8), "L"))},
            "mask",
            "no pixels",
        ),
        ({"mask": ("m.png", GOOD_PNG)}, "image", "multipart file 'image'"),
    ],
)
def test_edits_reject(app, files: dict, param: str, message: str) -> None:
    r = edit(app, files)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and message in r.json()["error"]["message"]


def test_edit_size_mismatch_and_bad_form_and_wrong_content_type(app) -> None:
    assert edit(app, {"image": ("a.png", GOOD_PNG)}, {"size": "64x64"}).json()["error"]["param"] == "size"
    with app.client() as c:
        garbage = c.post(
            "/v1/images/edits",
            content=b"--xyz\r\nnonsense",
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        )
        as_json = c.post("/v1/images/edits", json={"prompt": "x"})
    assert garbage.status_code == 400
    assert as_json.status_code == 415


def test_outpaint_rejects(app) -> None:
    with app.client() as c:
        none = c.post("/v1/images/outpaint", json={"prompt": "x", "image": b64(GOOD_PNG)})
        not_b64 = c.post("/v1/images/outpaint", json={"prompt": "x", "image": "%%%", "right": 8})
        corrupt = c.post("/v1/images/outpaint", json={"prompt": "x", "image": b64(b"junk"), "right": 8})
        odd = c.post("/v1/images/outpaint", json={"prompt": "x", "image": b64(GOOD_PNG), "right": 3})
    assert none.status_code == 400 and "at least one" in none.json()["error"]["message"]
    assert not_b64.status_code == 400 and not_b64.json()["error"]["param"] == "image"
    assert corrupt.status_code == 400 and corrupt.json()["error"]["param"] == "image"
    assert odd.status_code == 400 and odd.json()["error"]["param"] == "size"


def test_jobs_reject_unknown_ids_and_bad_requests(app) -> None:
    with app.client() as c:
        for method, path in (
            ("GET", "/v1/jobs/job_nope"),
            ("DELETE", "/v1/jobs/job_nope"),
            ("GET", "/v1/jobs/job_nope/events"),
        ):
            r = c.request(method, path)
            assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        bad_kind = c.post("/v1/jobs", json={"kind": "paint", "prompt": "x"})
        bad_size = c.post("/v1/jobs", json={"kind": "generate", "prompt": "x", "size": "30x30"})
        assert c.get("/v1/jobs").status_code in (404, 405)
    assert bad_kind.status_code == 400
    assert bad_size.status_code == 400 and bad_size.json()["error"]["param"] == "size"


def test_oversized_body_is_413(app) -> None:
    big = json.dumps({"prompt": "x", "image": "A" * (17 * 1024 * 1024), "right": 8}).encode()
    with app.client() as c:
        r = c.post("/v1/images/outpaint", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

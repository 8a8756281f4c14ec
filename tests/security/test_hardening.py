"""Hostile input against the gateway with keys on: body, multipart and pixel limits (413, 400 for
decompression bombs), strict content types (415), Idempotency-Key reuse (422), security
headers and CORS, signed file URLs that expire and cannot be forged, secrets redacted in logs."""

from __future__ import annotations

import io
import logging
import struct
import time
import zlib
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from PIL import Image
from security_helpers import ALLOWED_ORIGIN, bearer

from huabu.deployments.core.storage import UrlSigner
from huabu.deployments.gateway.security import RedactSecrets, redact

pytestmark = pytest.mark.serve


def png(width: int = 32, height: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def bomb_png(side: int = 60_000) -> bytes:
    """A valid PNG header declaring side*side pixels with a tiny compressed payload."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def key(make_key) -> str:
    return str(make_key()["key"])


def test_body_limits_are_413(secure_app, key) -> None:
    limit = secure_app.settings.gateway.max_request_bytes
    big = b'{"prompt": "' + b"x" * (limit + 10) + b'"}'

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)]

    with secure_app.client() as c:
        declared = c.post(
            "/v1/images/generations", content=big, headers={**bearer(key), "content-type": "application/json"}
        )
        streamed = c.post(
            "/v1/images/generations", content=chunked(), headers={**bearer(key), "content-type": "application/json"}
        )
        multipart = c.post(
            "/v1/images/edits",
            files={"image": ("a.png", b"\x89PNG" + b"\0" * (limit + 10), "image/png")},
            data={"prompt": "x"},
            headers=bearer(key),
        )
    for r in (declared, streamed, multipart):
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text


def test_decompression_bombs_and_pixel_limits_are_400(secure_app, key) -> None:
    huge = png(4100, 4100)  # real pixels above the 4096*4096 default limit
    with secure_app.client() as c:
        for image in (bomb_png(), huge):
            r = c.post(
                "/v1/images/edits",
                files={"image": ("b.png", image, "image/png")},
                data={"prompt": "x"},
                headers=bearer(key),
            )
            assert r.status_code == 400 and r.json()["error"]["param"] == "image", r.text
            assert "pixels" in r.json()["error"]["message"]
        r = c.post(
            "/v1/images/edits",
            files={"image": ("a.png", png(), "image/png"), "mask": ("m.png", bomb_png(), "image/png")},
            data={"prompt": "x"},
            headers=bearer(key),
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "mask"


@pytest.mark.parametrize(
    ("path", "content_type", "expected"),
    [
        ("/v1/images/generations", "application/x-www-form-urlencoded", "application/json"),
        ("/v1/images/generations", "text/plain", "application/json"),
        ("/v1/jobs", "multipart/form-data; boundary=x", "application/json"),
        ("/v1/admin/keys", "application/xml", "application/json"),
        ("/v1/images/edits", "application/json", "multipart/form-data"),
    ],
)
def test_wrong_content_type_is_415(secure_app, admin_key, path: str, content_type: str, expected: str) -> None:
    with secure_app.client() as c:
        r = c.post(path, content=b'{"prompt": "x"}', headers={**bearer(admin_key), "content-type": content_type})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", r.text
    assert expected in r.json()["error"]["message"]


def test_idempotency_key_reuse_with_another_body_is_422(secure_app, make_key) -> None:
    alice, bob = make_key()["key"], make_key()["key"]
    job = {"kind": "generate", "prompt": "a red circle", "size": "32x32", "steps": 1}
    with secure_app.client() as c:
        first = c.post("/v1/jobs", json=job, headers={**bearer(alice), "Idempotency-Key": "order-1"})
        again = c.post("/v1/jobs", json=job, headers={**bearer(alice), "Idempotency-Key": "order-1"})
        other = c.post(
            "/v1/jobs", json={**job, "prompt": "a blue square"}, headers={**bearer(alice), "Idempotency-Key": "order-1"}
        )
        # Idempotency keys are per API key: Bob's "order-1" is his own job.
        bobs = c.post("/v1/jobs", json=job, headers={**bearer(bob), "Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    assert other.status_code == 422, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert bobs.status_code == 202 and bobs.json()["id"] != first.json()["id"]


def test_security_headers_and_cors(secure_app, key) -> None:
    with secure_app.client() as c:
        for r in (c.get("/v1/models", headers=bearer(key)), c.get("/v1/models"), c.get("/healthz")):
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"
            assert "default-src 'none'" in r.headers["content-security-policy"]
        assert c.get("/v1/models", headers=bearer(key)).headers["cache-control"] == "no-store"
        preflight = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}
        allowed = c.options(
            "/v1/images/generations", headers={**preflight, "Access-Control-Request-Headers": "authorization"}
        )
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        simple = c.get("/v1/models", headers={**bearer(key), "Origin": ALLOWED_ORIGIN})
        assert simple.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "x-ratelimit-remaining-requests" in simple.headers["access-control-expose-headers"]
        denied = c.options("/v1/images/generations", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in denied.headers


def test_signed_file_urls_expire_and_cannot_be_forged(secure_app, key) -> None:
    body = {"prompt": "a red circle", "size": "32x32", "steps": 1, "response_format": "url"}
    with secure_app.client() as c:
        url = c.post("/v1/images/generations", json=body, headers=bearer(key)).json()["data"][0]["url"]
        parsed = urlparse(url)
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        file_key = parsed.path.rsplit("/", 1)[1]

        def get(**changes: object) -> int:
            return c.get(
                f"{parsed.scheme}://{parsed.netloc}{parsed.path}?" + urlencode({**query, **changes})
            ).status_code

        assert c.get(url).status_code == 200  # no API key: the signature is the credential
        storage = secure_app.settings.storage
        past = int(time.time()) - 10
        expired_sig = UrlSigner(storage.signing_secret, storage.url_ttl_s).signature(file_key, past)
        forged = UrlSigner("guessed-secret", 60).signature(file_key, int(query["expires"]))
        assert get(expires=past, sig=expired_sig) == 403  # genuinely signed, but expired
        assert get(expires=int(query["expires"]) + 3600) == 403  # extended
        assert get(sig=forged) == 403
        assert get(sig=query["sig"][:-1] + ("0" if query["sig"][-1] != "0" else "1")) == 403
        other = c.get(url.replace(file_key, "f" * 64 + ".png"))
        assert other.status_code == 403


def test_log_redaction() -> None:
    key = "hb_0123456789ab_" + "S" * 43
    assert redact(f"auth failed for {key}") == "auth failed for hb_0123456789ab_[REDACTED]"
    assert redact("Authorization: Bearer abc.def-123") == "Authorization: Bearer [REDACTED]"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "header %s", ("bearer " + key,), None)
    assert RedactSecrets().filter(record) and "S" * 10 not in record.getMessage()

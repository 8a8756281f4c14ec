"""Image storage: content-addressed objects (``<sha256>.png``) in a local directory served by
the gateway through expiring signed URLs, or in S3 (presigned URLs or a CDN base URL).
Keys are derived from content only: no user-supplied string ever becomes a path.

Whatever the backend, the gateway's own file route (``GET /v1/files/{key}``) serves only with a
valid, unexpired signature of ``signer``: image ids appear in every response, so an id alone
must never be a credential."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

from huabu.deployments.core import telemetry
from huabu.deployments.core.logging_json import add_secret
from huabu.deployments.core.settings import StorageSettings

KEY_PATTERN = re.compile(r"^[0-9a-f]{64}\.png$")


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() + ".png"


def valid_key(key: str) -> bool:
    return KEY_PATTERN.match(key) is not None


class StorageUnavailable(RuntimeError):
    """The object store cannot be reached (the caller answers 503, retry), as opposed to a missing object."""


# S3 answers a missing object with AccessDenied (403) when the caller may not list the bucket, and
# NoSuchKey (404) when it may; neither says more than "no such file" to a client.
MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "AccessDenied", "404", "403"})


class Storage(Protocol):
    signer: UrlSigner

    async def put(self, data: bytes) -> str: ...
    async def get(self, key: str) -> bytes | None: ...
    def url(self, key: str) -> str: ...


class UrlSigner:
    """HMAC-SHA256 over (key, expiry): a URL cannot be forged or extended without the secret."""

    def __init__(self, secret: str, ttl_s: int) -> None:
        add_secret(secret)  # whoever holds it may log it by accident (an error, a repr): masked
        self.secret = secret.encode()
        self.ttl_s = ttl_s

    def signature(self, key: str, expires: int) -> str:
        return hmac.new(self.secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def query(self, key: str, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.ttl_s)
        return urlencode({"expires": expires, "sig": self.signature(key, expires)})

    def verify(self, key: str, expires: int, signature: str, now: float | None = None) -> bool:
        if expires < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self.signature(key, expires), signature)


class LocalStorage:
    def __init__(self, settings: StorageSettings) -> None:
        self.root = Path(settings.local_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_url = settings.public_base_url.rstrip("/")
        self.signer = UrlSigner(settings.signing_secret, settings.url_ttl_s)

    def _path(self, key: str) -> Path:
        if not valid_key(key):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key[:2] / key

    @telemetry.traced("storage.put")
    async def put(self, data: bytes) -> str:
        key = content_key(data)
        path = self._path(key)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{time.monotonic_ns()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: readers never see a half-written file
        return key

    @telemetry.traced("storage.get")
    async def get(self, key: str) -> bytes | None:
        if not valid_key(key):
            return None
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def url(self, key: str) -> str:
        return f"{self.base_url}/v1/files/{key}?{self.signer.query(key)}"


class S3Storage:
    def __init__(self, settings: StorageSettings) -> None:
        import boto3
        from botocore.config import Config

        # SigV4 presigned URLs work on every region and S3-compatible server; path-style
        # addressing works with custom endpoints whose DNS has no per-bucket names.
        config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
        self.client = boto3.client("s3", endpoint_url=settings.endpoint_url, region_name=settings.region, config=config)
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.cdn_base_url = settings.cdn_base_url.rstrip("/") if settings.cdn_base_url else None
        self.ttl_s = settings.url_ttl_s
        self.signer = UrlSigner(settings.signing_secret, settings.url_ttl_s)  # for the gateway's file route

    @telemetry.traced("storage.put")
    async def put(self, data: bytes) -> str:
        key = content_key(data)
        await asyncio.to_thread(
            self.client.put_object, Bucket=self.bucket, Key=self.prefix + key, Body=data, ContentType="image/png"
        )
        return key

    @telemetry.traced("storage.get")
    async def get(self, key: str) -> bytes | None:
        if not valid_key(key):
            return None
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = await asyncio.to_thread(self.client.get_object, Bucket=self.bucket, Key=self.prefix + key)
            return await asyncio.to_thread(response["Body"].read)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_OBJECT_CODES:
                return None
            raise StorageUnavailable(f"S3 get_object failed: {exc}") from exc
        except BotoCoreError as exc:  # no connection, timeouts, a truncated body
            raise StorageUnavailable(f"S3 unreachable: {exc}") from exc

    def url(self, key: str) -> str:
        if self.cdn_base_url:
            return f"{self.cdn_base_url}/{self.prefix}{key}"
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.prefix + key}, ExpiresIn=self.ttl_s
        )


def open_storage(settings: StorageSettings) -> Storage:
    return S3Storage(settings) if settings.backend == "s3" else LocalStorage(settings)

"""Where covers go: a local folder next to the articles, or an S3 bucket (boto3).

Covers are named by a hash of their bytes, so an image shared by several articles (a cache hit)
is stored once. ``put`` returns what goes into the article's front matter.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


def cover_name(data: bytes) -> str:
    return f"cover-{hashlib.sha256(data).hexdigest()[:20]}.png"


class CoverStore(Protocol):
    def put(self, data: bytes, article: Path) -> str: ...


@dataclass
class LocalStore:
    """Files under ``root``; the front matter gets the path relative to the article's folder."""

    root: Path

    def put(self, data: bytes, article: Path) -> str:
        target = self.root / cover_name(data)
        if not target.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)  # atomic: a concurrent reader never sees half a PNG
        return Path(os.path.relpath(target.resolve(), article.resolve().parent)).as_posix()


@dataclass
class S3Store:
    """Objects ``s3://bucket/prefix<name>``; the front matter gets ``public_base_url/key`` when a
    CDN or website address is given, else the ``s3://`` URI."""

    bucket: str
    prefix: str = "covers/"
    endpoint_url: str | None = None
    public_base_url: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        import boto3

        self._s3: Any = boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region)

    def put(self, data: bytes, article: Path) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{self.prefix}{cover_name(data)}"
        try:
            if not self._exists(key):
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ContentType="image/png",
                    CacheControl="public, max-age=31536000, immutable",  # content-addressed: never changes
                )
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"storing s3://{self.bucket}/{key} failed: {exc}") from exc
        if self.public_base_url:
            return f"{self.public_base_url.rstrip('/')}/{key}"
        return f"s3://{self.bucket}/{key}"

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

"""Storage backends: the local directory with signed URLs, and S3 through boto3 against an
S3-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from huabu.deployments.core.settings import Settings, StorageSettings
from huabu.deployments.core.storage import LocalStorage, S3Storage, UrlSigner, content_key, valid_key


def test_keys_are_content_addresses_and_nothing_else() -> None:
    key = content_key(b"png bytes")
    assert valid_key(key) and key.endswith(".png") and len(key) == 68
    for bad in ("../x.png", "a" * 63 + ".png", key.upper(), key + "/..", "", key.replace(".png", ".txt")):
        assert not valid_key(bad)


def test_signed_urls_expire_and_cannot_be_forged() -> None:
    signer = UrlSigner("secret", ttl_s=60)
    key = content_key(b"x")
    expires = 1_000_000
    sig = signer.signature(key, expires)
    assert signer.verify(key, expires, sig, now=expires - 1)
    assert not signer.verify(key, expires, sig, now=expires + 1)
    assert not signer.verify(key, expires + 60, sig, now=expires - 1)
    assert not signer.verify(content_key(b"y"), expires, sig, now=expires - 1)
    assert not UrlSigner("other", 60).verify(key, expires, sig, now=expires - 1)


def test_local_storage_round_trip(tmp_path) -> None:
    store = LocalStorage(StorageSettings(local_dir=str(tmp_path)))
    key = asyncio.run(store.put(b"\x89PNG data"))
    assert asyncio.run(store.put(b"\x89PNG data")) == key
    assert asyncio.run(store.get(key)) == b"\x89PNG data"
    assert asyncio.run(store.get("../../etc/passwd")) is None
    assert "/v1/files/" + key + "?expires=" in store.url(key)


@pytest.fixture(scope="module")
def s3_settings(s3_endpoint: str) -> StorageSettings:
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="huabu-test")
    return StorageSettings(backend="s3", bucket="huabu-test", prefix="img/", endpoint_url=s3_endpoint)


def test_s3_storage_round_trip_and_presigned_urls(s3_settings: StorageSettings) -> None:
    store = S3Storage(s3_settings)
    key = asyncio.run(store.put(b"\x89PNG s3"))
    assert asyncio.run(store.get(key)) == b"\x89PNG s3"
    assert asyncio.run(store.get(content_key(b"missing"))) is None
    url = store.url(key)
    assert "X-Amz-Signature" in url and httpx.get(url).content == b"\x89PNG s3"
    cdn = S3Storage(s3_settings.model_copy(update={"cdn_base_url": "https://cdn.example.test/"}))
    assert cdn.url(key) == f"https://cdn.example.test/img/{key}"


@pytest.mark.serve
def test_the_application_stores_images_in_s3(deploy_app, s3_settings: StorageSettings) -> None:
    import boto3

    app = deploy_app(lifetime="test", storage=s3_settings.model_dump())
    with app.client() as c:
        r = c.post("/v1/images/generations", json={"prompt": "s3 please", "seed": 1, "response_format": "url"})
    assert r.status_code == 200, r.text
    image_id = r.json()["data"][0]["id"]
    assert httpx.get(r.json()["data"][0]["url"]).content.startswith(b"\x89PNG")
    listed = boto3.client("s3", endpoint_url=s3_settings.endpoint_url, region_name="us-east-1").list_objects_v2(
        Bucket="huabu-test", Prefix="img/"
    )
    assert f"img/{image_id}.png" in {o["Key"] for o in listed["Contents"]}


def test_settings_from_yaml_and_environment(tmp_path) -> None:
    path = tmp_path / "huabu.yaml"
    path.write_text("model:\n  max_batch_size: 4\nstate:\n  backend: redis\n")
    settings = Settings.load(
        path,
        environ={"HUABU__STATE__REDIS_URL": "redis://10.0.0.1:6380/1", "HUABU__MODEL__NUM_GPUS": "1", "OTHER": "x"},
    )
    assert settings.model.max_batch_size == 4 and settings.model.num_gpus == 1
    assert settings.state.backend == "redis" and settings.state.redis_url.endswith(":6380/1")
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        Settings.load(environ={}, model={"max_batch_size": 32, "max_ongoing_requests": 8})
    with pytest.raises(ValueError, match="stable"):
        Settings.load(environ={}, variants={"canary": {"model": "x@v1"}})

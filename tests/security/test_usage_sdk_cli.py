"""Usage metering per key (synchronous requests and jobs), ``GET /v1/usage``, the SDK's ``usage``
and ``keys`` resources (sync and async, typed errors), and ``huabu keys create|list|revoke``."""

from __future__ import annotations

import asyncio

import pytest
from security_helpers import bearer

from huabu.cluster import keys_cli
from huabu.sdk import AsyncClient, AuthenticationError, Client, ConflictError, PermissionDeniedError, RateLimitError

pytestmark = pytest.mark.serve


def test_usage_is_metered_per_key_for_requests_and_jobs(secure_app, make_key) -> None:
    made = make_key()
    key = made["key"]
    with Client(base_url=secure_app.base_url, api_key=key) as client:
        assert client.usage.retrieve().total.images == 0
        client.images.generate("a red circle", size="32x32", steps=3, n=2, cache="bypass")
        client.images.generate("a red circle", size="32x32", steps=3, n=2, seed=11)
        client.images.generate("a red circle", size="32x32", steps=3, n=2, seed=11)  # cache hits: no GPU time
        client.jobs.submit("a blue square", size="32x32", steps=2, cache="bypass").wait(timeout=300)
        report = client.usage.retrieve(days=3)
    assert report.key_id == made["id"] and len(report.data) == 3
    assert sum(d.images for d in report.data) == report.total.images  # per UTC day, newest first
    assert report.total.images == 7 and report.total.cached_images == 2
    assert report.total.steps == 2 * 3 + 2 * 3 + 2
    assert report.total.generation_s > 0


def test_usage_of_other_keys_needs_admin(secure_app, make_key, admin_key) -> None:
    alice, bob = make_key(), make_key()
    with Client(base_url=secure_app.base_url, api_key=alice["key"]) as client:
        with pytest.raises(PermissionDeniedError):
            client.usage.retrieve(key_id=bob["id"])
        assert client.usage.retrieve(key_id=alice["id"]).key_id == alice["id"]
    with Client(base_url=secure_app.base_url, api_key=admin_key) as admin:
        assert admin.usage.retrieve(key_id=bob["id"]).key_id == bob["id"]
    with secure_app.client() as c:
        assert c.get("/v1/usage", params={"days": 0}, headers=bearer(alice["key"])).status_code == 400


def test_sdk_keys_resource_sync_and_async(secure_app, admin_key) -> None:
    with Client(base_url=secure_app.base_url, api_key=admin_key) as admin:
        created = admin.keys.create("sdk-made", scopes=["generate"], rate="2/min", max_retries=0)
        assert created.key.startswith("hb_") and not created.revoked
        with pytest.raises(ConflictError):
            admin.keys.create("sdk-made", max_retries=0)
        assert created.id in {k.id for k in admin.keys.list().data}
        user = Client(base_url=secure_app.base_url, api_key=created.key, max_retries=0)
        with pytest.raises(PermissionDeniedError):
            user.keys.list()
        user.images.generate("x", size="32x32", steps=1)
        user.images.generate("x", size="32x32", steps=1)
        with pytest.raises(RateLimitError) as limited:
            user.images.generate("x", size="32x32", steps=1)
        assert limited.value.retry_after is not None and limited.value.retry_after >= 1

    async def async_side() -> None:
        async with AsyncClient(base_url=secure_app.base_url, api_key=admin_key) as aadmin:
            info = await aadmin.keys.retrieve(created.id)
            assert info.name == "sdk-made" and info.rate == "2/min"
            assert (await aadmin.keys.revoke(created.id)).revoked
            report = await aadmin.usage.retrieve(key_id=created.id, days=1)
            assert report.total.images == 2

    asyncio.run(async_side())
    with pytest.raises(AuthenticationError):
        user.models.list()
    user.close()


def test_keys_cli(secure_app, admin_key, capsys) -> None:
    common = ["--url", secure_app.base_url, "--api-key", admin_key]
    assert keys_cli.main(["create", *common, "--name", "cli-made", "--scope", "generate", "--rate", "60/min"]) == 0
    out = capsys.readouterr().out
    key = out.strip().splitlines()[-1]
    assert "created key" in out and "60/min" in out and key.startswith("hb_")
    key_id = key.split("_")[1]
    assert keys_cli.main(["list", *common]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "cli-made" in listing and key not in listing
    with Client(base_url=secure_app.base_url, api_key=key) as client:
        assert client.models.list().data
    assert keys_cli.main(["revoke", *common, key_id]) == 0
    assert f"revoked key {key_id}" in capsys.readouterr().out
    assert keys_cli.main(["create", *common, "--rate", "lots"]) == 1
    assert "60/min" in capsys.readouterr().err
    assert keys_cli.main(["list", "--url", secure_app.base_url, "--api-key", key]) == 1
    assert "invalid or revoked" in capsys.readouterr().err


def test_dev_admin_key_file(tmp_path) -> None:
    from huabu.deployments.core.settings import Settings

    settings = keys_cli.with_dev_admin_key(Settings(), tmp_path)
    key = keys_cli.dev_admin_key(tmp_path)
    assert key and keys_cli.local_dev_key(settings, tmp_path) == key
    assert (tmp_path / keys_cli.DEV_KEY_FILE).stat().st_mode & 0o077 == 0
    assert key not in settings.model_dump_json()  # settings carry only the hash
    assert keys_cli.with_dev_admin_key(settings, tmp_path) == settings  # stable across `huabu up`s
    off = Settings(auth={"enabled": False})
    assert keys_cli.with_dev_admin_key(off, tmp_path) == off and keys_cli.local_dev_key(off, tmp_path) is None
    assert Settings().auth.enabled  # production default: keys on

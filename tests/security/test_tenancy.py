"""What one tenant can reach of another's through the deployed app (#25 holes 2 and 6): stored
images in S3 only through a valid, unexpired signature, and A/B feedback and arms only for what the
caller owns or may force."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import boto3
import httpx
import pytest
from security_helpers import bearer

from huabu.deployments.core.settings import StorageSettings
from huabu.deployments.core.storage import S3Storage, StorageUnavailable, UrlSigner, content_key
from huabu.deployments.gateway.auth import key_hash, new_key

pytestmark = pytest.mark.serve
BUCKET = "huabu-tenancy"


@pytest.fixture(scope="module")
def s3_storage(s3_endpoint: str) -> dict[str, Any]:
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return {"backend": "s3", "bucket": BUCKET, "prefix": "img/", "endpoint_url": s3_endpoint}


@pytest.fixture(scope="module")
def tenant_admin() -> str:
    return new_key()[1]


@pytest.fixture(scope="module")
def tenants(deploy_app: Any, s3_storage: dict[str, Any], tenant_admin: str) -> Any:
    """Keys on, images in S3, and two served variants for A/B assignment."""
    return deploy_app(
        auth={"enabled": True, "admin_key_sha256": key_hash(tenant_admin), "default_rate": "1000/min"},
        storage=s3_storage,
        variants={"stable": {"model": "tiny-mmdit@v1"}, "canary": {"model": "tiny-mmdit@v2"}},
        ab={"refresh_interval_s": 0.2, "flush_interval_s": 0.3, "controller_interval_s": 60},
        safety={"prompt_enabled": False, "image": {"enabled": False}},
        cache={"enabled": False},
        gateway={"default_steps": 2},
    )


def new_tenant(app: Any, admin: str, **fields: Any) -> str:
    fields.setdefault("name", f"tenant-{time.monotonic_ns()}")
    r = httpx.post(f"{app.base_url}/v1/admin/keys", json=fields, headers=bearer(admin), timeout=30)
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


# --- hole 2: files in S3 -------------------------------------------------------------------------


def test_s3_files_need_a_valid_unexpired_signature(tenants: Any, tenant_admin: str) -> None:
    key = new_tenant(tenants, tenant_admin)
    with tenants.client() as c:
        r = c.post(
            "/v1/images/generations",
            json={"prompt": "a red circle", "size": "32x32", "seed": 7, "response_format": "url"},
            headers=bearer(key),
        )
        assert r.status_code == 200, r.text
        image = r.json()["data"][0]
        file_key = image["id"] + ".png"
        assert "X-Amz-Signature" in image["url"]  # S3 serves it itself, through a presigned URL
        # The id is in every response: on its own it opens nothing, with or without an API key.
        for headers in ({}, bearer(key)):
            unsigned = c.get(f"/v1/files/{file_key}", headers=headers)
            assert unsigned.status_code == 403, unsigned.text
            assert unsigned.json()["error"]["type"] == "permission_error"
        signer = UrlSigner(tenants.settings.storage.signing_secret, 60)
        now = int(time.time())
        forged = c.get(f"/v1/files/{file_key}", params={"expires": now + 60, "sig": "0" * 64})
        expired = c.get(
            f"/v1/files/{file_key}", params={"expires": now - 1, "sig": signer.signature(file_key, now - 1)}
        )
        assert forged.status_code == expired.status_code == 403
        signed = c.get(f"/v1/files/{file_key}?{signer.query(file_key)}")
        assert signed.status_code == 200 and signed.content.startswith(b"\x89PNG")
        # A key S3 does not hold, correctly signed: 404, never a 500.
        missing = content_key(b"never stored")
        gone = c.get(f"/v1/files/{missing}?{signer.query(missing)}")
        assert gone.status_code == 404 and gone.json()["error"]["param"] == "key"


def test_s3_missing_objects_and_outages_are_told_apart(s3_storage: dict[str, Any], free_tcp_port: Any) -> None:
    """A missing object (NoSuchKey, or NoSuchBucket / AccessDenied when the caller may not list) is
    None (404); an unreachable S3 is StorageUnavailable (503), never an unexpected error (500)."""
    settings = StorageSettings(**s3_storage)
    assert asyncio.run(S3Storage(settings).get(content_key(b"absent"))) is None
    assert (
        asyncio.run(S3Storage(settings.model_copy(update={"bucket": "no-such-bucket"})).get(content_key(b"x"))) is None
    )
    down = settings.model_copy(update={"endpoint_url": f"http://127.0.0.1:{free_tcp_port()}"})
    with pytest.raises(StorageUnavailable):
        asyncio.run(S3Storage(down).get(content_key(b"x")))


# --- hole 6: feedback and A/B arms ---------------------------------------------------------------


def generate(c: httpx.Client, key: str, seed: int, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"prompt": "a blue square", "size": "32x32", "seed": seed}
    return c.post("/v1/images/generations", json=body, headers={**bearer(key), **(headers or {})})


def wait_for(call: Any, timeout_s: float = 30.0) -> httpx.Response:
    """Poll ``call()`` until it answers 200 (records written off the response path)."""
    deadline = time.monotonic() + timeout_s
    while (r := call()).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    return r


@pytest.fixture(scope="module")
def rollout(tenants: Any, tenant_admin: str) -> None:
    policy = {"steps": [50, 100], "min_samples_per_step": 10**6}  # held at 50 % for the whole module
    r = httpx.post(
        f"{tenants.base_url}/v1/admin/rollouts",
        json={"id": "tenancy", "policy": policy},
        headers=bearer(tenant_admin),
        timeout=30,
    )
    assert r.status_code == 201, r.text
    time.sleep(0.5)  # every gateway replica re-reads the split


def test_variants_are_forced_only_with_the_admin_or_ab_override_scope(
    tenants: Any, tenant_admin: str, rollout: None
) -> None:
    key = new_tenant(tenants, tenant_admin)
    with tenants.client() as c:
        for variant in ("canary", "stable"):
            refused = generate(c, key, 1, {"x-huabu-variant": variant})
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["param"] == "x-huabu-variant"
            job = c.post(
                "/v1/jobs",
                json={"kind": "generate", "prompt": "a blue square", "size": "32x32"},
                headers={**bearer(key), "x-huabu-variant": variant},
            )
            assert job.status_code == 403, job.text
            forced = generate(c, tenant_admin, 1, {"x-huabu-variant": variant})
            assert forced.status_code == 200 and forced.json()["data"][0]["variant"] == variant
        # A QA key allow-listed by its scope may force an arm without being an admin.
        qa = new_tenant(tenants, tenant_admin, scopes=["generate", "ab_override"])
        for variant in ("canary", "stable"):
            forced = generate(c, qa, 2, {"x-huabu-variant": variant})
            assert forced.status_code == 200 and forced.json()["data"][0]["variant"] == variant
        assert c.get("/v1/admin/keys", headers=bearer(qa)).status_code == 403  # and is nothing more


def test_a_chosen_user_id_is_a_unit_within_its_key(tenants: Any, tenant_admin: str, rollout: None) -> None:
    first, second = new_tenant(tenants, tenant_admin), new_tenant(tenants, tenant_admin)
    with tenants.client() as c:

        def arm(key: str, user: str) -> str:
            r = generate(c, key, 3, {"x-huabu-user": user})
            assert r.status_code == 200, r.text
            return str(r.json()["data"][0]["variant"])

        users = [f"victim-{i}" for i in range(12)]
        mine = {u: arm(first, u) for u in users}
        theirs = {u: arm(second, u) for u in users}
        assert all(arm(first, u) == mine[u] for u in users[:3])  # sticky within a key
        # Unscoped, every user id would land in one arm under both keys (2^-12 by chance).
        assert mine != theirs, (mine, theirs)


def test_only_the_owner_gives_feedback(tenants: Any, tenant_admin: str, rollout: None) -> None:
    owner, other = new_tenant(tenants, tenant_admin), new_tenant(tenants, tenant_admin)
    with tenants.client() as c:
        image = generate(c, owner, 11).json()["data"][0]
        job = c.post(
            "/v1/jobs", json={"kind": "generate", "prompt": "a red circle", "size": "32x32"}, headers=bearer(owner)
        )
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]

        def feedback(key: str, **target: str) -> httpx.Response:
            return c.post("/v1/feedback", json={**target, "accepted": True}, headers=bearer(key))

        mine = wait_for(lambda: feedback(owner, image_id=image["id"]))
        assert mine.json() == {"recorded": True, "variant": image["variant"]}
        mine_job = wait_for(lambda: feedback(owner, job_id=job_id))
        assert mine_job.status_code == 200, mine_job.text
        # Recorded for the owner, and still nothing for another key, the admin's included: a 404
        # that tells neither that the image or job exists nor its arm.
        for key in (other, tenant_admin):
            for target, param in (({"image_id": image["id"]}, "image_id"), ({"job_id": job_id}, "job_id")):
                theirs = feedback(key, **target)
                assert theirs.status_code == 404 and theirs.json()["error"]["param"] == param, theirs.text
                assert not {"stable", "canary", "variant"} & set(theirs.text.replace('"', " ").split())
        # Ids that no server issues are a 400 naming the field, before any lookup.
        for target, param in (({"image_id": "../" + "f" * 61}, "image_id"), ({"job_id": f"{job_id}:events"}, "job_id")):
            bad = feedback(owner, **target)
            assert bad.status_code == 400 and bad.json()["error"]["param"] == param, bad.text

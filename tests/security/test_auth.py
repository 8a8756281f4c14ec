"""API keys and scopes through the real gateway: 401, 403, 404 and 409 paths, revocation,
open health endpoints, job ownership, and keys never stored or logged in plain text."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from security_helpers import bearer

from huabu.deployments.core.state import EmbeddedStore
from huabu.deployments.gateway.auth import key_hash

pytestmark = pytest.mark.serve


def error_of(r: httpx.Response) -> dict[str, Any]:
    return dict(r.json()["error"])


def test_health_docs_and_files_are_open(secure_app) -> None:
    with secure_app.client() as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        assert c.get("/openapi.json").status_code == 200
        # A file URL's signature is its credential: no key, and an unsigned URL is a 403, not a 401.
        assert c.get("/v1/files/" + "a" * 64 + ".png").status_code == 403


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "no API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer"),
        ({"Authorization": "Bearer"}, "Bearer"),
        ({"Authorization": "Bearer hb_000000000000_wrongsecret"}, "invalid or revoked"),
        ({"Authorization": "Bearer not-a-huabu-key"}, "invalid or revoked"),
    ],
)
def test_missing_or_wrong_key_is_401(secure_app, headers: dict[str, str], message: str) -> None:
    with secure_app.client() as c:
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/images/generations"), ("GET", "/v1/admin/keys")):
            r = c.request(method, path, headers=headers, json={"prompt": "x"} if method == "POST" else None)
            assert r.status_code == 401, r.text
            assert error_of(r)["type"] == "authentication_error" and message in error_of(r)["message"]
            assert r.headers["www-authenticate"] == "Bearer"
            assert "wrongsecret" not in r.text


def test_scopes_403_and_admin_key_lifecycle(secure_app, admin_key, make_key) -> None:
    created = make_key(scopes=["generate"], rate="30/min")
    key = created["key"]
    assert created["key"].startswith("hb_" + created["id"] + "_") and created["rate"] == "30/min"
    with secure_app.client() as c:
        assert c.get("/v1/models", headers=bearer(key)).status_code == 200
        for path in ("/v1/admin/keys", "/v1/admin/cache/stats", "/v1/admin/filters/stats"):
            r = c.get(path, headers=bearer(key))
            assert r.status_code == 403 and error_of(r)["type"] == "permission_error", r.text
            assert error_of(r)["code"] == "insufficient_scope"
        # The admin API lists keys without the key or its hash.
        listed = c.get("/v1/admin/keys", headers=bearer(admin_key)).json()["data"]
        mine = next(k for k in listed if k["id"] == created["id"])
        assert "key" not in mine and "sha256" not in mine and mine["prefix"] == key[:19]
        # Revocation takes effect at once on every replica.
        revoked = c.delete(f"/v1/admin/keys/{created['id']}", headers=bearer(admin_key))
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        for _ in range(4):  # both gateway replicas
            r = c.get("/v1/models", headers=bearer(key))
            assert r.status_code == 401 and "revoked" in error_of(r)["message"]


def test_admin_404_409_and_validation(secure_app, admin_key, make_key) -> None:
    made = make_key(name="unique-name")
    with secure_app.client() as c:
        h = bearer(admin_key)
        assert c.get("/v1/admin/keys/000000000000", headers=h).status_code == 404
        assert c.delete("/v1/admin/keys/000000000000", headers=h).status_code == 404
        r = c.post("/v1/admin/keys", json={"name": "unique-name"}, headers=h)
        assert r.status_code == 409 and error_of(r)["type"] == "conflict_error" and error_of(r)["param"] == "name"
        # After revoking, the name is free again.
        assert c.delete(f"/v1/admin/keys/{made['id']}", headers=h).status_code == 200
        assert c.post("/v1/admin/keys", json={"name": "unique-name"}, headers=h).status_code == 201
        for body, param in (
            ({"name": "x", "scopes": ["root"]}, "scopes.0"),
            ({"name": "x", "rate": "lots"}, "rate"),
            ({"name": ""}, "name"),
            ({"name": "x", "colour": "red"}, "colour"),
        ):
            r = c.post("/v1/admin/keys", json=body, headers=h)
            assert r.status_code == 400 and error_of(r)["param"] == param, r.text


def test_jobs_belong_to_their_key(secure_app, make_key) -> None:
    alice, bob, admin = make_key()["key"], make_key()["key"], make_key(scopes=["admin"])["key"]
    with secure_app.client() as c:
        r = c.post(
            "/v1/jobs", json={"kind": "generate", "prompt": "a red circle", "size": "32x32"}, headers=bearer(alice)
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert c.get(f"/v1/jobs/{job_id}", headers=bearer(alice)).status_code == 200
        assert c.get(f"/v1/jobs/{job_id}", headers=bearer(admin)).status_code == 200
        for method, path in (("GET", ""), ("GET", "/events"), ("DELETE", "")):
            r = c.request(method, f"/v1/jobs/{job_id}{path}", headers=bearer(bob))
            assert r.status_code == 404 and error_of(r)["type"] == "not_found_error", r.text


def test_websocket_needs_a_key(secure_app, make_key) -> None:
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url = secure_app.base_url.replace("http://", "ws://") + "/v1/jobs/job_nope/ws"
    with pytest.raises((InvalidStatus, ConnectionClosed)), connect(url, open_timeout=30) as ws:
        ws.recv(timeout=30)
    key = make_key()["key"]
    with connect(url, open_timeout=30, additional_headers=bearer(key)) as ws:
        assert "not_found_error" in str(ws.recv(timeout=30))
    # Browsers cannot send headers on a WebSocket: the key may come as the subprotocol.
    with connect(url, open_timeout=30, subprotocols=[f"huabu.key.{key}"]) as ws:  # type: ignore[list-item]
        assert "not_found_error" in str(ws.recv(timeout=30))
    with pytest.raises((InvalidStatus, ConnectionClosed)), connect(url, subprotocols=["huabu.key.hb_wrong"]) as ws:  # type: ignore[list-item]
        ws.recv(timeout=30)


def test_keys_are_never_stored_or_logged_in_plain_text(secure_app, make_key) -> None:
    made = make_key(name="secret-check")
    key, secret = made["key"], made["key"].split("_", 2)[2]
    with secure_app.client() as c:
        assert c.get("/v1/models", headers=bearer(key)).status_code == 200
        assert c.get("/v1/models", headers=bearer(key + "x")).status_code == 401

    async def dump() -> list[bytes]:
        store = EmbeddedStore(secure_app.settings.state.namespace)
        values = []
        for k in await store.keys("*"):
            values.append(k.encode())
            values.append(await store.get(k) or b"")
        return values

    stored = b"\n".join(asyncio.run(dump()))
    assert key_hash(key).encode() in stored  # the hash is what is kept
    assert secret.encode() not in stored and key.encode() not in stored

    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    leaked = [p.name for p in logs.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []

"""One gateway with API keys on (two gateway replicas, so limits are shown to be shared), its
bootstrap admin key, and helpers to make keys through the admin API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from security_helpers import ALLOWED_ORIGIN, bearer

from huabu.deployments.gateway.auth import key_hash, new_key


@pytest.fixture(scope="session")
def admin_key() -> str:
    return new_key()[1]


@pytest.fixture(scope="session")
def secure_app(deploy_app: Any, admin_key: str) -> Any:
    return deploy_app(
        lifetime="dir",
        auth={"enabled": True, "admin_key_sha256": key_hash(admin_key), "default_rate": "1000/min"},
        security={"cors_origins": [ALLOWED_ORIGIN]},
        gateway={"num_replicas": 2, "default_steps": 2},
    )


@pytest.fixture(scope="session")
def make_key(secure_app: Any, admin_key: str) -> Callable[..., dict[str, Any]]:
    """make_key(name=..., scopes=[...], rate=..., ...) -> the created key's JSON (with "key")."""
    counter = iter(range(1_000_000))

    def make(**fields: Any) -> dict[str, Any]:
        fields.setdefault("name", f"test-{next(counter)}")
        r = httpx.post(f"{secure_app.base_url}/v1/admin/keys", json=fields, headers=bearer(admin_key), timeout=30)
        assert r.status_code == 201, r.text
        return dict(r.json())

    return make

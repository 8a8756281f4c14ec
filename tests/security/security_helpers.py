"""Shared by the security tests (imported by name: every test directory has its own conftest)."""

ALLOWED_ORIGIN = "https://playground.example"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}

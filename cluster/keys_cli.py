"""``huabu keys create|list|revoke``: API keys through the admin API (``/v1/admin/keys``), and the
development admin key that ``huabu up`` makes.

The server is ``--base-url``, else ``HUABU_BASE_URL``, else the local server ``huabu up`` started;
the admin key is ``--api-key``, else ``HUABU_API_KEY``, else, on that local server's URL only, its
development admin key (``$HUABU_HOME/dev-admin-key``, owner-only; the SDK finds it the same way).
Only its SHA-256 goes into the deployed settings."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, get_args

from huabu.sdk._devkey import DEV_KEY_FILE
from huabu.sdk.types import ApiKeyScope


def dev_admin_key(home: Path, create: bool = False) -> str | None:
    """The development admin key kept in ``home`` (created on first use when ``create``)."""
    path = home / DEV_KEY_FILE
    if not path.exists():
        if not create:
            return None
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            # Not an "hb_<id>_" store key: it is checked against auth.admin_key_sha256 only.
            f.write("hb_dev_" + secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def with_dev_admin_key(settings: Any, home: Path) -> Any:
    """Settings whose bootstrap admin key is the development key, unless auth is off or the
    settings name one already."""
    if not settings.auth.enabled or settings.auth.admin_key_sha256:
        return settings
    key = dev_admin_key(home, create=True)
    assert key is not None
    digest = hashlib.sha256(key.encode()).hexdigest()
    return settings.model_copy(update={"auth": settings.auth.model_copy(update={"admin_key_sha256": digest})})


def local_dev_key(settings: Any, home: Path) -> str | None:
    """The development key if the deployed ``settings`` accept it (None with --no-auth or another key)."""
    key = dev_admin_key(home)
    if key is None or not settings.auth.enabled:
        return None
    return key if settings.auth.admin_key_sha256 == hashlib.sha256(key.encode()).hexdigest() else None


def _row(info: Any) -> str:
    state = "revoked" if info.revoked_at is not None else "active"
    quota = f"{info.daily_images}/day" if info.daily_images else "-"
    scopes = ",".join(info.scopes)
    return f"{info.id:<14} {info.name:<24} {scopes:<16} {info.rate:<10} {info.max_concurrent:<5} {quota:<10} {state}"


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from huabu.sdk import Client, HuabuError

    try:
        with Client(base_url=args.base_url, api_key=args.api_key, max_retries=0) as client:
            if args.action == "create":
                name = args.name or time.strftime("key-%Y%m%d-%H%M%S")
                created = client.keys.create(
                    name,
                    scopes=args.scope or ["generate"],
                    rate=args.rate,
                    max_concurrent=args.max_concurrent,
                    daily_images=args.daily_images,
                )
                if args.json:
                    print(created.model_dump_json(indent=2))
                else:
                    scopes = ",".join(created.scopes)
                    print(f"created key {created.id} ({created.name}; scopes {scopes}; rate {created.rate})")
                    print("the key (shown only now; the server keeps only its hash):")
                    print(created.key)
            elif args.action == "list":
                keys = client.keys.list().data
                if args.json:
                    print(json.dumps([k.model_dump() for k in keys], indent=2))
                else:
                    print(f"{'id':<14} {'name':<24} {'scopes':<16} {'rate':<10} {'conc':<5} {'quota':<10} state")
                    for info in keys:
                        print(_row(info))
            else:
                revoked = client.keys.revoke(args.key_id)
                print(f"revoked key {revoked.id} ({revoked.name})")
    except ValidationError as exc:  # checked here before anything is sent
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"huabu keys: {where}: {first['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 1
    except (HuabuError, ValueError) as exc:
        print(f"huabu keys: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="huabu keys", description="create, list and revoke API keys (admin key)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--base-url", "--url", dest="base_url", help="server URL (default: HUABU_BASE_URL, else the local server)"
    )
    common.add_argument("--api-key", help="admin key (default: HUABU_API_KEY, else the local development key)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", parents=[common], help="create a key and print it (once)")
    create.add_argument("--name", help="a label, unique among active keys (default: key-<time>)")
    create.add_argument(
        "--scope", action="append", choices=get_args(ApiKeyScope), help="repeatable (default: generate)"
    )
    create.add_argument("--rate", help="generation requests per period, e.g. 60/min (default: the server's)")
    create.add_argument("--max-concurrent", type=int, help="jobs and requests in flight (default: the server's)")
    create.add_argument("--daily-images", type=int, help="images per UTC day (default: the server's)")
    sub.add_parser("list", parents=[common], help="list keys (never the keys themselves)")
    revoke = sub.add_parser("revoke", parents=[common], help="revoke a key at once")
    revoke.add_argument("key_id")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

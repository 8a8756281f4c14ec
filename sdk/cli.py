"""Placeholder until the SDK CLI lands: server commands go to huabu.deployments.cli."""

import sys


def main(argv: list[str] | None = None) -> int:
    from huabu.deployments.cli import main as server_main

    return server_main(sys.argv[1:] if argv is None else argv)

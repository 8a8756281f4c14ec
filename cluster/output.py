"""How the server commands talk to the terminal: progress on stdout, errors on stderr with an exit
status. Standard library only, so every command module can import it without cost."""

from __future__ import annotations

import sys


def say(message: str = "") -> None:
    print(message, flush=True)


def warn(message: str) -> None:
    """A note for the operator that must not mix into stdout (which may be a generated file)."""
    print(f"huabu: {message}", file=sys.stderr, flush=True)


def fail(message: str) -> int:
    warn(message)
    return 1

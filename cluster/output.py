"""How the server commands talk to the terminal: progress on stdout, errors on stderr with an exit
status. Standard library only, so every command module can import it without cost."""

from __future__ import annotations

import sys


def say(message: str = "") -> None:
    print(message, flush=True)


def fail(message: str) -> int:
    print(f"huabu: {message}", file=sys.stderr, flush=True)
    return 1

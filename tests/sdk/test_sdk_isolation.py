"""The base install never imports ray, torch or numpy: checked in a fresh interpreter that forbids them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import sys

    BLOCKED = {"ray", "torch", "numpy"}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the SDK must not import it")
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_sdk_and_cli_help_without_ray_torch_numpy() -> None:
    result = _run(
        """
        import huabu.sdk, huabu.sdk.types, huabu.sdk.masks, huabu.sdk.cli
        from huabu.sdk import Client, AsyncClient
        Client().close()
        from huabu.sdk import masks
        masks.rectangle((8, 8), (0, 0, 4, 4))
        try:
            huabu.sdk.cli.main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "usage: huabu" in result.stdout and result.stdout.rstrip().endswith("ok")


def test_blocker_works() -> None:
    result = _run("import numpy")
    assert result.returncode != 0 and "blocked" in result.stderr

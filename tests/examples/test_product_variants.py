"""examples/product_variants run as a subprocess against a deployed application."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytestmark = [pytest.mark.serve, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "product_variants"


def run_example(app: Any, *args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(EXAMPLE / "product_variants.py"), *map(str, args)]
    command += ["--base-url", app.base_url, "--steps", "20"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_inpainted_variants_and_contact_sheet(app: Any, tmp_path: Path) -> None:
    spec = json.loads((EXAMPLE / "variants.json").read_text(encoding="utf-8"))
    out = tmp_path / "out"
    done = run_example(app, "--out", out)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "variants: 100%" in done.stderr

    manifest = json.loads((out / "variants.json").read_text(encoding="utf-8"))
    assert len(manifest) == len(spec["replacements"])
    base = Image.open(out / "base.png").convert("RGB")
    assert base.size == tuple(int(side) for side in spec["base"]["size"].split("x"))
    assert sorted(p.stem for p in (out / "masks").iterdir()) == sorted(spec["regions"])
    for entry, replacement in zip(manifest, spec["replacements"], strict=True):
        assert entry["region"] == replacement["region"] and entry["prompt"] == replacement["prompt"]
        assert entry["variant"] == "stable" and not entry["cached"]
        # Inpainting keeps every pixel outside the region and repaints inside it.
        assert entry["kept_outside_mask"] == 1.0
        variant = Image.open(out / entry["file"]).convert("RGB")
        left, top, right, bottom = spec["regions"][entry["region"]]["box"]
        inside = (left + (right - left) // 4, top + (bottom - top) // 4, right - (right - left) // 4, bottom - 1)
        assert variant.crop(inside).tobytes() != base.crop(inside).tobytes()

    tiles = 1 + len(spec["regions"]) + len(spec["replacements"])  # base, masks, variants
    sheet = Image.open(out / "contact_sheet.png")
    rows = -(-tiles // 4)
    assert sheet.width == 8 + 4 * (192 + 8)
    assert sheet.height == 8 + rows * (192 + 2 * 14 + 4 + 8)
    if os.environ.get("HUABU_SCREENSHOT_DIR"):  # refresh the docs' copy (see tests/playground)
        shutil.copyfile(out / "contact_sheet.png", Path(os.environ["HUABU_SCREENSHOT_DIR"]) / "product_variants.png")

    # The same batch again is answered from the cache.
    again = run_example(app, "--out", tmp_path / "again")
    assert again.returncode == 0, again.stderr
    assert f"{len(manifest)} variants ({len(manifest)} from cache)" in again.stdout


def test_bad_spec_and_bad_base_are_clear_errors(app: Any, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "base": {"prompt": "a mug"},
                "regions": {"product": {"box": [0, 0, 8, 8]}},
                "replacements": [{"region": "lid", "prompt": "a lid"}],
            }
        )
    )
    done = run_example(app, "--spec", spec, "--out", tmp_path / "a")
    assert done.returncode == 2 and "names region 'lid'" in done.stderr

    small = tmp_path / "small.png"
    Image.new("RGB", (16, 16), "white").save(small)  # the spec's regions do not fit
    done = run_example(app, "--base", small, "--out", tmp_path / "b")
    assert done.returncode == 1 and "lies outside the 16x16 image" in done.stderr

    odd = tmp_path / "odd.png"
    Image.new("RGB", (66, 66), "white").save(odd)  # not a multiple of the model's 8-pixel patches: a 400
    done = run_example(app, "--base", odd, "--out", tmp_path / "c")
    assert done.returncode == 1
    assert "error:" in done.stderr and "multiple of 8" in done.stderr

"""Product variants by inpainting: one base image, a mask per region, a batch of replacements, a contact sheet.

    python examples/product_variants/product_variants.py --out variants/
    python examples/product_variants/product_variants.py --base my_product.png --spec my_variants.json

The spec (``variants.json`` beside this script) names the base prompt, the regions (rectangles or
ellipses in pixels of the base image) and the replacements. Every replacement is submitted as a job
at once (the server batches them), then the results are collected, checked (pixels outside the
region must be unchanged) and laid out in ``contact_sheet.png`` with the base and the masks.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from contact_sheet import Tile, contact_sheet, overlay
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tqdm import tqdm

from huabu.sdk import Client, HuabuError, masks

HERE = Path(__file__).resolve().parent


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Base(_Spec):
    prompt: str = Field(min_length=1)
    size: str = "32x32"
    seed: int = 0


class Region(_Spec):
    shape: Literal["rectangle", "ellipse"] = "rectangle"
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in base-image pixels, right/bottom exclusive

    def mask(self, image: bytes) -> bytes:
        draw = masks.ellipse if self.shape == "ellipse" else masks.rectangle
        return draw(image, self.box)


class Replacement(_Spec):
    region: str
    prompt: str = Field(min_length=1)
    label: str = ""
    seed: int | None = None


class VariantSpec(_Spec):
    base: Base
    regions: dict[str, Region] = Field(min_length=1)
    replacements: list[Replacement] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_regions(self) -> VariantSpec:
        for r in self.replacements:
            if r.region not in self.regions:
                raise ValueError(f"replacement {r.prompt!r} names region {r.region!r}; known: {sorted(self.regions)}")
        return self


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "variant"


def kept_outside(base: Image.Image, variant: Image.Image, mask: bytes) -> float:
    """Fraction of the pixels the mask keeps (opaque) that are identical in the variant."""
    keep = Image.open(io.BytesIO(mask)).convert("RGBA").getchannel("A").getdata()
    before, after = base.convert("RGB").getdata(), variant.convert("RGB").getdata()
    kept = [a == b for a, b, k in zip(before, after, keep, strict=True) if k >= 128]
    return sum(kept) / len(kept) if kept else 1.0


def base_image(client: Client, spec: VariantSpec, path: Path | None, steps: int | None) -> bytes:
    if path is not None:
        return path.read_bytes()
    return client.images.generate(spec.base.prompt, size=spec.base.size, seed=spec.base.seed, steps=steps)[0].bytes


def run(client: Client, spec: VariantSpec, out: Path, base_path: Path | None, steps: int | None) -> list[dict]:
    base = base_image(client, spec, base_path, steps)
    base_img = Image.open(io.BytesIO(base))
    out.mkdir(parents=True, exist_ok=True)
    (out / "base.png").write_bytes(base)
    region_masks: dict[str, bytes] = {}
    for name, region in spec.regions.items():
        region_masks[name] = region.mask(base)  # raises ValueError for a box outside the image
        (out / "masks").mkdir(exist_ok=True)
        (out / "masks" / f"{name}.png").write_bytes(region_masks[name])

    # Submit the whole batch first, then collect: the server runs what arrives together as batches.
    handles = [
        client.jobs.submit_edit(base, r.prompt, mask=region_masks[r.region], seed=r.seed, steps=steps)
        for r in spec.replacements
    ]
    manifest: list[dict] = []
    tiles = [Tile(base_img, "base", spec.base.prompt)]
    tiles += [
        Tile(overlay(base_img, Image.open(io.BytesIO(m))), f"region: {n}", "red = repaint")
        for n, m in region_masks.items()
    ]
    (out / "variants").mkdir(exist_ok=True)
    for index, (replacement, handle) in enumerate(
        tqdm(list(zip(spec.replacements, handles, strict=True)), desc="variants", unit="image", file=sys.stderr)
    ):
        result = handle.result()[0]
        label = replacement.label or replacement.prompt
        path = result.save(out / "variants" / f"{index:02d}-{replacement.region}-{slug(label)}.png")
        image = result.image
        entry = {
            "region": replacement.region,
            "label": label,
            "prompt": replacement.prompt,
            "file": str(path.relative_to(out)),
            "job_id": handle.id,
            "seed": result.seed,
            "model": result.model,
            "variant": result.variant,
            "cached": result.cached,
            "kept_outside_mask": kept_outside(base_img, image, region_masks[replacement.region]),
        }
        manifest.append(entry)
        note = f"seed {result.seed} · {'cached' if result.cached else 'new'}"
        tiles.append(Tile(image, f"{replacement.region}: {label}", note))
    contact_sheet(tiles).save(out / "contact_sheet.png")
    (out / "variants.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=HERE / "variants.json", help="regions and replacements (JSON)")
    parser.add_argument("--base", type=Path, help="use this image instead of generating the spec's base")
    parser.add_argument("--out", type=Path, default=Path("variants"), help="output folder (default: variants)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the server's)")
    parser.add_argument("--base-url", help="huabu server (default: HUABU_BASE_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="API key (default: HUABU_API_KEY)")
    args = parser.parse_args(argv)
    try:
        spec = VariantSpec.model_validate_json(args.spec.read_text(encoding="utf-8"))
    except (OSError, ValidationError) as exc:
        parser.error(f"spec {args.spec}: {exc}")
    try:
        with Client(base_url=args.base_url, api_key=args.api_key) as client:
            manifest = run(client, spec, args.out, args.base, args.steps)
    except (HuabuError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cached = sum(m["cached"] for m in manifest)
    print(f"{len(manifest)} variants ({cached} from cache); contact sheet: {args.out / 'contact_sheet.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The served PNG encoder against Pillow's, on images the bundled model generated (a benchmark,
not a test). Prints medians of interleaved rounds, the speed-up and both file sizes.

    .venv/bin/python bench/bench_png.py [--rounds N] [--levels 1,6]

1024x1024 is a 2x2 mosaic of four 512x512 generations (the bundled model's largest size), so its
content is generated, not scaled up. The encoder uses up to 8 threads: the speed-up grows with the
machine's cores (a model replica's host typically has 8-16 per GPU).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time

import numpy as np
from PIL import Image, PngImagePlugin

from huabu.deployments.backends import requests as R
from huabu.deployments.backends.mmdit.checkpoint import load_checkpoint
from huabu.deployments.backends.mmdit.pipeline import Pipeline
from huabu.deployments.backends.mmdit.png import encode_png, encoder_threads

PARAMETERS = {"prompt": "a red circle on the left", "seed": 1, "model": "tiny-mmdit@v1"}


def pillow_png(pixels: np.ndarray, level: int) -> bytes:
    """Pillow's encoder with the same text chunks: what the server used before its own encoder."""
    info = PngImagePlugin.PngInfo()
    for key, value in PARAMETERS.items():
        info.add_itxt(key, str(value))
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", pnginfo=info, compress_level=level)
    return buffer.getvalue()


def generated_images(steps: int) -> dict[str, np.ndarray]:
    pipeline = Pipeline(load_checkpoint("tiny-mmdit@v1"))
    prompts = ["a red circle on the left", "a blue square", "a green triangle at the top", "a yellow star"]

    def generate(prompt: str, size: int, seed: int) -> np.ndarray:
        pixels = pipeline([R.generation(prompt, seed=seed, size=(size, size), steps=steps)])[0].pixels
        assert pixels is not None
        return pixels

    tiles = [generate(p, 512, seed) for seed, p in enumerate(prompts)]
    return {
        "256x256": generate(prompts[0], 256, 9),
        "512x512": tiles[0],
        "1024x1024": np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--levels", default="1,6", help="zlib levels, comma-separated (the server's default: 1)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"threads: {encoder_threads()} of {os.cpu_count()} cores; rounds={args.rounds} (medians)")
    for name, pixels in generated_images(args.steps).items():
        for level in (int(v) for v in args.levels.split(",")):
            for image in (encode_png(pixels, PARAMETERS, level), pillow_png(pixels, level)):  # warm-up
                with Image.open(io.BytesIO(image)) as decoded:
                    assert np.array_equal(np.asarray(decoded.convert("RGB")), pixels)
            timings: dict[str, list[float]] = {"pillow": [], "ours": []}
            sizes = {"pillow": len(pillow_png(pixels, level)), "ours": len(encode_png(pixels, PARAMETERS, level))}
            for i in range(args.rounds):
                # Alternate which goes first, so that drift on a shared machine falls on both.
                order = ["pillow", "ours"] if i % 2 else ["ours", "pillow"]
                for kind in order:
                    start = time.perf_counter()
                    pillow_png(pixels, level) if kind == "pillow" else encode_png(pixels, PARAMETERS, level)
                    timings[kind].append(time.perf_counter() - start)
            pillow, ours = (statistics.median(timings[k]) * 1e3 for k in ("pillow", "ours"))
            print(
                f"png {name} level {level}: Pillow {pillow:6.1f} ms {sizes['pillow']:>9,} B | ours {ours:6.1f} ms "
                f"{sizes['ours']:>9,} B | {pillow / ours:.2f}x faster, size {sizes['ours'] / sizes['pillow']:.3f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()

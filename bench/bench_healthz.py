"""/healthz latency at the gateway while large uploads decode (#25 hole 4: decoding runs in a worker
thread, so the event loop keeps answering). A benchmark, not a test: the test
(tests/security/test_work_before_limits.py) asserts only outcomes.

    .venv/bin/python bench/bench_healthz.py [--rounds 6] [--probes 25] [--storm 4] [--synthetic 1x128]

Each round measures three phases, in rotating order so that drift on a shared machine falls on
all: **quiet**, ``--probes`` sequential ``GET /healthz``; **decode**, sequential probes for as
long as ``--storm`` concurrent ``POST /v1/images/edits`` upload a noise PNG of the served model's
largest side minus one pixel (the most a request can make the gateway decode; it is refused once
decoded for being off the model's pixel multiple, so no model work follows); **header**, the
same with one pixel over the side, refused from its PNG header before any decoding. The header
storm moves the same bytes through Serve's proxy and the multipart parser, so decode/header is
what the decoding itself costs the event loop, and header/quiet what the uploads cost. It prints
p50/p95 per phase and the ratios. The served model is by default a random one of Qwen-Image's shape (depth 1,
width 128; ``bench_serving.synthetic_checkpoint``) because its 2048-pixel side is what a
production model accepts; ``--synthetic ''`` serves the bundled 512-pixel model instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from bench_serving import Served, deploy, synthetic_checkpoint
from PIL import Image
from ray import serve


def noise_png(side: int) -> bytes:
    """Random pixels: PNG cannot compress them, so the upload and the decode are as large as they get."""
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--probes", type=int, default=25, help="GET /healthz per quiet phase")
    parser.add_argument("--storm", type=int, default=4, help="concurrent edit uploads during a storm phase")
    parser.add_argument("--synthetic", default="1x128", help="DEPTHxWIDTH of the random model ('' = the bundled one)")
    args = parser.parse_args()

    import ray

    served = Served()
    if args.synthetic:
        root = tempfile.mkdtemp()
        served = dataclasses.replace(served, model=synthetic_checkpoint(args.synthetic, Path(root)), model_dirs=(root,))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = 8767
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = deploy("healthz", port, served=served)
    with httpx.Client(base_url=base, timeout=60) as c:
        max_side = int(c.get("/v1/models").json()["data"][0]["sampling"]["max_side"])
    # The same upload twice over: one pixel under the model's side (decoded, then refused for being
    # off the model's pixel multiple) and one over it (refused from the PNG header, never decoded).
    uploads = {"decode": noise_png(max_side - 1), "header": noise_png(max_side + 1)}
    for name, image in uploads.items():
        print(f"{name}: {len(image) / 1e6:.1f} MB noise PNG per upload (model side {max_side})")

    def edit(image: bytes) -> int:
        files = {"image": ("i.png", image, "image/png")}
        return httpx.post(f"{base}/v1/images/edits", data={"prompt": "p"}, files=files, timeout=120).status_code

    def probe(c: httpx.Client) -> float:
        started = time.perf_counter()
        assert c.get("/healthz").status_code == 200
        return time.perf_counter() - started

    names = ("quiet", "decode", "header")
    phases: dict[str, list[float]] = {name: [] for name in names}
    statuses: list[int] = []
    with httpx.Client(base_url=base, timeout=60) as c, ThreadPoolExecutor(args.storm) as pool:
        probe(c)  # connection and first-request warm-up, measured in no phase
        for i in range(args.rounds):
            for name in names[i % 3 :] + names[: i % 3]:  # each phase first, second and last in turn
                if name == "quiet":
                    for _ in range(args.probes):
                        phases[name].append(probe(c))
                        time.sleep(0.01)
                    continue
                edits = [pool.submit(edit, uploads[name]) for _ in range(args.storm)]
                while not all(f.done() for f in edits):  # only probes that overlap the uploads count
                    phases[name].append(probe(c))
                    time.sleep(0.01)
                statuses += [f.result() for f in edits]
    assert all(s == 400 for s in statuses), f"an upload was not refused: {statuses}"
    p = {(name, q): percentile(xs, q) * 1e3 for name, xs in phases.items() for q in (0.5, 0.95)}
    print(f"{args.rounds} rounds, {args.storm} concurrent uploads per storm ({len(statuses)}, all refused: 400)")
    for name in names:
        print(f"/healthz {name:6}: p50 {p[name, 0.5]:6.1f} ms  p95 {p[name, 0.95]:6.1f} ms  (n={len(phases[name])})")
    for a, b in (("decode", "quiet"), ("header", "quiet"), ("decode", "header")):
        mean = statistics.fmean(phases[a]) / statistics.fmean(phases[b])
        print(f"{a}/{b}: p50 x{p[a, 0.5] / p[b, 0.5]:.2f}  p95 x{p[a, 0.95] / p[b, 0.95]:.2f}  (mean x{mean:.2f})")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()

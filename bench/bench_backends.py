"""The diffusers backend's own cost: one tiny random Qwen-Image pipeline (tests/diffusers/tiny_pipelines.py,
saved with ``save_pretrained`` and loaded back, as a downloaded checkpoint is), driven in one run as:

A. bare diffusers: ``DiffusionPipeline.from_pretrained`` and the pipeline's ``__call__`` with the
   arguments the backend passes (prompt and negative prompt lists, ``true_cfg_scale``, steps, size,
   one CPU ``torch.Generator`` seeded alike, ``output_type="np"``);
A'. the same call under ``torch.inference_mode``, as the backend runs it (the pipeline's own
   ``__call__`` runs under ``no_grad`` only): the backend's own code shows in B/A';
B. huabu's backend in-process (``load_backend``, the same ``SampleRequest`` through the replica
   contract's ``__call__``): validation, grouping, the step callback, uint8 pixels;
O. (``--own``) B with ``model.transformer: own``: the same pipeline denoising with huabu's MMDiT on
   the same weights; O/B is the end-to-end effect of the own transformer (on the tiny pipeline the
   transformer is a small part of a generation: bench_transformer.py times the transformers alone);
C. over HTTP (optional): the whole application on a local Ray Serve serving the pipeline as the
   ``diffusers:<dir>`` stable variant, ``POST /v1/images/generations`` with ``b64_json``.

The arms are interleaved, each taking each position in turn, after a warm-up; medians and the
median of the per-round ratios are printed, of wall time and of this process's CPU time (which
other work on a shared machine does not lengthen). Target: B/A and B/A' <= 1.03 at a generation
of >= 1 s (printed PASS/FAIL; benchmarks print, tests never time).
C also pays for the prompt and image filters, the PNG, storage and the Serve hops (what
bench_serving.py measures for the own model); its ratio is printed against B, with the replica's
own generation time beside it. A, A', B and C must give the same pixels for the same seed: checked once.

Usage: python bench/bench_backends.py [--pairs 9] [--size 160x160] [--steps 50] [--threads 1] [--no-http] [--own]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

TARGET = 1.03  # the backend's time over a bare diffusers call
MIN_GENERATION_S = 1.0  # the target holds from this generation time up
PROMPT = "a red circle on a blue square"


def tiny_pipeline(root: Path) -> Path:
    """The tests' tiny Qwen-Image (the real component classes at toy sizes), saved under ``root``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "diffusers"))
    from tiny_pipelines import build_qwen_image

    return build_qwen_image(root / "tiny-qwen-image")


def bench_settings(folder: Path, threads: int, port: int) -> Any:
    """One settings object for the in-process backend and the deployed application."""
    from huabu.deployments.core.settings import Settings

    name = "backends"
    return Settings.load(
        environ={},
        app_name=name,
        state={"namespace": name},
        storage={"local_dir": tempfile.mkdtemp(), "public_base_url": f"http://127.0.0.1:{port}/{name}"},
        model={"torch_threads": threads, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        variants={"stable": {"model": f"diffusers:{folder}"}},
        auth={"enabled": False},  # serving is measured, not key checks
        development=True,  # a local benchmark: the public URL-signing secret is fine
    )


class Bare:
    """Arm A: diffusers alone, called as the backend calls it."""

    def __init__(self, folder: Path, guidance_parameter: str) -> None:
        import diffusers
        import torch

        self.pipeline = diffusers.DiffusionPipeline.from_pretrained(str(folder), dtype=torch.float32).to("cpu")
        self.pipeline.set_progress_bar_config(disable=True)  # as the backend does: no tqdm per step
        self.guidance_parameter = guidance_parameter

    def __call__(self, seed: int, height: int, width: int, steps: int, guidance: float) -> np.ndarray:
        import torch

        from huabu.deployments.backends.diffusers.backend import BLANK_NEGATIVE

        blank = BLANK_NEGATIVE if self.guidance_parameter == "true_cfg_scale" else ""
        return self.pipeline(
            prompt=[PROMPT],
            negative_prompt=[blank],
            height=height,
            width=width,
            num_inference_steps=steps,
            generator=[torch.Generator().manual_seed(seed)],
            output_type="np",
            **{self.guidance_parameter: guidance},
        ).images


def to_uint8(images: np.ndarray) -> np.ndarray:
    """The backend's conversion, for the pixel check (outside the timed call)."""
    return (np.clip(images[0], 0.0, 1.0) * 255.0).round().astype(np.uint8)


def deploy(settings: Any, port: int) -> str:
    from ray import serve

    from huabu.deployments.app import build_app

    base = f"http://127.0.0.1:{port}/{settings.app_name}"
    serve.run(build_app(settings), name=settings.app_name, route_prefix=f"/{settings.app_name}", blocking=False)
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{base} not ready after 300 s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def median_interval(values: list[float], resamples: int = 2000) -> tuple[float, float]:
    """A bootstrap 90 % interval of the median (as in bench_serving.py)."""
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(values, size=(resamples, len(values))), axis=1)
    return float(np.percentile(medians, 5)), float(np.percentile(medians, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=9, help="measured rounds (one call per arm each)")
    parser.add_argument("--size", default="160x160", help="WIDTHxHEIGHT (multiples of 8)")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (QwenImagePipeline's default: 50)")
    parser.add_argument("--guidance", type=float, default=4.0, help="true CFG scale (the pipeline's default: 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads here and in the replica")
    parser.add_argument("--no-http", action="store_true", help="only the in-process arms (A and B)")
    parser.add_argument("--own", action="store_true", help="arm O: B with model.transformer own")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    # The model replica's process runs under model.env_vars (allocator settings): so does this one,
    # where the in-process arms run, as in bench_serving.py.
    from huabu.deployments.core.settings import ModelDeploymentSettings

    model_env = ModelDeploymentSettings().env_vars
    if any(os.environ.get(k) != v for k, v in model_env.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **model_env})

    import torch

    from huabu.deployments.backends import requests as R
    from huabu.deployments.backends.diffusers.backend import DiffusersBackend
    from huabu.deployments.backends.loader import load_backend

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    folder = tiny_pipeline(root)
    port = free_port()
    settings = bench_settings(folder, args.threads, port)
    backend = load_backend(settings.variants["stable"], settings)  # as the replica loads it
    assert isinstance(backend, DiffusersBackend)
    bare = Bare(folder, backend.guidance_parameter)

    def request(seed: int) -> Any:
        return R.generation(PROMPT, seed=seed, size=(height, width), steps=args.steps, guidance=args.guidance)

    def timed(call: Any) -> Any:
        def run(seed: int) -> tuple[float, float]:
            """-> (wall seconds, this process's CPU seconds)."""
            cpu, start = time.process_time(), time.perf_counter()
            call(seed)
            return time.perf_counter() - start, time.process_time() - cpu

        return run

    def bare_call(seed: int) -> np.ndarray:
        return bare(seed, height, width, args.steps, args.guidance)

    def bare_inference_mode(seed: int) -> np.ndarray:
        with torch.inference_mode():
            return bare_call(seed)

    base = None
    client = None
    if not args.no_http:
        import httpx
        import ray
        from ray import serve

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base = deploy(settings, port)
        client = httpx.Client(timeout=600)

    replica_s: list[float] = []

    def post(seed: int) -> np.ndarray:
        """One request over HTTP; records the replica's own generation time; -> the pixels."""
        from PIL import Image

        assert client is not None
        body = {
            "prompt": PROMPT,
            "size": f"{width}x{height}",
            "steps": args.steps,
            "guidance_scale": args.guidance,
            "seed": seed,
            "response_format": "b64_json",
            "cache": "bypass",
        }
        r = client.post(f"{base}/v1/images/generations", json=body)
        r.raise_for_status()
        data = r.json()["data"][0]
        replica_s.append(float(data["metadata"]["generation_s"]))
        with Image.open(io.BytesIO(base64.b64decode(data["b64_json"]))) as image:
            return np.asarray(image.convert("RGB"))

    arms: dict[str, tuple[str, Any]] = {
        "A": ("diffusers pipeline call", timed(bare_call)),
        "A'": ("the same under inference_mode", timed(bare_inference_mode)),
        "B": ("huabu backend, in-process", timed(lambda seed: backend([request(seed)]))),
    }
    own = None
    if args.own:
        own_settings = settings.model_copy(update={"model": settings.model.model_copy(update={"transformer": "own"})})
        own = load_backend(own_settings.variants["stable"], own_settings)
        arms["O"] = ("B on the own MMDiT transformer", timed(lambda seed: own([request(seed)])))
    if client is not None:
        arms["C"] = ("HTTP, whole application", timed(post))

    # Warm-up, and the pixel check: the same seed gives the same image every way.
    (b_result,) = backend([request(7)])
    assert b_result.pixels is not None
    checks = []
    for name, call in (("A", bare_call), ("A'", bare_inference_mode)):
        same = np.array_equal(to_uint8(call(7)), b_result.pixels)
        checks.append(f"{name} == B pixel-equal: {'yes' if same else 'NO'}")
    if own is not None:
        (o_result,) = own([request(7)])
        assert o_result.pixels is not None
        levels = int(np.abs(o_result.pixels.astype(int) - b_result.pixels.astype(int)).max())
        checks.append(f"O vs B: at most {levels} level(s) apart")
    if client is not None:
        diff = int(np.abs(post(7).astype(int) - b_result.pixels.astype(int)).max())
        checks.append(f"C == B: {'yes' if diff == 0 else f'NO (max difference {diff} levels)'}")
    for _, run in arms.values():
        run(1)
    replica_s.clear()

    wall: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    order = list(arms)
    for i in range(args.pairs):
        seed = 1000 + i
        # Each arm takes each position in turn: drift and what a run leaves behind fall on all alike.
        for name in order[i % len(order) :] + order[: i % len(order)]:
            wall_s, cpu_s = arms[name][1](seed)
            wall[name].append(wall_s)
            cpu[name].append(cpu_s)

    print(
        f"tiny Qwen-Image (random weights), CPU float32, {width}x{height}, {args.steps} steps, true CFG "
        f"{args.guidance:g}, torch threads {args.threads}, {args.pairs} rounds; {'; '.join(checks)}"
    )
    print(f"{'arm':<36} {'wall ms: median':>15} {'min':>8} {'max':>8}  {'CPU ms: median':>14}")
    for name, (label, _) in arms.items():
        values = wall[name]
        # The HTTP arm computes in the replica: this process's CPU time says nothing about it.
        cpu_ms = f"{statistics.median(cpu[name]) * 1e3:14.1f}" if name != "C" else f"{'-':>14}"
        print(
            f"{name:<3}{label:<33} {statistics.median(values) * 1e3:15.1f} {min(values) * 1e3:8.1f} "
            f"{max(values) * 1e3:8.1f}  {cpu_ms}"
        )
    if client is not None:
        label = "   C: generation_s, as the replica says"
        print(f"{label:<36} {statistics.median(replica_s) * 1e3:15.1f}")

    def paired(times: dict[str, list[float]], over: str, under: str) -> tuple[float, str]:
        ratios = [o / u for o, u in zip(times[over], times[under], strict=True)]
        ratio, (low, high) = statistics.median(ratios), median_interval(ratios)
        o, u = statistics.median(times[over]), statistics.median(times[under])
        minima = min(times[over]) / min(times[under])
        text = (
            f"{over}/{under}: median of paired ratios {ratio:.4f} [90 % interval {low:.4f}-{high:.4f}], "
            f"ratio of medians {o / u:.4f} ({(o - u) * 1e3:+.1f} ms), of minima {minima:.4f}"
        )
        return ratio, text

    # The backend runs the pipeline under torch.inference_mode (the pipeline itself under no_grad), so
    # it is judged against both: its own code shows in B/A'. Wall time is what a client waits; the
    # process's CPU time does not count the time other work on a shared machine takes the cores away,
    # so the generation's length is the smaller of the two.
    generation = min(statistics.median(wall["A'"]), statistics.median(cpu["A'"]))
    for kind, times in (("wall", wall), ("CPU", cpu)):
        results = [paired(times, "B", "A"), paired(times, "B", "A'")]
        for _, text in results:
            print(f"backend overhead, {kind} time, {text}")
        if generation < MIN_GENERATION_S:
            verdict = f"n/a: a generation of {generation:.2f} s is under {MIN_GENERATION_S:g} s (raise --size/--steps)"
        else:
            worst = max(ratio for ratio, _ in results)
            verdict = f"{'PASS' if worst <= TARGET else 'FAIL'} ({worst:.4f}; target <= {TARGET} against A and A')"
        print(f"backend overhead, {kind} time: {verdict}")
    if own is not None:
        for kind, times in (("wall", wall), ("CPU", cpu)):
            print(f"own transformer, {kind} time, {paired(times, 'O', 'B')[1]}")
    if client is not None:
        _, text = paired(wall, "C", "B")
        replica = statistics.median(replica_s) / statistics.median(wall["B"])
        print(f"HTTP {text}: prompt and image filters, PNG, storage, Serve; replica generation_s / B {replica:.3f}")
        client.close()
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()

"""Serving benchmarks on a real local Ray Serve, each against a baseline in the same run:

1. latency of one uncached generation over HTTP through every deployment (gateway, prompt filter,
   cache, image filter, router, model, storage) vs the same pipeline called in-process: the same
   prompt filter, model, PNG encoding, image filter, storage write and base64 answer, with the
   same settings, model and torch threads; interleaved; target <= 1.05x. Measured for several
   workloads (size x steps), since the serving overhead is a fixed cost per request and the
   ratio depends on how long the generation itself takes. The model alone is timed too, so the
   cost of the filters themselves shows, and so is the generation time the model replica reports
   (compute in a replica vs in-process); an empty chain of the same shape and transport (an HTTP
   ingress and five pass-through deployments returning a PNG of the same size) shows the part of
   the overhead that is Serve's own proxy and hops on this machine. The three kinds of run take
   turns at going first in each round, and only the application under test is deployed while
   they run (the empty chain is measured after them). The same generation over gRPC
   (``huabu.v1.Images/Generate`` through Serve's gRPC proxy, raw stubs) takes its turn too, with
   its ratio to HTTP paired by round;
2. throughput of 8 concurrent clients with batching on vs off (max_batch_size 8 vs 1),
   interleaved rounds, for the API's default request (32x32, 20 steps with the bundled model)
   and a larger one; target >= 1.5x.

On a GPU (``--device cuda``) the same comparison runs with the model on the GPU on both sides;
``--synthetic DEPTHxWIDTH`` serves a randomly initialised model of Qwen-Image's shape (head dim 128,
16 latent channels, 8x downsampling codec, patch 2) at that depth and width, so that a generation
costs what a production MMDiT's does rather than the bundled model's few milliseconds.

Usage: python bench/bench_serving.py [--rounds N] [--workloads 32x32:20,64x64:30,128x128:30,256x256:30]
       python bench/bench_serving.py --device cuda --dtype bfloat16 --synthetic 24x1536 --workloads 1024x1024:30
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ray import serve  # after the environment it reads


@dataclasses.dataclass(frozen=True)
class Served:
    """The checkpoint and where it runs: the same in the replica and in-process."""

    model: str | None = None  # None: the settings' default (the bundled model)
    model_dirs: tuple[str, ...] = ()
    device: str = "cpu"
    dtype: str = "float32"


def bench_settings(
    name: str, port: int, telemetry: dict[str, object] | None = None, served: Served = Served(), **model: object
) -> Any:
    from huabu.deployments.core.settings import Settings

    base = f"http://127.0.0.1:{port}/{name}"
    # A fraction of the GPU, so that the batched and the unbatched app fit on one.
    gpus = 0.25 if served.device == "cuda" else 0.0
    return Settings.load(
        environ={},
        app_name=name,
        state={"namespace": name},
        storage={"local_dir": tempfile.mkdtemp(), "public_base_url": base},
        model={
            "torch_threads": 1,
            "num_gpus": gpus,
            "dtype": served.dtype,
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            **model,
        },
        model_dirs=list(served.model_dirs),
        **({"variants": {"stable": {"model": served.model}}} if served.model else {}),
        telemetry=telemetry or {},
        auth={"enabled": False},  # benchmarks measure serving, not key checks
        development=True,  # a local benchmark may sign file URLs with the public development secret
    )


def deploy(
    name: str, port: int, telemetry: dict[str, object] | None = None, served: Served = Served(), **model: object
) -> str:
    from huabu.deployments.app import build_app

    base = f"http://127.0.0.1:{port}/{name}"
    app = build_app(bench_settings(name, port, telemetry, served, **model))
    serve.run(app, name=name, route_prefix=f"/{name}", blocking=False)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(name)


class InProcess:
    """The served pipeline's work, called in this process: prompt filter, model, PNG, image
    filter, storage write and the base64 answer (what the HTTP path does minus Serve)."""

    def __init__(self, settings: Any) -> None:
        import torch

        from huabu.deployments.backends.loader import load_backend
        from huabu.deployments.core.storage import open_storage
        from huabu.filters import ImageFilter, PromptFilter

        torch.set_num_threads(1)  # the replicas run one torch thread too (model.torch_threads)
        self.model_id = settings.variants["stable"].model_id
        self.pipeline = load_backend(settings.variants["stable"], settings)  # as the replica loads it
        self.prompt_filter = PromptFilter(settings.safety.prompt)
        self.image_filter = ImageFilter(settings.safety.image)
        self.prompt_filter.warmup()
        self.image_filter.warmup()
        self.storage = open_storage(settings.storage)
        self.png_compress_level = settings.model.png_compress_level

    def _png(self, prompt: str, seed: int, size: tuple[int, int], steps: int) -> bytes:
        from huabu.deployments.backends import requests as R
        from huabu.deployments.backends.mmdit.png import encode_png

        result = self.pipeline([R.generation(prompt, seed=seed, size=size, steps=steps)])[0]
        assert result.pixels is not None
        return encode_png(result.pixels, {"prompt": prompt, "seed": seed}, self.png_compress_level)

    def model_only(self, prompt: str, seed: int, size: tuple[int, int], steps: int) -> float:
        start = time.perf_counter()
        self._png(prompt, seed, size, steps)
        return time.perf_counter() - start

    def every_stage(self, prompt: str, seed: int, size: tuple[int, int], steps: int) -> float:
        start = time.perf_counter()
        assert not self.prompt_filter.check_request(prompt, "").blocked
        png = self._png(prompt, seed, size, steps)
        assert not self.image_filter.check_png(png).blocked  # the image filter reads the PNG, as served
        asyncio.run(self.storage.put(png))
        base64.b64encode(png)
        return time.perf_counter() - start


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class PassThrough:
    """One stage of the empty chain: forwards to the next, the last one answers with a PNG."""

    def __init__(self, next_stage: Any = None, png: bytes = b"") -> None:
        from huabu.deployments.core.handles import connect
        from huabu.deployments.core.settings import Settings

        # The app's transport between stages (deployments/core/handles.py).
        self.next_stage = None if next_stage is None else connect(next_stage, Settings.load(environ={}))
        self.png = png

    async def generate(self, request: Any) -> Any:
        from huabu.deployments.core.messages import ModelResult

        if self.next_stage is None:
            return ModelResult(png=self.png, seed=request.seed, model="empty", prompt_truncated=False)
        return await self.next_stage.generate.remote(request)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class EmptyIngress:
    def __init__(self, next_stage: Any) -> None:
        from huabu.deployments.core.handles import connect
        from huabu.deployments.core.settings import Settings

        self.next_stage = connect(next_stage, Settings.load(environ={}))

    async def __call__(self, request: Any) -> dict[str, Any]:
        from huabu.deployments.core.messages import ModelRequest

        body = await request.json()
        model_request = ModelRequest("generate", body["prompt"], body["seed"], 64, 64, 30, 1.0)
        result = await self.next_stage.generate.remote(model_request)
        return {"data": [{"b64_json": base64.b64encode(result.png).decode()}]}


def deploy_empty_chain(port: int, png: bytes, depth: int = 5) -> str:
    stage: Any = PassThrough.bind(None, png)
    for _ in range(depth - 1):
        stage = PassThrough.bind(stage)
    serve.run(EmptyIngress.bind(stage), name="empty", route_prefix="/empty")
    return f"http://127.0.0.1:{port}/empty"


def synthetic_checkpoint(shape: str, root: Path) -> str:
    """Save a random model of Qwen-Image's shape, DEPTHxWIDTH (bfloat16 weights), under ``root``."""
    import torch

    from huabu.deployments.backends.mmdit.checkpoint import random_init, save_checkpoint
    from huabu.deployments.backends.mmdit.config import CodecConfig, TextEncoderConfig, qwen_image_config

    depth, width = (int(v) for v in shape.split("x"))
    heads = width // 128
    # Qwen-Image's text encoder and VAE are external; here a one-layer byte encoder of the same
    # width and the bundled autoencoder with the VAE's latent shape stand in for them.
    config = dataclasses.replace(
        qwen_image_config(),
        depth=depth,
        width=width,
        num_heads=heads,
        text_width=width,
        text=TextEncoderConfig(width=width, depth=1, num_heads=heads),
        codec=CodecConfig(kind="autoencoder", latent_channels=16, downsample=8),
    )
    bundle = random_init(seed=0, config=config)
    bundle.model_id = f"synthetic-d{depth}w{width}@v0"
    save_checkpoint(bundle, root, {"note": "random weights, for serving benchmarks"}, dtype=torch.bfloat16)
    return bundle.model_id


def median_interval(values: list[float], resamples: int = 2000) -> tuple[float, float]:
    """A bootstrap 90 % interval of the median: on machines whose rounds spread by 10-30 %, it says
    whether a ratio is above or below a target or merely near it."""
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(values, size=(resamples, len(values))), axis=1)
    return float(np.percentile(medians, 5)), float(np.percentile(medians, 95))


def parse_workloads(text: str) -> list[tuple[int, int, int]]:
    """Parse "32x32:20,64x64:30" into [(height, width, steps), ...]."""
    workloads = []
    for item in filter(None, text.split(",")):
        size, steps = item.split(":")
        width, height = (int(v) for v in size.split("x"))
        workloads.append((height, width, int(steps)))
    return workloads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--workloads", default="32x32:20,64x64:30,128x128:30,256x256:30", help="WxH:steps,...")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=3)
    # The API's default request (the bundled model's 32x32, 20 steps), then a larger one.
    parser.add_argument("--throughput-workloads", default="32x32:20,64x64:30", help="WxH:steps,... ('' skips)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--model", help="name@version to serve (default: the bundled model)")
    parser.add_argument("--model-dir", action="append", default=[], help="where checkpoints are looked up")
    parser.add_argument("--synthetic", metavar="DEPTHxWIDTH", help="serve random weights of Qwen-Image's shape")
    parser.add_argument("--num-cpus", type=int, default=2, help="the local Ray's CPUs")
    args = parser.parse_args()

    # The model replicas' environment (model.env_vars, e.g. the allocator's) takes effect when a
    # process starts: this process computes the in-process baseline, so it runs under it too.
    from huabu.deployments.core.settings import ModelDeploymentSettings

    model_env = ModelDeploymentSettings().env_vars
    if any(os.environ.get(name) != value for name, value in model_env.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **model_env})

    import ray

    workloads = parse_workloads(args.workloads)
    served = Served(args.model, tuple(args.model_dir), args.device, args.dtype)
    if args.synthetic:
        root = tempfile.mkdtemp()
        model = synthetic_checkpoint(args.synthetic, Path(root))
        served = dataclasses.replace(served, model=model, model_dirs=(*served.model_dirs, root))
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    port = 8765
    from huabu.sdk.grpc_api import SERVICER_FUNCTIONS, images_pb2_grpc
    from huabu.sdk.grpc_api import images_pb2 as pb

    grpc_port = 9765
    serve.start(
        http_options={"host": "127.0.0.1", "port": port},
        grpc_options={"port": grpc_port, "grpc_servicer_functions": list(SERVICER_FUNCTIONS)},
    )
    batched = deploy("batched", port, served=served, max_batch_size=8, max_ongoing_requests=16)
    local = InProcess(bench_settings("batched", port, served=served))
    prompt = "a red circle on the left"

    def over_http(client: httpx.Client, base: str, seed: int, height: int, width: int, steps: int) -> float:
        return timed_request(client, base, seed, height, width, steps)[0]

    def timed_request(
        client: httpx.Client, base: str, seed: int, height: int, width: int, steps: int
    ) -> tuple[float, float]:
        """-> (seconds over HTTP, seconds the model replica reports it generated)."""
        # A new seed each time: every request is a miss.
        body = {"prompt": prompt, "size": f"{width}x{height}", "steps": steps, "seed": seed}
        start = time.perf_counter()
        r = client.post(f"{base}/v1/images/generations", json=body)
        r.raise_for_status()
        return time.perf_counter() - start, float(r.json()["data"][0]["metadata"]["generation_s"])

    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = images_pb2_grpc.ImagesStub(channel)

    def over_grpc(seed: int, height: int, width: int, steps: int) -> float:
        request = pb.GenerateRequest(prompt=prompt, size=f"{width}x{height}", steps=steps, seed=seed)
        start = time.perf_counter()
        stub.Generate(request, metadata=[("application", "batched")], timeout=300)
        return time.perf_counter() - start

    print(
        f"settings: torch threads=1 model={local.model_id} device={served.device} dtype={served.dtype} "
        f"rounds={args.rounds} (medians)"
    )
    with httpx.Client(timeout=300) as client:
        for height, width, steps in workloads:
            timings: dict[str, list[float]] = {"model": [], "stages": [], "http": [], "empty": [], "served": []}
            timings_grpc: list[float] = []
            for seed in range(2):  # warm-up
                local.every_stage(prompt, seed, (height, width), steps)
                over_http(client, batched, seed, height, width, steps)
                over_grpc(500 + seed, height, width, steps)
            for i in range(args.rounds):
                seed = 1000 * steps + height + i

                # Each kind of run takes each position in turn: whatever the previous run leaves
                # behind (background work in the replicas, a cold CPU cache) falls on all alike.
                kinds = ["model", "stages", "http", "grpc"]
                for kind in kinds[i % 4 :] + kinds[: i % 4]:
                    if kind == "grpc":  # its own seed: a miss, not the HTTP request's cached image
                        timings_grpc.append(over_grpc(seed + 500_000, height, width, steps))
                    elif kind == "model":
                        timings["model"].append(local.model_only(prompt, seed, (height, width), steps))
                    elif kind == "stages":
                        timings["stages"].append(local.every_stage(prompt, seed, (height, width), steps))
                    else:
                        http_s, served_s = timed_request(client, batched, seed, height, width, steps)
                        timings["http"].append(http_s)
                        timings["served"].append(served_s)
            # Measured after the rounds: while they ran, the machine carried only the application
            # (an idle deployment's own CPU use would otherwise weigh on both kinds of run).
            empty = deploy_empty_chain(port, local._png(prompt, 0, (height, width), steps))
            for seed in range(3 * args.rounds):
                start = time.perf_counter()
                client.post(empty, json={"prompt": prompt, "seed": seed}).raise_for_status()
                timings["empty"].append(time.perf_counter() - start)
            serve.delete("empty")
            model, stages, http, floor, replica = (statistics.median(timings[k]) * 1e3 for k in timings)
            # Paired: each HTTP request against the in-process run of the same round (drift cancels).
            ratios = [h / s for h, s in zip(timings["http"], timings["stages"], strict=True)]
            paired = statistics.median(ratios)
            low, high = median_interval(ratios)
            print(
                f"latency {width}x{height} {steps} steps | in-process: model {model:7.1f} ms, every stage "
                f"{stages:7.1f} ms | HTTP through every deployment {http:7.1f} ms | overhead {http - stages:6.1f} ms "
                f"(Serve's empty chain of the same shape: {floor:5.1f} ms) | ratio {http / stages:.3f}, paired "
                f"{paired:.3f} [90 % interval {low:.3f}-{high:.3f}] (target <= 1.05); over the model alone "
                f"{http / model:.3f}; the replica's own generation {replica:7.1f} ms",
                flush=True,
            )
            # Both doors against the same round's in-process run: the overheads the issue compares
            # (goal: gRPC's <= HTTP's), and gRPC against HTTP directly, paired by round.
            by_grpc = [g / h for g, h in zip(timings_grpc, timings["http"], strict=True)]
            grpc_low, grpc_high = median_interval(by_grpc)
            grpc_local = [g / s for g, s in zip(timings_grpc, timings["stages"], strict=True)]
            gl_low, gl_high = median_interval(grpc_local)
            grpc_ms = statistics.median(timings_grpc) * 1e3
            print(
                f"  gRPC Generate {grpc_ms:7.1f} ms | overhead over in-process: gRPC {grpc_ms - stages:6.1f} ms, "
                f"HTTP {http - stages:6.1f} ms | paired gRPC/in-process {statistics.median(grpc_local):.3f} "
                f"[90 % interval {gl_low:.3f}-{gl_high:.3f}], HTTP/in-process {paired:.3f} | paired gRPC/HTTP "
                f"{statistics.median(by_grpc):.3f} [90 % interval {grpc_low:.3f}-{grpc_high:.3f}]",
                flush=True,
            )

    def throughput(base: str, round_id: int, height: int, width: int, steps: int) -> float:
        def client_run(c: int) -> None:
            with httpx.Client(timeout=600) as client:
                for k in range(args.per_client):
                    over_http(client, base, 100_000 * round_id + 100 * c + k, height, width, steps)

        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client_run, range(args.clients)))
        return args.clients * args.per_client / (time.perf_counter() - start)

    # Deployed only now: during the latency runs the machine carries one application, as served.
    throughput_workloads = parse_workloads(args.throughput_workloads)
    if throughput_workloads:
        unbatched = deploy("unbatched", port, served=served, max_batch_size=1, max_ongoing_requests=16)
    for w, (height, width, steps) in enumerate(throughput_workloads):
        on, off = [], []
        for r in range(max(3, args.rounds // 3)):
            on.append(throughput(batched, 10 * w + 2 * r, height, width, steps))
            off.append(throughput(unbatched, 10 * w + 2 * r + 1, height, width, steps))
        print(
            f"throughput {args.clients} clients x {args.per_client}, {width}x{height} {steps} steps: batching on "
            f"{statistics.median(on):.2f} img/s | off {statistics.median(off):.2f} img/s | ratio "
            f"{statistics.median(on) / statistics.median(off):.2f} (target >= 1.5)",
            flush=True,
        )
    channel.close()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()

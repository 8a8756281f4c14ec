"""Tracing overhead on a real local Ray Serve: the same application deployed twice in one run,
once with tracing off (the default) and once exporting every span over OTLP/HTTP to a local
receiver (100 % sampling, the worst case). Requests alternate between the two, medians compared.
Target: tracing on is at most 3 % slower.

Two paths: an uncached generation through every stage (``cache=bypass``) and a cache hit (the
shortest traced request, where span overhead weighs most).

Usage: python bench/bench_tracing.py [--rounds N] [--size 32x32] [--steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from bench_serving import deploy


class SpanSink:
    """Accepts OTLP/HTTP exports and counts their bytes (decoding is the collector's cost, not ours)."""

    def __init__(self) -> None:
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.bytes += len(self.rfile.read(int(self.headers.get("content-length", 0))))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--size", default="32x32")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()

    import ray
    from ray import serve

    sink = SpanSink()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = 8768
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    apps = {
        "off": deploy("tracingoff", port),
        "on": deploy("tracingon", port, telemetry={"traces": "otlp", "endpoint": sink.endpoint}),
    }
    body = {"prompt": "科技蓝风格封面 tracing", "size": args.size, "steps": args.steps, "seed": 1}

    def timed(client: httpx.Client, base: str, **extra: object) -> float:
        start = time.perf_counter()
        r = client.post(f"{base}/v1/images/generations", json={**body, **extra})
        r.raise_for_status()
        return time.perf_counter() - start

    times: dict[tuple[str, str], list[float]] = {(mode, path): [] for mode in apps for path in ("miss", "hit")}
    with httpx.Client(timeout=300) as client:
        for base in apps.values():  # warm-up; the first call also fills each app's cache
            for _ in range(3):
                timed(client, base), timed(client, base, cache="bypass")
        for i in range(args.rounds):
            order = list(apps) if i % 2 == 0 else list(reversed(apps))  # neither always goes first
            for mode in order:
                times[mode, "miss"].append(timed(client, apps[mode], cache="bypass"))
                times[mode, "hit"].append(timed(client, apps[mode]))
    time.sleep(6)  # the batch processors' default schedule (5 s) exports the last spans

    print(f"settings: size={args.size} steps={args.steps} rounds={args.rounds}, sampling 100 %")
    for path in ("miss", "hit"):
        off, on = statistics.median(times["off", path]), statistics.median(times["on", path])
        print(
            f"{path:4s} median: tracing off {off * 1e3:7.1f} ms | on {on * 1e3:7.1f} ms | "
            f"on/off {on / off:.3f} (target <= 1.03)"
        )
    print(f"exported {sink.bytes / 1024:.0f} KiB of spans")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()

"""Soak under faults: concurrent SDK clients against a deployed app (2 gateway replicas, state and
cache on a real redis-server) while a model replica, a gateway replica and the Redis server are
killed on a schedule. Reports requests, accepted/finished/lost jobs, client calls that failed after
the SDK's retries, every 5xx by status, p50/p99 latency before/during/after each fault and the time
to recover from each (docs/RELIABILITY.md).

The driver (``run_soak``) is shared with ``tests/serving/test_soak.py``, which runs it bounded.

Usage: python bench/soak.py [--clients 32] [--duration 300] [--cycles 1] [--redis-down 5]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

TERMINAL = ("succeeded", "failed", "canceled")


def status_name(status: Any) -> str:
    """A job status as its wire string (the SDK's JobStatus is an enum)."""
    return str(getattr(status, "value", status))


MODEL_DEPLOYMENT = "MMDiT-stable"
GATEWAY_DEPLOYMENT = "Gateway"
WINDOW_S = 20.0  # latency window before a fault and after its recovery


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A real redis-server that can be stopped (SIGKILL) and restarted on the same port. Unlike the
    tests' throwaway servers it keeps an fsync-always append-only file: a production store persists,
    and a restart that empties the store would lose every job by construction, not by a bug."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: run `make setup` (it installs it)"
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.workdir)]
        args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # a crash, not a clean shutdown
            self.proc.wait(10)
            self.proc = None


def app_overrides(redis_url: str) -> dict[str, Any]:
    """Settings of the app under soak (on top of what the caller sets: name, storage, development)."""
    return {
        "state": {"backend": "redis", "redis_url": redis_url},
        "cache": {"backend": "redis"},
        "gateway": {"num_replicas": 2, "default_steps": 4, "health_check_period_s": 1, "health_check_timeout_s": 5},
        "model": {
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            "health_check_period_s": 1,
            "health_check_timeout_s": 5,
        },
        "jobs": {"lease_s": 2.0, "stall_timeout_s": 10.0},
        "auth": {"enabled": False},
        "graceful_shutdown_timeout_s": 1,
    }


@dataclasses.dataclass
class Call:
    op: str
    start: float
    end: float
    ok: bool
    error: str = ""  # exception class name
    status: int | None = None


@dataclasses.dataclass
class Fault:
    kind: str  # "model", "gateway" or "redis"
    at: float  # seconds since the soak started (scheduled)
    start: float = 0.0  # monotonic times
    end: float = 0.0  # when the component was back (Redis: restarted)
    recovered: float = 0.0  # when a probe through the component next succeeded
    detail: str = ""

    @property
    def recover_s(self) -> float:
        return self.recovered - self.start if self.recovered else float("nan")


@dataclasses.dataclass
class SoakConfig:
    clients: int = 32
    duration_s: float = 300.0
    cycles: int = 1  # each cycle: model replica, gateway replica, Redis
    redis_down_s: float = 5.0
    steps: int = 4
    size: str = "32x32"
    drain_s: float = 180.0  # after the load stops, how long accepted jobs may take to finish
    job_timeout_s: float = 180.0  # a client's wait for one job (events() or wait())
    seed: int = 0

    def schedule(self) -> list[Fault]:
        kinds = ["model", "gateway", "redis"] * self.cycles
        gap = self.duration_s / (len(kinds) + 1)
        return [Fault(kind, gap * (i + 1)) for i, kind in enumerate(kinds)]


class Recorder:
    """Every HTTP response (through httpx event hooks) and every client call, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.statuses: Counter[int] = Counter()
        self.server_errors: list[tuple[float, int, str, str, str]] = []  # t, status, retry-after, path, body
        self.calls: list[Call] = []
        self.accepted: set[str] = set()
        self.terminal: dict[str, str] = {}

    def on_request(self, request: httpx.Request) -> None:
        with self.lock:
            self.requests += 1

    def on_response(self, response: httpx.Response) -> None:
        body = ""
        if response.status_code >= 500:
            # 5xx bodies are small JSON; read so that the report can say what they were.
            with contextlib.suppress(httpx.HTTPError):
                body = response.read().decode(errors="replace")[:200]
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code >= 500:
                retry_after = response.headers.get("retry-after", "")
                self.server_errors.append(
                    (time.monotonic(), response.status_code, retry_after, response.request.url.path, body)
                )

    def call(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def job(self, job_id: str, status: str | None = None) -> None:
        with self.lock:
            self.accepted.add(job_id)
            if status in TERMINAL:
                self.terminal[job_id] = status


def make_client(
    base_url: str,
    recorder: Recorder,
    max_retries: int = 2,
    total: float = 120.0,
    on_request: Callable[[httpx.Request], None] | None = None,
) -> Any:
    """An SDK client whose every HTTP request and response ``recorder`` sees (and ``on_request``)."""
    from huabu.sdk import Client, Timeouts

    timeouts = Timeouts(connect=5, read=60, write=30, pool=10, total=total)
    http = httpx.Client(
        timeout=httpx.Timeout(connect=5, read=60, write=30, pool=10),
        follow_redirects=True,
        event_hooks={
            "request": [recorder.on_request, *([on_request] if on_request else [])],
            "response": [recorder.on_response],
        },
    )
    return Client(base_url, timeout=timeouts, max_retries=max_retries, http_client=http)


def base_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 80, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


OPS = ("generate", "cached", "job_sse", "job_wait", "edit")
WEIGHTS = (30, 20, 20, 15, 15)
CACHED_PROMPTS = ("一只在雪地里的红狐狸", "a lighthouse at dusk", "a paper boat")


def client_loop(index: int, base_url: str, cfg: SoakConfig, recorder: Recorder, stop: threading.Event) -> None:
    from huabu.sdk import masks

    rng = random.Random(cfg.seed * 1000 + index)
    image = base_png()
    mask = masks.rectangle(image, (8, 8, 24, 24))
    counter = itertools.count()
    params: dict[str, Any] = {"steps": cfg.steps, "size": cfg.size}
    with make_client(base_url, recorder) as client:
        while not stop.is_set():
            op = rng.choices(OPS, WEIGHTS)[0]
            n = next(counter)
            seed = index * 1_000_000 + n
            start = time.monotonic()
            try:
                if op == "generate":
                    client.images.generate(f"soak {index}", seed=seed, cache="bypass", **params)
                elif op == "cached":
                    client.images.generate(rng.choice(CACHED_PROMPTS), seed=7, **params)
                elif op == "edit":
                    client.images.edit(image, "a blue square", mask=mask, seed=seed, steps=cfg.steps)
                else:
                    handle = client.jobs.submit(f"soak job {index}", seed=seed, cache="bypass", **params)
                    recorder.job(handle.id)
                    if op == "job_sse":
                        status = "queued"
                        for event in handle.events(timeout=cfg.job_timeout_s):
                            status = status_name(event.status)
                        recorder.job(handle.id, status)
                    else:
                        recorder.job(handle.id, status_name(handle.wait(timeout=cfg.job_timeout_s).status))
                recorder.call(Call(op, start, time.monotonic(), True))
            except Exception as exc:  # every failure is data: the report splits them by kind and time
                code = getattr(exc, "status_code", None)
                recorder.call(Call(op, start, time.monotonic(), False, type(exc).__name__, code))
            stop.wait(rng.uniform(0.0, 0.2))


# --- faults ---------------------------------------------------------------------------------------


def replica_names(app_name: str, deployment: str) -> list[str]:
    import ray

    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


def kill_replica(app_name: str, deployment: str) -> str:
    import ray

    names = replica_names(app_name, deployment)
    assert names, f"no replica of {deployment}"
    victim = random.choice(names)
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    return victim


def replicas_back(app_name: str, deployment: str, victim: str, target: int) -> bool:
    from ray import serve

    names = replica_names(app_name, deployment)
    if victim in names or len(names) < target:
        return False
    info = serve.status().applications[app_name].deployments[deployment]
    return int(info.replica_states.get("RUNNING", 0)) >= target and str(info.status).endswith("HEALTHY")


def wait_until(check: Callable[[], bool], timeout: float, every: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except Exception:  # a probe failing is what we are waiting out
            pass
        time.sleep(every)
    return False


def inject(fault: Fault, app_name: str, redis: RedisServer, probe: Any, reference_job: str, cfg: SoakConfig) -> None:
    fault.start = time.monotonic()
    if fault.kind == "redis":
        redis.stop()
        time.sleep(cfg.redis_down_s)
        redis.start()
        fault.end = time.monotonic()
        fault.detail = f"down {cfg.redis_down_s:.0f} s"

        def healthy() -> bool:  # the store answers through the gateway again
            return status_name(probe.jobs.get(reference_job).status().status) in TERMINAL
    else:
        deployment, target = (MODEL_DEPLOYMENT, 1) if fault.kind == "model" else (GATEWAY_DEPLOYMENT, 2)
        victim = kill_replica(app_name, deployment)
        fault.detail = victim.rsplit("#", 1)[-1]
        wait_until(lambda: replicas_back(app_name, deployment, victim, target), 120)
        fault.end = time.monotonic()
        seeds = itertools.count(10**9)

        def healthy() -> bool:  # a request through every stage, model included, succeeds
            probe.images.generate("probe", seed=next(seeds), cache="bypass", steps=cfg.steps, size=cfg.size)
            return True

    wait_until(healthy, 120)
    fault.recovered = time.monotonic()


# --- the run and its report -------------------------------------------------------------------------


@dataclasses.dataclass
class SoakReport:
    cfg: SoakConfig
    started: float
    load_end: float
    recorder: Recorder
    faults: list[Fault]
    lost: list[str]
    load_avg: tuple[float, float, float]

    @property
    def outage_windows(self) -> list[tuple[float, float]]:
        return [(f.start, f.recovered or f.end) for f in self.faults if f.kind == "redis"]

    def during_outage(self, call: Call) -> bool:
        return any(call.start <= b + 2 and call.end >= a for a, b in self.outage_windows)

    def failed(self) -> tuple[list[Call], list[Call]]:
        """Failed calls: (clear retryable errors during a Redis outage, all others)."""
        retryable = ("ServiceUnavailableError", "APIConnectionError", "APITimeoutError")
        bad = [c for c in self.recorder.calls if not c.ok]
        clear = [c for c in bad if c.error in retryable and self.during_outage(c)]
        return clear, [c for c in bad if c not in clear]

    def bad_5xx(self) -> list[tuple[float, int, str, str, str]]:
        """5xx other than a 503 with Retry-After."""
        return [e for e in self.recorder.server_errors if not (e[1] == 503 and e[2])]

    def replica_lost(self) -> int:
        """503s that Serve's proxy answered through huabu's middleware (cluster/serve_proxy.py) for a
        request in flight on a killed gateway replica; without it, Ray 2.60 answers these a bare 500."""
        return sum(1 for e in self.recorder.server_errors if e[1] == 503 and "gateway_replica_lost" in e[4])

    def table(self) -> str:
        rec = self.recorder
        clear, other = self.failed()
        calls = Counter(c.op for c in rec.calls)
        finished = Counter(rec.terminal.values())
        fives = Counter((e[1], "Retry-After" if e[2] else "no Retry-After") for e in rec.server_errors)
        lines = [
            f"soak: {self.cfg.clients} clients, {self.load_end - self.started:.0f} s of load, "
            f"load average {self.load_avg[0]:.1f}/{self.load_avg[1]:.1f}/{self.load_avg[2]:.1f} at the end",
            "",
            "| measure | value |",
            "|---|---|",
            f"| HTTP requests sent (retries included) | {rec.requests} |",
            f"| client calls ({', '.join(f'{k} {v}' for k, v in sorted(calls.items()))}) | {len(rec.calls)} |",
            f"| jobs accepted | {len(rec.accepted)} |",
            f"| jobs finished ({', '.join(f'{k} {v}' for k, v in sorted(finished.items())) or '-'}) | "
            f"{len(rec.terminal)} |",
            f"| **jobs lost** (accepted, never terminal) | **{len(self.lost)}** |",
            f"| calls failed after retries: retryable, during the Redis outage | {len(clear)} |",
            f"| calls failed after retries: other | {len(other)} |",
            f"| 5xx seen | {', '.join(f'{s} {r}: {n}' for (s, r), n in sorted(fives.items())) or 'none'} |",
            f"| **5xx other than 503 + Retry-After** | **{len(self.bad_5xx())}** |",
            f"| 503 `gateway_replica_lost` (a request in flight on the killed gateway replica) | "
            f"{self.replica_lost()} |",
        ]
        if other:
            kinds = Counter(f"{c.op} {c.error}{f' {c.status}' if c.status else ''}" for c in other)
            lines.append(f"| other failures by kind | {', '.join(f'{k}: {n}' for k, n in kinds.most_common())} |")
        lines += [
            "",
            "| fault | at s | detail | recovered after s | before n p50/p99 ms | during n p50/p99 ms | "
            "after n p50/p99 ms | failed calls during |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for f in self.faults:
            if not f.start:
                continue
            end = f.recovered or f.end or f.start
            during_failed = sum(1 for c in rec.calls if not c.ok and c.start <= end and c.end >= f.start)
            lines.append(
                f"| {f.kind} | {f.start - self.started:.0f} | {f.detail} | {f.recover_s:.1f} | "
                f"{self._lat(f.start - WINDOW_S, f.start)} | {self._lat(f.start, end)} | "
                f"{self._lat(end, end + WINDOW_S)} | {during_failed} |"
            )
        if self.lost:
            lines.append(f"\nlost jobs: {', '.join(self.lost[:20])}")
        for t, status, retry_after, path, body in self.bad_5xx()[:10]:
            lines.append(f"5xx at {t - self.started:.1f} s: {status} {path} retry-after={retry_after!r} {body}")
        return "\n".join(lines)

    def _lat(self, a: float, b: float) -> str:
        """n, p50 and p99 of the successful request/response calls that started in [a, b)."""
        sync = ("generate", "cached", "edit")
        xs = sorted(c.end - c.start for c in self.recorder.calls if c.ok and c.op in sync and a <= c.start < b)
        if not xs:
            return "0 -"

        def pct(q: float) -> float:
            return xs[min(len(xs) - 1, max(0, round(q * len(xs) + 0.5) - 1))] * 1000

        return f"{len(xs)} {pct(0.5):.0f}/{pct(0.99):.0f}"


def run_soak(
    base_url: str, app_name: str, redis: RedisServer, cfg: SoakConfig, log: Callable[[str], None]
) -> SoakReport:
    """Drive the deployed app ``app_name`` at ``base_url`` (whose store is ``redis``) under the fault
    schedule, then wait for every accepted job to end; returns the report."""
    recorder = Recorder()
    probe = make_client(base_url, Recorder(), max_retries=0, total=10)
    reference = probe.jobs.submit("reference", seed=1, steps=cfg.steps, size=cfg.size)
    reference.wait(timeout=120)
    faults = cfg.schedule()
    stop = threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(i, base_url, cfg, recorder, stop), daemon=True)
        for i in range(cfg.clients)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        for fault in faults:
            time.sleep(max(0.0, started + fault.at - time.monotonic()))
            log(f"[{time.monotonic() - started:5.0f} s] fault: {fault.kind}")
            inject(fault, app_name, redis, probe, reference.id, cfg)
            log(f"[{time.monotonic() - started:5.0f} s]   {fault.detail} recovered after {fault.recover_s:.1f} s")
        time.sleep(max(0.0, started + cfg.duration_s - time.monotonic()))
    finally:
        stop.set()
        load_end = time.monotonic()  # calls in flight still finish, and are counted
        for t in threads:
            t.join(cfg.job_timeout_s + 60)  # a call in flight ends within its total deadline or job wait
    log(f"[{time.monotonic() - started:5.0f} s] load stopped; waiting for accepted jobs to end")
    lost = drain(probe, recorder, cfg.drain_s)
    probe.close()
    return SoakReport(cfg, started, load_end, recorder, faults, lost, os.getloadavg())


def drain(probe: Any, recorder: Recorder, timeout: float) -> list[str]:
    """Poll every accepted job that no client saw end; the ones still not terminal are lost."""
    pending = sorted(recorder.accepted - set(recorder.terminal))
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        still = []
        for job_id in pending:
            try:
                status: str | None = status_name(probe.jobs.get(job_id).status().status)
            except Exception:  # 404 or a transient error: asked again until the deadline
                status = None
            if status in TERMINAL:
                recorder.job(job_id, status)
            else:
                still.append(job_id)
        pending = still
        if pending:
            time.sleep(1.0)
    return pending


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--cycles", type=int, default=1, help="rounds of the three faults")
    parser.add_argument("--redis-down", type=float, default=5.0, help="seconds Redis stays down")
    args = parser.parse_args()
    cfg = SoakConfig(clients=args.clients, duration_s=args.duration, cycles=args.cycles, redis_down_s=args.redis_down)

    import ray
    from ray import serve

    from huabu.cluster.local import serve_proxy_env
    from huabu.deployments.app import build_app
    from huabu.deployments.core.settings import Settings

    workdir = Path(tempfile.mkdtemp(prefix="huabu-soak-"))
    # Serve's proxy as `huabu up` runs it: 503 + Retry-After for a killed gateway replica's requests.
    for key, value in serve_proxy_env(workdir, stop_after_s=5).items():
        os.environ.setdefault(key, value)
    redis = RedisServer(free_port(), workdir)
    redis.start()
    port = free_port()
    name = "soak"
    base_url = f"http://127.0.0.1:{port}/{name}"
    try:  # Redis is stopped and its folder removed even when Ray fails to start (a loaded machine)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="huabu-soak")
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = Settings.load(
            environ={},
            app_name=name,
            storage={"local_dir": str(workdir / "files"), "public_base_url": base_url},
            development=True,  # a local benchmark may sign file URLs with the public development secret
            **{**app_overrides(redis.url), "state": {**app_overrides(redis.url)["state"], "namespace": name}},
        )
        serve.run(build_app(settings), name=name, route_prefix=f"/{name}", blocking=False)
        if not wait_until(lambda: httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200, 180, 0.5):
            raise TimeoutError("the app did not become ready")
        report = run_soak(base_url, name, redis, cfg, lambda line: print(line, flush=True))
        print(report.table())
        return int(bool(report.lost or report.bad_5xx()))
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

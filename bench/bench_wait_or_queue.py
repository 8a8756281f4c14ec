"""What wait-or-queue costs (#26): ``POST /v1/images/generations`` plain vs with ``Prefer: wait=60``
(a durable job created leased to the answering gateway and attempted inline), on one deployed app
whose state store is a real redis-server, so that every store command is counted.

Each round sends the same kind of request (uncached, a fresh seed) once each way, alternating which
goes first. Per call: latency, and the store commands it caused (``INFO commandstats`` before and
after, writes = SET/DEL/PEXPIRE/INCRBY/RPUSH/SADD/SREM/EVAL..., less what the idle gateway's own
loops wrote over the same time, measured first). The result is medians and the median of the
per-round latency ratios.

    python bench/bench_wait_or_queue.py --rounds 15 --size 32 --steps 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import httpx

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ray import serve  # after the environment it reads

WRITES = frozenset(
    {"set", "setex", "psetex", "del", "unlink", "pexpire", "expire", "incrby", "incr", "rpush", "lpush"}
    | {"sadd", "srem", "eval", "evalsha", "hset", "hincrby", "zadd", "zrem", "ltrim", "getdel"}
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def commands(redis_port: int) -> dict[str, int]:
    """Calls per command so far (``INFO commandstats``), read with redis-cli (not counted: INFO is neither)."""
    out = subprocess.run(
        ["redis-cli", "-p", str(redis_port), "INFO", "commandstats"], capture_output=True, text=True, check=True
    ).stdout
    counts = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.removeprefix("cmdstat_").partition(":")
            counts[name] = int(rest.split(",")[0].removeprefix("calls="))
    return counts


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Calls per command between two readings, INFO itself left out."""
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after if k not in ("info", "ping")}
    return {k: v for k, v in diff.items() if v}


def writes_and_total(diff: dict[str, int]) -> tuple[int, int]:
    return sum(v for k, v in diff.items() if k in WRITES), sum(diff.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--idle-s", type=float, default=10.0, help="how long the idle store traffic is measured")
    args = parser.parse_args()

    import ray

    from huabu.deployments.app import build_app
    from huabu.deployments.core.settings import Settings

    redis_port, port = free_port(), free_port()
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing (make setup installs it)"
    workdir = tempfile.mkdtemp()
    no_persistence = ["--save", "", "--appendonly", "no", "--dir", workdir]
    redis = subprocess.Popen(
        [binary, "--port", str(redis_port), "--bind", "127.0.0.1", *no_persistence], stdout=subprocess.DEVNULL
    )
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        name = "waitq"
        base = f"http://127.0.0.1:{port}/{name}"
        settings = Settings.load(
            environ={},
            app_name=name,
            state={"backend": "redis", "redis_url": f"redis://127.0.0.1:{redis_port}/0", "namespace": name},
            storage={"local_dir": tempfile.mkdtemp(), "public_base_url": base},
            model={"torch_threads": 1, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
            auth={"enabled": False},  # serving, not key checks (with keys both paths add the same limit writes)
            development=True,
        )
        serve.run(build_app(settings), name=name, route_prefix=f"/{name}", blocking=False)
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the app did not become ready"
            time.sleep(0.5)

        client = httpx.Client(base_url=base, timeout=120)
        size = f"{args.size}x{args.size}"

        per_command: dict[bool, list[dict[str, int]]] = {False: [], True: []}

        def call(seed: int, prefer: bool) -> tuple[float, int, int]:
            body = {"prompt": "a red circle", "size": size, "steps": args.steps, "seed": seed, "cache": "bypass"}
            headers = {"Prefer": "wait=60"} if prefer else {}
            before = commands(redis_port)
            started = time.perf_counter()
            r = client.post("/v1/images/generations", json=body, headers=headers)
            elapsed = time.perf_counter() - started
            assert r.status_code == 200, r.text
            diff = delta(before, commands(redis_port))
            per_command[prefer].append(diff)
            writes, total = writes_and_total(diff)
            return elapsed, writes, total

        call(0, False), call(1, True)  # warm-up: model loaded, catalog fetched
        time.sleep(3)  # the runner's idle poll backs off
        idle_before, idle_started = commands(redis_port), time.perf_counter()
        time.sleep(args.idle_s)
        idle_writes, idle_total = writes_and_total(delta(idle_before, commands(redis_port)))
        idle_span = time.perf_counter() - idle_started
        idle_w, idle_c = idle_writes / idle_span, idle_total / idle_span

        runs: dict[bool, list[tuple[float, int, int]]] = {False: [], True: []}
        ratios = []
        for i in range(args.rounds):
            order = (False, True) if i % 2 == 0 else (True, False)
            got = {prefer: call(1000 + 2 * i + prefer, prefer) for prefer in order}
            for prefer, run in got.items():
                runs[prefer].append(run)
            ratios.append(got[True][0] / got[False][0])

        def summary(label: str, rows: list[tuple[float, int, int]]) -> str:
            latency = statistics.median(r[0] for r in rows)
            writes = statistics.median(r[1] - idle_w * r[0] for r in rows)
            total = statistics.median(r[2] - idle_c * r[0] for r in rows)
            raw = statistics.median(r[1] for r in rows)
            return (
                f"{label:>22}: {latency * 1000:7.1f} ms, store writes {writes:5.1f} ({raw} raw), "
                f"store commands {total:5.1f}"
            )

        print(f"{size} x {args.steps} steps, {args.rounds} interleaved rounds (medians)")
        print(f"idle gateway: {idle_w:.2f} writes/s, {idle_c:.2f} commands/s (subtracted per call)")
        print(summary("plain", runs[False]))
        print(summary("Prefer: wait=60", runs[True]))
        print(f"latency ratio Prefer/plain: median {statistics.median(ratios):.3f}")
        for prefer, label in ((False, "plain"), (True, "Prefer: wait=60")):
            calls = per_command[prefer][2:]  # without the warm-up calls
            names = sorted({k for d in calls for k in d})
            medians = {k: statistics.median(d.get(k, 0) for d in calls) for k in names}
            print(f"{label} commands per call (medians, idle traffic included): {medians}")
    finally:
        serve.shutdown()
        ray.shutdown()
        redis.terminate()
        redis.wait(10)


if __name__ == "__main__":
    main()

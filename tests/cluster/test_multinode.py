"""huabu on a multi-node Ray cluster (``huabu cluster up``: a head and two worker nodes with two
logical GPUs each, on this machine), driven as a user drives it: the CLI in subprocesses, load
through the SDK over HTTP, and ``huabu cluster status --watch`` recording where replicas run.

One deployment serves every test (fixed-latency model, one GPU per replica, 0..3 replicas, Redis
state); the tests run in file order and the node-loss tests go last (the second brings the lost
node back first). Timings are printed, never
asserted (bench/ measures performance).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from huabu.cluster.local import LocalCluster, free_port
from huabu.cluster.multinode import MultiNodeCluster
from huabu.sdk import Client

# Setup (three nodes, a deployment) counts toward the first test: minutes on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

CLI = [sys.executable, "-m", "huabu.cluster.cli"]
MODEL = "MMDiT-stable"
WORKERS, GPUS_PER_NODE, MAX_REPLICAS = 2, 2, 3  # 3 replicas of 1 GPU need both workers
LATENCY_S = 0.4
# docs/ARCHITECTURE.md "Durable jobs": every job accepted before a node loss has finished this long
# after the replacement replicas serve (measured: a few seconds; generous for a loaded 2-core machine).
JOB_BOUND_S = 30.0
UPSCALE_DELAY_S, DOWNSCALE_DELAY_S, TO_ZERO_DELAY_S = 0.5, 3.0, 3.0


def run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    print(f"$ huabu {' '.join(args[3:])}  ({time.monotonic() - started:.1f} s, exit {proc.returncode})")
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


@dataclass
class Watch:
    """Snapshots from ``huabu cluster status --json --watch``, read by a thread."""

    proc: subprocess.Popen[str]
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                with self.lock:
                    self.snapshots.append(json.loads(line))

    def wait_for(self, what: str, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first snapshot taken from now on that satisfies ``predicate``."""
        start = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                fresh = [s for s in self.snapshots if s["t"] >= start]
            for snapshot in fresh:
                if predicate(snapshot):
                    return snapshot
            assert self.proc.poll() is None, "the status watcher exited"
            time.sleep(0.2)
        with self.lock:
            last = self.snapshots[-1] if self.snapshots else None
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last snapshot: {last}")


def model_replicas(snapshot: dict[str, Any], state: str = "RUNNING") -> list[dict[str, Any]]:
    return [r for r in snapshot["replicas"] if r["deployment"] == MODEL and r["state"] == state]


def all_gpus_free(snapshot: dict[str, Any]) -> bool:
    no_replica = not any(r["deployment"] == MODEL for r in snapshot["replicas"])
    return no_replica and all(n["gpus_free"] == n["gpus"] for n in snapshot["nodes"] if n["alive"])


def nodes_by_name(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in snapshot["nodes"]}


@dataclass
class Deployed:
    home: Path
    env: dict[str, str]
    url: str
    watch: Watch
    redis_url: str
    namespace: str

    def client(self) -> Client:
        return Client(base_url=self.url, max_retries=8, timeout=60)


@pytest.fixture(scope="module")
def deployed(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    home = Path(tempfile.mkdtemp(prefix="hbm-"))  # short: Ray's socket paths derive from it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUABU__", "RAY_ADDRESS", "RAY_AUTH"))}
    env.update(
        HUABU_HOME=str(home),
        RAY_USAGE_STATS_ENABLED="0",
        # Replicas and handles report load every 0.5 s (default 10 s); the GCS declares a node dead
        # after 3 missed 1 s health checks (default 5 x 3 s).
        RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S="0.5",
        RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S="0.5",
        RAY_health_check_period_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    files = tmp_path_factory.mktemp("files")
    namespace = f"mn{free_port()}"
    settings = tmp_path_factory.mktemp("settings") / "settings.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "auth": {"enabled": False},
                "model": {
                    "num_gpus": 1,
                    "max_batch_size": 2,
                    "max_ongoing_requests": 4,
                    "fixed_latency": {"seconds": LATENCY_S},
                    "autoscaling": {
                        "min_replicas": 0,
                        "max_replicas": MAX_REPLICAS,
                        "target_ongoing_requests": 1,
                        "upscale_delay_s": UPSCALE_DELAY_S,
                        "downscale_delay_s": DOWNSCALE_DELAY_S,
                        "downscale_to_zero_delay_s": TO_ZERO_DELAY_S,
                        "look_back_period_s": 1,
                    },
                    "health_check_period_s": 1,
                    "health_check_timeout_s": 5,
                },
                "gateway": {"default_steps": 1, "health_check_period_s": 1, "health_check_timeout_s": 5},
                # The model is what is under test: no filter or cache stages in the way.
                "cache": {"enabled": False},
                "safety": {"prompt_enabled": False, "image": {"enabled": False}},
                # Jobs must outlive any node: their state is in Redis, not in a Ray actor.
                "state": {"backend": "redis", "redis_url": redis_url, "namespace": namespace},
                "storage": {"local_dir": str(files)},
                # A runner retries a failed attempt at once, and for a few seconds after a node dies
                # Serve may still route to its replicas: attempts must outlast that window. The
                # attempt timeout is a backstop far above JOB_BOUND_S: a call lost with its node must be
                # failed by the liveness of its replica (deployments/core/handles.py), not by this timeout.
                "jobs": {"lease_s": 2.0, "max_attempts": 10, "attempt_timeout_s": 120},
                "graceful_shutdown_timeout_s": 1,
            }
        )
    )
    watcher: subprocess.Popen[str] | None = None
    try:
        up = run([*CLI, "cluster", "up", "--nodes", str(WORKERS), "--gpus-per-node", str(GPUS_PER_NODE)], env, 600)
        assert up.returncode == 0, up.stderr
        print(up.stdout)
        port = free_port()
        deploy = run([*CLI, "up", "--settings", str(settings), "--port", str(port), "--timeout", "400"], env, 480)
        assert deploy.returncode == 0, deploy.stderr
        watcher = subprocess.Popen(
            [*CLI, "cluster", "status", "--json", "--watch", "0.5"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        watch = Watch(watcher)
        threading.Thread(target=watch.read, daemon=True).start()
        yield Deployed(home, env, f"http://127.0.0.1:{port}", watch, redis_url, namespace)
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait(30)
        down = run([*CLI, "cluster", "down"], env, 180)
        if down.returncode != 0:
            MultiNodeCluster(LocalCluster(home)).down()
        shutil.rmtree(LocalCluster(home).temp_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Load:
    """``clients`` threads generating through the SDK (its retries included) until stopped."""

    client: Client
    clients: int
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _loop(self, index: int) -> None:
        seed = index * 1_000_000
        while not self.stop.is_set():
            seed += 1
            try:
                self.client.images.generate("a red circle on the left", size="16x16", seed=seed)
            except Exception as exc:  # counted and asserted on by the test
                with self.lock:
                    self.failed.append(f"{type(exc).__name__}: {exc}")
            else:
                with self.lock:
                    self.ok += 1

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(180)


def busiest_and_other_worker(snapshot: dict[str, Any]) -> tuple[str, str, int]:
    """The worker holding the most model replicas (the one to kill), another that holds some, and
    how many the first holds."""
    names = {n["node_id"]: n["name"] for n in snapshot["nodes"]}
    counts: dict[str, int] = {}
    for replica in model_replicas(snapshot):
        counts[names[replica["node_id"]]] = counts.get(names[replica["node_id"]], 0) + 1
    victim = max(counts, key=lambda name: counts[name])
    return victim, next(name for name in counts if name != victim), counts[victim]


def test_scale_to_zero_and_cold_start(deployed: Deployed) -> None:
    # Scaled to zero: no model replica in any state, and every GPU free again.
    idle = deployed.watch.wait_for("no model replica while idle", all_gpus_free, timeout=180)
    nodes = nodes_by_name(idle)
    assert nodes["head"]["gpus"] == 0 and all(nodes[f"worker-{i}"]["gpus"] == GPUS_PER_NODE for i in (1, 2))

    with deployed.client() as client:
        started = time.monotonic()
        [image] = client.images.generate("左边一个 red circle", size="16x16", seed=11)
        cold = time.monotonic() - started
        started = time.monotonic()
        client.images.generate("左边一个 red circle", size="16x16", seed=12)
        warm = time.monotonic() - started
    assert image.bytes.startswith(b"\x89PNG")
    print(f"cold start (0 -> 1 replica, then one image): {cold:.2f} s; next request {warm:.2f} s")
    serving = deployed.watch.wait_for("a model replica", lambda s: len(model_replicas(s)) == 1, timeout=30)
    [replica] = model_replicas(serving)
    assert nodes_by_name(serving)["head"]["node_id"] != replica["node_id"], "a 1-GPU replica on the GPU-less head"


def test_autoscaling_spreads_replicas_over_gpu_nodes_and_scales_back(deployed: Deployed) -> None:
    watch = deployed.watch
    watch.wait_for("min replicas (0) before the load", all_gpus_free, timeout=180)
    with deployed.client() as client, Load(client, clients=8) as load:
        started = time.monotonic()
        reached: dict[int, float] = {}

        def track(snapshot: dict[str, Any]) -> bool:
            count = len(model_replicas(snapshot))
            reached.setdefault(count, time.monotonic() - started)
            return count == MAX_REPLICAS

        at_max = watch.wait_for(f"{MAX_REPLICAS} replicas under load", track, timeout=240)
        timeline = ", ".join(f"{n}: {t:.1f}" for n, t in reached.items())
        print(f"replicas reached under load (s after it began): {timeline}")

        # Placement follows num_gpus: no replica on the head (0 GPUs), at most 2 per 2-GPU worker, so
        # three replicas need both workers; each replica holds one of its node's GPUs.
        nodes = {n["node_id"]: n for n in at_max["nodes"]}
        per_node: dict[str, int] = {}
        for replica in model_replicas(at_max):
            per_node[replica["node_id"]] = per_node.get(replica["node_id"], 0) + 1
        print("placement at max: " + ", ".join(f"{nodes[n]['name']}: {c}" for n, c in sorted(per_node.items())))
        assert all(nodes[n]["name"].startswith("worker-") for n in per_node)
        assert all(count <= nodes[n]["gpus"] for n, count in per_node.items())
        assert len(per_node) == WORKERS
        time.sleep(1)
    stopped = time.monotonic()
    assert load.failed == [], load.failed[:5]
    assert load.ok > 0
    one = watch.wait_for("down to 1 replica", lambda s: len(model_replicas(s)) <= 1, timeout=180)
    down_to_one = time.monotonic() - stopped
    watch.wait_for("back to min (0)", all_gpus_free, 180)
    print(
        f"{load.ok} images under load; after it stopped: <= 1 replica at {down_to_one:.1f} s "
        f"(downscale_delay_s {DOWNSCALE_DELAY_S}), 0 replicas at {time.monotonic() - stopped:.1f} s "
        f"(+ downscale_to_zero_delay_s {TO_ZERO_DELAY_S})"
    )
    assert len(model_replicas(one)) <= 1


def replicas_back_on(survivor: str, killed_at: float) -> Callable[[dict[str, Any]], bool]:
    """Recovered: the GPUs of the survivor hold replicas again, one of them started since the kill."""

    def recovered(snapshot: dict[str, Any]) -> bool:
        nodes = nodes_by_name(snapshot)
        running = model_replicas(snapshot)
        return (
            len(running) == GPUS_PER_NODE
            and all(r["node_id"] == nodes[survivor]["node_id"] for r in running)
            and any((r["start_time_s"] or 0) > killed_at for r in running)
        )

    return recovered


def job_diagnostics(deployed: Deployed, unfinished: dict[str, str]) -> str:
    """What the gateways' logs say about jobs that never finished (for a failure report). Called
    after the client is closed, so it reads the last status each job was seen in."""
    ids = list(unfinished)
    lines = [
        f"job {job_id}: last seen {status}; {stored_job_state(deployed, job_id)}"
        for job_id, status in unfinished.items()
    ]
    temp_dir = LocalCluster(deployed.home).temp_dir
    # Every node's logs: a gateway (and its runner) may run on a worker node, whose logs are below
    # its own temp dir (cluster/multinode.py), and runner warnings go to the worker's stderr file.
    logs = [*temp_dir.rglob("logs/serve/replica_*Gateway*.log"), *temp_dir.rglob("logs/worker-*.err")]
    for log in sorted(logs):
        mentions = [line for line in log.read_text(errors="replace").splitlines() if any(i in line for i in ids)]
        lines += [f"{log.name}: {line[:400]}" for line in mentions[-20:]]
    return "\n".join(lines)


def stored_job_state(deployed: Deployed, job_id: str) -> str:
    """The job's runner-facing state in the store: who holds its lease, how many attempts began,
    whether runners still see it as active, and its last events."""
    import redis

    client = redis.Redis.from_url(deployed.redis_url)
    key = f"{deployed.namespace}:job:{job_id}"
    lease = client.get(f"{key}:lease")
    events = [e.decode()[:160] for e in client.lrange(f"{key}:events", -4, -1)]
    return (
        f"lease {lease!r} (ttl {client.pttl(f'{key}:lease')} ms), attempts {client.get(f'{key}:attempts')!r}, "
        f"active {bool(client.sismember(f'{deployed.namespace}:jobs:active', job_id))}, "
        f"progress {client.get(f'{key}:progress')!r}, last events {events}"
    )


def retry_causes(deployed: Deployed) -> dict[str, int]:
    """Why job attempts were retried, by exception type, from the job runners' warnings on every node:
    ReplicaLost is a call failed by its replica's liveness (deployments/core/handles.py); JobStalled a
    backstop timeout."""
    causes: dict[str, int] = {}
    for log in LocalCluster(deployed.home).temp_dir.rglob("logs/worker-*.err"):
        for cause in re.findall(r"attempt \d+ failed \((\w+)\); will retry", log.read_text(errors="replace")):
            causes[cause] = causes.get(cause, 0) + 1
    return causes


def stalled_attempts(deployed: Deployed) -> list[str]:
    """The runners' reports of attempts abandoned by a backstop, with where each was waiting
    (deployments/gateway/jobs.py): a hang that liveness did not catch, to be fixed where it waits;
    and the calls sent again because a lost node's replica never accepted them (core/handles.py)."""
    lines: list[str] = []
    temp_dir = LocalCluster(deployed.home).temp_dir
    for log in [*temp_dir.rglob("logs/worker-*.err"), *temp_dir.rglob("logs/serve/replica_*.log")]:
        text = log.read_text(errors="replace").splitlines()
        lines += [line[-600:] for line in text if "it was waiting in" in line or "sent again" in line]
    return lines


def test_losing_a_worker_node_mid_load_loses_no_job(deployed: Deployed) -> None:
    watch = deployed.watch
    with deployed.client() as client:
        jobs = [client.jobs.submit("a blue square", size="16x16", seed=100 + i) for i in range(12)]
        with Load(client, clients=6) as load:
            at_max = watch.wait_for(f"{MAX_REPLICAS} replicas", lambda s: len(model_replicas(s)) == MAX_REPLICAS, 240)
            jobs += [client.jobs.submit("a blue square", size="16x16", seed=200 + i) for i in range(12)]
            # Kill the worker holding two replicas, so that the survivor has a GPU free for a replacement.
            victim, survivor, held = busiest_and_other_worker(at_max)
            killed_at = time.time()
            killed = MultiNodeCluster(LocalCluster(deployed.home)).kill_node(victim)
            print(f"killed {victim} ({killed} processes) holding {held} of {MAX_REPLICAS} replicas")

            dead = watch.wait_for(f"{victim} marked dead", lambda s: not nodes_by_name(s)[victim]["alive"], 120)
            print(f"{victim} seen dead after {dead['t'] - killed_at:.1f} s")

            back = watch.wait_for(f"replicas back on {survivor}", replicas_back_on(survivor, killed_at), timeout=240)
            print(f"{GPUS_PER_NODE} replicas running on {survivor} {back['t'] - killed_at:.1f} s after the kill")
            jobs += [client.jobs.submit("a blue square", size="16x16", seed=300 + i) for i in range(6)]
            time.sleep(2)

        # Every accepted job finishes: the ones in flight on the lost node were retried by a job runner.
        deadline = time.monotonic() + 240
        final: dict[str, str] = {}
        last: dict[str, str] = {}
        while len(final) < len(jobs) and time.monotonic() < deadline:
            for handle in jobs:
                if handle.id not in final:
                    job = handle.status()
                    last[job.id] = str(job.status.value)
                    if job.status.is_terminal:
                        final[handle.id] = str(job.status.value)
                        if job.error is not None:
                            print(f"job {job.id} {job.status.value}: {job.error.type}: {job.error.message}")
            time.sleep(0.5)
    statuses = {s: list(final.values()).count(s) for s in set(final.values())}
    print(f"jobs accepted {len(jobs)}, finished {statuses}; sync requests ok {load.ok}, failed {len(load.failed)}")
    print(f"job attempts retried, by cause: {retry_causes(deployed)}")
    print("\n".join(stalled_attempts(deployed)))
    unfinished = {job_id: status for job_id, status in last.items() if job_id not in final}
    if unfinished:
        print(job_diagnostics(deployed, unfinished))
    assert not unfinished, f"jobs never finished: {unfinished}"
    assert statuses == {"succeeded": len(jobs)}
    assert load.failed == [], load.failed[:5]  # in flight on the lost node: retried by the SDK


@pytest.mark.parametrize("loss", ["killed", "frozen"])
def test_jobs_queued_on_a_lost_node_finish_soon_after_the_replacement_serves(deployed: Deployed, loss: str) -> None:
    """Jobs whose calls wait in the queues of the lost node's replicas (no step reported yet, so no
    progress stalls) are retried as soon as those replicas are known dead, not after an attempt timeout.
    A killed node's connections are reset by the kernel; a frozen one (SIGSTOP) answers nothing and
    resets nothing, as a machine gone from the network: calls to it end only by liveness checks."""
    watch = deployed.watch
    cluster = MultiNodeCluster(LocalCluster(deployed.home))
    # The previous test lost a worker for good: a replacement machine joins under its name.
    record = cluster.load()
    assert record is not None
    latest = watch.wait_for("a status snapshot", lambda s: True, timeout=30)
    lost = [n.name for n in record.nodes if n.name != "head" and not nodes_by_name(latest)[n.name]["alive"]]
    for name in lost:
        cluster.restart_node(name)
    watch.wait_for(
        "both workers alive",
        lambda s: all(nodes_by_name(s).get(f"worker-{i}", {}).get("alive") for i in range(1, WORKERS + 1)),
        timeout=180,
    )
    with deployed.client() as client:
        with Load(client, clients=6) as load:
            at_max = watch.wait_for(f"{MAX_REPLICAS} replicas", lambda s: len(model_replicas(s)) == MAX_REPLICAS, 240)
            # More jobs than the runner runs at once (jobs.concurrency): calls wait in the replicas'
            # batch queues and in the router's queue, behind the load, when the node goes.
            jobs = [client.jobs.submit("a green triangle", size="16x16", seed=400 + i) for i in range(24)]
            victim, survivor, held = busiest_and_other_worker(at_max)
            killed_at = time.time()
            cluster.kill_node(victim, freeze=loss == "frozen")
            waiting = [j.id for j in jobs if (job := j.status()).status.value == "running" and job.progress.step == 0]
            print(f"{loss} {victim} holding {held} replicas; jobs running without a step: {len(waiting)}")
            back = watch.wait_for(f"replicas back on {survivor}", replicas_back_on(survivor, killed_at), timeout=240)
            print(f"{GPUS_PER_NODE} replicas running on {survivor} {back['t'] - killed_at:.1f} s after the kill")

        # Polled until well past the bound, so that a job over it is reported with its time, not as a hang.
        deadline = time.monotonic() + 4 * JOB_BOUND_S
        final: dict[str, Any] = {}
        while len(final) < len(jobs) and time.monotonic() < deadline:
            for handle in jobs:
                if handle.id not in final and (job := handle.status()).status.is_terminal:
                    final[handle.id] = job
            time.sleep(0.5)
    print(f"job attempts retried (both node losses), by cause: {retry_causes(deployed)}")
    print("\n".join(stalled_attempts(deployed)))
    unfinished = {j.id: "unfinished" for j in jobs if j.id not in final}
    if unfinished:
        print(job_diagnostics(deployed, unfinished))
    assert not unfinished, f"jobs never finished: {unfinished}"
    assert {job.status.value for job in final.values()} == {"succeeded"}
    late = max(job.updated_at for job in final.values()) - back["t"]
    after_kill = late + back["t"] - killed_at
    print(f"last job finished {late:.1f} s after the replacement served ({after_kill:.1f} s after the kill)")
    assert late < JOB_BOUND_S, f"a job finished {late:.1f} s after the replacement served (bound {JOB_BOUND_S} s)"
    assert load.failed == [], load.failed[:5]

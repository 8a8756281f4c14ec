"""A multi-node Ray cluster on one machine: ``huabu cluster up --nodes N --gpus-per-node G``.

A head node (no GPUs: Serve's controller and the one HTTP proxy) and ``N`` worker nodes, each its
own ``ray start`` raylet declaring ``G`` logical GPUs. Ray schedules by these declared resources,
so a model replica's ``num_gpus`` decides where it lands exactly as on a cluster of GPU machines
(the CPU stages reserve nothing and may land on any node); what is not real is only the device
behind the number.

It builds on ``LocalCluster``: the head is the cluster ``huabu up`` deploys to (same
``HUABU_HOME`` record, same temp dir, token and free ports), so ``huabu up --settings gpu.yaml``
after ``huabu cluster up`` puts the app on these nodes, and ``huabu down`` still stops everything.
The nodes' PIDs are recorded in ``$HUABU_HOME/nodes.json`` so that one node can be killed alone
(``huabu cluster kill-node worker-1``: a machine lost mid-load) and teardown is by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from huabu.cluster.local import (
    NODES_FILE,
    ClusterError,
    ClusterState,
    LocalCluster,
    _psutil,
    free_port,
    serve_proxy_env,
)

HEAD = "head"


@dataclass
class NodeRecord:
    name: str  # "head", "worker-1", ...
    raylet_pid: int  # the node's root process: its workers and agents are the raylet's children
    node_manager_port: int  # identifies the raylet (and Ray's node) on a shared machine
    num_gpus: int  # logical: `ray start` takes whole numbers; replicas may ask for fractions
    num_cpus: int


@dataclass
class NodesState:
    address: str  # GCS address of the head these nodes belong to
    nodes: list[NodeRecord] = field(default_factory=list)

    def node(self, name: str) -> NodeRecord:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ClusterError(f"no node named {name!r}; nodes: {', '.join(n.name for n in self.nodes)}")


class MultiNodeCluster:
    """Head plus worker nodes recorded under one ``HUABU_HOME`` (see the module docstring)."""

    def __init__(self, local: LocalCluster | None = None) -> None:
        self.local = local or LocalCluster()

    @property
    def nodes_path(self) -> Path:
        return self.local.home / NODES_FILE

    def load(self) -> NodesState | None:
        try:
            raw = json.loads(self.nodes_path.read_text())
        except FileNotFoundError:
            return None
        return NodesState(address=raw["address"], nodes=[NodeRecord(**n) for n in raw["nodes"]])

    def save(self, nodes: NodesState) -> None:
        self.local.home.mkdir(parents=True, exist_ok=True)
        self.nodes_path.write_text(json.dumps(asdict(nodes), indent=2) + "\n")

    # --- start ------------------------------------------------------------------------------

    def up(
        self,
        workers: int,
        gpus_per_node: int,
        cpus_per_node: int = 1,
        head_cpus: int = 1,
        head_gpus: int = 0,
        timeout_s: float = 180.0,
    ) -> tuple[ClusterState, NodesState]:
        """Start the head, then the workers; returns once every node has registered."""
        if workers < 1:
            raise ClusterError("--nodes must be at least 1 (worker nodes besides the head)")
        if self.local.running_state() is not None:
            raise ClusterError("a local huabu cluster is already running: `huabu cluster down` first")
        state, port = self._start_head(head_cpus, head_gpus, timeout_s)
        record = NodesState(address=state.address)
        try:
            record.nodes.append(NodeRecord(HEAD, self._raylet_pid(state, port), port, head_gpus, head_cpus))
            self.save(record)
            # One at a time: a node's agents must start within the raylet's fixed wait, and on a busy
            # machine two nodes starting together miss it far more often.
            started = [
                self._start_worker(state, f"worker-{i}", gpus_per_node, cpus_per_node, timeout_s)
                for i in range(1, workers + 1)
            ]
            record.nodes.extend(started)
            self.save(record)
            self._wait_registered(state, len(record.nodes), timeout_s)
        except BaseException:
            self.down(state)
            raise
        return state, record

    def _start_head(
        self, num_cpus: int, num_gpus: int, timeout_s: float, attempts: int = 3
    ) -> tuple[ClusterState, int]:
        """The head, retried like the workers (``_start_worker``); a failed try stops its own processes."""
        for attempt in range(1, attempts + 1):
            state = self.local.plan()
            state.proxy_location = "HeadOnly"  # one HTTP port per machine, and all nodes share this one
            port = free_port()
            # Logical CPUs are reservations, not cores: huabu's replicas reserve none (RAY_NOTES: a
            # replica reserving a CPU on a two-core machine blocks start-up), so one per node is plenty.
            try:
                self.local.start_head(
                    state, num_cpus=num_cpus, num_gpus=num_gpus, timeout_s=timeout_s, node_manager_port=port
                )
            except ClusterError:
                if attempt == attempts:
                    raise
            else:
                return state, port
        raise AssertionError("unreachable")

    def _env(self, state: ClusterState) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(state.env())
        env.update(serve_proxy_env(self.local.temp_dir))  # every node: gateways may run on any
        return env

    def _start_worker(
        self, state: ClusterState, name: str, num_gpus: int, num_cpus: int, timeout_s: float, attempts: int = 3
    ) -> NodeRecord:
        """``ray start`` of one worker node, retried: under heavy load its raylet gives up when its agents
        take longer than its fixed start-up wait (``Timed out waiting for file ...agent_port``)."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_worker_once(state, name, num_gpus, num_cpus, timeout_s)
            except ClusterError:
                self._stop_leftovers(state, name)
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _stop_leftovers(self, state: ClusterState, name: str) -> None:
        """Whatever a failed ``ray start`` of ``name`` left running (its processes name its temp dir)."""
        marker = f"{self.local.temp_dir / name}/"
        for proc in self.local._processes(state):
            with contextlib.suppress(Exception):
                if any(marker in arg for arg in proc.cmdline()):
                    kill_tree(proc.pid)

    def _start_worker_once(
        self, state: ClusterState, name: str, num_gpus: int, num_cpus: int, timeout_s: float
    ) -> NodeRecord:
        port = free_port()
        # Every per-node port Ray would otherwise default to a fixed number is chosen here, so nodes
        # on one machine (and other clusters) never collide.
        command = [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            f"--address={state.address}",
            f"--num-cpus={num_cpus}",
            f"--num-gpus={num_gpus}",
            # Its own temp dir below the head's: nodes started side by side would otherwise race for
            # the same socket names, and ``huabu down`` still finds every process under the head's.
            f"--temp-dir={self.local.temp_dir / name}",
            f"--node-manager-port={port}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--min-worker-port=0",
            "--max-worker-port=0",
            "--disable-usage-stats",
            "--include-log-monitor=false",
        ]
        log_path = self.local.home / f"ray-start-{name}.log"
        with log_path.open("w") as log:
            try:
                proc = subprocess.run(
                    command, env=self._env(state), stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, check=False
                )
            except subprocess.TimeoutExpired:
                raise ClusterError(
                    f"`ray start` of {name} did not finish in {timeout_s:.0f} s; see {log_path}"
                ) from None
        if proc.returncode != 0:
            tail = "\n".join(log_path.read_text().splitlines()[-15:])
            raise ClusterError(f"`ray start` of {name} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
        return NodeRecord(name, self._raylet_pid(state, port), port, num_gpus, num_cpus)

    def _raylet_pid(self, state: ClusterState, node_manager_port: int) -> int:
        """The PID of this cluster's raylet with that node manager port."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for proc in self.local._processes(state):
                with contextlib.suppress(Exception):
                    cmdline = proc.cmdline()
                    if not cmdline or not cmdline[0].endswith("raylet"):
                        continue
                    if f"--node_manager_port={node_manager_port}" in cmdline:
                        return int(proc.pid)
            time.sleep(0.2)
        raise ClusterError(f"no raylet with node manager port {node_manager_port} found after `ray start`")

    def _wait_registered(self, state: ClusterState, count: int, timeout_s: float) -> None:
        """Workers register with the GCS asynchronously after ``ray start`` returns."""
        deadline = time.monotonic() + timeout_s
        alive = 0
        while time.monotonic() < deadline:
            alive = sum(1 for n in self.describe(state)["nodes"] if n["alive"])
            if alive >= count:
                return
            time.sleep(0.5)
        raise ClusterError(f"only {alive} of {count} nodes registered with the head after {timeout_s:.0f} s")

    # --- inspect ----------------------------------------------------------------------------

    def describe(self, state: ClusterState) -> dict[str, Any]:
        """Nodes (alive, GPUs total/free, which record they are) and, when Serve runs, each replica's
        state and node. Connects this process as a driver."""
        self.local.connect(state)
        import ray
        from ray._private import state as ray_state

        record = self.load()
        names = {n.node_manager_port: n.name for n in record.nodes} if record else {}
        available = ray_state.available_resources_per_node()
        nodes = []
        for node in ray.nodes():
            node_id = node["NodeID"]
            total = node.get("Resources", {})
            free = available.get(node_id, {})
            nodes.append(
                {
                    "node_id": node_id,
                    "name": names.get(node.get("NodeManagerPort"), node_id[:8]),
                    "alive": bool(node["Alive"]),
                    "gpus": float(total.get("GPU", 0)),
                    "gpus_free": float(free.get("GPU", 0)) if node["Alive"] else 0.0,
                    "cpus": float(total.get("CPU", 0)),
                }
            )
        return {"address": state.address, "nodes": nodes, "replicas": serve_replicas()}

    # --- stop -------------------------------------------------------------------------------

    def kill_node(self, name: str, freeze: bool = False) -> int:
        """SIGKILL a worker node's raylet and everything under it, as if its machine died. -> processes.

        Processes killed on a live machine have their connections reset by its kernel, so every peer
        learns at once. ``freeze`` SIGSTOPs them instead: a machine that vanished from the network (or
        hangs), whose peers get no reset and hear nothing more; the node is declared dead by missed
        health checks. The frozen processes are killed by ``restart_node`` and ``down``."""
        if name == HEAD:
            raise ClusterError("the head holds the GCS and Serve's controller; kill a worker node instead")
        record = self.load()
        if record is None:
            raise ClusterError("no multi-node cluster is recorded: start one with `huabu cluster up`")
        pid = record.node(name).raylet_pid
        return signal_tree(pid, signal.SIGSTOP) if freeze else kill_tree(pid)

    def restart_node(self, name: str, timeout_s: float = 180.0) -> NodeRecord:
        """Start a worker node again under ``name``, with the resources it had, after ``kill_node``: a
        replacement machine joining. Ray sees a new node (a new node id); the old one stays dead. It
        registers with the head shortly after this returns (``huabu cluster status`` shows it)."""
        if name == HEAD:
            raise ClusterError("only worker nodes can be restarted")
        state = self.local.load_state()
        record = self.load()
        if state is None or record is None:
            raise ClusterError("no multi-node cluster is recorded: start one with `huabu cluster up`")
        old = record.node(name)
        if _is_raylet(old.raylet_pid):  # frozen, not killed: the lost machine's processes go first
            kill_tree(old.raylet_pid)
        node = self._start_worker(state, name, old.num_gpus, old.num_cpus, timeout_s)
        record.nodes = [node if n.name == name else n for n in record.nodes]
        self.save(record)
        return node

    def down(self, state: ClusterState | None = None) -> int:
        """Workers first, by PID, then the head and anything left under the cluster's temp dir."""
        state = state or self.local.load_state()
        record = self.load()
        stopped = 0
        if record is not None:
            for node in reversed(record.nodes):
                stopped += kill_tree(node.raylet_pid, signal.SIGTERM)
        if state is not None and state.started_by_huabu:
            stopped += self.local.stop_processes(state)
            self.local.clear_state()
        self.nodes_path.unlink(missing_ok=True)
        return stopped


def _signal_tree(pid: int, sig: int) -> list[Any]:
    """Send ``sig`` to a process and its descendants (collected first, so none is orphaned unseen).
    -> the processes (psutil), none if ``pid`` is gone."""
    psutil = _psutil()
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
    return procs


def signal_tree(pid: int, sig: int) -> int:
    """Send ``sig`` to a process and its descendants, waiting for none. -> how many processes."""
    return len(_signal_tree(pid, sig))


def _is_raylet(pid: int) -> bool:
    """Whether ``pid`` is still a raylet (a recorded pid may have been reused since its node died)."""
    psutil = _psutil()
    try:
        return "raylet" in " ".join(psutil.Process(pid).cmdline()[:1])
    except psutil.Error:
        return False


def kill_tree(pid: int, sig: int = signal.SIGKILL, grace_s: float = 2.0) -> int:
    """Signal a process and its descendants; whatever survives ``grace_s`` after a SIGTERM is
    killed. -> how many processes."""
    psutil = _psutil()
    procs = _signal_tree(pid, sig)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return len(procs)


def serve_replicas() -> list[dict[str, Any]]:
    """Every Serve replica: application, deployment, replica id, state, node id, start time. Read
    from Serve's controller (the same details its REST API serves), so no dashboard is needed."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return []
    details = client.get_serve_details()
    return [
        {
            "app": app_name,
            "deployment": dep_name,
            "replica_id": r["replica_id"],
            "state": getattr(r["state"], "value", str(r["state"])),
            "node_id": r.get("node_id"),
            "start_time_s": r.get("start_time_s"),
        }
        for app_name, app in details.get("applications", {}).items()
        for dep_name, dep in app.get("deployments", {}).items()
        for r in dep.get("replicas", [])
    ]

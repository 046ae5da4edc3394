"""A real Ray cluster of several nodes on this machine, started with the `ray` CLI as an
operator would (`ray start --head`, then `ray start --address=...` per node), with Ray's
token authentication on: every node and every client gets the cluster's token."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.e2e.server import free_port

RAY = str(Path(sys.executable).parent / "ray")

ANSWER = "genserve-answer: "  # marks the line _ask reads from its driver's stdout


class RayCluster:
    def __init__(self, root: Path, redis: str = "") -> None:
        """`redis` (host:port): the head keeps the GCS's state there (GCS fault tolerance),
        so a restarted head takes the surviving nodes and actors back."""
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.client_port = free_port()
        self.client_address = f"ray://127.0.0.1:{self.client_port}"  # Ray Client
        # short: Ray's unix sockets live under it, and their paths are limited to 107 bytes
        self.temp_dir = Path(f"/tmp/gsray-{secrets.token_hex(3)}")
        self.temp_dirs = [self.temp_dir]  # a head restarted with GCS fault tolerance adds one
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
            # a killed node is declared dead after ~3 s instead of Ray's default ~30 s
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        self.env.pop("RAY_ADDRESS", None)
        if redis:
            self.env["RAY_REDIS_ADDRESS"] = redis
            self.env["RAY_external_storage_namespace"] = self.temp_dir.name
        self.head_id = ""

    def auth_env(self) -> dict[str, str]:
        """What a client of this cluster needs in its environment: the token."""
        return {k: self.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}

    def _ray(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [RAY, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if done.returncode:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start_head(self, cpus: int = 1) -> RayCluster:
        self._ray(
            "start",
            "--head",
            f"--port={self.port}",
            f"--num-cpus={cpus}",
            "--include-dashboard=false",
            f"--ray-client-server-port={self.client_port}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        )
        heads = [n for n in self.alive_nodes() if "node:__internal_head__" in n["Resources"]]
        self.head_id = heads[0]["NodeID"]
        return self

    def add_node(
        self, cpus: int = 1, resources: dict[str, float] | None = None, ip: str = ""
    ) -> str:
        """Starts one more node (at `ip`: another loopback address sets it apart from the
        head's); returns its node id once the cluster lists it."""
        before = {n["NodeID"] for n in self.alive_nodes()}
        extra = [f"--resources={json.dumps(resources)}"] if resources else []
        extra += [f"--node-ip-address={ip}"] if ip else []
        self._ray("start", f"--address={self.address}", f"--num-cpus={cpus}", *extra)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = {n["NodeID"] for n in self.alive_nodes()} - before
            if new:
                return new.pop()
            time.sleep(0.5)
        raise TimeoutError("the new node never joined")

    def alive_nodes(self) -> list[dict]:
        return self._ask("[n for n in ray.nodes() if n['Alive']]")

    def free_cpus(self) -> float:
        """The CPUs no task or actor holds right now."""
        return self._ask("ray.available_resources().get('CPU', 0)")

    def _ask(self, expression: str) -> Any:
        """`expression`'s value, from a driver of its own (a test must not become one)."""
        script = (
            f"import json, ray; ray.init(address={self.address!r}, log_to_driver=False);"
            f"print({ANSWER!r} + json.dumps({expression}))"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        # Ray may print its own lines after ours (a raylet's lagging heartbeats on a busy machine)
        answer = next(
            line for line in reversed(done.stdout.splitlines()) if line.startswith(ANSWER)
        )
        return json.loads(answer.removeprefix(ANSWER))

    def kill_node(self, node_id: str) -> None:
        """SIGKILLs a worker node's raylet and everything it started (the node dies)."""
        for node in self.alive_nodes():
            if node["NodeID"] == node_id:
                pid = _raylet_pid(node)
                subprocess.run(["pkill", "-9", "-P", str(pid)], check=False)
                os.kill(pid, 9)
                return
        raise LookupError(node_id)

    def kill_head(self) -> None:
        """SIGKILLs the head node alone: its GCS, raylet (and what it started), autoscaler
        monitor and Ray Client server, as when the head's machine dies."""
        head = next(n for n in self.alive_nodes() if n["NodeID"] == self.head_id)
        raylet = _raylet_pid(head)
        subprocess.run(["pkill", "-9", "-P", str(raylet)], check=False)
        os.kill(raylet, 9)
        for pattern in (
            f"gcs_server.*{self.temp_dir}",
            f"autoscaler/_private/monitor.py.*{self.temp_dir}",
            f"ray.util.client.server.*--node-id={self.head_id}",
        ):
            subprocess.run(["pkill", "-9", "-f", pattern], check=False)
        # a new head starts in a temp dir of its own: `ray start --head` refuses an address
        # it finds in use in the old one's session (the other nodes still name it)
        self.temp_dir = Path(f"/tmp/gsray-{secrets.token_hex(3)}")
        self.temp_dirs.append(self.temp_dir)

    def stop(self) -> None:
        """Ends this cluster's processes only (`ray stop` would end every Ray on the machine,
        the other tests' included): each names a temp dir or the head's address."""
        for sig in ("-TERM", "-KILL"):
            # the Ray Client server names neither: it has the head's port
            client_server = f"client.server --address=[^ ]*:{self.port} "
            for pattern in (*map(str, self.temp_dirs), self.address, client_server):
                subprocess.run(["pkill", sig, "-f", pattern], check=False)
            time.sleep(1)
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _raylet_pid(node: dict) -> int:
    """The raylet's pid, found by the node's raylet socket: its whole path, since every Ray
    instance on the machine has a `raylet` socket of its own (the package's local one too)."""
    socket_name = node["RayletSocketName"]
    found = subprocess.run(
        ["pgrep", "-f", f"raylet_socket_name={socket_name}( |$)"], capture_output=True, text=True
    )
    pids = [int(p) for p in found.stdout.split()]
    if not pids:
        raise LookupError(f"no raylet for {socket_name}")
    return pids[0]

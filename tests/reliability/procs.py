"""Test-only processes of the reliability suite: a local Redis Cluster.

The shared helpers (ports, a private redis-server, `python -m service`, waiting with a deadline)
live in `bench/procs.py`, used by the benchmarks and these tests alike. Cluster nodes take ports from
the same 7100-7199 range; every process is killed by its own handle and the data dir is a temp dir
removed afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from bench.procs import spare_redis_port, wait_redis, wait_until


class RedisCluster:
    """A local 3-master Redis Cluster (no replicas) from `redis-server --cluster-enabled yes`."""

    def __init__(self, masters: int = 3) -> None:
        self.ports: list[int] = []
        for _ in range(masters):
            self.ports.append(spare_redis_port(taken=self.ports))
        self.dir = Path(tempfile.mkdtemp(prefix="kt-cluster-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def _node_command(self, port: int, node_dir: Path) -> list[str]:
        return [
            "redis-server",
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)),
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"),
        ]

    def _state_ok(self) -> bool:
        for port in self.ports:
            client = redis.Redis(port=port, decode_responses=True)
            try:
                if "cluster_state:ok" not in str(client.execute_command("CLUSTER", "INFO")):
                    return False
            finally:
                client.close()
        return True

    def start(self) -> RedisCluster:
        """Start the nodes, `redis-cli --cluster create` them, wait for cluster_state:ok."""
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            self.procs.append(
                subprocess.Popen(
                    self._node_command(port, node_dir),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port, proc in zip(self.ports, self.procs, strict=True):
            wait_redis(port, proc=proc)
        create = [
            "redis-cli",
            "--cluster",
            "create",
            *(f"127.0.0.1:{p}" for p in self.ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]
        out = subprocess.run(create, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        wait_until(self._state_ok, 20, "cluster_state:ok")
        return self

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait(timeout=10)
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_cli_has_cluster() -> bool:
    if shutil.which("redis-cli") is None or shutil.which("redis-server") is None:
        return False
    out = subprocess.run(["redis-cli", "--cluster", "help"], capture_output=True, text=True)
    return "create" in (out.stdout + out.stderr)

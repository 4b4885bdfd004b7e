"""Real processes for the reliability tests: redis-server (plain, AOF, cluster) and `python -m service`.

Everything binds to 127.0.0.1; Redis ports come from 7100-7199 (kept apart from other suites);
every process is killed by its own handle and every data directory is a temp dir removed afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
REDIS_PORTS = range(7100, 7200)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    # a cluster node also needs its bus port (port + 10000)
    return True


def spare_redis_port(taken: set[int] | None = None) -> int:
    """A free loopback port in 7100-7199 (random start, so parallel runs rarely collide)."""
    taken = taken or set()
    ports = list(REDIS_PORTS)
    random.shuffle(ports)
    for port in ports:
        if port not in taken and _port_free(port) and _port_free(port + 10000):
            return port
    raise RuntimeError("no free port in 7100-7199")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_redis(port: int, timeout_s: float = 10.0) -> None:
    client = redis.Redis(port=port, socket_timeout=0.2, socket_connect_timeout=0.2)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.BusyLoadingError:
                pass
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {port} did not answer within {timeout_s} s")
            time.sleep(0.01)
    finally:
        client.close()


class RedisServer:
    """One redis-server process on a spare port with its own temp data dir.

    `aof=True`: `--appendonly yes --appendfsync always` (every acknowledged write is on disk before
    the reply), so a SIGKILL of Redis loses nothing it acknowledged.
    """

    def __init__(self, *, aof: bool = False, extra: list[str] | None = None) -> None:
        self.port = spare_redis_port()
        self.aof = aof
        self.extra = extra or []
        self.dir = Path(tempfile.mkdtemp(prefix="kt-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(port=self.port, **kwargs)

    def start(self) -> RedisServer:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--appenddirname", "aof"]
            if self.aof
            else ["--appendonly", "no"]
        )
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--enable-debug-command",
            "local",
            *persistence,
            *self.extra,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_redis(self.port)
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown save."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """A local 3-master Redis Cluster (no replicas) from `redis-server --cluster-enabled yes`."""

    def __init__(self, masters: int = 3) -> None:
        self.ports: list[int] = []
        taken: set[int] = set()
        for _ in range(masters):
            port = spare_redis_port(taken)
            taken |= {port}
            self.ports.append(port)
        self.dir = Path(tempfile.mkdtemp(prefix="kt-cluster-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self) -> RedisCluster:
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            cmd = [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(node_dir),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            self.procs.append(
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port in self.ports:
            wait_redis(port)
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
        deadline = time.monotonic() + 20
        while True:
            states = []
            for port in self.ports:
                info = redis.Redis(port=port, decode_responses=True).execute_command(
                    "CLUSTER", "INFO"
                )
                text = info if isinstance(info, str) else str(info)
                states.append("cluster_state:ok" in text)
            if all(states):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("cluster did not reach cluster_state:ok")
            time.sleep(0.1)

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


class ServiceProcess:
    """`python -m service` (uvicorn, uvloop, httptools) on a spare port, configured by KT_* env."""

    def __init__(self, env: dict[str, str], log_path: Path | None = None) -> None:
        self.port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("KT_")}
        self.env = base | {"KT_PORT": str(self.port), "KT_LOG_LEVEL": "info"} | env
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="kt-service-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout_s: float = 30.0, require_ready: bool = True) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + ready_timeout_s
        with httpx.Client(base_url=self.url, timeout=1.0) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    status = http.get("/readyz").status_code
                    if status == 200 or (not require_ready and status == 503):
                        return self
                if self.proc.poll() is not None:
                    raise RuntimeError(f"service exited: {self.log_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"service not ready: {self.log_text()[-2000:]}")
                time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cleanup(self) -> None:
        self.kill()
        self.log_path.unlink(missing_ok=True)

"""Real processes for the benchmarks and the reliability tests: ports, `redis-server`, `python -m service`.

One place for "find a free port, start a private Redis, start the service, wait until it is ready,
stop it cleanly", used by `bench.serve_bench`, `bench.soak` and `tests/reliability` alike.

- Everything binds to 127.0.0.1. Redis ports come from 7100-7199 unless one is given (kept apart
  from other suites); a port is only taken if its cluster bus port (+10000) is free too.
- Every wait polls against a deadline and fails with what it waited for (and the service's log):
  never a fixed sleep.
- Every process is stopped by its own handle (never by name) and every data dir is a temp dir
  removed by `cleanup()`. Both classes are context managers that start (unless started already:
  `with ServiceProcess(env).start(ready_timeout_s=60) as svc`) and on exit stop and clean up.

Also the service's own Redis layout, read from its code (`service.store`, `service.config`), so a
benchmark that inspects Redis cannot drift from what the service writes: `history_keys`,
`key_memory`, `service_default`.

Imports only the standard library, httpx and redis at module level (service code lazily), so the
tests can use it without pulling in a benchmark's dependencies.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
REDIS_PORTS = range(7100, 7200)
POLL_S = 0.05  # interval between readiness checks (the deadline bounds the wait, not this)


# -- ports ----------------------------------------------------------------------------------------
def port_free(port: int) -> bool:
    """True if a loopback TCP socket can bind `port` now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def spare_redis_port(taken: Iterable[int] = (), ports: Iterable[int] = REDIS_PORTS) -> int:
    """A free loopback port in 7100-7199 whose cluster bus port (+10000) is free too.

    Random start, so parallel runs rarely collide; `taken` excludes ports already handed out.
    """
    excluded = set(taken)
    candidates = [p for p in ports if p not in excluded]
    random.shuffle(candidates)
    for port in candidates:
        if port_free(port) and port_free(port + 10000):
            return port
    raise RuntimeError(f"no free port in {min(REDIS_PORTS)}-{max(REDIS_PORTS)}")


def free_port() -> int:
    """Any free loopback port (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- waiting --------------------------------------------------------------------------------------
def wait_until(
    check: Callable[[], bool],
    timeout_s: float,
    what: str,
    *,
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Poll `check` until it returns true; raise after `timeout_s` naming `what`.

    Exceptions of `check` count as "not yet". `alive` returns an error message once the process
    being waited for has died (then there is no point in waiting out the deadline).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if alive is not None and (dead := alive()) is not None:
            raise RuntimeError(f"{what}: {dead}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout_s:g} s")
        time.sleep(POLL_S)


def wait_redis(
    port: int, timeout_s: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until the redis-server on `port` answers PING (not while it is still loading)."""
    client = redis.Redis(port=port, socket_timeout=0.2, socket_connect_timeout=0.2)

    def exited() -> str | None:
        if proc is not None and proc.poll() is not None:
            return f"exited with {proc.returncode}"
        return None

    try:
        wait_until(lambda: bool(client.ping()), timeout_s, f"redis-server on {port}", alive=exited)
    finally:
        client.close()


def redis_version() -> str:
    """`redis-server --version`'s v=..., or '?'."""
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    match = [w for w in out.split() if w.startswith("v=")]
    return match[0][2:] if match else "?"


def redis_server_installed() -> bool:
    return shutil.which("redis-server") is not None


# -- redis-server ---------------------------------------------------------------------------------
class RedisServer:
    """One redis-server process on a spare port (or `port`) with its own temp data dir.

    `appendfsync`: None = no AOF; "always" = every acknowledged write is on disk before the reply
    (a SIGKILL of Redis loses nothing it acknowledged); "everysec" = as in docker-compose.yml.
    `start()` after `kill()` restarts on the same port and dir (an AOF is replayed).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendfsync: Literal["always", "everysec"] | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.port = spare_redis_port() if port is None else port
        self.appendfsync = appendfsync
        self.extra = extra or []
        self.dir = Path(tempfile.mkdtemp(prefix="kt-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(port=self.port, **kwargs)

    def command(self) -> list[str]:
        persistence = (
            ["--appendonly", "no"]
            if self.appendfsync is None
            else ["--appendonly", "yes", "--appendfsync", self.appendfsync]
            + ["--appenddirname", "aof"]
        )
        return [
            "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)),
            *("--save", "", "--enable-debug-command", "local"),
            *persistence,
            *self.extra,
        ]

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start and wait until it answers PING."""
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_redis(self.port, timeout_s, self.proc)
        except RuntimeError:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown save."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Redis flushes its AOF and exits), SIGKILL if it has not after `timeout_s`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout_s)
        self.kill()

    def cleanup(self) -> None:
        """Kill it (if running) and remove its data dir."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self if self.proc is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.cleanup()


# -- python -m service ----------------------------------------------------------------------------
class ServiceProcess:
    """`python -m service` (uvicorn, uvloop, httptools) on a free port, configured by KT_* env.

    The parent's KT_* variables are dropped, so only `env` (+ KT_PORT, KT_LOG_LEVEL=info unless
    given) configures it. Output goes to `log_path` (a temp file by default, whose tail is in every
    error), or to this process's stdout/stderr with `inherit_output=True`.
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path | None = None,
        *,
        port: int | None = None,
        inherit_output: bool = False,
    ) -> None:
        self.port = free_port() if port is None else port
        base = {k: v for k, v in os.environ.items() if not k.startswith("KT_")}
        self.env = base | {"KT_PORT": str(self.port), "KT_LOG_LEVEL": "info"} | env
        self.inherit_output = inherit_output
        self.log_path: Path | None = None
        if not inherit_output:
            self.log_path = log_path or Path(
                tempfile.mkstemp(prefix="kt-service-", suffix=".log")[1]
            )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, ready_timeout_s: float = 30.0, require_ready: bool = True) -> ServiceProcess:
        """Start and wait until GET /readyz answers 200 (or 503 too with `require_ready=False`)."""
        if self.log_path is None:
            self.proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=self.env)
        else:
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "service"],
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        ok = {200} if require_ready else {200, 503}
        proc = self.proc
        with httpx.Client(base_url=self.url, timeout=1.0) as http:

            def exited() -> str | None:
                if proc.poll() is None:
                    return None
                return f"exited with {proc.returncode}"

            try:
                wait_until(
                    lambda: http.get("/readyz").status_code in ok,
                    ready_timeout_s,
                    "python -m service",
                    alive=exited,
                )
            except RuntimeError as exc:
                self.kill()
                raise RuntimeError(f"{exc}\n{self.log_text()[-2000:]}") from None
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (default SIGKILL: a crash) and wait for the exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        self.proc = None

    def stop(self, timeout_s: float = 15.0) -> None:
        """Graceful: SIGTERM (uvicorn drains and shuts down), SIGKILL after `timeout_s`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout_s)
        self.kill()

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        """Kill it (if running) and remove its log file."""
        self.kill()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> ServiceProcess:
        return self if self.proc is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.cleanup()


# -- the service's Redis layout, from its own code ------------------------------------------------
def service_default(name: str) -> Any:
    """The default of one `service.config.Settings` field (e.g. "history_extra", "key_prefix")."""
    from service.config import Settings

    return Settings.model_fields[name].default


def history_keys(user_ids: Iterable[str], key_prefix: str | None = None) -> list[str]:
    """The Redis keys `service.store.RedisHistoryStore` keeps these learners' histories under.

    `key_prefix`: KT_KEY_PREFIX of the service (default: the service's default). The store's own
    `key()` builds them; nothing connects to Redis.
    """
    from service.store import RedisHistoryStore

    prefix = service_default("key_prefix") if key_prefix is None else key_prefix
    store = RedisHistoryStore("redis://127.0.0.1:1/0", ttl_s=1, key_prefix=prefix)
    return [store.key(u) for u in user_ids]


def key_memory(client: redis.Redis, key: str, samples: int | None = None) -> tuple[int, int]:
    """(MEMORY USAGE, STRLEN) of one history key; raises if the key is not there.

    A missing key means the service stores histories elsewhere than `history_keys` says (or did not
    store them): a benchmark must fail then, not report 0 bytes.
    """
    usage = client.memory_usage(key) if samples is None else client.memory_usage(key, samples)
    if usage is None:
        raise RuntimeError(
            f"Redis has no key {key!r}: the service did not store the history where "
            "service.store says it does (key format or KT_KEY_PREFIX mismatch?)"
        )
    return int(usage), int(client.strlen(key))

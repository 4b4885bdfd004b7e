"""`python -m service` end to end: uvicorn (uvloop + httptools) on a spare port, SIGHUP reload, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import QUESTION_IDS
from tests.service.test_store import _free_port

ROOT = Path(__file__).resolve().parents[2]


def test_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "service", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0 and "KT_" in out.stdout


def test_refuses_many_workers_with_the_embedded_store() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KT_")} | {"KT_WORKERS": "2"}
    out = subprocess.run(
        [sys.executable, "-m", "service"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert out.returncode == 2 and "KT_REDIS_URL" in out.stderr


@pytest.mark.parametrize(
    ("env", "argv", "fragment"),
    [
        ({"KT_PORT": "abc"}, [], "KT_PORT: Input should be a valid integer"),
        ({}, ["--workers", "0"], "KT_WORKERS: Input should be greater than or equal to 1"),
        ({}, ["--port", "x"], "argument --port: invalid int value: 'x'"),
    ],
)
def test_bad_settings_are_one_line(env: dict[str, str], argv: list[str], fragment: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KT_")} | env
    out = subprocess.run(
        [sys.executable, "-m", "service", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean,
        timeout=60,
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]


@pytest.mark.slow
def test_serve_reload_on_sighup_and_stop(artifact: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KT_")}
    env |= {"KT_MODEL_DIR": str(artifact), "KT_PORT": str(port), "KT_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=2.0) as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, (
                    "service did not become ready"
                )
                time.sleep(0.1)
            body = {"user_id": "e2e", "questions": [{"question_id": QUESTION_IDS[0]}]}
            assert http.post("/predict", json=body).status_code == 200

            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while 'kt_model_reloads_total{outcome="ok"} 1.0' not in http.get("/metrics").text:
                assert time.monotonic() < deadline, "SIGHUP did not reload the model"
                time.sleep(0.1)
            assert http.post("/predict", json=body).status_code == 200
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the captured signal (exit status -15)
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("own_dir", [False, True], ids=["operator-dir", "service-made-dir"])
def test_several_workers_report_summed_metrics(
    artifact: Path, redis_url: str, key_prefix: str, tmp_path: Path, own_dir: bool
) -> None:
    """KT_WORKERS=2: requests spread over both workers, and every scrape (whichever worker answers
    it) reports all of them (prometheus_client multiprocess mode). Without PROMETHEUS_MULTIPROC_DIR
    the service makes a fresh directory and removes it at exit."""
    port = _free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KT_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env |= {
        "KT_MODEL_DIR": str(artifact),
        "KT_PORT": str(port),
        "KT_LOG_LEVEL": "info" if own_dir else "warning",
        "KT_WORKERS": "2",
        "KT_REDIS_URL": redis_url,
        "KT_KEY_PREFIX": key_prefix,
    }
    if not own_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    n = 60
    try:
        deadline = time.monotonic() + 40
        ready = 0
        while ready < 4:  # several fresh connections ready: both workers are up
            try:
                ready = (
                    ready + 1 if httpx.get(f"{base}/readyz", timeout=2).status_code == 200 else 0
                )
            except httpx.TransportError:
                ready = 0
            assert time.monotonic() < deadline and proc.poll() is None, "service not ready"
            time.sleep(0.2)
        body = {"user_id": "mw", "questions": [{"question_id": QUESTION_IDS[0]}]}
        for _ in range(n):  # a new connection each: the kernel spreads them over the workers
            assert httpx.post(f"{base}/predict", json=body, timeout=5).status_code == 200
        if not own_dir:
            pids = {p.name.split("_")[-1] for p in metrics_dir.glob("counter_*.db")}
            assert len(pids) >= 2, f"requests reached one worker only: {sorted(pids)}"
        line = f'kt_http_requests_total{{method="POST",route="/predict",status="200"}} {float(n)}'
        for _ in range(6):
            assert line in httpx.get(f"{base}/metrics", timeout=5).text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
        if own_dir:
            assert proc.stdout is not None
            log = proc.stdout.read().decode()
            made = re.search(r"metrics aggregated in (\S+)", log)
            assert made and not Path(made.group(1)).exists(), "the service's metrics dir stays"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

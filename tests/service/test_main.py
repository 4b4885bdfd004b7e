"""`python -m service` end to end: uvicorn (uvloop + httptools) on a spare port, SIGHUP reload, SIGTERM."""

from __future__ import annotations

import os
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

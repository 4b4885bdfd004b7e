"""Fixtures of the browser tests: a small trained artifact, a simulated learner, live services and
one Chromium (the system's, driven by Playwright) for the whole module.

Chromium is found at $KT_CHROMIUM, else as `chromium` / `chromium-browser` on PATH. Without it the
tests skip, except under CI (`CI` set), where they fail: CI installs it (`.ci/run`).
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.procs import ServiceProcess
from tests.training.test_train_evaluate import TINY

SEQ_LEN = 50


def chromium_path() -> str | None:
    explicit = os.environ.get("KT_CHROMIUM")
    if explicit:
        return explicit
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        message = "no Chromium: install it (apt-get install chromium) or set KT_CHROMIUM"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.simulate import simulate, write

    out = tmp_path_factory.mktemp("ui-sim")
    write(simulate(40, seed=5, n_questions=150, n_parts=4, n_skills=12, mean_length=60), out)
    return out


@pytest.fixture(scope="session")
def trained_artifact(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SAINT+ trained for 3 epochs on 40 simulated learners, calibrated and exported."""
    from training.export import export_artifact
    from training.train import main

    root = tmp_path_factory.mktemp("ui-model")
    argv = [
        "--train-file",
        str(sim_dir / "train.csv"),
        "--questions-file",
        str(sim_dir / "questions.csv"),
        "--output-dir",
        str(root / "model"),
        "--model",
        "saint_plus",
        *TINY,  # the training tests' tiny SAINT+, with a longer window and 3 epochs
        "--seq-len",
        str(SEQ_LEN),
        "--epochs",
        "3",
    ]
    assert main(argv) == 0
    return Path(export_artifact(root / "model", root / "artifact"))


def _longest_learner(sim_dir: Path) -> tuple[list[dict[str, str]], int]:
    """The rows of the simulated learner with the most answers, and the shift that moves their
    last answer to an hour ago."""
    rows: dict[str, list[dict[str, str]]] = {}
    with open(sim_dir / "train.csv", newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["user_id"], []).append(row)
    longest = max(rows.values(), key=lambda r: sum(x["content_type_id"] == "0" for x in r))
    last = max(int(r["timestamp"]) for r in longest if r["content_type_id"] == "0")
    return longest, int(time.time() * 1000) - 3_600_000 - last


@pytest.fixture(scope="session")
def learner_interactions(sim_dir: Path) -> list[dict[str, Any]]:
    """The longest simulated learner's answers, moved so that the last one was an hour ago."""
    longest, shift = _longest_learner(sim_dir)
    return [
        {
            "question_id": int(r["content_id"]),
            "timestamp": int(r["timestamp"]) + shift,
            "correct": r["answered_correctly"] == "1",
            "container_id": int(r["task_container_id"]),
        }
        for r in longest
        if r["content_type_id"] == "0"
    ]


@pytest.fixture(scope="session")
def learner_lectures(sim_dir: Path) -> list[dict[str, Any]]:
    """The lectures the same learner watched, moved with the answers."""
    longest, shift = _longest_learner(sim_dir)
    return [
        {"lecture_id": int(r["content_id"]), "timestamp": int(r["timestamp"]) + shift}
        for r in longest
        if r["content_type_id"] == "1"
    ]


def record(
    base_url: str,
    user_id: str,
    interactions: list[dict[str, Any]],
    key: str = "",
    lectures: list[dict[str, Any]] | None = None,
) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    batches = [
        {"interactions": interactions[s : s + 500]} for s in range(0, len(interactions), 500)
    ]
    if lectures:
        batches.append({"lectures": lectures})
    for batch in batches:
        response = httpx.post(
            f"{base_url}/interactions",
            json={"user_id": user_id, **batch},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def service(trained_artifact: Path) -> Iterator[ServiceProcess]:
    """The service on the embedded store, with the trained artifact."""
    svc = ServiceProcess({"KT_MODEL_DIR": str(trained_artifact)}).start()
    try:
        yield svc
    finally:
        svc.stop()
        svc.cleanup()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            yield browser
        finally:
            browser.close()

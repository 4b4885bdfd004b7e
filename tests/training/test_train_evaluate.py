"""training.train (HF Trainer), exact resume, DDP under torchrun, and training.evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from training.simulate import simulate, write
from training.split_csv import split_file

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--d-model",
    "16",
    "--layers",
    "1",
    "--heads",
    "2",
    "--seq-len",
    "20",
    "--report-to",
    "none",
    "--no-progress",
]


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    write(simulate(60, seed=3, mean_length=40), out)
    split_file(out / "train.csv", out / "split", 0.2)
    return out


def _train(sim_dir: Path, out: Path, *extra: str) -> dict:
    from training.train import main

    argv = [
        "--train-file",
        str(sim_dir / "train.csv"),
        "--questions-file",
        str(sim_dir / "questions.csv"),
        "--output-dir",
        str(out),
        *TINY,
        *extra,
    ]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_train_writes_model_dir_and_metrics(sim_dir: Path, tmp_path: Path) -> None:
    metrics = _train(
        sim_dir,
        tmp_path / "m",
        "--model",
        "saint_plus",
        "--max-steps",
        "6",
        "--eval-strategy",
        "steps",
        "--eval-steps",
        "3",
        "--save-strategy",
        "steps",
        "--save-steps",
        "3",
    )
    for name in (
        "config.json",
        "model.safetensors",
        "feature_spec.json",
        "metrics.json",
        "training_curves.png",
    ):
        assert (tmp_path / "m" / name).exists(), name
    assert 0.0 <= metrics["auc"] <= 1.0 and metrics["params"] > 0
    assert metrics["model"] == "saint_plus"


def test_time_validation_and_dkt(sim_dir: Path, tmp_path: Path) -> None:
    metrics = _train(
        sim_dir, tmp_path / "m", "--model", "dkt", "--max-steps", "4", "--validation", "time"
    )
    assert metrics["validation"] == "time" and metrics["n"] > 0


def test_resume_reproduces_uninterrupted_weights(sim_dir: Path, tmp_path: Path) -> None:
    common = [
        "--model",
        "saint_plus",
        "--max-steps",
        "8",
        "--save-strategy",
        "steps",
        "--save-steps",
        "4",
        "--validation",
        "none",
        "--dropout",
        "0.2",
        "--save-total-limit",
        "5",
    ]
    _train(sim_dir, tmp_path / "full", *common)
    # A second run that resumes from the step-4 checkpoint of a copy of the first run's checkpoints.
    import shutil

    shutil.copytree(
        tmp_path / "full" / "checkpoints" / "checkpoint-4",
        tmp_path / "resumed" / "checkpoints" / "checkpoint-4",
    )
    _train(
        sim_dir,
        tmp_path / "resumed",
        *common,
        "--resume-from-checkpoint",
        str(tmp_path / "resumed" / "checkpoints" / "checkpoint-4"),
    )
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert full.keys() == resumed.keys()
    for key in full:
        np.testing.assert_allclose(full[key], resumed[key], atol=1e-6, err_msg=key)

    # Negative control: the same resume from a checkpoint whose weights were altered must end
    # elsewhere, so the equality above comes from the checkpoint, not from replaying the seed.
    from safetensors.numpy import save_file

    tampered = tmp_path / "tampered" / "checkpoints" / "checkpoint-4"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "checkpoint-4", tampered)
    weights = load_file(str(tampered / "model.safetensors"))
    save_file({k: v * 0.5 for k, v in weights.items()}, str(tampered / "model.safetensors"))
    _train(sim_dir, tmp_path / "tampered", *common, "--resume-from-checkpoint", str(tampered))
    moved = load_file(str(tmp_path / "tampered" / "model.safetensors"))
    assert max(float(np.abs(moved[k] - full[k]).max()) for k in full) > 1e-3


def test_bad_cli_input_is_one_clear_line(sim_dir: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train",
            "--train-file",
            str(tmp_path / "missing.csv"),
            "--questions-file",
            str(sim_dir / "questions.csv"),
            "--output-dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode != 0
    assert "missing.csv does not exist" in run.stderr.strip().splitlines()[-1]
    bad = tmp_path / "bad.csv"
    bad.write_text("row_id,timestamp,user_id\n1,2,3\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train",
            "--train-file",
            str(bad),
            "--questions-file",
            str(sim_dir / "questions.csv"),
            "--output-dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "bad.csv" in last and "Traceback" not in run.stderr


@pytest.mark.slow
def test_torchrun_two_processes(sim_dir: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "training.train",
            "--train-file",
            str(sim_dir / "train.csv"),
            "--questions-file",
            str(sim_dir / "questions.csv"),
            "--output-dir",
            str(tmp_path / "ddp"),
            "--max-steps",
            "3",
            *TINY,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "ddp" / "model.safetensors").exists()
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["params"] > 0


def test_evaluate_cli_on_torch_dir_and_matches_library(sim_dir: Path, tmp_path: Path) -> None:
    _train(
        sim_dir, tmp_path / "m", "--model", "saint_plus", "--max-steps", "5", "--validation", "none"
    )
    split = sim_dir / "split"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.evaluate",
            "--model-dir",
            str(tmp_path / "m"),
            "--history-file",
            str(split / "history.csv"),
            "--eval-file",
            str(split / "eval.csv"),
            "--questions-file",
            str(sim_dir / "questions.csv"),
            "--plot",
            str(tmp_path / "cal.png"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=200,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result) >= {"auc", "acc", "logloss", "n"}
    assert result["n"] > 100 and 0.0 <= result["auc"] <= 1.0
    assert (tmp_path / "cal.png").exists()


def test_evaluate_predicts_each_bundle_from_strictly_earlier_rows(
    sim_dir: Path, tmp_path: Path
) -> None:
    """Flipping every eval answer must not change any prediction of the bundle it belongs to,
    and must change later predictions (the answers are revealed after each bundle)."""
    from training.data import load_dataset
    from training.evaluate import TorchScorer, build_requests, score_all

    # logistic: its ability features read earlier answers directly, so revealed answers visibly matter
    _train(
        sim_dir,
        tmp_path / "m",
        "--model",
        "logistic",
        "--max-steps",
        "30",
        "--validation",
        "none",
        "--learning-rate",
        "0.05",
    )
    scorer = TorchScorer(tmp_path / "m")
    split = sim_dir / "split"
    history = load_dataset(split / "history.csv", sim_dir / "questions.csv")
    evaluation = load_dataset(split / "eval.csv", sim_dir / "questions.csv")
    built = build_requests(history, evaluation, scorer.vocab)
    base = score_all(scorer, built.requests)
    assert len(base) == sum(len(y) for y in built.labels)
    # First bundle of each learner sees only the history file: flip eval answers -> same first-bundle predictions.
    evaluation.correct[:] = np.where(
        evaluation.correct >= 0, 1 - evaluation.correct, evaluation.correct
    )
    flipped = score_all(scorer, build_requests(history, evaluation, scorer.vocab).requests)
    assert np.abs(base - flipped).max() > 1e-4  # later bundles do see revealed answers
    offset, seen = 0, set()
    for req, user in zip(built.requests, built.users, strict=True):
        k = len(req.candidates)
        if user not in seen:  # a learner's first eval bundle: nothing from the eval file is visible
            seen.add(user)
            np.testing.assert_allclose(
                base[offset : offset + k], flipped[offset : offset + k], atol=1e-6
            )
        offset += k


def test_compute_metrics_ignores_padding_and_context_labels() -> None:
    from types import SimpleNamespace

    from training.metrics import roc_auc
    from training.train import compute_metrics

    logits = np.array([[2.0, -1.0, 5.0, -100.0], [0.5, -3.0, -100.0, -100.0]])
    labels = np.array([[1.0, 0.0, -100.0, -100.0], [1.0, 0.0, -100.0, -100.0]])
    metrics = compute_metrics(SimpleNamespace(predictions=logits, label_ids=labels))
    assert metrics["n"] == 4  # padded / context-only positions are not scored
    expected = roc_auc(np.array([1, 0, 1, 0]), np.array([2.0, -1.0, 0.5, -3.0]))
    assert metrics["auc"] == pytest.approx(expected) == pytest.approx(1.0)
    # a padded logit that would ruin the AUC if it were counted:
    labels[0, 2] = 0.0
    assert compute_metrics(SimpleNamespace(predictions=logits, label_ids=labels))["auc"] < 1.0


# M, E, Q, O: an empty dir, the eval and questions files of the simulator fixture, an output dir
EVALUATE = ["--model-dir", "M", "--eval-file", "E", "--questions-file", "Q"]


@pytest.mark.parametrize(
    ("module", "argv", "fragment"),
    [
        (
            "training.evaluate",
            ["--model-dir", "/nope", "--eval-file", "E", "--questions-file", "Q"],
            "--model-dir: /nope does not exist",
        ),
        (
            "training.evaluate",
            ["--model-dir", "M", "--eval-file", "E"],
            "required: --questions-file",
        ),
        ("training.evaluate", [*EVALUATE, "--batch-size", "0"], "--batch-size must be positive"),
        ("training.evaluate", [*EVALUATE, "--threads", "0"], "--threads must be positive"),
        ("training.evaluate", EVALUATE, "not a model directory"),  # M exists, holds no model
        (
            "training.train",
            ["--train-file", "E", "--questions-file", "Q"],
            "required: --output-dir",
        ),
        (
            "training.train",
            ["--train-file", "E", "--questions-file", "Q", "--output-dir", "O", "--dropout", "1.5"],
            "--dropout must be in [0, 1)",
        ),
        (
            "training.distill",
            [
                "--output-dir",
                "O",
                "--train-file",
                "E",
                "--questions-file",
                "Q",
                "--batch-size",
                "0",
            ],
            "--batch-size must be positive",
        ),
        ("training.split_csv", ["--train-file", "/nope.csv", "--out", "O"], "/nope.csv"),
        ("training.data", ["--describe", "/nope.csv", "--questions", "Q"], "/nope.csv"),
        ("training.simulate", ["--learners", "-3", "--out", "O"], "--learners"),
    ],
)
def test_every_cli_reports_bad_input_in_one_line(
    sim_dir: Path, tmp_path: Path, module: str, argv: list[str], fragment: str
) -> None:
    names = {
        "M": str(tmp_path / "model"),
        "E": str(sim_dir / "split" / "eval.csv"),
        "Q": str(sim_dir / "questions.csv"),
        "O": str(tmp_path / "out"),
    }
    (tmp_path / "model").mkdir()
    run = subprocess.run(
        [sys.executable, "-m", module, *[names.get(a, a) for a in argv]],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    errors = [line for line in run.stderr.strip().splitlines() if not line[:4].isdigit()]
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith("error: "), run.stderr[-2000:]
    assert fragment in errors[0], errors[0]

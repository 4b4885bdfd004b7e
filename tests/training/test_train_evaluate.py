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
    # 100 questions answered ~25 times each: a tiny model learns their difficulty in a few epochs,
    # so the tests below can demand a validation AUC well above chance.
    write(simulate(60, seed=3, n_questions=100, mean_length=40), out)
    split_file(out / "train.csv", out / "split", 0.2)
    return out


def _argv(sim_dir: Path, out: Path, *extra: str, train_file: str = "train.csv") -> list[str]:
    return [
        "--train-file",
        str(sim_dir / train_file),
        "--questions-file",
        str(sim_dir / "questions.csv"),
        "--output-dir",
        str(out),
        *TINY,
        *extra,
    ]


def _train(sim_dir: Path, out: Path, *extra: str, train_file: str = "train.csv") -> dict:
    from training.train import main

    assert main(_argv(sim_dir, out, *extra, train_file=train_file)) == 0
    return json.loads((out / "metrics.json").read_text())


def _trainer_state(out: Path) -> dict:
    """trainer_state.json of the run's last checkpoint (it holds the whole log history)."""
    checkpoints = sorted(
        (out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])
    )
    return json.loads((checkpoints[-1] / "trainer_state.json").read_text())


def _validation_windows(sim_dir: Path, seed: int = 0):
    """The training split of `_train` (learner split, 10 %, seq 20): (train, valid) datasets."""
    from training.data import load_dataset
    from training.trainer import prepare_data

    inter = load_dataset(sim_dir / "train.csv", sim_dir / "questions.csv")
    data = prepare_data(inter, seq_len=20, validation="learner", valid_fraction=0.1, seed=seed)
    return data.train, data.valid


@pytest.fixture(scope="module")
def logistic_dir(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logistic model trained on the split's history file only (eval rows never seen)."""
    out = tmp_path_factory.mktemp("logistic") / "m"
    _train(
        sim_dir,
        out,
        "--model",
        "logistic",
        "--max-steps",
        "30",
        "--validation",
        "none",
        "--learning-rate",
        "0.05",
        train_file="split/history.csv",
    )
    return out


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
    assert metrics["model"] == "saint_plus" and metrics["params"] > 0
    # metrics.json describes the saved weights: the same validation windows scored again by the
    # model dir give the recorded AUC / log loss / count.
    from training.artifacts import load_model_dir
    from training.calibration import window_metrics

    _, valid = _validation_windows(sim_dir)
    model, *_ = load_model_dir(tmp_path / "m")
    again = window_metrics(model, valid)
    assert metrics["n"] == again["n"] == valid.n_scored() > 100
    assert metrics["auc"] == pytest.approx(again["auc"], abs=1e-6)
    assert metrics["logloss"] == pytest.approx(again["logloss"], abs=1e-5)
    # the catalogue facts: each question's bundle (questions.csv) and its answers in the training
    # windows (the validation learners' answers are not counted)
    import csv

    from models.feature_spec import load_spec

    train, _ = _validation_windows(sim_dir)
    _, vocab = load_spec(tmp_path / "m" / "feature_spec.json")
    assert vocab.train_answers is not None and vocab.bundles is not None
    answers: dict[int, int] = {}
    for h in train.histories:
        for q in h.question.tolist():
            answers[q] = answers.get(q, 0) + 1
    expected = [answers.get(i + 2, 0) for i in range(len(vocab.question_ids))]
    assert vocab.train_answers.tolist() == expected and 0 < sum(expected) < len(train) * 20
    with open(sim_dir / "questions.csv", newline="") as f:
        bundle_of = {int(r["question_id"]): int(r["bundle_id"]) for r in csv.DictReader(f)}
    assert vocab.bundles.tolist() == [bundle_of[q] for q in vocab.question_ids.tolist()]


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
def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(
    sim_dir: Path, tmp_path: Path
) -> None:
    """2 DDP ranks x batch 16 end on the weights of 1 process x batch 32 (same seed).

    Why it can match: the Trainer's seeded sampler yields the same permutation in both runs and
    accelerate gives rank r the r-th half of each global batch; the loss is sum / the step's
    labelled count gathered over ranks (KTForTraining), so the all-reduced gradient is the
    single-process one. What remains is float summation order (measured: 1.7e-6 max |weight
    diff|). Conditions: dropout 0 (ranks draw their own masks) and only full global batches
    (accelerate pads a short last batch by repeating samples), hence --max-steps 5 < 188 / 32.
    """
    steps, per_rank = 5, 16
    train, _ = _validation_windows(sim_dir)
    assert steps * 2 * per_rank <= len(train)  # no step reaches the padded last batch
    common = [
        "--model", "saint_plus", "--max-steps", str(steps), "--dropout", "0",
        "--learning-rate", "3e-3", "--warmup-steps", "0", "--eval-strategy", "steps",
        "--eval-steps", str(steps), "--save-strategy", "no", "--no-load-best-model-at-end",
        "--early-stopping-patience", "0",
        # logged every step, so the reported train loss is the mean over both ranks (Trainer's
        # unlogged remainder at the end is rank 0's alone)
        "--logging-steps", "1",
    ]  # fmt: skip
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
            *_argv(sim_dir, tmp_path / "ddp", *common, "--batch-size", str(per_rank)),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    single = _train(sim_dir, tmp_path / "single", *common, "--batch-size", str(2 * per_rank))
    # Negative control: one process at the per-rank batch (what a rank does without gradient
    # sync) must end measurably elsewhere, or the tolerance below would prove nothing.
    alone = _train(sim_dir, tmp_path / "alone", *common, "--batch-size", str(per_rank))

    def weights(name: str) -> dict[str, np.ndarray]:
        return load_file(str(tmp_path / name / "model.safetensors"))

    def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
        assert a.keys() == b.keys()
        return max(float(np.abs(a[k] - b[k]).max()) for k in a)

    tolerance = 2e-5
    assert max_diff(weights("ddp"), weights("single")) < tolerance
    assert max_diff(weights("alone"), weights("single")) > 50 * tolerance
    # the logged training loss is not scaled by the world size, and validation agrees
    assert ddp["train_loss"] == pytest.approx(single["train_loss"], rel=1e-5)
    assert ddp["n"] == single["n"]
    assert ddp["auc"] == pytest.approx(single["auc"], abs=1e-4)
    assert ddp["logloss"] == pytest.approx(single["logloss"], abs=1e-5)
    assert abs(alone["train_loss"] - single["train_loss"]) > 1e-4


def test_gradient_accumulation_matches_the_larger_batch(sim_dir: Path, tmp_path: Path) -> None:
    """2 accumulated batches of 16 == one batch of 32: the loss is divided by the labelled count
    of the whole step, not averaged per batch (windows hold different numbers of labels)."""
    common = [
        "--model", "saint_plus", "--max-steps", "4", "--dropout", "0", "--learning-rate", "3e-3",
        "--warmup-steps", "0", "--validation", "none", "--save-strategy", "no",
        "--logging-steps", "1",
    ]  # fmt: skip
    big = _train(sim_dir, tmp_path / "big", *common, "--batch-size", "32")
    accumulated = _train(
        sim_dir,
        tmp_path / "acc",
        *common,
        "--batch-size",
        "16",
        "--gradient-accumulation-steps",
        "2",
    )
    a = load_file(str(tmp_path / "big" / "model.safetensors"))
    b = load_file(str(tmp_path / "acc" / "model.safetensors"))
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 2e-5
    assert accumulated["train_loss"] == pytest.approx(big["train_loss"], rel=1e-5)


def test_early_stopping_stops_a_run_that_cannot_improve(sim_dir: Path, tmp_path: Path) -> None:
    """Learning rate 0: the weights, hence the validation AUC, never change, so patience 2
    ends an 8-epoch run after exactly 3 evaluations (the first sets the best)."""
    from training.train import parse
    from training.trainer import run_training

    out = tmp_path / "m"
    run = parse(_argv(sim_dir, out, "--epochs", "8", "--early-stopping-patience", "2"))
    run.optim.learning_rate = 0.0  # the flag rejects 0; run_training does not need it positive
    run_training(run)
    state = _trainer_state(out)
    evals = [h for h in state["log_history"] if "eval_auc" in h]
    assert [h["epoch"] for h in evals] == [1.0, 2.0, 3.0]
    assert len({h["eval_auc"] for h in evals}) == 1  # nothing to improve on
    assert state["epoch"] == 3.0 < 8
    assert state["global_step"] == 3 * state["max_steps"] // 8 < state["max_steps"]


def test_load_best_model_at_end_keeps_the_best_validation_epoch(
    sim_dir: Path, tmp_path: Path
) -> None:
    """A learning rate ramping up linearly to 0.3 (Adam) over 10 epochs: validation AUC peaks
    in the first epochs, then the ever larger steps wreck the model (measured here: best 0.64 at
    epoch 3, last 0.51; 0.66 vs 0.44 with seed 1). The saved model must be the best epoch's."""
    out = tmp_path / "m"
    metrics = _train(
        sim_dir,
        out,
        "--model", "saint_plus", "--epochs", "10", "--learning-rate", "0.3",
        "--lr-scheduler", "constant_with_warmup", "--warmup-steps", "0.99", "--dropout", "0",
        "--early-stopping-patience", "0",
    )  # fmt: skip
    state = _trainer_state(out)
    evals = {h["step"]: h["eval_auc"] for h in state["log_history"] if "eval_auc" in h}
    assert len(evals) == 10
    best_step = max(evals, key=evals.__getitem__)
    last_step = max(evals)
    # the construction holds: the last epoch is clearly worse than the best
    assert evals[last_step] < evals[best_step] - 0.05, evals
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    # what was saved and reported is the best epoch's model
    assert metrics["auc"] == pytest.approx(evals[best_step], abs=1e-9)
    saved = load_file(str(out / "model.safetensors"))
    best = load_file(str(Path(state["best_model_checkpoint"]) / "model.safetensors"))
    last = load_file(str(out / "checkpoints" / f"checkpoint-{last_step}" / "model.safetensors"))
    assert {f"model.{k}" for k in saved} == set(best) == set(last)
    for key, value in saved.items():
        np.testing.assert_array_equal(value, best[f"model.{key}"], err_msg=key)
    assert max(float(np.abs(v - last[f"model.{k}"]).max()) for k, v in saved.items()) > 1e-3


def test_report_to_tensorboard_writes_the_logged_scalars(
    sim_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from training import trainer as trainer_mod
    from training.train import main as train_main

    # the run's own directory (out/runs), whatever the environment running the tests says;
    # setenv first so that monkeypatch restores the variable training_arguments() overwrites
    monkeypatch.setattr(trainer_mod, "_USER_TENSORBOARD_DIR", None)
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "unused")
    out = tmp_path / "m"
    argv = _argv(
        sim_dir, out, "--max-steps", "4", "--logging-steps", "1", "--eval-strategy", "steps",
        "--eval-steps", "2", "--save-strategy", "steps", "--save-steps", "4",
        "--no-load-best-model-at-end",
    )  # fmt: skip
    argv[argv.index("--report-to") + 1] = "tensorboard"
    assert train_main(argv) == 0
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in out.iterdir())
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    scalars = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    assert {"train/loss", "train/learning_rate", "eval/auc", "eval/loss"} <= set(scalars)
    # the values are the run's own: its log history (trainer_state.json), step for step
    history = _trainer_state(out)["log_history"]
    losses = {h["step"]: h["loss"] for h in history if "loss" in h}
    aucs = {h["step"]: h["eval_auc"] for h in history if "eval_auc" in h}
    assert sorted(scalars["train/loss"]) == sorted(losses) == [1, 2, 3, 4]
    assert sorted(scalars["eval/auc"]) == sorted(aucs) == [2, 4]
    for step, value in losses.items():
        assert scalars["train/loss"][step] == pytest.approx(value, rel=1e-5)
    for step, value in aucs.items():
        assert scalars["eval/auc"][step] == pytest.approx(value, rel=1e-5)


def test_evaluate_cli_on_torch_dir_and_matches_library(
    sim_dir: Path, logistic_dir: Path, tmp_path: Path
) -> None:
    from training.binary_metrics import binary_metrics
    from training.data import load_dataset
    from training.evaluate import TorchScorer, build_requests, score_all

    split = sim_dir / "split"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.evaluate",
            "--model-dir",
            str(logistic_dir),
            "--history-file",
            str(split / "history.csv"),
            "--eval-file",
            str(split / "eval.csv"),
            "--questions-file",
            str(sim_dir / "questions.csv"),
            "--plot",
            str(tmp_path / "cal.png"),
            "--predictions-out",
            str(tmp_path / "predictions.csv"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=200,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result) >= {"auc", "acc", "logloss", "n"}
    assert (tmp_path / "cal.png").exists()
    # --predictions-out: one row per predicted answer, labels and ids those of the eval file
    import csv

    with open(tmp_path / "predictions.csv", newline="") as f:
        predicted = list(csv.DictReader(f))
    with open(split / "eval.csv", newline="") as f:
        source = {int(r["row_id"]): r for r in csv.DictReader(f) if r["content_type_id"] == "0"}
    assert len(predicted) == result["n"] == len(source)
    for r in predicted:
        row = source[int(r["row_id"])]
        assert (r["user_id"], r["question_id"]) == (row["user_id"], row["content_id"])
        assert r["label"] == row["answered_correctly"]
    p = np.array([float(r["p"]) for r in predicted])
    y = np.array([float(r["label"]) for r in predicted])
    assert binary_metrics(y, p)["auc"] == pytest.approx(result["auc"], abs=1e-5)
    # the default --bootstrap: 95 % intervals over resampled learners, reproducible from the file
    from training.bootstrap import metric_intervals

    learners = np.array([int(r["user_id"]) for r in predicted])
    assert result["bootstrap_resamples"] == 200
    intervals = metric_intervals(y, p, learners, n_resamples=200)
    for name in ("auc", "logloss", "ece"):
        assert result[f"{name}_ci95"] == pytest.approx(intervals[f"{name}_ci95"], abs=1e-4)
    for name in ("auc", "logloss"):
        lo, hi = result[f"{name}_ci95"]
        assert lo < result[name] < hi
    # The same protocol by hand through the library: identical numbers.
    scorer = TorchScorer(logistic_dir)
    history = load_dataset(split / "history.csv", sim_dir / "questions.csv")
    evaluation = load_dataset(split / "eval.csv", sim_dir / "questions.csv")
    built = build_requests(history, evaluation, scorer.vocab)
    expected = binary_metrics(
        np.concatenate(built.labels).astype(np.float64), score_all(scorer, built.requests)
    )
    assert result["n"] == expected["n"] == int((evaluation.correct >= 0).sum()) > 300
    assert result["auc"] == pytest.approx(expected["auc"], abs=1e-9)
    assert result["logloss"] == pytest.approx(expected["logloss"], abs=1e-9)
    # A model trained on the history rows predicts the unseen continuation far better than
    # chance (measured 0.686; an untrained or input-blind model scores 0.5, shuffled labels ~0.5).
    assert result["auc"] > 0.62, result
    assert result["logloss"] < 0.66, result  # measured 0.625; the history base rate gives 0.682


def test_evaluate_predicts_each_bundle_from_strictly_earlier_rows(
    sim_dir: Path, logistic_dir: Path
) -> None:
    """Flipping every eval answer must not change any prediction of the bundle it belongs to,
    and must change later predictions (the answers are revealed after each bundle)."""
    from training.data import load_dataset
    from training.evaluate import TorchScorer, build_requests, score_all

    # logistic: its ability features read earlier answers directly, so revealed answers visibly matter
    scorer = TorchScorer(logistic_dir)
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

    from training.binary_metrics import roc_auc
    from training.trainer import compute_metrics

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
            ["--eval-file", "E", "--questions-file", "Q"],
            "required: --model-dir",
        ),
        (
            "training.evaluate",
            ["--sanity", "random-labels", "--train-file", "E", "--epochs", "0"],
            "--epochs must be > 0",
        ),
        (
            "training.train",
            ["--train-file", "E", "--output-dir", "O"],
            "needs a questions file",
        ),
        ("training.evaluate", [*EVALUATE, "--batch-size", "0"], "--batch-size must be positive"),
        ("training.evaluate", [*EVALUATE, "--threads", "0"], "--threads must be positive"),
        ("training.evaluate", [*EVALUATE, "--bootstrap", "-1"], "--bootstrap must be 0 (none)"),
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


def test_lecture_statistics_only_for_logs_with_lectures(sim_dir: Path) -> None:
    """A log with lecture rows gets the lecture columns; the same log without them trains exactly
    the model it trained before lectures were an input (no dead columns)."""
    import dataclasses

    from models.feature_spec import N_STATS
    from training.data import load_dataset
    from training.trainer import prepare_data

    inter = load_dataset(sim_dir / "train.csv", sim_dir / "questions.csv")
    assert inter.is_lecture.any()
    with_lectures = prepare_data(inter, seq_len=20, validation="none", valid_fraction=0.0, seed=0)
    assert with_lectures.spec.lecture_stats and with_lectures.spec.n_stats > N_STATS
    answers_only = inter.take_ranges(inter.user_ids, inter.offsets[:-1], inter.offsets[1:])
    answers_only = dataclasses.replace(answers_only, is_lecture=np.zeros(inter.n_rows, bool))
    without = prepare_data(answers_only, seq_len=20, validation="none", valid_fraction=0.0, seed=0)
    assert not without.spec.lecture_stats and without.spec.n_stats == N_STATS
    assert without.train[0]["stats"].shape[-1] == N_STATS
    off = prepare_data(
        inter, seq_len=20, validation="none", valid_fraction=0.0, seed=0, lecture_stats=False
    )
    assert off.spec.n_stats == N_STATS

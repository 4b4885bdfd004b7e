"""Platt calibration (training.calibration) and the calibration metrics (ECE, Brier)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.config import ModelConfig
from training.binary_metrics import binary_metrics, brier, expected_calibration_error
from training.calibration import Platt, fit_platt


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def overconfident(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits 3x too large and shifted: the truth is sigmoid(logit / 3 + 0.7)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < sigmoid(0.5 * z + 0.7)).astype(np.float64)
    return 3.0 * z, y


def test_fit_recovers_the_generating_scale_and_bias() -> None:
    logits, y = overconfident()
    platt = fit_platt(logits, y)
    assert platt.scale == pytest.approx(1 / 6, rel=0.05)
    assert platt.bias == pytest.approx(0.7, abs=0.05)


def test_calibration_fixes_ece_and_log_loss_and_keeps_auc() -> None:
    logits, y = overconfident()
    before = binary_metrics(y, sigmoid(logits))
    after = binary_metrics(y, sigmoid(fit_platt(logits, y).apply(logits)))
    assert before["ece"] > 0.2 and after["ece"] < 0.02
    assert after["logloss"] < before["logloss"] - 0.5
    assert after["brier"] < before["brier"]
    assert after["auc"] == before["auc"]  # a monotone map never changes the ranking


def test_fit_on_one_split_helps_another() -> None:
    """Fitted on validation learners, it must carry over to unseen ones (no fitting on eval rows)."""
    valid_logits, valid_y = overconfident(seed=1)
    eval_logits, eval_y = overconfident(seed=2)
    platt = fit_platt(valid_logits, valid_y)
    assert expected_calibration_error(eval_y, sigmoid(platt.apply(eval_logits))) < 0.02


def test_already_calibrated_logits_stay_put() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(0.0, 1.5, 50_000)
    y = (rng.random(len(z)) < sigmoid(z)).astype(np.float64)
    platt = fit_platt(z, y)
    assert platt.scale == pytest.approx(1.0, abs=0.05)
    assert platt.bias == pytest.approx(0.0, abs=0.05)


def test_separable_data_gives_a_finite_positive_scale() -> None:
    z = np.linspace(-3, 3, 100)
    y = (z > 0).astype(np.float64)
    platt = fit_platt(z, y)
    assert np.isfinite(platt.scale) and platt.scale > 0 and np.isfinite(platt.bias)


def test_anti_correlated_logits_never_invert_the_ranking() -> None:
    logits, y = overconfident()
    platt = fit_platt(-logits, y)
    assert platt.scale > 0


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (np.zeros(0), np.zeros(0), "at least one"),
        (np.zeros(3), np.ones(3), "both right and wrong"),
        (np.array([0.0, np.inf]), np.array([0.0, 1.0]), "finite"),
        (np.zeros(3), np.zeros(2), "equally many"),
    ],
)
def test_bad_input_is_a_clear_error(logits: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_platt(logits, labels)


def test_ece_and_brier_known_values() -> None:
    y = np.array([1.0, 0.0, 1.0, 0.0])
    # always 0.5 on a 50% base rate: calibrated, Brier 0.25
    assert expected_calibration_error(y, np.full(4, 0.5)) == pytest.approx(0.0)
    assert brier(y, np.full(4, 0.5)) == pytest.approx(0.25)
    # always 0.9 where half are right: ECE 0.4
    assert expected_calibration_error(y, np.full(4, 0.9)) == pytest.approx(0.4)
    # perfect and confident
    assert expected_calibration_error(y, y) == pytest.approx(0.0)
    assert brier(y, y) == 0.0


def test_model_config_carries_the_calibration() -> None:
    cfg = ModelConfig(calibration_scale=0.5, calibration_bias=-0.25)
    again = ModelConfig.from_dict(cfg.to_dict())
    assert (again.calibration_scale, again.calibration_bias) == (0.5, -0.25)
    assert Platt(again.calibration_scale, again.calibration_bias).apply(np.array([2.0]))[0] == 0.75
    for bad in ({"calibration_scale": 0.0}, {"calibration_scale": -1.0}, {"calibration_bias": "x"}):
        with pytest.raises(ValueError, match="calibration"):
            ModelConfig(**bad)


# -- end to end: train -> metrics.json -> exported graph -> the service's Predictor ---------------
@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.simulate import simulate, write

    out = tmp_path_factory.mktemp("sim_cal")
    write(simulate(60, seed=3, n_questions=100, mean_length=40), out)
    return out


TINY = ["--d-model", "16", "--layers", "1", "--heads", "2", "--seq-len", "20"]
TINY += ["--report-to", "none", "--no-progress", "--max-steps", "8", "--eval-strategy", "steps"]
TINY += ["--eval-steps", "4", "--save-strategy", "steps", "--save-steps", "4"]


def _train(sim_dir: Path, out: Path, *extra: str) -> dict:
    from training.train import main

    argv = ["--train-file", str(sim_dir / "train.csv"), "--questions-file"]
    argv += [str(sim_dir / "questions.csv"), "--output-dir", str(out), *TINY, *extra]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def _valid_windows(sim_dir: Path):
    """The validation learners of `_train`'s split (learner split, 10 %, seq 20, seed 0)."""
    from training.data import load_dataset
    from training.trainer import prepare_data

    inter = load_dataset(sim_dir / "train.csv", sim_dir / "questions.csv")
    data = prepare_data(inter, seq_len=20, validation="learner", valid_fraction=0.1, seed=0)
    return data.train, data.valid


def test_training_fits_the_calibration_on_validation_learners_and_serves_it(
    sim_dir: Path, tmp_path: Path
) -> None:
    from service.predictor import Predictor
    from training.artifacts import load_model_dir
    from training.calibration import served_logits_and_labels
    from training.evaluate import TorchScorer
    from training.export import export_artifact
    from training.manifest import read_manifest
    from training.parity import parity_batches

    metrics = _train(sim_dir, tmp_path / "m", "--model", "saint_plus")
    cal = metrics["calibration"]
    train, valid = _valid_windows(sim_dir)
    # fitted on exactly the validation learners' labelled positions (not training, not eval rows)
    assert cal["fitted_on"] == "validation learners"
    assert cal["n"] == valid.n_scored() == metrics["n"] and cal["n"] != train.n_scored()
    assert cal["valid_logloss"] <= cal["valid_logloss_raw"] + 1e-9
    # the reliability table (the model card's plot) covers the same positions
    assert sum(b["n"] for b in cal["reliability"]) == cal["n"]
    assert all(
        0.0 <= b["p_mean"] <= 1.0 and 0.0 <= b["observed"] <= 1.0 for b in cal["reliability"]
    )
    model, config, spec, vocab = load_model_dir(tmp_path / "m")
    assert (config.calibration_scale, config.calibration_bias) == (cal["scale"], cal["bias"])
    assert (cal["scale"], cal["bias"]) != (1.0, 0.0)
    assert cal["protocol"].startswith("served")
    # the recorded fit is the optimum for those positions, predicted as served: refitting gives
    # the same numbers
    logits, labels = served_logits_and_labels(model, valid)
    refit = fit_platt(logits, labels)
    assert refit.scale == pytest.approx(cal["scale"], rel=1e-6)
    assert refit.bias == pytest.approx(cal["bias"], abs=1e-6)

    # the exported graph serves calibrated probabilities: ORT == sigmoid(scale * raw + bias)
    art = export_artifact(tmp_path / "m", tmp_path / "a")
    assert read_manifest(art)["calibration"] == {"scale": cal["scale"], "bias": cal["bias"]}
    predictor = Predictor.load(art)
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    for _, batch in parity_batches(spec, vocab, seed=0):
        served = session.run(["logits"], batch)[0]
        with torch.no_grad():
            raw = model({k: torch.from_numpy(v) for k, v in batch.items()}).numpy()
        np.testing.assert_allclose(served, cal["scale"] * raw + cal["bias"], atol=1e-4)
        assert not np.allclose(served, raw, atol=1e-3)  # the calibration is really in the graph
    # the torch scorer (training.evaluate) applies the same calibration as the graph
    assert predictor.version and TorchScorer(tmp_path / "m").model.cfg == config


def test_calibration_none_leaves_the_logits_alone(sim_dir: Path, tmp_path: Path) -> None:
    from training.artifacts import load_model_dir

    metrics = _train(sim_dir, tmp_path / "m", "--model", "logistic", "--calibration", "none")
    assert "calibration" not in metrics
    _, config, _, _ = load_model_dir(tmp_path / "m")
    assert (config.calibration_scale, config.calibration_bias) == (1.0, 0.0)


def test_calibration_sees_the_validation_learners_exactly_as_the_service_would(
    sim_dir: Path, tmp_path: Path
) -> None:
    """served_logits_and_labels == training.evaluate's scorer on the same learners from an empty
    history (uncalibrated): same items, same order, same logits; and the cap keeps whole learners."""
    from models.numeric import sigmoid
    from training.artifacts import load_model_dir
    from training.calibration import served_logits_and_labels
    from training.data import load_dataset
    from training.evaluate import TorchScorer, build_requests, score_all
    from training.splits import split_by_learner

    _train(sim_dir, tmp_path / "m", "--model", "saint_plus", "--calibration", "none")
    model, _, spec, vocab = load_model_dir(tmp_path / "m")
    _, valid = _valid_windows(sim_dir)
    logits, labels = served_logits_and_labels(model, valid)
    assert len(labels) == valid.n_scored()

    inter = load_dataset(sim_dir / "train.csv", sim_dir / "questions.csv")
    _, valid_learners = split_by_learner(inter, 0.1, 0)
    built = build_requests(None, valid_learners, vocab)
    probs = score_all(TorchScorer(tmp_path / "m"), built.requests)
    np.testing.assert_allclose(sigmoid(logits), probs, atol=1e-6)
    np.testing.assert_array_equal(labels, np.concatenate(built.labels))

    # the cap stops after the learner that reaches it: here the whole first learner, no more
    few, few_labels = served_logits_and_labels(model, valid, max_bundles=1)
    assert len(few_labels) == len(valid.histories[0]) < len(labels)
    np.testing.assert_allclose(few, logits[: len(few)], atol=1e-6)

"""The random-label leak probe: passes on the real encoding, fails loudly on a deliberate leak."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import models.features as features
from training import evaluate
from training.data import load_dataset
from training.sanity import randomize_labels
from training.simulate import simulate, write


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sanity") / "sim"
    write(simulate(300, seed=1, n_questions=200, mean_length=60.0), out)
    return out


def probe_argv(sim: Path, out: Path) -> list[str]:
    return [
        "--sanity", "random-labels",
        "--train-file", str(sim / "train.csv"),
        "--questions-file", str(sim / "questions.csv"),
        "--model", "saint_plus", "--d-model", "32", "--layers", "1", "--heads", "2",
        "--epochs", "3", "--valid-fraction", "0.3", "--report-to", "none", "--no-progress",
        "--output-dir", str(out),
    ]  # fmt: skip


def test_random_labels_are_shared_within_bundles(sim: Path) -> None:
    inter = load_dataset(sim / "train.csv", sim / "questions.csv")
    rand = randomize_labels(inter, seed=0)
    q = ~inter.is_lecture
    assert 0.4 < rand.correct[q].mean() < 0.6
    np.testing.assert_array_equal(rand.correct[inter.is_lecture], -1)
    for i in range(inter.n_learners):
        rows = inter.rows(i)
        key = inter.timestamp[rows] * 1_000_003 + inter.bundle[rows]
        for k in np.unique(key[q[rows]]):
            labels = rand.correct[rows][(key == k) & q[rows]]
            assert len(set(labels.tolist())) == 1


def test_probe_passes_on_the_real_encoding(
    sim: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate.main(probe_argv(sim, tmp_path / "m")) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["passed"] and result["auc"] <= 0.52 and result["n"] > 3000


def test_probe_fails_loudly_on_a_deliberate_leak(
    sim: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Statistics that count each item's own bundle (cutoff one past the item) leak its answer."""
    honest = features.learner_stats

    def leaky(question, part, tags, position, correct, seconds, n_answered, spec):  # type: ignore[no-untyped-def]
        own_bundle_end = np.searchsorted(position, position, side="right")
        return honest(question, part, tags, own_bundle_end, correct, seconds, n_answered, spec)

    monkeypatch.setattr(features, "learner_stats", leaky)
    assert evaluate.main(probe_argv(sim, tmp_path / "m")) == 1
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert not result["passed"] and result["auc"] > 0.6
    assert "LEAK SUSPECTED" in captured.err

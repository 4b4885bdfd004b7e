"""Cold start for new questions: a question no learner answered in training is predicted from its
part and tags (the content-aware item representation), not as the generic unknown token."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from models.features import CandidateRequest, History, encode_candidate_batch
from models.vocab import UNKNOWN_QUESTION
from training.artifacts import load_model_dir
from training.train import main as train_main

N_TAGS = 40
PER_TAG = 6  # questions per tag; question k * PER_TAG of each tag is never answered in training


def _write_log(out: Path, seed: int = 0) -> np.ndarray:
    """A Riiid-format log whose question difficulty is its tag's; returns the tag difficulties."""
    rng = np.random.default_rng(seed)
    tag_difficulty = rng.normal(0.0, 1.5, N_TAGS)
    n_q = N_TAGS * PER_TAG
    tag_of = np.arange(n_q) // PER_TAG
    with open(out / "questions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question_id", "bundle_id", "correct_answer", "part", "tags"])
        for q in range(n_q):
            w.writerow([q, q, 0, 1 + tag_of[q] % 3, tag_of[q]])
    trained = np.flatnonzero(np.arange(n_q) % PER_TAG != 0)
    with open(out / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row_id", "timestamp", "user_id", "content_id", "content_type_id",
                    "task_container_id", "answered_correctly"])  # fmt: skip
        row = 0
        for user in range(250):
            ability = rng.normal(0.0, 1.0)
            for k, q in enumerate(rng.choice(trained, size=40, replace=False)):
                p = 1.0 / (1.0 + np.exp(-(ability - tag_difficulty[tag_of[q]])))
                w.writerow([row, k * 60_000, user, q, 0, k, int(rng.random() < p)])
                row += 1
    return tag_difficulty


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    out = tmp_path_factory.mktemp("coldstart")
    return out, _write_log(out)


@pytest.mark.parametrize(("model", "epochs"), [("logistic", "15"), ("saint_plus", "6")])
def test_unseen_questions_are_predicted_from_their_tags(
    log_dir: tuple[Path, np.ndarray], tmp_path: Path, model: str, epochs: str
) -> None:
    data, tag_difficulty = log_dir
    argv = ["--train-file", str(data / "train.csv"), "--questions-file", str(data / "questions.csv"),
            "--output-dir", str(tmp_path / model), "--model", model, "--epochs", epochs,
            "--d-model", "16", "--layers", "1", "--heads", "2", "--seq-len", "20",
            "--report-to", "none", "--no-progress"]  # fmt: skip
    assert train_main(argv) == 0
    torch_model, _, spec, vocab = load_model_dir(tmp_path / model)
    import torch

    unseen_raw = np.arange(N_TAGS) * PER_TAG  # one never-answered question per tag
    candidates = np.concatenate([vocab.to_index(unseen_raw), [UNKNOWN_QUESTION]])
    batch, _ = encode_candidate_batch(
        [CandidateRequest(History.empty(), candidates, None)], spec, vocab.item_table()
    )
    with torch.no_grad():
        logits = torch_model({k: torch.from_numpy(v) for k, v in batch.items()})[0].numpy()
    unseen, unknown = logits[:-1], logits[-1]
    # each unseen question gets its own prediction, not the unknown token's single value ...
    assert np.abs(unseen - unknown).mean() > 0.1 and unseen.std() > 0.1
    # ... and it follows the difficulty of its tag, which only the tag's other questions revealed
    corr = np.corrcoef(unseen, -tag_difficulty)[0, 1]
    assert corr > 0.7, corr

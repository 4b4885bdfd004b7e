"""The random-label leak probe (`python -m training.evaluate --sanity random-labels ...`).

Every answer of the training log is replaced by a random bit shared within its bundle, then the
model is trained with the given `training.train` flags and scored on held-out learners. Nothing a
prediction is allowed to see (earlier bundles' random answers, item ids, times) carries information
about its own random answer, so any AUC clearly above 0.5 means the model reads the answer of its own
bundle: a leak. The probe fails when the held-out AUC exceeds `RANDOM_LABEL_MAX_AUC`.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from training.arguments import RANDOM_LABEL_MAX_AUC
from training.data import Interactions, load_dataset
from training.train import build_parser as build_train_parser
from training.train import parse as parse_train_flags
from training.trainer import data_fingerprint, prepare_data, run_training

logger = logging.getLogger(__name__)


def randomize_labels(inter: Interactions, seed: int) -> Interactions:
    """A copy whose answers are random bits, one per bundle (same learner, timestamp, container):
    items answered together share their label, so a within-bundle leak is rewarded by the data."""
    n = inter.n_rows
    learner = np.repeat(np.arange(inter.n_learners), np.diff(inter.offsets))  # (N,)
    new_group = np.ones(n, dtype=bool)
    if n:
        new_group[1:] = (
            (learner[1:] != learner[:-1])
            | (inter.timestamp[1:] != inter.timestamp[:-1])
            | (inter.bundle[1:] != inter.bundle[:-1])
        )
    group = np.cumsum(new_group) - 1
    bits = np.random.default_rng(seed).integers(0, 2, int(group[-1]) + 1 if n else 0)
    correct = np.where(inter.is_lecture, inter.correct, bits[group].astype(np.int8))
    return replace(inter, correct=correct.astype(np.int8))


def random_label_probe(train_argv: list[str]) -> dict[str, Any]:
    """Train on random labels with `train_argv` (training.train flags; --output-dir optional) and
    return {"auc", "n", "max_auc", "passed", ...} measured on the validation learners."""
    if "--output-dir" not in train_argv:
        train_argv = [*train_argv, "--output-dir", tempfile.mkdtemp(prefix="kt-sanity-")]
    run = parse_train_flags(train_argv)
    if run.data.validation != "learner":
        build_train_parser().error(
            "--sanity random-labels scores held-out learners: use --validation learner"
        )
    run = run.with_output(run.optim.output_dir, calibration="none")  # cannot change AUC: skip it
    assert run.data.train_file is not None
    inter = load_dataset(
        Path(run.data.train_file), run.log.questions_path(), **run.log.load_options()
    )
    data = prepare_data(
        randomize_labels(inter, run.optim.seed),
        seq_len=run.arch.seq_len,
        validation="learner",
        valid_fraction=run.data.valid_fraction,
        seed=run.optim.seed,
        fingerprint=data_fingerprint(Path(run.data.train_file)) + ":random-labels",
        augment=run.data.window_augmentation == "shift",
        lecture_stats=run.arch.lecture_stats,
    )
    metrics = run_training(run, data=data)
    auc = float(metrics.get("auc", math.nan))
    result = {
        "sanity": "random-labels",
        "model": metrics["model"],
        "auc": auc,
        "n": int(metrics.get("n", 0)),
        "max_auc": RANDOM_LABEL_MAX_AUC,
        "passed": bool(auc <= RANDOM_LABEL_MAX_AUC),
        "output_dir": run.optim.output_dir,
    }
    logger.info("random-label probe: held-out AUC %.4f (limit %.2f)", auc, RANDOM_LABEL_MAX_AUC)
    return result

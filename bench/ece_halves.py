"""How much of a calibration miss lies in the sample: ECE on random halves of the learners.

Reads `training.evaluate --predictions-out F` (row_id, user_id, question_id, p, label) and the
Riiid-format history those predictions followed (the split's `history.csv`). Prints:
- the correlation of the residual y - p with each learner's accuracy over their last 100 answers
  before the split, with their lifetime accuracy, with lifetime minus last-100, and with the log of
  the answers before each row;
- per random half of the learners (`--seeds` splits, both directions): the raw ECE, and the ECE left
  after a logistic recalibration fitted on the *other* half of these very rows, on the logit alone
  (Platt) and on the logit plus log lifetime answers and lifetime accuracy. That fit sees eval rows:
  it is an upper bound on what such features could do, not a method.

    python -m bench.ece_halves --predictions F --history bench/out/quality/riiid/split/history.csv
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from models.numeric import sigmoid
from training.binary_metrics import binary_metrics

RECENT = 100


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "user": np.array([int(r["user_id"]) for r in rows]),
        "p": np.array([float(r["p"]) for r in rows]),
        "label": np.array([float(r["label"]) for r in rows]),
    }


def history_stats(path: Path) -> dict[int, tuple[int, float, float]]:
    """Per learner: (answers, lifetime accuracy, accuracy of the last RECENT answers)."""
    answers: dict[int, list[int]] = defaultdict(list)
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            if r["content_type_id"] == "0":
                answers[int(r["user_id"])].append(int(r["answered_correctly"]))
    return {u: (len(a), float(np.mean(a)), float(np.mean(a[-RECENT:]))) for u, a in answers.items()}


def fit_logistic(x: np.ndarray, y: np.ndarray, steps: int = 3000, lr: float = 0.5) -> np.ndarray:
    """Weights of a logistic regression by gradient descent, starting from the identity on the logit
    (column 1)."""
    w = np.zeros(x.shape[1])
    w[1] = 1.0
    for _ in range(steps):
        w -= lr * x.T @ (sigmoid(x @ w) - y) / len(y)
    return w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ece_halves", description=__doc__)
    parser.add_argument("--predictions", required=True, type=Path)
    parser.add_argument("--history", required=True, type=Path)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    pred = read_predictions(args.predictions)
    stats = history_stats(args.history)
    base = float(pred["label"].mean())
    n_hist = np.array([stats.get(u, (0, base, base))[0] for u in pred["user"]], np.float64)
    lifetime = np.array([stats.get(u, (0, base, base))[1] for u in pred["user"]])
    recent = np.array([stats.get(u, (0, base, base))[2] for u in pred["user"]])
    seen: dict[int, int] = defaultdict(int)
    n_before = np.empty(len(n_hist))
    for i, u in enumerate(pred["user"].tolist()):  # + the learner's earlier eval rows
        n_before[i] = n_hist[i] + seen[u]
        seen[u] += 1
    resid = pred["label"] - pred["p"]
    for name, x in (
        ("accuracy, last 100 before the split", recent),
        ("lifetime accuracy", lifetime),
        ("lifetime minus last-100 accuracy", lifetime - recent),
        ("log answers before the row", np.log1p(n_before)),
    ):
        print(f"residual vs {name}: r = {np.corrcoef(x, resid)[0, 1]:.3f}")
    p = np.clip(pred["p"], 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))
    ones = np.ones(len(p))
    plain = np.column_stack([ones, logit])
    extra = np.column_stack([ones, logit, np.log1p(n_before) / 8.0, lifetime])
    users = np.unique(pred["user"])
    for seed in range(args.seeds):
        order = np.random.default_rng(seed).permutation(users)
        half = np.isin(pred["user"], order[::2])
        for fit_rows, test_rows, name in ((half, ~half, "A->B"), (~half, half, "B->A")):
            y = pred["label"]
            out = [binary_metrics(y[test_rows], p[test_rows])["ece"]]
            for x in (plain, extra):
                w = fit_logistic(x[fit_rows], y[fit_rows])
                out.append(binary_metrics(y[test_rows], sigmoid(x[test_rows] @ w))["ece"])
            print(
                f"seed {seed} {name}: ECE raw {out[0]:.4f}, Platt fitted on the other half "
                f"{out[1]:.4f}, + lifetime answers and accuracy {out[2]:.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

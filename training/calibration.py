"""Post-hoc calibration: Platt scaling of a model's logits, fitted on validation learners only.

p = sigmoid(scale * logit + bias). The logits it is fitted on are the validation learners' answers
predicted *as served* (`served_logits_and_labels`: bundle by bundle, each from everything before it
in a trailing window, `models.features.bundle_requests`), not the training windows, whose items see
between half a window and a whole one of context: on Statics 2011 the windows' fit moved the test
ECE from 0.0143 (uncalibrated) to 0.0246, the served-protocol fit to 0.0129 (docs/benchmarks.md).
Two parameters, fitted by Newton's method on the log loss of the validation predictions (a tiny ridge on (scale - 1, bias) keeps it defined on separable or tiny
sets). Temperature scaling is the special case bias = 0; the bias also corrects a base-rate shift
between training windows and held-out learners. The fitted pair is stored in the model config
(`calibration_scale`, `calibration_bias`) and folded into the exported ONNX graph, so the service
serves calibrated probabilities without knowing about it. It never changes the AUC (monotone map,
scale > 0 enforced).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from models.numeric import sigmoid
from training.binary_metrics import binary_metrics, calibration_bins

MIN_SCALE = 1e-3  # a non-positive scale would invert (or erase) the model's ranking


@dataclass(frozen=True)
class Platt:
    scale: float = 1.0
    bias: float = 0.0

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(logits, dtype=np.float64) + self.bias


def fit_platt(
    logits: np.ndarray, labels: np.ndarray, ridge: float = 1e-4, max_iter: int = 100
) -> Platt:
    """Scale and bias that minimise mean log loss of sigmoid(scale * logit + bias) on (logits,
    labels), plus `ridge` * ((scale - 1)^2 + bias^2). Raises on empty input or a single class."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.shape != y.shape or z.size == 0:
        raise ValueError("calibration needs equally many logits and labels (at least one)")
    if not np.isfinite(z).all():
        raise ValueError("calibration logits must be finite")
    if y.min() == y.max():
        raise ValueError("calibration needs both right and wrong answers in the validation set")
    theta = np.array([1.0, 0.0])  # (scale, bias)
    x = np.stack([z, np.ones_like(z)], axis=1)  # (N, 2)
    n = float(len(z))

    def loss(t: np.ndarray) -> float:
        s = x @ t
        # log(1 + e^s) - y s, overflow-safe
        return float(np.mean(np.logaddexp(0.0, s) - y * s) + ridge * ((t[0] - 1) ** 2 + t[1] ** 2))

    current = loss(theta)
    for _ in range(max_iter):
        p = sigmoid(x @ theta)
        grad = x.T @ (p - y) / n + 2 * ridge * np.array([theta[0] - 1.0, theta[1]])
        w = p * (1 - p)
        hess = (x * w[:, None]).T @ x / n + 2 * ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        # backtracking: Newton can overshoot on badly scaled logits
        t = 1.0
        while t > 1e-6:
            cand = theta - t * step
            cand[0] = max(cand[0], MIN_SCALE)
            value = loss(cand)
            if value <= current:
                break
            t /= 2
        else:
            break
        converged = abs(current - value) < 1e-12
        theta, current = cand, value
        if converged:
            break
    return Platt(scale=float(theta[0]), bias=float(theta[1]))


def model_calibration(model: Any) -> Platt:
    """The calibration a registry model's config carries ((1, 0) for a model without one)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return Platt()
    return Platt(float(cfg.calibration_scale), float(cfg.calibration_bias))


def raw_logits_and_labels(
    model: Any, dataset: Any, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """The model's own (uncalibrated) logits and the labels of every labelled position of a
    `WindowDataset`, as flat float64 arrays."""
    import torch

    from training.windows import IGNORE_LABEL, collate_windows

    was_training = model.training
    model.eval()
    logits: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collate_windows(
                [dataset[j] for j in range(start, min(start + batch_size, len(dataset)))]
            )
            y = batch.pop("labels")  # (B, T), IGNORE_LABEL at padding / context-only items
            out = model(batch)  # (B, T)
            mask = y != IGNORE_LABEL
            logits.append(out[mask].double().numpy())
            labels.append(y[mask].double().numpy())
    model.train(was_training)
    if not logits:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(logits), np.concatenate(labels)


def window_metrics(model: Any, dataset: Any, batch_size: int = 256) -> dict[str, float]:
    """Metrics of a torch model with its config's calibration applied, on the labelled positions
    of a window dataset (the training protocol, where the Trainer's validation AUC is measured)."""
    logits, labels = raw_logits_and_labels(model, dataset, batch_size)
    return binary_metrics(labels, sigmoid(model_calibration(model).apply(logits)))


def candidate_logits(model: Any, requests: list[Any], spec: Any, items: Any) -> list[np.ndarray]:
    """The model's own (uncalibrated) logits of each `CandidateRequest`'s candidates: one batch,
    one forward pass (`models.features.encode_candidate_batch`, the service's encoding)."""
    import torch

    from models.features import encode_candidate_batch

    batch, spans = encode_candidate_batch(requests, spec, items)
    with torch.no_grad():
        out = model({k: torch.from_numpy(v) for k, v in batch.items()}).double().numpy()
    return [out[b, s:e] for b, (s, e) in enumerate(spans)]  # (B, T) -> candidates


# Served-protocol predictions used for the fit: one forward window per bundle, so a large
# validation set is capped (whole learners, in their random validation order) at this many.
MAX_CALIBRATION_BUNDLES = 20_000


def served_logits_and_labels(
    model: Any, dataset: Any, batch_size: int = 256, max_bundles: int = MAX_CALIBRATION_BUNDLES
) -> tuple[np.ndarray, np.ndarray]:
    """The model's own (uncalibrated) logits and the labels of a `WindowDataset`'s labelled items,
    predicted as the service predicts them: bundle by bundle, each bundle from every earlier item
    of its learner (the encoding keeps the trailing window). Learners are taken in order until
    `max_bundles` bundles; each item counts once."""
    from models.features import bundle_requests

    requests: list[Any] = []
    answers: list[np.ndarray] = []
    for history, first in zip(dataset.histories, dataset.score_from, strict=True):
        if len(requests) >= max_bundles:
            break
        learner_requests, learner_answers = bundle_requests(history, first)
        requests += learner_requests
        answers += learner_answers
    was_training = model.training
    model.eval()
    logits: list[np.ndarray] = []
    for start in range(0, len(requests), batch_size):
        chunk = requests[start : start + batch_size]
        logits += candidate_logits(model, chunk, dataset.spec, dataset.items)
    model.train(was_training)
    if not logits:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(logits), np.concatenate(answers).astype(np.float64)


def calibrate_model(
    model: Any, config: Any, valid_dataset: Any, fitted_on: str = "validation learners"
) -> tuple[Any, dict[str, Any]]:
    """Fit Platt scaling on `valid_dataset` (validation learners, never evaluation rows), predicted
    as served, and return (the config carrying it, a report). The model's weights are untouched;
    `model.cfg` is updated so that everything that serves or scores this model in-process applies
    the same calibration. The report's validation numbers are of the served protocol."""
    logits, labels = served_logits_and_labels(model, valid_dataset)
    platt = fit_platt(logits, labels)
    calibrated = replace(config, calibration_scale=platt.scale, calibration_bias=platt.bias)
    if getattr(model, "cfg", None) is not None:
        model.cfg = calibrated
    served = sigmoid(platt.apply(logits))  # the calibrated probabilities
    raw = binary_metrics(labels, sigmoid(logits))
    fitted = binary_metrics(labels, served)
    report = {
        "method": "platt",
        "fitted_on": fitted_on,
        "protocol": "served (bundle by bundle, trailing window)",
        "n": int(len(labels)),
        "scale": platt.scale,
        "bias": platt.bias,
        "valid_logloss_raw": raw["logloss"],
        "valid_logloss": fitted["logloss"],
        "valid_ece_raw": raw["ece"],
        "valid_ece": fitted["ece"],
        "valid_auc": fitted["auc"],
        # the reliability table of the served (calibrated) probabilities: the model card's plot
        "reliability": calibration_bins(labels, served),
    }
    return calibrated, report

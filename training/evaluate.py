"""`python -m training.evaluate`: the live service's protocol, replayed offline and batched.

Each learner's history comes from the history file (may be absent for a learner); then the eval
file's rows are predicted bundle by bundle in time order, each bundle from everything strictly
before it (its own answers are revealed only after). Every bundle becomes one
`models.features.CandidateRequest`; requests of all learners are scored in large batches.
ONNX artifact dirs are scored by `service.predictor.Predictor` (the exact serving code path);
torch model dirs by the same encoding + the torch model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from models.feature_spec import FeatureSpec
from models.features import CandidateRequest, History, bundle_requests
from models.numeric import sigmoid
from models.vocab import UNKNOWN_QUESTION, QuestionVocab
from training.arguments import EvaluationArguments
from training.binary_metrics import binary_metrics, calibration_bins
from training.bootstrap import metric_intervals
from training.calibration import candidate_logits, model_calibration
from training.cli import DataclassArgumentParser
from training.data import DataError, Interactions, LogArguments, load_dataset
from training.sanity import random_label_probe

logger = logging.getLogger(__name__)


class Scorer(Protocol):
    @property
    def spec(self) -> FeatureSpec: ...

    @property
    def vocab(self) -> QuestionVocab: ...

    def score(self, requests: list[CandidateRequest]) -> list[np.ndarray]: ...


class TorchScorer:
    """Scores requests with a torch model dir through the shared encoding."""

    def __init__(self, model_dir: Path) -> None:
        from training.artifacts import load_model_dir

        self.model, self.config, self.spec, self.vocab = load_model_dir(model_dir)
        self.model.eval()
        self._items = self.vocab.item_table()

    def score(self, requests: list[CandidateRequest]) -> list[np.ndarray]:
        calibration = model_calibration(self.model)  # as the exported graph serves it
        raw = candidate_logits(self.model, requests, self.spec, self._items)
        return [sigmoid(calibration.apply(logits)) for logits in raw]


def load_scorer(model_dir: Path, threads: int = 1) -> Scorer:
    """An ONNX artifact dir (has model.onnx) -> the service's Predictor; else a torch model dir."""
    if (model_dir / "model.onnx").exists():
        from service.predictor import Predictor

        return Predictor.load(model_dir, providers="cpu", threads=threads)
    return TorchScorer(model_dir)


def _remap(history: History, source: QuestionVocab, target: QuestionVocab) -> History:
    """Re-index questions from the data's vocabulary to the model's (unknown ids -> UNKNOWN)."""
    if np.array_equal(source.question_ids, target.question_ids):
        return history
    idx = history.question
    raw = np.where(idx >= 2, source.question_ids[np.maximum(idx - 2, 0)], -1)
    mapped = np.where(idx >= 2, target.to_index(raw), UNKNOWN_QUESTION)
    return dataclasses.replace(history, question=mapped)


def _concat(a: History, b: History) -> History:
    """History a, then history b (its bundles and lectures after all of a's)."""
    offset = int(a.bundle[-1]) + 1 if len(a) else 0
    return History(
        question=np.concatenate([a.question, b.question]),
        correct=np.concatenate([a.correct, b.correct]),
        timestamp=np.concatenate([a.timestamp, b.timestamp]),
        bundle=np.concatenate([a.bundle, b.bundle + offset]),
        elapsed_ms=np.concatenate([a.elapsed_ms, b.elapsed_ms]),
        explanation=np.concatenate([a.explanation, b.explanation]),
        lecture_after=np.concatenate([a.lecture_after, b.lecture_after + len(a)]),
        lecture_timestamp=np.concatenate([a.lecture_timestamp, b.lecture_timestamp]),
        lecture_part=np.concatenate([a.lecture_part, b.lecture_part]),
        lecture_tag=np.concatenate([a.lecture_tag, b.lecture_tag]),
    )


class Evaluated(NamedTuple):
    """What `evaluate` returns, one entry per predicted answer in eval-bundle order."""

    metrics: dict[str, Any]  # binary_metrics (+ the bootstrap intervals when asked)
    labels: np.ndarray  # (N,) 0/1
    probs: np.ndarray  # (N,) served (calibrated) P(correct)
    learners: np.ndarray  # (N,) raw learner id


@dataclass
class EvalRequests:
    requests: list[CandidateRequest]
    labels: list[np.ndarray]
    users: list[int]  # raw learner id of each request
    row_ids: list[
        np.ndarray
    ]  # source row id of each predicted item (row_id column / running index)
    question_ids: list[np.ndarray]  # raw question id of each predicted item

    def answer_learners(self) -> np.ndarray:
        """(N,) raw learner id of each predicted answer, in prediction order."""
        sizes = [len(answers) for answers in self.labels]
        return np.repeat(np.asarray(self.users, dtype=np.int64), sizes)


def build_requests(
    history: Interactions | None, evaluation: Interactions, vocab: QuestionVocab
) -> EvalRequests:
    """One request per eval bundle: the learner's history + earlier eval bundles, then the bundle."""
    history_index = {}
    if history is not None:
        history_index = {int(u): i for i, u in enumerate(history.user_ids)}
    requests: list[CandidateRequest] = []
    labels: list[np.ndarray] = []
    users: list[int] = []
    row_ids: list[np.ndarray] = []
    question_ids: list[np.ndarray] = []
    for i, user in enumerate(evaluation.user_ids):
        rows = evaluation.rows(i)
        answered = ~evaluation.is_lecture[rows]
        future_rows = evaluation.row_id[rows][answered]
        future_questions = evaluation.content_id[rows][answered]
        future = _remap(evaluation.history(i, lecture_vocab=vocab), evaluation.vocab, vocab)
        if len(future) == 0:
            continue
        past = History.empty()
        if history is not None and int(user) in history_index:
            past = _remap(
                history.history(history_index[int(user)], lecture_vocab=vocab), history.vocab, vocab
            )
        full = _concat(past, future)
        bundles, answers = bundle_requests(full, first=len(past))
        for request, answer in zip(bundles, answers, strict=True):
            s = len(request.history) - len(past)  # the bundle's first item in `future`
            e = s + len(request.candidates)
            requests.append(request)
            labels.append(answer)
            users.append(int(user))
            row_ids.append(future_rows[s:e])
            question_ids.append(future_questions[s:e])
    return EvalRequests(requests, labels, users, row_ids, question_ids)


def score_all(
    scorer: Scorer, requests: list[CandidateRequest], batch_size: int = 512
) -> np.ndarray:
    out = []
    for i in range(0, len(requests), batch_size):
        out.extend(scorer.score(requests[i : i + batch_size]))
    return np.concatenate(out) if out else np.zeros(0)


def evaluate(
    model_dir: Path,
    eval_file: Path,
    questions_file: Path | None,
    history_file: Path | None = None,
    *,
    batch_size: int = 512,
    threads: int = 1,
    data_options: dict[str, Any] | None = None,
    predictions_out: Path | None = None,
    bootstrap: int = 0,
) -> Evaluated:
    """Metrics, labels, probabilities and learners in eval-bundle order. Items are matched to the
    model's vocabulary by raw id, so logs without a questions file (sequences, tables) work.
    `bootstrap` > 0 adds 95 % intervals over that many learner resamples to the metrics
    (`training.bootstrap.metric_intervals`: auc_ci95, logloss_ci95, ece_ci95)."""
    scorer = load_scorer(model_dir, threads=threads)
    options = data_options or {}
    evaluation = load_dataset(eval_file, questions_file, **options)
    history = (
        load_dataset(history_file, questions_file, **options) if history_file is not None else None
    )
    built = build_requests(history, evaluation, scorer.vocab)
    if not built.requests:
        raise ValueError(f"{eval_file}: no answered questions to evaluate")
    probs = score_all(scorer, built.requests, batch_size)
    labels = np.concatenate(built.labels).astype(np.float64)
    learners = built.answer_learners()
    if predictions_out is not None:
        write_predictions(predictions_out, built, probs)
    metrics: dict[str, Any] = dict(binary_metrics(labels, probs))
    if bootstrap > 0:
        metrics |= metric_intervals(labels, probs, learners, n_resamples=bootstrap)
        metrics["bootstrap_resamples"] = bootstrap
    return Evaluated(metrics, labels, probs, learners)


def write_predictions(path: Path, built: EvalRequests, probs: np.ndarray) -> None:
    """One CSV row per predicted answer, in prediction order: row_id, user_id, question_id, p,
    label (p = the served, calibrated probability)."""
    sizes = [len(r) for r in built.row_ids]
    columns = {
        "row_id": np.concatenate(built.row_ids) if sizes else np.zeros(0, np.int64),
        "user_id": built.answer_learners(),
        "question_id": np.concatenate(built.question_ids) if sizes else np.zeros(0, np.int64),
        "label": np.concatenate(built.labels) if sizes else np.zeros(0, np.int8),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write("row_id,user_id,question_id,p,label\n")
        for row, user, question, p, label in zip(
            columns["row_id"].tolist(),
            columns["user_id"].tolist(),
            columns["question_id"].tolist(),
            probs.tolist(),
            columns["label"].tolist(),
            strict=True,
        ):
            f.write(f"{row},{user},{question},{p:.6f},{label}\n")


def plot_calibration(labels: np.ndarray, probs: np.ndarray, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = calibration_bins(labels, probs, n_bins=10)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.plot([b["p_mean"] for b in bins], [b["observed"] for b in bins], "o-", label="model")
    ax.set_xlabel("predicted P(correct)")
    ax.set_ylabel("observed rate")
    ax.set_title(title or "calibration")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = DataclassArgumentParser(
        [EvaluationArguments, LogArguments],
        config=False,
        prog="python -m training.evaluate",
        description="Replay the service protocol offline: predict each eval bundle from everything "
        "before it.",
    )
    (args, log), rest = parser.parse_known(argv)
    if args.sanity is not None:
        return _run_sanity(log, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        args.check_files()
        log.check_files()
    except ValueError as exc:
        parser.error(str(exc))
    assert args.model_dir is not None and args.eval_file is not None  # check_files
    try:
        metrics, labels, probs, _ = evaluate(
            Path(args.model_dir),
            Path(args.eval_file),
            log.questions_path(),
            Path(args.history_file) if args.history_file else None,
            batch_size=args.batch_size,
            threads=args.threads,
            data_options=log.load_options(),
            predictions_out=Path(args.predictions_out) if args.predictions_out else None,
            bootstrap=args.bootstrap,
        )
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        plot_calibration(
            labels,
            probs,
            Path(args.plot),
            title=f"{Path(args.model_dir).name}: AUC {metrics['auc']:.4f}",
        )
    print(json.dumps(metrics))
    return 0


def _run_sanity(log: LogArguments, rest: list[str]) -> int:
    """`--sanity random-labels`: the log-format flags and everything else go to training.train."""
    try:
        result = random_label_probe([*rest, *log.as_flags()])
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    if not result["passed"]:
        print(
            f"error: LEAK SUSPECTED: the model predicts random labels with AUC {result['auc']:.4f} "
            f"> {result['max_auc']} on held-out learners; a prediction reads answers it must not see",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training with `transformers.Trainer`: the model wrapper and loss, metrics, the data split into
window datasets, `TrainingArguments`, the curves plot and `run_training`, shared by `training.train`
and `training.distill` (the entry points only parse, call and report)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.config import ModelConfig
from models.feature_spec import FeatureSpec
from models.numeric import sigmoid
from models.registry import build_model, count_parameters
from models.vocab import QuestionVocab
from training.arguments import (
    AUTO_EPOCH_SEQUENCES,
    AUTO_EPOCHS_MAX,
    AUTO_EPOCHS_MIN,
    SCHEDULERS,
    ArchitectureArguments,
    DataArguments,
    ModelArguments,
    OptimizationArguments,
    TrainRun,
)
from training.artifacts import save_model_dir
from training.binary_metrics import binary_metrics
from training.calibration import calibrate_model, window_metrics
from training.data import Interactions, LogArguments, load_dataset
from training.splits import split_by_learner
from training.windows import (
    IGNORE_LABEL,
    WindowDataset,
    answer_counts,
    collate_windows,
    learner_histories,
)

logger = logging.getLogger(__name__)


class KTForTraining(nn.Module):
    """Wraps a registry model for `transformers.Trainer`: returns {"loss", "logits"}.

    The loss is the BCE over labelled positions (labels == IGNORE_LABEL are padding or
    context-only items), averaged over every labelled position of the optimizer step.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **inputs: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        # The `**inputs` signature makes Trainer treat this model as taking loss kwargs: it passes
        # the labelled-position count of the whole step (all accumulation batches, all DDP ranks),
        # multiplies the loss by the world size and skips its own division by the accumulation
        # steps. So the loss must be sum / that count: a per-batch mean here would double the
        # loss (and the gradient) under 2-process DDP.
        logits = self.model(inputs)  # (B, T)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = masked_bce(logits, labels, num_items_in_batch)
        return out


def masked_bce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Binary cross-entropy over positions whose label is not IGNORE_LABEL: their mean, or
    their sum / `num_items_in_batch` (Trainer's count of labelled positions across the step)."""
    mask = labels != IGNORE_LABEL  # (B, T)
    if not mask.any():
        return logits.sum() * 0.0
    if num_items_in_batch is None:
        return nn.functional.binary_cross_entropy_with_logits(
            logits[mask].float(), labels[mask].float(), reduction="mean"
        )
    total = nn.functional.binary_cross_entropy_with_logits(
        logits[mask].float(), labels[mask].float(), reduction="sum"
    )
    return total / num_items_in_batch


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """AUC/acc/logloss over labelled positions; Trainer pads across batches with -100."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    mask = labels != IGNORE_LABEL
    probs = sigmoid(logits[mask])
    metrics = binary_metrics(labels[mask], probs)
    return {k: float(v) for k, v in metrics.items()}


@dataclass
class PreparedData:
    spec: FeatureSpec
    vocab: QuestionVocab
    train: WindowDataset
    valid: WindowDataset | None
    fingerprint: str


def data_fingerprint(path: Path) -> str:
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}:{int(st.st_mtime)}"


def prepare_data(
    inter: Interactions,
    *,
    seq_len: int,
    validation: str,
    valid_fraction: float,
    seed: int,
    fingerprint: str = "",
    augment: bool = False,
    lecture_stats: bool = True,
) -> PreparedData:
    """Split for validation and build the window datasets (the model sees `seq_len` items).
    `lecture_stats`: read the lectures, when the log has any (a log without lecture rows gets the
    model it always got, without lecture columns)."""
    vocab = inter.vocab
    spec = FeatureSpec(
        window=seq_len,
        n_questions=vocab.size,
        n_parts=vocab.n_parts,
        n_tags=vocab.n_tags,
        lecture_stats=lecture_stats and bool(inter.is_lecture.any()),
    )
    items = vocab.item_table()
    if validation == "none" or valid_fraction <= 0:
        return PreparedData(
            spec,
            vocab,
            WindowDataset(learner_histories(inter), spec, items, augment=augment, seed=seed),
            None,
            fingerprint,
        )
    if validation == "learner":
        train_inter, valid_inter = split_by_learner(inter, valid_fraction, seed)
        train = WindowDataset(
            learner_histories(train_inter), spec, items, augment=augment, seed=seed
        )
        valid = WindowDataset(learner_histories(valid_inter), spec, items)
        return PreparedData(spec, vocab, train, valid, fingerprint)
    if validation == "time":
        # Train on each learner's prefix; validate on the continuation with the prefix as context.
        histories = learner_histories(inter)
        cuts = [_time_cut(h, valid_fraction) for h in histories]
        prefixes = [h.slice(0, c) for h, c in zip(histories, cuts, strict=True)]
        train = WindowDataset(prefixes, spec, items, augment=augment, seed=seed)
        valid = WindowDataset(histories, spec, items, score_from=cuts)
        return PreparedData(spec, vocab, train, valid, fingerprint)
    raise ValueError(f"--validation must be learner, time or none, got {validation!r}")


def catalogue_vocab(data: PreparedData) -> QuestionVocab:
    """The vocabulary with each question's answer count in the training windows (the catalogue's
    'trained on' facts: validation learners are not counted)."""
    return dataclasses.replace(data.vocab, train_answers=answer_counts(data.train, data.vocab))


def _time_cut(history: Any, fraction: float) -> int:
    """First index of the continuation: the last `fraction` of items, cut at a bundle boundary."""
    n = len(history)
    cut = int(math.floor(n * (1.0 - fraction)))
    while 0 < cut < n and history.bundle[cut] == history.bundle[cut - 1]:
        cut += 1
    return cut


def load_and_prepare(
    data: DataArguments, log: LogArguments, *, seq_len: int, seed: int, lecture_stats: bool
) -> PreparedData:
    """Load --train-file/--questions-file (cached with --cache-dir) and build the datasets."""
    assert data.train_file is not None  # required by the parser
    inter = load_dataset(
        Path(data.train_file),
        log.questions_path(),
        **log.load_options(),
        cache_dir=Path(data.cache_dir) if data.cache_dir else None,
    )
    return prepare_data(
        inter,
        seq_len=seq_len,
        validation=data.validation,
        valid_fraction=data.valid_fraction,
        seed=seed,
        fingerprint=data_fingerprint(Path(data.train_file)),
        augment=data.window_augmentation == "shift",
        lecture_stats=lecture_stats,
    )


_USER_TENSORBOARD_DIR = os.environ.get("TENSORBOARD_LOGGING_DIR")


def build_config(
    model: ModelArguments, arch: ArchitectureArguments, spec: FeatureSpec
) -> ModelConfig:
    """The ModelConfig of these flags, its vocabulary sizes and window from the feature spec."""
    return ModelConfig(
        name=model.model,
        n_questions=spec.n_questions,
        n_parts=spec.n_parts,
        n_tags=spec.n_tags,
        n_lag_buckets=spec.n_lag_buckets,
        n_elapsed_buckets=spec.n_elapsed_buckets,
        n_stats=spec.n_stats,
        seq_len=spec.window,
        d_model=model.d_model,
        n_layers=model.layers,
        n_heads=model.heads,
        encoder_layers=model.encoder_layers,
        cross_attention=model.cross_attention,
        dropout=arch.dropout,
        attention_dropout=arch.attention_dropout,
        time_encoding=arch.time_encoding,
        question_residual=arch.question_residual,
        use_stats=arch.stats,
        irt_prior=arch.irt_prior,
        attention_decay=arch.attention_decay,
    )


def resolve_epochs(epochs: float | str, n_train_windows: int) -> float:
    """The number of epochs to run: `epochs`, or the 'auto' rule above for this many windows."""
    if epochs != "auto":
        return float(epochs)
    wanted = math.ceil(AUTO_EPOCH_SEQUENCES / max(n_train_windows, 1))
    return float(min(max(wanted, AUTO_EPOCHS_MIN), AUTO_EPOCHS_MAX))


def training_arguments(
    optim: OptimizationArguments,
    learning_rate: float,
    output_dir: Path,
    has_eval: bool,
    n_train_windows: int,
) -> Any:
    from transformers import TrainingArguments

    # transformers v5 reads the tensorboard directory from the environment. Set per run (distill
    # trains several models in one process), unless the user chose one before starting.
    os.environ["TENSORBOARD_LOGGING_DIR"] = _USER_TENSORBOARD_DIR or str(output_dir / "runs")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # launched by torchrun
    strategy = optim.eval_strategy if has_eval else "no"
    save_strategy = optim.save_strategy
    if optim.load_best_model_at_end and has_eval:
        save_strategy = strategy  # Trainer requires matching strategies
    return TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=resolve_epochs(optim.epoch_count, n_train_windows),
        max_steps=optim.max_steps if optim.max_steps is not None else -1,
        learning_rate=learning_rate,
        warmup_steps=optim.warmup_steps if optim.warmup_steps >= 1 else float(optim.warmup_steps),
        lr_scheduler_type=SCHEDULERS[optim.lr_scheduler],
        weight_decay=optim.weight_decay,
        per_device_train_batch_size=optim.batch_size,
        per_device_eval_batch_size=optim.eval_batch_size or optim.batch_size,
        gradient_accumulation_steps=optim.gradient_accumulation_steps,
        max_grad_norm=optim.max_grad_norm,
        eval_strategy=strategy,
        eval_steps=optim.eval_steps,
        save_strategy=save_strategy,
        save_steps=optim.save_steps,
        save_total_limit=optim.save_total_limit,
        load_best_model_at_end=bool(optim.load_best_model_at_end and has_eval),
        metric_for_best_model="auc" if has_eval else None,
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=optim.logging_steps,
        report_to=optim.report_to,
        bf16=optim.bf16,
        seed=optim.seed,
        data_seed=optim.seed,
        use_cpu=not torch.cuda.is_available() or optim.use_cpu,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=optim.dataloader_num_workers,
        ddp_backend="gloo" if distributed and not torch.cuda.is_available() else None,
        ddp_find_unused_parameters=False,
        disable_tqdm=optim.no_progress,
    )


def plot_training_curves(log_history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [
        (h["step"], h["eval_loss"], h.get("eval_auc")) for h in log_history if "eval_loss" in h
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        axes[0].plot(*zip(*train, strict=True), label="train loss")
    if evals:
        axes[0].plot([e[0] for e in evals], [e[1] for e in evals], "o-", label="eval loss")
        axes[1].plot(
            [e[0] for e in evals], [e[2] for e in evals], "o-", color="C2", label="eval AUC"
        )
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("BCE")
    if train or evals:
        axes[0].legend()
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("AUC")
    if evals:
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_training(
    run: TrainRun,
    trainer_cls: Any = None,
    trainer_kwargs: dict | None = None,
    data: PreparedData | None = None,
) -> dict[str, Any]:
    """Load data (unless `data` is given), train, and write the model dir. Returns the metrics
    dict (also metrics.json)."""
    from transformers import EarlyStoppingCallback, Trainer, set_seed

    output_dir = Path(run.optim.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(run.optim.seed)
    if data is None:
        data = load_and_prepare(
            run.data,
            run.log,
            seq_len=run.arch.seq_len,
            seed=run.optim.seed,
            lecture_stats=run.arch.lecture_stats,
        )
    if len(data.train) == 0:
        raise ValueError(f"{run.data.train_file}: no training windows (no answered questions)")
    config = build_config(run.model, run.arch, data.spec)
    model = build_model(config)
    n_params = count_parameters(model)
    logger.info("model %s: %d parameters, %d train windows", config.name, n_params, len(data.train))

    has_eval = data.valid is not None and len(data.valid) > 0 and run.optim.eval_strategy != "no"
    logger.info(
        "training for up to %g epochs", resolve_epochs(run.optim.epoch_count, len(data.train))
    )
    learning_rate = run.optim.learning_rate_for(run.model.model)
    targs = training_arguments(run.optim, learning_rate, output_dir, has_eval, len(data.train))
    callbacks: list[Any] = []
    if has_eval and run.optim.early_stopping_patience:
        callbacks.append(
            EarlyStoppingCallback(early_stopping_patience=run.optim.early_stopping_patience)
        )
    cls = trainer_cls or Trainer
    trainer = cls(
        model=KTForTraining(model),
        args=targs,
        train_dataset=data.train,
        eval_dataset=data.valid if has_eval else None,
        data_collator=collate_windows,
        compute_metrics=compute_metrics if has_eval else None,
        callbacks=callbacks,
        **(trainer_kwargs or {}),
    )
    started = time.perf_counter()
    train_result = trainer.train(resume_from_checkpoint=run.optim.resume)
    train_seconds = time.perf_counter() - started
    metrics: dict[str, Any] = {
        "model": config.name,
        "params": n_params,
        "train_windows": len(data.train),
        "train_seconds": round(train_seconds, 2),
        "train_sequences_per_s": round(
            train_result.metrics.get("train_samples_per_second", 0.0), 2
        ),
        "train_loss": train_result.training_loss,
        "data_fingerprint": data.fingerprint,
        "validation": run.data.validation,
    }
    if has_eval:
        eval_metrics = trainer.evaluate()
        metrics.update(
            {k.removeprefix("eval_"): v for k, v in eval_metrics.items() if k.startswith("eval_")}
        )
        if run.optim.calibration == "platt":
            # fitted on the validation learners only; metrics.json then describes the served model
            fitted_on = (
                "held-out continuations (--validation time)"
                if run.data.validation == "time"
                else "validation learners"
            )
            config, calibration = calibrate_model(model, config, data.valid, fitted_on)
            # metrics.json: the calibrated model on the validation windows, where the epoch was chosen
            metrics.update(window_metrics(model, data.valid))
            metrics["calibration"] = calibration
            logger.info(
                "calibration (Platt, validation learners): scale %.3f bias %.3f; "
                "validation log loss %.4f -> %.4f, ECE %.4f -> %.4f",
                calibration["scale"],
                calibration["bias"],
                calibration["valid_logloss_raw"],
                calibration["valid_logloss"],
                calibration["valid_ece_raw"],
                calibration["valid_ece"],
            )
    if trainer.is_world_process_zero():
        vocab = catalogue_vocab(data)
        save_model_dir(output_dir, model, config, data.spec, vocab, metrics=metrics)
        plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png")
        logger.info("wrote %s", output_dir)
    return metrics

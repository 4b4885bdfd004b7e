"""The flags of `training.train`, `training.distill`, `training.evaluate` and `training.export` as
dataclasses, one per group, parsed by `training.cli.DataclassArgumentParser` (a
`transformers.HfArgumentParser`): each flag is defined once, with its help and bounds (checked in
`__post_init__`, so a run built in code is checked like one from the command line).

Groups: `DataArguments` (what to train on and how to split it; how a log file is read is
`training.data.LogArguments`), `ModelArguments` (registry model and its size; `training.train` only:
distillation sizes its models from presets), `ArchitectureArguments` (what every model reads besides
its size), `OptimizationArguments` (the `transformers.Trainer` run), `DistillationArguments`,
`EvaluationArguments`, `ExportArguments`. A run is a `TrainRun` of those groups; teacher and student
runs are derived with `dataclasses.replace`, never by editing parsed arguments.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from models.registry import MODEL_REGISTRY
from training.cli import check_paths_exist, flag_field, flag_name
from training.data import LogArguments
from training.distill_losses import TEMPERATURE_SCHEDULERS, WEIGHT_SCHEDULERS

# `--epochs auto`: enough passes to show the model AUTO_EPOCH_SEQUENCES training windows, within
# [AUTO_EPOCHS_MIN, AUTO_EPOCHS_MAX] epochs. Small logs get the full 30 epochs (early stopping on
# validation AUC ends them sooner); a 740k-answer log (~15k windows) gets 7, which bounds the time.
AUTO_EPOCH_SEQUENCES = 100_000
AUTO_EPOCHS_MIN = 3
AUTO_EPOCHS_MAX = 30
# `training.evaluate --sanity random-labels` fails above this held-out AUC (training.sanity).
RANDOM_LABEL_MAX_AUC = 0.52
# The logistic model has ~1 parameter per question and converges slowly at transformer rates.
DEFAULT_LEARNING_RATES = {"logistic": 1e-2}  # others: 1e-3
# Scheduler names accepted by --lr-scheduler; "noam" is warmup + inverse square root decay
# (Vaswani et al.), which transformers calls "inverse_sqrt".
SCHEDULERS = {
    "noam": "inverse_sqrt",
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant",
    "constant_with_warmup": "constant_with_warmup",
    "inverse_sqrt": "inverse_sqrt",
}
# Distillation model sizes by name: ModelArguments fields. "lean" is "tiny" without the encoder's
# and the decoder's exercise attention (one attention block in all): at B=1 an ONNX Runtime call
# costs about 1 us per graph node, so the student's latency is mostly its node count.
PRESETS: dict[str, dict[str, Any]] = {
    "lean": {"d_model": 32, "layers": 1, "heads": 2, "encoder_layers": 0, "cross_attention": False},
    "tiny": {"d_model": 32, "layers": 1, "heads": 2},
    "small": {"d_model": 64, "layers": 1, "heads": 4},
    "base": {"d_model": 128, "layers": 2, "heads": 4},
    "large": {"d_model": 256, "layers": 3, "heads": 8},
}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass
class DataArguments:
    """What to train on and how to split it for validation (how the file is read:
    `training.data.LogArguments`)."""

    _argument_group_name = "data"

    train_file: str | None = flag_field(
        "Riiid train.csv, an EdNet-KT1 folder of u*.csv, a CSV/Parquet log (--columns) or a DKT/AKT/"
        "pyKT sequence file (docs/data.md)",
        default=None,
        required=True,  # not with distill --demo
    )
    validation: Literal["learner", "time", "none"] = flag_field(
        "hold out learners, or the end of each learner's history (time calibrates better when the served learners continue the training learners: docs/benchmarks.md)",
        default="learner",
    )
    valid_fraction: float = flag_field(
        "share of learners (or of each history) held out", default=0.1
    )
    window_augmentation: Literal["shift", "none"] = flag_field(
        "shift: every epoch, move each training window by a random offset of up to half a stride "
        "(more contexts per item); none: fixed windows",
        default="none",
    )
    cache_dir: str | None = flag_field(
        "cache preprocessed data here (reused when the file is unchanged)", default=None
    )

    def __post_init__(self) -> None:
        _check(0.0 <= self.valid_fraction < 1.0, "--valid-fraction must be in [0, 1)")

    def check_files(self) -> None:
        """The training file exists (checked before any work, like a bad flag)."""
        check_paths_exist(self, ["train_file"])


@dataclass
class ModelArguments:
    """The registry model and its size (`training.train`)."""

    _argument_group_name = "model"

    model: str = flag_field("registry model", default="saint_plus", choices=sorted(MODEL_REGISTRY))
    d_model: int = flag_field("width of every embedding / hidden state", default=128)
    layers: int = flag_field(
        "decoder layers, and encoder layers unless --encoder-layers (SAINT); LSTM layers (DKT)",
        default=2,
    )
    heads: int = flag_field("attention heads (d_model must be divisible by it)", default=4)
    encoder_layers: int | None = flag_field(
        "SAINT/SAINT+ encoder layers (default: --layers); 0: no encoder attention", default=None
    )
    cross_attention: bool = flag_field(
        "SAINT/SAINT+ decoder cross-attention to the encoder output (off: response attention and "
        "FFN only, as in the lean student preset)",
        default=True,
    )

    def __post_init__(self) -> None:
        _check(
            self.d_model > 0 and self.layers > 0 and self.heads > 0,
            "--d-model, --layers and --heads must be positive",
        )
        _check(
            self.encoder_layers is None or self.encoder_layers >= 0,
            "--encoder-layers must be >= 0",
        )


@dataclass
class ArchitectureArguments:
    """What every registry model reads besides its size (shared by training.train and distill)."""

    _argument_group_name = "architecture"

    seq_len: int = flag_field("history window (interactions)", default=100)
    dropout: float = flag_field("dropout on embeddings and residual branches", default=0.3)
    time_encoding: Literal["bucket", "continuous", "both"] = flag_field(
        "SAINT+ lag/elapsed time: bucket embedding, Linear(1, D) of the value, or both",
        default="both",
    )
    question_residual: bool = flag_field(
        "a free per-question vector on top of the part/tag (content) item embedding (default off: it "
        "overfits small logs; chosen on validation learners, docs/benchmarks.md)",
        default=False,
    )
    stats: bool = flag_field(
        "feed the learner statistics (counts, accuracies, recency; earlier bundles only)",
        default=True,
    )
    lecture_stats: bool = flag_field(
        "add the lectures watched before each answer to the statistics (count, per part, per tag, "
        "time since); only when the training log has lecture rows",
        default=True,
    )
    attention_decay: bool = flag_field(
        "SAINT/SAINT+: attention favours recent bundles (learned per-head slope)",
        default=True,
    )
    attention_dropout: float | None = flag_field(
        "SAINT/SAINT+: dropout on the attention weights (default: --dropout's value); 0 lets training "
        "use the fused attention kernel (~20%% faster steps on CPU, weaker regularisation)",
        default=None,
    )
    irt_prior: bool = flag_field(
        "logit = IRT-style prior (statistics vs item difficulty) + the network's correction",
        default=True,
    )

    def __post_init__(self) -> None:
        _check(self.seq_len >= 2, "--seq-len must be >= 2")
        _check(0.0 <= self.dropout < 1.0, "--dropout must be in [0, 1)")
        _check(
            self.attention_dropout is None or 0.0 <= self.attention_dropout < 1.0,
            "--attention-dropout must be in [0, 1)",
        )


@dataclass
class DistillArchitectureArguments(ArchitectureArguments):
    """As `ArchitectureArguments`, with the lighter dropout of the small distillation models."""

    dropout: float = flag_field("dropout on embeddings and residual branches", default=0.1)


@dataclass
class OptimizationArguments:
    """The `transformers.Trainer` run (turned into `TrainingArguments` by `training.trainer`)."""

    _argument_group_name = "optimisation (transformers.TrainingArguments)"

    output_dir: str = flag_field("model dir to write (config.json, model.safetensors, ...)")
    epochs: str = flag_field(
        f"number of epochs, or auto (default): ceil({AUTO_EPOCH_SEQUENCES:,} / training windows), "
        f"clipped to {AUTO_EPOCHS_MIN}..{AUTO_EPOCHS_MAX}; early stopping may end sooner",
        default="auto",
    )
    calibration: Literal["platt", "none"] = flag_field(
        "after training, fit Platt scaling of the logits on the validation data (held-out learners, or "
        "with --validation time the held-out continuations) and fold it into the model config / "
        "exported graph (needs validation data)",
        default="platt",
    )
    max_steps: int | None = flag_field(
        "stop after this many optimizer steps (overrides --epochs)", default=None
    )
    learning_rate: float | None = flag_field(
        "peak learning rate (default: 1e-2 for logistic, 1e-3 for the others)", default=None
    )
    warmup_steps: float = flag_field(
        "int >= 1: steps; float < 1: ratio of total steps", default=0.05
    )
    lr_scheduler: str = flag_field(
        "learning-rate schedule", default="noam", choices=sorted(SCHEDULERS)
    )
    weight_decay: float = flag_field(
        "AdamW weight decay (not on biases/LayerNorm); also shrinks rare questions' embeddings",
        default=0.1,
    )
    batch_size: int = flag_field("training windows per step", default=64)
    eval_batch_size: int | None = flag_field("default: --batch-size", default=None)
    gradient_accumulation_steps: int = flag_field("steps per optimizer update", default=1)
    max_grad_norm: float = flag_field("gradient clipping", default=1.0)
    eval_strategy: Literal["no", "steps", "epoch"] = flag_field("when to validate", default="epoch")
    eval_steps: int | None = flag_field("with --eval-strategy steps", default=None)
    save_strategy: Literal["no", "steps", "epoch", "best"] = flag_field(
        "when to checkpoint", default="epoch"
    )
    save_steps: int = flag_field("with --save-strategy steps", default=500)
    save_total_limit: int = flag_field("checkpoints kept", default=2)
    load_best_model_at_end: bool = flag_field(
        "keep the checkpoint with the best validation AUC", default=True
    )
    early_stopping_patience: int = flag_field(
        "evaluations without AUC improvement before stopping (0 = off)", default=5
    )
    bf16: bool = flag_field("bfloat16 mixed precision", default=False)
    use_cpu: bool = flag_field("train on CPU even if CUDA is available", default=False)
    seed: int = flag_field("seed of the split, the initialisation and the batches", default=0)
    resume_from_checkpoint: str | None = flag_field(
        "path of a checkpoint-N dir (or 'true' for the latest in the output dir)", default=None
    )
    report_to: str = flag_field("tensorboard (default), none, ...", default="tensorboard")
    logging_steps: int = flag_field("log the training loss every this many steps", default=20)
    dataloader_num_workers: int = flag_field("data loader worker processes", default=0)
    no_progress: bool = flag_field("disable progress bars", default=False)

    def __post_init__(self) -> None:
        if self.epochs != "auto":
            try:
                value = float(self.epochs)
            except (TypeError, ValueError):
                raise ValueError(
                    f"--epochs: expected a number or 'auto', got {self.epochs!r}"
                ) from None
            _check(value > 0 and math.isfinite(value), f"--epochs must be > 0, got {self.epochs}")
            self.epochs = str(value)
        _check(self.batch_size > 0, "--batch-size must be positive")
        _check(
            self.learning_rate is None or self.learning_rate > 0, "--learning-rate must be positive"
        )
        _check(self.max_steps is None or self.max_steps > 0, "--max-steps must be positive")
        _check(self.warmup_steps >= 0, "--warmup-steps must be >= 0")

    @property
    def epoch_count(self) -> float | str:
        """--epochs as a number, or 'auto'."""
        return self.epochs if self.epochs == "auto" else float(self.epochs)

    @property
    def resume(self) -> str | bool | None:
        """--resume-from-checkpoint as `Trainer.train` takes it ('true' -> True)."""
        return True if self.resume_from_checkpoint == "true" else self.resume_from_checkpoint

    def learning_rate_for(self, model: str) -> float:
        """--learning-rate, or the model's default."""
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LEARNING_RATES.get(model, 1e-3)


@dataclass
class DistillationArguments:
    """Teachers, student, TextBrewer-style loss settings and the demo of `training.distill`."""

    _argument_group_name = "distillation"

    demo: bool = flag_field(
        "simulator data + small budget: teacher -> student -> artifact in a few minutes",
        default=False,
    )
    teacher: str | None = flag_field(
        "trained teacher model dir (else one is trained first)", default=None
    )
    extra_teacher: list[str] | None = flag_field(
        "more teacher dirs (soft targets averaged); repeatable", default=None, action="extend"
    )
    ensemble_teacher: list[str] | None = flag_field(
        "also train a teacher of this registry model (same preset, data and flags) and distil from "
        "the ensemble (soft targets averaged); repeatable",
        default=None,
        action="extend",
        choices=sorted(MODEL_REGISTRY),
    )
    teacher_model: str = flag_field(
        "registry model of the teacher", default="saint_plus", choices=sorted(MODEL_REGISTRY)
    )
    teacher_preset: str = flag_field("teacher size", default="large", choices=sorted(PRESETS))
    student: str | None = flag_field(
        f"preset ({', '.join(PRESETS)}) or a ModelConfig JSON file (default: tiny; with --demo: "
        "lean, the fastest at serving)",
        default=None,
    )
    distill_config: str | None = flag_field(
        "DistillationConfig JSON (TextBrewer-style)", default=None
    )
    temperature: float | None = flag_field("soft-target temperature", default=None)
    temperature_scheduler: str | None = flag_field(
        "temperature schedule", default=None, choices=TEMPERATURE_SCHEDULERS
    )
    kd_loss_type: Literal["bce", "kl", "mse"] | None = flag_field("soft-target loss", default=None)
    kd_loss_weight: float | None = flag_field("weight of the soft-target loss", default=None)
    hard_label_weight: float | None = flag_field("weight of the label loss", default=None)
    temperature_end: float | None = flag_field("linear: last tau", default=None)
    scheduler_beta: float | None = flag_field("flsw/cwsm strength", default=None)
    scheduler_gamma: float | None = flag_field("flsw exponent", default=None)
    kd_loss_weight_scheduler: str | None = flag_field(
        "kd weight schedule", default=None, choices=WEIGHT_SCHEDULERS
    )
    hard_label_weight_scheduler: str | None = flag_field(
        "label weight schedule", default=None, choices=WEIGHT_SCHEDULERS
    )
    intermediate_matches: str | None = flag_field(
        'JSON list, e.g. \'[{"layer_T": 2, "layer_S": 1, "feature": "hidden", "loss": "hidden_mse", '
        '"weight": 1, "proj": ["linear", 32, 128]}]\'',
        default=None,
    )
    no_baseline: bool = flag_field("skip the scratch student", default=False)
    int8: bool = flag_field(
        "try dynamic INT8 for the artifact: served only if it loses <= 0.002 AUC and is faster here",
        default=False,
    )

    def check_files(self) -> None:
        check_paths_exist(self, ["teacher", "distill_config"])

    def intermediate_match_list(self) -> list[dict[str, Any]] | None:
        if self.intermediate_matches is None:
            return None
        try:
            matches = json.loads(self.intermediate_matches)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--intermediate-matches is not JSON: {exc}") from None
        _check(isinstance(matches, list), "--intermediate-matches must be a JSON list")
        return matches


@dataclass(frozen=True)
class TrainRun:
    """Everything one training needs."""

    data: DataArguments
    log: LogArguments
    model: ModelArguments
    arch: ArchitectureArguments
    optim: OptimizationArguments

    def with_output(self, output_dir: Path | str, **optim: Any) -> TrainRun:
        """The same run writing to `output_dir` (and other optimisation fields replaced)."""
        return dataclasses.replace(
            self, optim=dataclasses.replace(self.optim, output_dir=str(output_dir), **optim)
        )


@dataclass
class EvaluationArguments:
    """`training.evaluate`: the model, the files to replay and the outputs."""

    _argument_group_name = "evaluation"

    model_dir: str | None = flag_field(
        "torch model dir or ONNX artifact dir (required)", default=None
    )
    eval_file: str | None = flag_field(
        "interactions to predict, in time order (required)", default=None
    )
    history_file: str | None = flag_field(
        "earlier interactions of the same learners (read like --eval-file)", default=None
    )
    plot: str | None = flag_field("write a calibration plot (PNG) here", default=None)
    predictions_out: str | None = flag_field(
        "write one CSV row per predicted answer here: row_id, user_id, question_id, p, label",
        default=None,
    )
    batch_size: int = flag_field("requests (bundles) per model call", default=512)
    threads: int = flag_field("ONNX Runtime intra-op threads", default=1)
    bootstrap: int = flag_field(
        "learner resamples for the 95%% intervals of AUC, log loss and ECE (auc_ci95, "
        "logloss_ci95, ece_ci95: learners drawn with replacement); 0: none",
        default=200,
    )
    sanity: str | None = flag_field(
        "leak probe instead of an evaluation: replace every answer by a random bit shared within "
        "its bundle, train with the remaining (training.train) flags, score held-out learners; "
        f"exit 1 if the AUC exceeds {RANDOM_LABEL_MAX_AUC}",
        default=None,
        choices=["random-labels"],
    )

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "--batch-size must be positive")
        _check(self.threads > 0, "--threads must be positive")
        _check(self.bootstrap >= 0, "--bootstrap must be 0 (none) or a number of resamples")

    def check_files(self) -> None:
        for name in ("model_dir", "eval_file"):
            _check(
                getattr(self, name) is not None,
                f"the following arguments are required: {flag_name(name)}",
            )
        check_paths_exist(self, ["model_dir", "eval_file", "history_file"])


@dataclass
class ExportArguments:
    """`training.export`: the model dir, the artifact to write, and the INT8 decision."""

    _argument_group_name = "export"

    model_dir: str = flag_field("torch model dir (training.train)")
    output_dir: str = flag_field("serving artifact dir to write")
    int8: bool = flag_field(
        "try dynamic INT8: with --int8-data it is served (becomes model.onnx) only if it loses <= "
        "--max-auc-loss AUC on that data and is faster here; without data it is only measured "
        "(model.int8.onnx, size/latency in the manifest)",
        default=False,
    )
    int8_data: str | None = flag_field(
        "held-out data (read with the log-format flags) on which --int8 measures the AUC loss",
        default=None,
    )
    max_auc_loss: float = flag_field(
        "INT8 gate: the most AUC it may lose (a negative value never serves INT8)", default=0.002
    )
    opset: int | None = flag_field("ONNX opset (default: the exporter's)", default=None)

    def __post_init__(self) -> None:
        _check(
            self.opset is None or 7 <= self.opset <= 30,
            f"--opset must be between 7 and 30, got {self.opset}",
        )
        _check(self.int8_data is None or self.int8, "--int8-data needs --int8")

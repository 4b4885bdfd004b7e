"""The command-line flags of `training.train` and `training.distill` (data, model, architecture,
training) and their checks: one definition per flag, with its help and bounds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from models.registry import MODEL_REGISTRY
from training.data import add_format_flags
from training.trainer import (
    AUTO_EPOCH_SEQUENCES,
    AUTO_EPOCHS_MAX,
    AUTO_EPOCHS_MIN,
    DEFAULT_LEARNING_RATES,
    SCHEDULERS,
)


def parse_epochs(text: str) -> float | str:
    """--epochs: a positive number, or 'auto'."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The Trainer flags shared by training.train and training.distill."""
    g = parser.add_argument_group("optimisation (transformers.TrainingArguments)")
    g.add_argument(
        "--epochs",
        type=parse_epochs,
        default="auto",
        help=f"number of epochs, or auto (default): ceil({AUTO_EPOCH_SEQUENCES:,} / training "
        f"windows), clipped to {AUTO_EPOCHS_MIN}..{AUTO_EPOCHS_MAX}; early stopping may end sooner",
    )
    g.add_argument(
        "--calibration",
        choices=["platt", "none"],
        default="platt",
        help="after training, fit Platt scaling of the logits on the validation data (held-out "
        "learners, or with --validation time the held-out continuations) and fold it into the "
        "model config / exported graph (default platt; needs validation data)",
    )
    g.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this many optimizer steps (overrides --epochs)",
    )
    g.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="peak learning rate (default: 1e-2 for logistic, 1e-3 for the others)",
    )
    g.add_argument(
        "--warmup-steps",
        type=float,
        default=0.05,
        help="int >= 1: steps; float < 1: ratio of total steps",
    )
    g.add_argument("--lr-scheduler", choices=sorted(SCHEDULERS), default="noam")
    g.add_argument(
        "--weight-decay",
        type=float,
        default=0.1,
        help="AdamW weight decay (not on biases/LayerNorm); also shrinks rare questions' embeddings",
    )
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--eval-batch-size", type=int, default=None)
    g.add_argument("--gradient-accumulation-steps", type=int, default=1)
    g.add_argument("--max-grad-norm", type=float, default=1.0)
    g.add_argument("--eval-strategy", choices=["no", "steps", "epoch"], default="epoch")
    g.add_argument("--eval-steps", type=int, default=None)
    g.add_argument("--save-strategy", choices=["no", "steps", "epoch", "best"], default="epoch")
    g.add_argument("--save-steps", type=int, default=500)
    g.add_argument("--save-total-limit", type=int, default=2)
    g.add_argument(
        "--load-best-model-at-end",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the checkpoint with the best validation AUC (default on)",
    )
    g.add_argument(
        "--early-stopping-patience",
        type=int,
        default=5,
        help="evaluations without AUC improvement before stopping (0 = off)",
    )
    g.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision")
    g.add_argument("--use-cpu", action="store_true", help="train on CPU even if CUDA is available")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--resume-from-checkpoint",
        default=None,
        help="path of a checkpoint-N dir (or 'true' for the latest in the output dir)",
    )
    g.add_argument("--report-to", default="tensorboard", help="tensorboard (default), none, ...")
    g.add_argument("--logging-steps", type=int, default=20)
    g.add_argument("--dataloader-num-workers", type=int, default=0)
    g.add_argument("--no-progress", action="store_true", help="disable progress bars")


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument(
        "--train-file",
        required=True,
        help="Riiid train.csv, an EdNet-KT1 folder of u*.csv, a CSV/Parquet log (--columns) or a "
        "DKT/AKT/pyKT sequence file (docs/data.md)",
    )
    g.add_argument(
        "--questions-file",
        default=None,
        help="questions.csv (Riiid or EdNet contents/): required for those two formats; optional "
        "for tables and sequence files (then the vocabulary and skills come from the log)",
    )
    add_format_flags(g)
    g.add_argument(
        "--validation",
        choices=["learner", "time", "none"],
        default="learner",
        help="hold out learners, or the end of each learner's history (default learner; time "
        "calibrates better when the served learners continue the training learners: "
        "docs/benchmarks.md)",
    )
    g.add_argument("--valid-fraction", type=float, default=0.1)
    g.add_argument(
        "--window-augmentation",
        choices=["shift", "none"],
        default="none",
        help="shift: every epoch, move each training window by a random offset of up to half a "
        "stride (more contexts per item); none: fixed windows (default none)",
    )
    g.add_argument(
        "--cache-dir",
        default=None,
        help="cache preprocessed data here (reused when the file is unchanged)",
    )


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--model", choices=sorted(MODEL_REGISTRY), default="saint_plus")
    g.add_argument("--d-model", type=int, default=128)
    g.add_argument("--layers", type=int, default=2)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--seq-len", type=int, default=100, help="history window (interactions)")
    g.add_argument("--dropout", type=float, default=0.3)
    g.add_argument("--time-encoding", choices=["bucket", "continuous", "both"], default="both")
    add_architecture_flags(g)


def add_architecture_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """What every registry model reads besides its size (shared by training.train and distill)."""
    parser.add_argument(
        "--question-residual",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="a free per-question vector on top of the part/tag (content) item embedding (default "
        "off: it overfits small logs; chosen on validation learners, docs/benchmarks.md)",
    )
    parser.add_argument(
        "--stats",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="feed the learner statistics (counts, accuracies, recency; earlier bundles only) (default on)",
    )
    parser.add_argument(
        "--lecture-stats",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add the lectures watched before each answer to the statistics (count, per part, per "
        "tag, time since; all zero where a log has no lectures) (default on)",
    )
    parser.add_argument(
        "--attention-decay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="SAINT/SAINT+: attention favours recent bundles (learned per-head slope) (default on)",
    )
    parser.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help="SAINT/SAINT+: dropout on the attention weights (default: --dropout's value); 0 lets "
        "training use the fused attention kernel (~20%% faster steps on CPU, weaker regularisation)",
    )
    parser.add_argument(
        "--irt-prior",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="logit = IRT-style prior (statistics vs item difficulty) + the network's correction (default on)",
    )


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("train_file", "questions_file"):
        if getattr(args, name) is not None and not Path(getattr(args, name)).exists():
            parser.error(f"--{name.replace('_', '-')}: {getattr(args, name)} does not exist")
    checks = [
        (args.seq_len >= 2, "--seq-len must be >= 2"),
        (
            args.d_model > 0 and args.layers > 0 and args.heads > 0,
            "--d-model, --layers and --heads must be positive",
        ),
        (0.0 <= args.dropout < 1.0, "--dropout must be in [0, 1)"),
        (
            args.attention_dropout is None or 0.0 <= args.attention_dropout < 1.0,
            "--attention-dropout must be in [0, 1)",
        ),
        (0.0 <= args.valid_fraction < 1.0, "--valid-fraction must be in [0, 1)"),
        (args.batch_size > 0, "--batch-size must be positive"),
        (args.learning_rate is None or args.learning_rate > 0, "--learning-rate must be positive"),
        (args.max_steps is None or args.max_steps > 0, "--max-steps must be positive"),
        (args.warmup_steps >= 0, "--warmup-steps must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    if args.learning_rate is None:
        args.learning_rate = DEFAULT_LEARNING_RATES.get(args.model, 1e-3)
    if args.resume_from_checkpoint == "true":
        args.resume_from_checkpoint = True


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE.json",
        help='a whole run\'s flags as one JSON object ({"model": "dkt", "epochs": 10, ...}: keys '
        "are flag names, with - or _); flags given on the command line win",
    )


def _config_value(
    parser: argparse.ArgumentParser, action: argparse.Action, key: str, value: object
) -> object:
    """A JSON value for `action`, converted and checked as the command line would be."""
    where = f"--config: {key!r}"
    if isinstance(action, argparse.BooleanOptionalAction | argparse._StoreTrueAction):
        if not isinstance(value, bool):
            parser.error(f"{where} must be true or false, got {value!r}")
        return value
    if value is None:
        return None
    if action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_convert(parser, action, where, v) for v in items]
    return _convert(parser, action, where, value)


def _convert(
    parser: argparse.ArgumentParser, action: argparse.Action, where: str, value: object
) -> object:
    if isinstance(value, bool | list | dict):
        parser.error(f"{where} must be a single value, got {value!r}")
    converted: object = value
    if callable(action.type):
        try:
            converted = action.type(str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            parser.error(f"{where}: {exc}")
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        parser.error(f"{where} must be one of {choices}, got {value!r}")
    return converted


def parse_with_config(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> argparse.Namespace:
    """`parser.parse_args(argv)`, with the defaults first taken from `--config FILE.json`."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        path = Path(known.config)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            parser.error(f"--config: {path}: {exc.strerror or exc}")
        except json.JSONDecodeError as exc:
            parser.error(f"--config: {path}:{exc.lineno}:{exc.colno}: {exc.msg}")
        if not isinstance(data, dict):
            parser.error(f"--config: {path}: expected a JSON object of flag names")
        actions = {a.dest: a for a in parser._actions if a.option_strings}
        defaults = {}
        for key, value in data.items():
            dest = str(key).lstrip("-").replace("-", "_")
            if dest not in actions or dest in ("help", "config"):
                parser.error(f"--config: {path}: unknown flag {key!r}")
            defaults[dest] = _config_value(parser, actions[dest], key, value)
            actions[dest].required = False  # given by the file
        parser.set_defaults(**defaults)
    return parser.parse_args(argv)

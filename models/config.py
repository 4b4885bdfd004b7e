"""Model configuration: one dataclass for every registry model, validated, round-tripping through JSON.

No torch here: the service reads `config.json` from the serving artifact with this module. The
vocabulary sizes come from the feature spec (`config_for_spec`), so the embedding tables always
match the encoding of `models.features`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from models.feature_spec import LECTURE_STAT_NAMES, N_STATS

TIME_ENCODINGS: tuple[str, ...] = ("bucket", "continuous", "both")

# Defaults mirror `models.feature_spec.FeatureSpec()` (35 lag edges + 2, 25 elapsed edges + 2).
_DEFAULT_LAG_BUCKETS = 37
_DEFAULT_ELAPSED_BUCKETS = 27


@dataclass
class ModelConfig:
    """Hyperparameters of one model; `name` picks the builder in `models.registry.MODEL_REGISTRY`."""

    name: str = "saint_plus"  # registry key: saint | saint_plus | dkt | logistic
    n_questions: int = (
        2  # question vocabulary size incl. pad (0) and unknown (1) = QuestionVocab.size
    )
    n_parts: int = 9  # encoded part vocabulary size incl. pad (FeatureSpec.n_parts)
    n_tags: int = 1  # encoded tag vocabulary size incl. 0 = no tag (FeatureSpec.n_tags)
    n_lag_buckets: int = _DEFAULT_LAG_BUCKETS  # FeatureSpec.n_lag_buckets (incl. 0 = unknown)
    n_elapsed_buckets: int = _DEFAULT_ELAPSED_BUCKETS  # FeatureSpec.n_elapsed_buckets
    seq_len: int = 100  # = FeatureSpec.window; size of the position table (positions are < window)
    d_model: int = 128  # width of every embedding / hidden state (DKT: LSTM hidden size)
    n_layers: int = 2  # decoder layers (and encoder layers, see below) (SAINT); LSTM layers (DKT)
    n_heads: int = 4  # attention heads; d_model must be divisible by it
    # SAINT: encoder layers (None = n_layers). 0: the exercise stream is the sum of its embeddings,
    # with no attention (the lean student: fewer graph nodes, which is what latency costs at B=1).
    encoder_layers: int | None = None
    # SAINT decoder: cross-attention to the encoder output under the exercise mask; off: response
    # attention + FFN only.
    cross_attention: bool = True
    ffn_mult: int = 4  # FFN hidden width = ffn_mult * d_model (DKT: MLP head width multiplier)
    dropout: float = 0.1  # dropout on embeddings and residual branches
    # dropout on the attention weights (B, H, T, S); None = `dropout`. 0 lets training use the fused
    # attention kernel (~20 % faster steps on CPU) but regularises less (docs/benchmarks.md).
    attention_dropout: float | None = None
    time_encoding: str = (
        "both"  # SAINT+ lag/elapsed: "bucket" embedding, "continuous" Linear(1, D), or both
    )
    use_explanation: bool = (
        True  # SAINT+: add the Riiid explanation-flag embedding to the response side
    )
    # Item representation (models.layers.ItemEmbedding): part + mean of tag embeddings + a learned
    # scalar difficulty x a variation vector (AKT's Rasch embedding); question_residual adds a free
    # per-question vector (zero-initialised, weight-decayed) on top of that content representation.
    question_residual: bool = False
    use_stats: bool = True  # read the learner statistics (models.feature_spec.STAT_NAMES)
    # width of the statistics input = FeatureSpec.n_stats (a config written before the lecture
    # statistics has no such key and loads as N_STATS, the answer statistics only)
    n_stats: int = N_STATS + len(LECTURE_STAT_NAMES)
    # Residual design: logit = IRT-style prior (stats . w - item difficulty) + the network's output.
    irt_prior: bool = True
    # SAINT: attention scores minus a learned per-head slope x bundles back (ALiBi-style recency)
    attention_decay: bool = True
    # Platt calibration, fitted on validation learners after training (training.calibration):
    # served logit = calibration_scale * model logit + calibration_bias, folded into the ONNX graph.
    # (1, 0) = uncalibrated. Not used in training: the model's own forward returns raw logits.
    calibration_scale: float = 1.0
    calibration_bias: float = 0.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.name, str) or not self.name:
            problems.append(f"name must be a non-empty string, got {self.name!r}")
        int_minimums = {
            "n_questions": 2,
            "n_parts": 2,
            "n_tags": 1,
            "n_lag_buckets": 2,
            "n_elapsed_buckets": 2,
            "n_stats": 1,
            "seq_len": 2,
            "d_model": 1,
            "n_layers": 1,
            "n_heads": 1,
            "ffn_mult": 1,
        }
        for key, minimum in int_minimums.items():
            value = getattr(self, key)
            # bool is an int subclass; `"d_model": true` in a JSON file is a mistake, not 1.
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{key} must be an integer, got {value!r}")
            elif value < minimum:
                problems.append(f"{key} must be >= {minimum}, got {value}")
        if (
            isinstance(self.d_model, int)
            and isinstance(self.n_heads, int)
            and self.n_heads > 0
            and self.d_model % self.n_heads != 0
        ):
            problems.append(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.encoder_layers is not None and (
            not isinstance(self.encoder_layers, int)
            or isinstance(self.encoder_layers, bool)
            or self.encoder_layers < 0
        ):
            problems.append(
                f"encoder_layers must be null or an integer >= 0, got {self.encoder_layers!r}"
            )
        if self.attention_dropout is None:
            self.attention_dropout = self.dropout
        for key in ("dropout", "attention_dropout"):
            value = getattr(self, key)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not 0.0 <= float(value) < 1.0
            ):
                problems.append(f"{key} must be a number in [0, 1), got {value!r}")
        if self.time_encoding not in TIME_ENCODINGS:
            problems.append(
                f"time_encoding must be one of {', '.join(TIME_ENCODINGS)}, got {self.time_encoding!r}"
            )
        for key in (
            "use_explanation",
            "question_residual",
            "use_stats",
            "irt_prior",
            "attention_decay",
            "cross_attention",
        ):
            if not isinstance(getattr(self, key), bool):
                problems.append(f"{key} must be true or false, got {getattr(self, key)!r}")
        for key in ("calibration_scale", "calibration_bias"):
            value = getattr(self, key)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
            ):
                problems.append(f"{key} must be a finite number, got {value!r}")
        if isinstance(self.calibration_scale, int | float) and not self.calibration_scale > 0:
            problems.append(
                f"calibration_scale must be > 0 (it must not invert the ranking), "
                f"got {self.calibration_scale!r}"
            )
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))
        self.dropout = float(self.dropout)
        self.attention_dropout = float(self.attention_dropout)
        self.calibration_scale = float(self.calibration_scale)
        self.calibration_bias = float(self.calibration_bias)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_encoder_layers(self) -> int:
        """SAINT's encoder depth: `encoder_layers`, or `n_layers` when unset."""
        return self.n_layers if self.encoder_layers is None else self.encoder_layers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown model config key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**{"n_stats": N_STATS, **data})

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ValueError(f"{path}: model config not found") from exc
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc


def config_for_spec(name: str, spec: Any, vocab: Any = None, **overrides: Any) -> ModelConfig:
    """A config whose vocabulary sizes and sequence length match a `models.feature_spec.FeatureSpec`.

    `vocab` (a `QuestionVocab`) wins over `spec.n_questions` / `spec.n_parts` when it is larger, so
    every index the encoding can produce has an embedding row. `overrides` set the model-size fields.
    """
    n_questions = int(spec.n_questions)
    n_parts = int(spec.n_parts)
    n_tags = int(getattr(spec, "n_tags", 1))
    if vocab is not None:
        n_questions = max(n_questions, int(vocab.size))
        n_parts = max(n_parts, int(vocab.n_parts))
        n_tags = max(n_tags, int(vocab.n_tags))
    base: dict[str, Any] = {
        "name": name,
        "n_questions": n_questions,
        "n_parts": n_parts,
        "n_tags": n_tags,
        "n_lag_buckets": int(spec.n_lag_buckets),
        "n_elapsed_buckets": int(spec.n_elapsed_buckets),
        "n_stats": int(getattr(spec, "n_stats", N_STATS)),
        "seq_len": int(spec.window),
    }
    base.update(overrides)
    return ModelConfig.from_dict(base)

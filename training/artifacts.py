"""The torch model directory: what `training.train` writes and `training.export` / distill read.

<dir>/config.json         models.config.ModelConfig
<dir>/model.safetensors   weights (safetensors: no pickle, loads without running code)
<dir>/feature_spec.json   models.feature_spec.save_spec (window, caps, vocabulary, question -> part)
<dir>/metrics.json        optional; `data_fingerprint` and evaluation metrics, copied into the
                          serving artifact's manifest by `training.export`
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from models.config import ModelConfig
from models.feature_spec import FeatureSpec, load_spec, save_spec
from models.registry import build_model
from models.vocab import QuestionVocab

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "feature_spec.json"
METRICS_FILE = "metrics.json"


def check_compatible(config: ModelConfig, spec: FeatureSpec, vocab: QuestionVocab) -> None:
    """ValueError unless every index the encoding can produce has an embedding row."""
    problems = []
    if config.seq_len < spec.window:
        problems.append(f"seq_len {config.seq_len} < feature window {spec.window}")
    if config.n_questions < max(vocab.size, spec.n_questions):
        problems.append(f"n_questions {config.n_questions} < vocabulary size {vocab.size}")
    if config.n_parts < max(vocab.n_parts, spec.n_parts):
        problems.append(f"n_parts {config.n_parts} < {max(vocab.n_parts, spec.n_parts)}")
    if config.n_tags < max(vocab.n_tags, spec.n_tags):
        problems.append(
            f"n_tags {config.n_tags} < tag vocabulary size {max(vocab.n_tags, spec.n_tags)}"
        )
    if config.n_lag_buckets < spec.n_lag_buckets:
        problems.append(f"n_lag_buckets {config.n_lag_buckets} < {spec.n_lag_buckets}")
    if config.n_elapsed_buckets < spec.n_elapsed_buckets:
        problems.append(f"n_elapsed_buckets {config.n_elapsed_buckets} < {spec.n_elapsed_buckets}")
    if problems:
        raise ValueError("model config does not match the feature spec: " + "; ".join(problems))


def save_model_dir(
    out_dir: str | Path,
    model: nn.Module,
    config: ModelConfig,
    spec: FeatureSpec,
    vocab: QuestionVocab,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write config.json, model.safetensors, feature_spec.json (+ metrics.json) into `out_dir`."""
    check_compatible(config, spec, vocab)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.to_json(out / CONFIG_FILE)
    # save_model (not save_file) de-duplicates shared tensors instead of failing on them.
    save_model(model, str(out / WEIGHTS_FILE), metadata={"model": config.name})
    save_spec(out / SPEC_FILE, spec, vocab)
    if metrics is not None:
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    logger.info("saved %s model to %s", config.name, out)
    return out


def load_model_dir(
    model_dir: str | Path,
) -> tuple[nn.Module, ModelConfig, FeatureSpec, QuestionVocab]:
    """(model in eval mode on CPU, config, spec, vocab) from a directory written by `save_model_dir`."""
    path = Path(model_dir)
    if not path.is_dir():
        raise ValueError(f"{path}: model directory not found")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, SPEC_FILE) if not (path / f).is_file()]
    if missing:
        raise ValueError(f"{path}: not a model directory (missing {', '.join(missing)})")
    config = ModelConfig.from_json(path / CONFIG_FILE)
    spec, vocab = load_spec(path / SPEC_FILE)
    check_compatible(config, spec, vocab)
    model = build_model(config)
    try:
        missing_keys, unexpected = load_model(model, str(path / WEIGHTS_FILE), strict=False)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(f"{path / WEIGHTS_FILE}: cannot load weights ({exc})") from exc
    if missing_keys or unexpected:
        raise ValueError(
            f"{path / WEIGHTS_FILE}: weights do not match config {config.name!r} "
            f"(missing: {sorted(missing_keys)[:5]}, unexpected: {sorted(unexpected)[:5]})"
        )
    return model.eval(), config, spec, vocab


def load_metrics(model_dir: str | Path) -> dict[str, Any] | None:
    """metrics.json of a model directory, or None if absent."""
    path = Path(model_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data

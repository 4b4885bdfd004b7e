"""`python -m training.train`: train a registry model with `transformers.Trainer`.

Data: a Riiid CSV (or an EdNet-KT1 folder) + its questions table, split by learner or by time
within learner for validation. Output dir: `config.json`, `model.safetensors`, `feature_spec.json`,
`metrics.json`, `training_curves.png` (+ Trainer checkpoints under `checkpoints/`).
Runs under `torchrun --nproc_per_node 2 -m training.train ...` (DDP; gloo on CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import torch

from training.cli import OneLineArgumentParser
from training.data import DataError
from training.flags import (
    add_config_flag,
    add_data_flags,
    add_model_flags,
    add_training_flags,
    parse_with_config,
    validate_args,
)
from training.trainer import run_training

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m training.train",
        description="Train a knowledge-tracing model (saint, saint_plus, dkt, logistic) with transformers.Trainer.",
    )
    add_data_flags(parser)
    add_model_flags(parser)
    parser.add_argument(
        "--output-dir",
        required=True,
        help="model dir to write (config.json, model.safetensors, ...)",
    )
    add_training_flags(parser)
    add_config_flag(parser)
    return parser


def _shutdown_distributed() -> None:
    """Under torchrun: wait for rank 0 to finish writing, then tear the process group down
    (a rank that exits while gloo threads still run aborts with 'terminate called')."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = build_parser()
    args = parse_with_config(parser, argv)
    validate_args(parser, args)
    try:
        metrics = run_training(args)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        _shutdown_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m training.train`: train a registry model with `transformers.Trainer`.

Data: a Riiid CSV (or an EdNet-KT1 folder) + its questions table, split by learner or by time
within learner for validation. Output dir: `config.json`, `model.safetensors`, `feature_spec.json`,
`metrics.json`, `training_curves.png` (+ Trainer checkpoints under `checkpoints/`).
Runs under `torchrun --nproc_per_node 2 -m training.train ...` (DDP; gloo on CPU).
"""

from __future__ import annotations

import json
import logging
import os
import sys

import torch

from training.arguments import (
    ArchitectureArguments,
    DataArguments,
    ModelArguments,
    OptimizationArguments,
    TrainRun,
)
from training.cli import DataclassArgumentParser
from training.data import DataError, LogArguments
from training.trainer import run_training

logger = logging.getLogger(__name__)


def build_parser() -> DataclassArgumentParser:
    return DataclassArgumentParser(
        [DataArguments, LogArguments, ModelArguments, ArchitectureArguments, OptimizationArguments],
        prog="python -m training.train",
        description="Train a knowledge-tracing model (saint, saint_plus, dkt, logistic) with "
        "transformers.Trainer.",
    )


def parse(argv: list[str] | None) -> TrainRun:
    """The run of a command line (flags checked; the data files must exist)."""
    parser = build_parser()
    data, log, model, arch, optim = parser.parse(argv)
    try:
        data.check_files()
        log.check_files()
    except ValueError as exc:
        parser.error(str(exc))
    return TrainRun(data, log, model, arch, optim)


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
    run = parse(argv)
    try:
        metrics = run_training(run)
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

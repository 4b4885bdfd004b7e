"""The simulator's files: a `training.simulate.SimulatedData` as train.csv, questions.csv and
lectures.csv in the Riiid schemas (and its formatting: floats, empty cells, booleans), plus
truth.csv (`row_id,p_correct,p_history_only`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # training.simulate imports this module
    from training.simulate import SimulatedData

logger = logging.getLogger(__name__)

TRAIN_COLUMNS = (
    "row_id",
    "timestamp",
    "user_id",
    "content_id",
    "content_type_id",
    "task_container_id",
    "user_answer",
    "answered_correctly",
    "prior_question_elapsed_time",
    "prior_question_had_explanation",
)
QUESTION_COLUMNS = ("question_id", "bundle_id", "correct_answer", "part", "tags")
LECTURE_COLUMNS = ("lecture_id", "tag", "part", "type_of")
Formatter = Callable[[np.ndarray], list[str]]
WRITE_BLOCK_ROWS = 100_000  # rows formatted at a time: memory stays flat for any size


def _int_strings(a: np.ndarray) -> list[str]:
    return a.astype(np.int64).astype(str).tolist()


def _float_or_empty(a: np.ndarray) -> list[str]:
    """Riiid writes elapsed times as floats ('27333.0'); NaN -> empty."""
    text = np.char.add(np.nan_to_num(a).astype(np.int64).astype(str), ".0")
    return np.where(np.isnan(a), "", text).tolist()


def _bool_or_empty(a: np.ndarray) -> list[str]:
    return np.array(["", "False", "True"])[a.astype(np.int64) + 1].tolist()


def _float_repr(a: np.ndarray) -> list[str]:
    return [repr(x) for x in a.tolist()]  # shortest round-trip form


def _strings(a: np.ndarray) -> list[str]:
    return [str(x) for x in a.tolist()]


def _write_csv(path: Path, columns: dict[str, tuple[np.ndarray, Formatter]]) -> None:
    n = len(next(iter(columns.values()))[0])
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(",".join(columns) + "\n")
        for lo in range(0, n, WRITE_BLOCK_ROWS):
            cols = [fmt(a[lo : lo + WRITE_BLOCK_ROWS]) for a, fmt in columns.values()]
            f.write("".join(",".join(row) + "\n" for row in zip(*cols, strict=True)))


def _csv_columns(sim: SimulatedData) -> dict[str, dict[str, tuple[np.ndarray, Formatter]]]:
    """File name -> column name -> (values, formatter), in Riiid column order."""
    special: dict[str, Formatter] = {
        "prior_question_elapsed_time": _float_or_empty,
        "prior_question_had_explanation": _bool_or_empty,
        "tags": _strings,
        "type_of": _strings,
    }
    tables = {"train.csv": sim.train, "questions.csv": sim.questions, "lectures.csv": sim.lectures}
    files = {
        name: {c: (table[c], special.get(c, _int_strings)) for c in table}
        for name, table in tables.items()
    }
    is_q = sim.question_rows
    files["truth.csv"] = {
        "row_id": (sim.train["row_id"][is_q], _int_strings),
        "p_correct": (sim.p_correct[is_q], _float_repr),
        "p_history_only": (sim.p_history_only[is_q], _float_repr),
    }
    return files


def write(sim: SimulatedData, out_dir: str | Path) -> list[Path]:
    """Write train.csv, questions.csv, lectures.csv and truth.csv into ``out_dir`` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, columns in _csv_columns(sim).items():
        _write_csv(out / name, columns)
        paths.append(out / name)
    logger.info("wrote %s", ", ".join(map(str, paths)))
    return paths

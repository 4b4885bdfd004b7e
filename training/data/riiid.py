"""Riiid format: `train.csv` (+ `questions.csv`, optional `lectures.csv`) -> `Interactions`.

Riiid's `prior_question_elapsed_time` / `prior_question_had_explanation` describe the learner's
*previous* question bundle; assembly shifts them back, so `elapsed_ms[r]` / `explanation[r]` are
the outcome of row r's own bundle (unknown for each learner's last bundle). Built for the full
data (101M rows / 5.5 GB): the CSV is streamed with pyarrow into preallocated typed columns.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from training.data.assemble import (
    Raw,
    assemble,
    cached,
    check_policy,
    file_key,
    first_null,
    to_numpy,
)
from training.data.interactions import DataError, Interactions
from training.data.locate import header_index, line_of_record, raise_bad_cell, read_header
from training.data.questions import load_lectures, load_questions

logger = logging.getLogger(__name__)

_BLOCK_SIZE = (
    1 << 20
)  # pyarrow read block (bytes), ~20k Riiid rows; larger blocks raise peak RSS (read-ahead)

# range-checked before narrowing, so out-of-range codes get a readable message.
RIIID_TYPES: dict[str, pa.DataType] = {
    "row_id": pa.int64(),
    "timestamp": pa.int64(),
    "user_id": pa.int64(),
    "content_id": pa.int32(),
    "content_type_id": pa.int32(),
    "task_container_id": pa.int32(),
    "answered_correctly": pa.int32(),
    "prior_question_elapsed_time": pa.float32(),
    "prior_question_had_explanation": pa.bool_(),
}
RIIID_REQUIRED = (
    "timestamp",
    "user_id",
    "content_id",
    "content_type_id",
    "task_container_id",
    "answered_correctly",
)


def _riiid_batches(path: Path, header: list[str]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(first record index, batch) over the file; conversion errors become DataError."""
    names = [c for c in header if c in RIIID_TYPES]
    read = pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=_BLOCK_SIZE)
    convert = pacsv.ConvertOptions(
        column_types={c: RIIID_TYPES[c] for c in names}, include_columns=names, null_values=[""]
    )
    done = 0
    try:
        reader = pacsv.open_csv(path, read_options=read, convert_options=convert)
        for batch in reader:
            yield done, batch
            done += batch.num_rows
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise_bad_cell(path, header, RIIID_TYPES, RIIID_REQUIRED, str(exc))


def _check_riiid_batch(path: Path, batch: pa.RecordBatch, start: int) -> None:
    """Required values present; codes in range. Raises DataError at the exact line."""
    for name in (*RIIID_REQUIRED, "row_id"):
        if name in batch.schema.names and batch.column(name).null_count:
            raise DataError(
                path,
                line_of_record(path, start + first_null(batch.column(name))),
                name,
                "missing value",
            )
    ctype = batch.column("content_type_id").to_numpy()
    bad = np.flatnonzero((ctype != 0) & (ctype != 1))
    if bad.size:
        line = line_of_record(path, start + int(bad[0]))
        raise DataError(
            path,
            line,
            "content_type_id",
            f"must be 0 (question) or 1 (lecture), got {ctype[bad[0]]}",
        )
    ans = batch.column("answered_correctly").to_numpy()
    bad = np.flatnonzero((ans < -1) | (ans > 1) | ((ans == -1) & (ctype == 0)))
    if bad.size:
        line = line_of_record(path, start + int(bad[0]))
        what = "-1 on a question row (content_type_id 0)" if ans[bad[0]] == -1 else str(ans[bad[0]])
        raise DataError(
            path,
            line,
            "answered_correctly",
            f"must be in {{-1, 0, 1}} (0/1 for questions), got {what}",
        )


# numpy dtype of each Riiid column as stored
_RIIID_DTYPES: dict[str, Any] = {
    "row_id": np.int64,
    "timestamp": np.int64,
    "user_id": np.int64,
    "content_id": np.int32,
    "content_type_id": np.bool_,
    "task_container_id": np.int32,
    "answered_correctly": np.int8,
    "prior_question_elapsed_time": np.float32,
    "prior_question_had_explanation": np.int8,
}


class _Column:
    """A preallocated output column filled batch by batch (no chunk list + concatenate peak).

    Capacity beyond what is written is never touched, so an over-estimate costs address space,
    not memory; `finish` shrinks the array in place.
    """

    def __init__(self, dtype: Any, capacity: int) -> None:
        self.data = np.empty(capacity, dtype=dtype)
        self.n = 0

    def append(self, values: np.ndarray) -> None:
        end = self.n + len(values)
        if end > len(self.data):
            grown = np.empty(max(end, int(len(self.data) * 1.25) + 1024), dtype=self.data.dtype)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : end] = values
        self.n = end

    def finish(self) -> np.ndarray:
        self.data.resize(self.n, refcheck=False)
        return self.data


def _estimate_rows(path: Path) -> int:
    """Rows in a CSV from its size and the line lengths at its start, middle and end (+10%)."""
    size = path.stat().st_size
    sample_len, lines = 0, 0
    with open(path, "rb") as f:
        for pos in (0, size // 2, max(size - (1 << 18), 0)):
            f.seek(pos)
            chunk = f.read(1 << 18)
            sample_len += len(chunk)
            lines += chunk.count(b"\n")
    return int(size / max(sample_len / max(lines, 1), 1) * 1.1) + 1024


def _read_riiid(path: Path) -> Raw:
    header = read_header(path)
    header_index(path, header, RIIID_REQUIRED)
    capacity = _estimate_rows(path)
    cols = {name: _Column(_RIIID_DTYPES[name], capacity) for name in header if name in RIIID_TYPES}
    n = 0
    for start, batch in _riiid_batches(path, header):
        _check_riiid_batch(path, batch, start)
        n += batch.num_rows
        for name in batch.schema.names:
            cols[name].append(_riiid_column(batch.column(name), name))
    if n == 0:
        raise DataError(path, 2, None, "no data rows (header only)")
    out = {name: col.finish() for name, col in cols.items()}
    return Raw(
        user=out["user_id"],
        timestamp=out["timestamp"],
        content_id=out["content_id"],
        is_lecture=out["content_type_id"],
        container=out["task_container_id"],
        correct=out["answered_correctly"],
        elapsed=out["prior_question_elapsed_time"]
        if "prior_question_elapsed_time" in out
        else np.full(n, np.nan, np.float32),
        explanation=out["prior_question_had_explanation"]
        if "prior_question_had_explanation" in out
        else np.full(n, -1, np.int8),
        row_id=out["row_id"] if "row_id" in out else np.arange(n, dtype=np.int64),
    )


def _riiid_column(column: pa.Array, name: str) -> np.ndarray:
    if name == "prior_question_had_explanation":
        return to_numpy(pc.cast(column, pa.int8()), np.int8, -1)
    if name == "prior_question_elapsed_time":
        return to_numpy(column, np.float32, np.nan)
    if name == "content_type_id":
        return column.to_numpy().astype(np.bool_)
    if name == "answered_correctly":
        return column.to_numpy().astype(np.int8)
    return column.to_numpy()


def load_riiid(
    train_csv: Path,
    questions_csv: Path,
    lectures_csv: Path | None = None,
    *,
    strict: bool = False,
    cache_dir: Path | None = None,
    duplicates: str = "first",
) -> Interactions:
    """Riiid train.csv (+ questions.csv, optional lectures.csv) -> Interactions.

    `duplicates`: what to do with exact duplicate rows (same user_id, timestamp, content_id and
    content_type_id): keep the "first" / "last" in file order, or raise ("error")."""
    check_policy(duplicates)
    train_csv, questions_csv = Path(train_csv), Path(questions_csv)
    beside = questions_csv.parent / "lectures.csv"
    if lectures_csv is None and beside.is_file():
        lectures_csv = beside  # the Riiid layout: lectures.csv next to questions.csv
        logger.info("reading lectures from %s (next to the questions file)", beside)
    for p in (train_csv, questions_csv, lectures_csv):
        if p is not None and not Path(p).is_file():
            raise DataError(p, 0, None, "no such file")
    inputs = [train_csv, questions_csv] + ([Path(lectures_csv)] if lectures_csv else [])
    key = [
        [file_key(p) for p in inputs],
        {
            "strict": strict,
            "lectures": lectures_csv is not None,
            "duplicates": duplicates,
        },
    ]

    def build() -> Interactions:
        vocab = load_questions(questions_csv)
        lectures = load_lectures(Path(lectures_csv)) if lectures_csv else None
        if lectures is not None:
            vocab = dataclasses.replace(
                vocab, lecture_ids=lectures[0], lecture_parts=lectures[1], lecture_tags=lectures[2]
            )
        raw = _read_riiid(train_csv)
        logger.info("read %d rows from %s", len(raw.user), train_csv)
        return assemble(
            raw,
            vocab,
            locate=lambda i: (train_csv, line_of_record(train_csv, i)),
            shift_prior=True,
            strict=strict,
            questions_path=questions_csv,
            lectures=None if lectures is None else lectures[:2],
            duplicates=duplicates,
        )

    return cached(cache_dir, "riiid", key, build)

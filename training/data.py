"""Dataset loaders: Riiid `train.csv` and EdNet-KT1 folders -> one per-learner `Interactions` table.

Both loaders produce the same internal representation: every learner's events (questions AND
lectures) in one CSR table of compact numpy columns, sorted per learner by (timestamp, container,
source order). Question ids are mapped to the contiguous indices of `models.features.QuestionVocab`
(0 pad, 1 unknown, 2.. known); `Interactions.history(i)` yields the `models.features.History` of
one learner, the type the shared encoding consumes.

Riiid's `prior_question_elapsed_time` / `prior_question_had_explanation` describe the learner's
*previous* question bundle; the loader shifts them back, so `elapsed_ms[r]` / `explanation[r]` are
the outcome of row r's own bundle (unknown for each learner's last bundle). Leakage control is then
the encoding's job: an item only ever sees these values for strictly earlier bundles.

Built for the full data (Riiid: 101M rows / 5.5 GB; EdNet-KT1: 131M rows in ~780k files): CSVs are
streamed with pyarrow into typed numpy chunks, never per-row Python objects. When the file is
already grouped by learner and time-ordered (the normal case), no permutation is materialised.
Learners keep the order of their first appearance in the file (EdNet: ascending learner id).

Malformed input raises `DataError` ("<file>:<line>:<column>: <problem>"). The fast path cannot
see line numbers, so when something is wrong the file is re-scanned with the `csv` module to
name the exact line; that slow scan only ever runs on the error path.

CLI: `python -m training.data --describe FILE [--questions Q] [--lectures L]`.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from models.features import (
    FIRST_QUESTION_INDEX,
    UNKNOWN_QUESTION,
    History,
    QuestionVocab,
    pad_tags,
)
from training.cli import OneLineArgumentParser

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the on-disk layout or the loader semantics change
_BLOCK_SIZE = (
    1 << 20
)  # pyarrow read block (bytes), ~20k Riiid rows; larger blocks raise peak RSS (read-ahead)
_MAP_CHUNK = 1 << 20  # rows per chunk when mapping ids (bounds temporary memory)
_EDNET_CHUNK_BYTES = 16 << 20  # EdNet: learner files are concatenated into chunks of this size
_TRUE = frozenset({"1", "True", "TRUE", "true"})  # pyarrow's default boolean spellings
_FALSE = frozenset({"0", "False", "FALSE", "false"})
_ANSWER_LETTERS = ("a", "b", "c", "d")

# Riiid train.csv: the columns we read, and their parse types. Small ints are parsed as int32 and
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
EDNET_TYPES: dict[str, pa.DataType] = {
    "timestamp": pa.int64(),
    "question_id": pa.dictionary(pa.int32(), pa.string()),
    "user_answer": pa.dictionary(pa.int32(), pa.string()),
    "elapsed_time": pa.float32(),
}
EDNET_REQUIRED = ("timestamp", "question_id", "user_answer")
_EDNET_FILE = re.compile(r"^u(\d+)\.csv$")


class DataError(ValueError):
    """Malformed input: "<file>:<line>:<column>: <problem>".

    `line` is the 1-based physical line of the file (the header is line 1; 0 = the file as a
    whole, e.g. it does not exist); `column` is a column name, or "-" when no column applies.
    """

    def __init__(self, path: Path | str, line: int, column: str | None, problem: str) -> None:
        self.path = str(path)
        self.line = int(line)
        self.column = column or "-"
        self.problem = problem
        super().__init__(f"{self.path}:{self.line}:{self.column}: {problem}")


# ----------------------------------------------------------------------------------------------
# The internal representation
# ----------------------------------------------------------------------------------------------

_ROW_FIELDS = (
    "question",
    "content_id",
    "is_lecture",
    "part",
    "correct",
    "bundle",
    "timestamp",
    "elapsed_ms",
    "explanation",
    "row_id",
)


@dataclass
class Interactions:
    """All learners, CSR layout: rows of learner i are offsets[i]:offsets[i+1], sorted by (timestamp, bundle, source order)."""

    user_ids: np.ndarray  # (U,) int64 raw learner ids
    offsets: np.ndarray  # (U+1,) int64
    question: (
        np.ndarray
    )  # (N,) int32 question index from vocab (0 for lecture rows, 1 = unknown question)
    content_id: np.ndarray  # (N,) int32 raw content id (question id or lecture id)
    is_lecture: np.ndarray  # (N,) bool
    part: np.ndarray  # (N,) int8 raw part (-1 unknown)
    correct: np.ndarray  # (N,) int8 0/1, -1 for lectures
    bundle: (
        np.ndarray
    )  # (N,) int32 raw container id (Riiid task_container_id, EdNet bundle_id or -1)
    timestamp: np.ndarray  # (N,) int64 ms
    elapsed_ms: np.ndarray  # (N,) float32 elapsed time of this interaction's bundle, NaN unknown
    explanation: np.ndarray  # (N,) int8 explanation flag of this interaction, -1 unknown
    row_id: np.ndarray  # (N,) int64 source row_id (Riiid) or running index
    vocab: QuestionVocab

    @property
    def n_learners(self) -> int:
        return len(self.user_ids)

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1]) if len(self.offsets) else 0

    def rows(self, i: int) -> slice:
        """Row range of learner i."""
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def history(self, i: int) -> History:
        """Learner i's question rows as a `History`; `bundle` is a per-learner ordinal (0, 0, 1, ...)."""
        rows = self.rows(i)
        keep = ~self.is_lecture[rows]
        timestamp = self.timestamp[rows][keep].astype(np.int64)
        container = self.bundle[rows][keep]
        change = (timestamp[1:] != timestamp[:-1]) | (container[1:] != container[:-1])
        ordinal = np.concatenate([np.zeros(min(len(timestamp), 1), np.int64), np.cumsum(change)])
        return History(
            question=self.question[rows][keep].astype(np.int64),
            correct=self.correct[rows][keep].astype(np.int8),
            timestamp=timestamp,
            bundle=ordinal.astype(np.int64),
            elapsed_ms=self.elapsed_ms[rows][keep].astype(np.float32),
            explanation=self.explanation[rows][keep].astype(np.int8),
        )

    def select(self, learner_indices: np.ndarray) -> Interactions:
        """The given learners (in the given order) as a new table."""
        idx = np.asarray(learner_indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_learners):
            raise IndexError(f"learner index out of range 0..{self.n_learners - 1}")
        return self.take_ranges(self.user_ids[idx], self.offsets[idx], self.offsets[idx + 1])

    def take_ranges(
        self, user_ids: np.ndarray, starts: np.ndarray, ends: np.ndarray
    ) -> Interactions:
        """A new table whose learner k holds rows starts[k]:ends[k] of this one."""
        starts = np.asarray(starts, dtype=np.int64)
        lengths = np.asarray(ends, dtype=np.int64) - starts
        offsets = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        rows = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        columns = {name: getattr(self, name)[rows] for name in _ROW_FIELDS}
        return Interactions(
            user_ids=np.asarray(user_ids, np.int64).copy(),
            offsets=offsets,
            vocab=self.vocab,
            **columns,
        )

    def save(self, path: Path) -> None:
        """Write a directory of .npy files (+ meta.json); replaced atomically."""
        path = Path(path)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in fields(self):
            if f.name != "vocab":
                np.save(tmp / f"{f.name}.npy", getattr(self, f.name), allow_pickle=False)
        np.save(tmp / "vocab_question_ids.npy", self.vocab.question_ids, allow_pickle=False)
        np.save(tmp / "vocab_parts.npy", self.vocab.parts, allow_pickle=False)
        np.save(tmp / "vocab_tags.npy", self.vocab.tags, allow_pickle=False)
        meta = {"format": CACHE_FORMAT, "n_learners": self.n_learners, "n_rows": self.n_rows}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, *, mmap: bool = False) -> Interactions:
        """Read a directory written by `save` (memory-mapped, read-only arrays if `mmap`)."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{path}: cache format {meta.get('format')}, expected {CACHE_FORMAT}")
        mode: Literal["r"] | None = "r" if mmap else None
        arrays = {
            f.name: np.load(path / f"{f.name}.npy", mmap_mode=mode, allow_pickle=False)
            for f in fields(cls)
            if f.name != "vocab"
        }
        vocab = QuestionVocab(
            np.load(path / "vocab_question_ids.npy"),
            np.load(path / "vocab_parts.npy"),
            np.load(path / "vocab_tags.npy"),
        )
        return cls(vocab=vocab, **arrays)


# ----------------------------------------------------------------------------------------------
# Question / lecture tables
# ----------------------------------------------------------------------------------------------


@dataclass
class QuestionTable:
    """questions.csv with what the loaders need beyond the vocabulary."""

    vocab: QuestionVocab
    bundle_id: np.ndarray  # (Q,) int64, aligned with vocab.question_ids; -1 unknown
    correct_answer: np.ndarray  # (Q,) int8 answer code 0..3 (a..d); -1 unknown


def _parse_id(text: str, prefix: str) -> int:
    """'123' or '<prefix>123' -> 123 (EdNet writes q123, b45, ...)."""
    text = text.strip()
    if text[:1] == prefix:
        text = text[1:]
    return int(text)


def _answer_code(text: str) -> int:
    """Answer 'a'..'d' or 0..3 -> 0..3; raises ValueError otherwise."""
    text = text.strip().lower()
    if text in _ANSWER_LETTERS:
        return _ANSWER_LETTERS.index(text)
    return int(text)


def _open_text(path: Path) -> io.TextIOWrapper:
    try:
        return open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - returned to caller
    except FileNotFoundError:
        raise DataError(path, 0, None, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, 0, None, "is a directory, expected a CSV file") from None


def utf8_error(path: Path) -> DataError:
    """The DataError for the first byte of `path` that is not UTF-8, naming its line and column.

    Only called once a decode has failed, so a slow line-by-line binary scan is fine (a UTF-8
    multi-byte sequence never contains a newline byte, so lines can be decoded one by one)."""
    header: list[str] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                field = raw[: exc.start].count(b",")  # ignores quoting: good enough to point at
                column = header[field] if number > 1 and field < len(header) else None
                return DataError(
                    path, number, column, f"not UTF-8 text (byte {raw[exc.start]:#04x})"
                )
            if number == 1:
                header = [c.strip() for c in text.lstrip("\ufeff").rstrip("\r\n").split(",")]
    return DataError(path, 0, None, "not a UTF-8 text file")


def _header_index(path: Path, header: list[str], required: Sequence[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in index:
            raise DataError(path, 1, name, f"duplicate column '{name}' in the header")
        index[name] = i
    for name in required:
        if name not in index:
            raise DataError(
                path, 1, name, f"missing required column '{name}' (header: {','.join(header)})"
            )
    return index


def read_question_table(path: Path) -> QuestionTable:
    """Riiid questions.csv (question_id, bundle_id, correct_answer 0-3, part, tags) or EdNet
    contents/questions.csv (question_id q123, bundle_id b45, correct_answer a-d, part, ...)."""
    path = Path(path)
    header = _read_header(path)
    col = _header_index(path, header, ("question_id", "part"))
    ids: list[int] = []
    parts: list[int] = []
    bundles: list[int] = []
    answers: list[int] = []
    tags: list[list[int]] = []
    lines: list[int] = []  # physical line of each row (blank lines are skipped, not counted)
    for line, record in _records(path):
        if len(record) != len(header):
            raise DataError(path, line, None, f"expected {len(header)} fields, got {len(record)}")
        ids.append(_table_int(path, line, record, col, "question_id", "q"))
        part = _table_int(path, line, record, col, "part", "")
        if part < 0:
            raise DataError(path, line, "part", f"part must be >= 0, got {part}")
        parts.append(part)
        bundles.append(_table_int(path, line, record, col, "bundle_id", "b", default=-1))
        answers.append(_table_answer(path, line, record, col))
        tags.append(_table_tags(path, line, record, col))
        lines.append(line)
    if not ids:
        raise DataError(path, 2, None, "no data rows (header only)")
    return _question_table(path, ids, parts, bundles, answers, lines, tags)


def _table_tags(path: Path, line: int, record: list[str], col: dict[str, int]) -> list[int]:
    """The `tags` cell: integer tag ids separated by spaces (Riiid) or ';' (EdNet); empty = none."""
    if "tags" not in col:
        return []
    text = record[col["tags"]].replace(";", " ").split()
    try:
        return [int(t) for t in text]
    except ValueError:
        raise DataError(
            path, line, "tags", f"tags must be integer ids, got {record[col['tags']]!r}"
        ) from None


def _table_int(
    path: Path,
    line: int,
    record: list[str],
    col: dict[str, int],
    name: str,
    prefix: str,
    default: int | None = None,
) -> int:
    if name not in col or (default is not None and not record[col[name]].strip()):
        return -1 if default is None else default
    try:
        return _parse_id(record[col[name]], prefix)
    except ValueError:
        raise DataError(path, line, name, f"not an integer id: {record[col[name]]!r}") from None


def _table_answer(path: Path, line: int, record: list[str], col: dict[str, int]) -> int:
    if "correct_answer" not in col or not record[col["correct_answer"]].strip():
        return -1
    try:
        return _answer_code(record[col["correct_answer"]])
    except ValueError:
        raise DataError(
            path,
            line,
            "correct_answer",
            f"expected a-d or 0-3, got {record[col['correct_answer']]!r}",
        ) from None


def _question_table(
    path: Path,
    ids: list[int],
    parts: list[int],
    bundles: list[int],
    answers: list[int],
    lines: list[int],
    tags: list[list[int]] | None = None,
) -> QuestionTable:
    raw = np.asarray(ids, dtype=np.int64)
    order = np.argsort(raw, kind="stable")
    sorted_ids = raw[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if dup.size:
        qid = int(sorted_ids[dup[0]])
        raise DataError(
            path, lines[int(order[dup[0] + 1])], "question_id", f"duplicate question_id {qid}"
        )
    tag_table = None if tags is None else pad_tags(tags)[order]
    vocab = QuestionVocab(sorted_ids, np.asarray(parts, dtype=np.int64)[order], tag_table)
    return QuestionTable(
        vocab=vocab,
        bundle_id=np.asarray(bundles, dtype=np.int64)[order],
        correct_answer=np.asarray(answers, dtype=np.int8)[order],
    )


def load_questions(path: Path) -> QuestionVocab:
    """Question vocabulary (ids -> indices, parts) from a Riiid or EdNet questions.csv."""
    return read_question_table(path).vocab


def load_lecture_parts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Riiid lectures.csv -> (sorted lecture ids, their parts)."""
    path = Path(path)
    header = _read_header(path)
    col = _header_index(path, header, ("lecture_id", "part"))
    ids, parts = [], []
    for line, record in _records(path):
        if len(record) != len(header):
            raise DataError(path, line, None, f"expected {len(header)} fields, got {len(record)}")
        ids.append(_table_int(path, line, record, col, "lecture_id", "l"))
        parts.append(_table_int(path, line, record, col, "part", ""))
    order = np.argsort(np.asarray(ids, np.int64), kind="stable")
    return np.asarray(ids, np.int64)[order], np.asarray(parts, np.int64)[order]


def _lookup(
    keys: np.ndarray, values: np.ndarray, query: np.ndarray, missing: int, dtype: Any
) -> np.ndarray:
    """values[k] for each query id found in the sorted `keys`, else `missing`; chunked to bound memory."""
    out = np.full(len(query), missing, dtype=dtype)
    if len(keys) == 0:
        return out
    for lo in range(0, len(query), _MAP_CHUNK):
        q = query[lo : lo + _MAP_CHUNK]
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        found = keys[pos] == q
        out[lo : lo + _MAP_CHUNK] = np.where(found, values[pos], missing)
    return out


def _dense_lookup(
    keys: np.ndarray, values: np.ndarray, query: np.ndarray, missing: int, dtype: Any
) -> np.ndarray:
    """Like `_lookup`, through a dense table when ids are small non-negative ints (much faster)."""
    if len(keys) == 0 or keys[0] < 0 or keys[-1] >= (1 << 24):
        return _lookup(keys, values, query, missing, dtype)
    table = np.full(int(keys[-1]) + 2, missing, dtype=dtype)  # last slot: out-of-range ids
    table[keys] = values
    out = np.empty(len(query), dtype=dtype)
    top = len(table) - 1
    for lo in range(0, len(query), _MAP_CHUNK):
        q = query[lo : lo + _MAP_CHUNK]
        np.take(table, np.where((q < 0) | (q >= top), top, q), out=out[lo : lo + _MAP_CHUNK])
    return out


# ----------------------------------------------------------------------------------------------
# Locating problems (slow path, errors only)
# ----------------------------------------------------------------------------------------------


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty data record, header skipped."""
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            next(reader, None)
            for record in reader:
                if record:
                    yield reader.line_num, record
        except UnicodeDecodeError:
            raise utf8_error(path) from None


def line_of_record(path: Path, index: int) -> int:
    """Physical line of the `index`-th (0-based) data record, as pyarrow counts records."""
    for k, (line, _) in enumerate(_records(path)):
        if k == index:
            return line
    return index + 2


def _value_problem(text: str, dtype: pa.DataType, required: bool) -> str | None:
    """Why `text` is not a valid `dtype` value (None if it is)."""
    if text == "":
        return "missing value" if required else None
    try:
        if pa.types.is_integer(dtype):
            value = int(text)
            info = np.iinfo(dtype.to_pandas_dtype())
            if not info.min <= value <= info.max:
                return f"integer out of range: {text!r}"
        elif pa.types.is_floating(dtype):
            float(text)
        elif pa.types.is_boolean(dtype) and text not in _TRUE | _FALSE:
            return f"not a boolean (True/False): {text!r}"
    except ValueError:
        kind = "an integer" if pa.types.is_integer(dtype) else "a number"
        return f"not {kind}: {text!r}"
    return None


def _raise_bad_cell(
    path: Path,
    header: list[str],
    types: dict[str, pa.DataType],
    required: Sequence[str],
    cause: str,
) -> None:
    """Re-scan `path` with the csv module and raise a DataError for the first bad cell."""
    checks = [(header.index(name), name, dtype) for name, dtype in types.items() if name in header]
    for line, record in _records(path):
        if len(record) != len(header):
            raise DataError(path, line, None, f"expected {len(header)} fields, got {len(record)}")
        for i, name, dtype in checks:
            problem = _value_problem(record[i], dtype, name in required)
            if problem:
                raise DataError(path, line, name, problem)
    raise DataError(path, 0, None, f"could not parse the file: {cause}")


def _read_header(path: Path) -> list[str]:
    with _open_text(path) as f:
        try:
            first = f.readline()
        except UnicodeDecodeError:
            raise utf8_error(path) from None
    if not first.strip():
        raise DataError(path, 1, None, "empty file (no header line)")
    return [c.strip() for c in next(csv.reader([first]))]


# ----------------------------------------------------------------------------------------------
# Raw columns in file order -> Interactions
# ----------------------------------------------------------------------------------------------


@dataclass
class _Raw:
    """Loader output in file order, before sorting and validation."""

    user: np.ndarray  # (N,) int64
    timestamp: np.ndarray  # (N,) int64
    content_id: np.ndarray  # (N,) int32
    is_lecture: np.ndarray  # (N,) bool
    container: np.ndarray  # (N,) int32
    correct: np.ndarray  # (N,) int8
    elapsed: np.ndarray  # (N,) float32 (Riiid: prior_*, still describing the previous bundle)
    explanation: np.ndarray  # (N,) int8
    row_id: np.ndarray  # (N,) int64


# locate(file-order row index) -> (file, line)
Locator = Callable[[int], tuple[Path, int]]


def _concat(chunks: list[np.ndarray], dtype: Any) -> np.ndarray:
    out = np.concatenate(chunks) if chunks else np.zeros(0, dtype)
    chunks.clear()
    return out.astype(dtype, copy=False)


def _learner_order(raw: _Raw, locate: Locator) -> np.ndarray | None:
    """Permutation to (learner, timestamp, container, file order); None if already in that order.

    Also rejects learners whose timestamps decrease in file order ("unsorted").
    """
    user, ts, cont = raw.user, raw.timestamp, raw.container
    new_user = np.empty(len(user), bool)
    new_user[:1] = True
    np.not_equal(user[1:], user[:-1], out=new_user[1:])
    starts = np.flatnonzero(new_user)
    grouped = len(np.unique(user[starts])) == len(starts)
    if grouped:
        bad = np.flatnonzero(~new_user[1:] & (ts[1:] < ts[:-1]))
        if bad.size:
            _raise_unsorted(raw, int(bad[0]) + 1, int(bad[0]), locate)
        swap = ~new_user[1:] & (ts[1:] == ts[:-1]) & (cont[1:] < cont[:-1])
        if not swap.any():
            return None
        rank = np.cumsum(new_user) - 1
    else:
        _, first, inverse = np.unique(user, return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))[inverse]
        by_user = np.argsort(rank, kind="stable")
        same = rank[by_user][1:] == rank[by_user][:-1]
        bad = np.flatnonzero(same & (ts[by_user][1:] < ts[by_user][:-1]))
        if bad.size:
            k = bad[np.argmin(by_user[bad + 1])]
            _raise_unsorted(raw, int(by_user[k + 1]), int(by_user[k]), locate)
    logger.info("sorting %d rows by (learner, timestamp, container)", len(user))
    return np.lexsort((cont, ts, rank))


def _raise_unsorted(raw: _Raw, row: int, prev: int, locate: Locator) -> None:
    path, line = locate(row)
    _, prev_line = locate(prev)
    raise DataError(
        path,
        line,
        "timestamp",
        f"unsorted: timestamp {raw.timestamp[row]} of user_id {raw.user[row]} is earlier than "
        f"{raw.timestamp[prev]} on line {prev_line} (each learner's rows must be in time order)",
    )


def _learner_chunks(
    starts: np.ndarray, n: int, size: int = _MAP_CHUNK
) -> Iterator[tuple[int, int]]:
    """Row ranges of about `size` rows that never split a learner (bounds temporary memory)."""
    lo = 0
    while lo < n:
        k = int(np.searchsorted(starts, lo + size))
        hi = int(starts[k]) if k < len(starts) else n
        yield lo, hi
        lo = hi


def _content_key(raw: _Raw, rows: np.ndarray) -> np.ndarray:
    return raw.content_id[rows].astype(np.int64) * 2 + raw.is_lecture[rows]


def _check_duplicates(
    raw: _Raw, lo: int, hi: int, order: np.ndarray | None, locate: Locator
) -> None:
    """No two rows of [lo, hi) may share (user, timestamp, content_id, content type). Input is sorted."""
    user, ts = raw.user[lo:hi], raw.timestamp[lo:hi]
    same = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1])  # local row r+1 shares (user, ts) with r
    idx = np.flatnonzero(same) + 1
    k = 1
    while idx.size:  # compare each row with the k-th previous row of its (user, ts) group
        if k > 32:  # pathological group sizes: sort the members of multi-row groups instead
            _check_duplicates_sorted(raw, lo, same, order, locate)
            return
        hit = np.flatnonzero(_content_key(raw, lo + idx) == _content_key(raw, lo + idx - k))
        if hit.size:
            _raise_duplicate(raw, lo + int(idx[hit[0]]), lo + int(idx[hit[0]]) - k, order, locate)
        k += 1
        idx = idx[idx >= k]
        idx = idx[same[idx - k]]


def _check_duplicates_sorted(
    raw: _Raw, lo: int, same: np.ndarray, order: np.ndarray | None, locate: Locator
) -> None:
    member = np.zeros(len(same) + 1, bool)
    member[1:] |= same
    member[:-1] |= same
    rows = np.flatnonzero(member)
    group = np.cumsum(~np.concatenate([[False], same])[rows])
    key = _content_key(raw, lo + rows)
    by_key = np.lexsort((key, group))
    g, kk = group[by_key], key[by_key]
    hit = np.flatnonzero((g[1:] == g[:-1]) & (kk[1:] == kk[:-1]))
    if hit.size:
        r = rows[by_key]
        _raise_duplicate(raw, lo + int(r[hit[0] + 1]), lo + int(r[hit[0]]), order, locate)


def _raise_duplicate(raw: _Raw, a: int, b: int, order: np.ndarray | None, locate: Locator) -> None:
    fa, fb = (int(order[a]), int(order[b])) if order is not None else (a, b)
    later, earlier = max(fa, fb), min(fa, fb)
    path, line = locate(later)
    _, first_line = locate(earlier)
    raise DataError(
        path,
        line,
        "content_id",
        f"duplicate row: same user_id {raw.user[a]}, timestamp {raw.timestamp[a]}, content_id "
        f"{raw.content_id[a]} and content type as line {first_line}",
    )


def _shift_prior(raw: _Raw, lo: int, hi: int) -> None:
    """Move Riiid's prior_* values of rows [lo, hi) back onto the question bundle they describe."""
    elapsed, explanation = raw.elapsed[lo:hi], raw.explanation[lo:hi]  # views: written in place
    q = np.flatnonzero(~raw.is_lecture[lo:hi])
    user, ts, cont = raw.user[lo:hi][q], raw.timestamp[lo:hi][q], raw.container[lo:hi][q]
    start = np.ones(len(q), bool)
    start[1:] = (user[1:] != user[:-1]) | (ts[1:] != ts[:-1]) | (cont[1:] != cont[:-1])
    starts = np.flatnonzero(start)
    # bundle b takes the prior_* of the learner's next question bundle b + 1 (its last: unknown)
    has_next = user[starts[1:]] == user[starts[:-1]]
    nxt = q[starts[1:]]
    own_elapsed = np.full(len(starts), np.nan, np.float32)
    own_explanation = np.full(len(starts), -1, np.int8)
    own_elapsed[:-1] = np.where(has_next, elapsed[nxt], np.nan)
    own_explanation[:-1] = np.where(has_next, explanation[nxt], -1)
    bundle_of_row = np.cumsum(start) - 1
    elapsed[:] = np.nan
    explanation[:] = -1
    elapsed[q] = own_elapsed[bundle_of_row]
    explanation[q] = own_explanation[bundle_of_row]


def _map_content(
    raw: _Raw,
    vocab: QuestionVocab,
    lectures: tuple[np.ndarray, np.ndarray] | None,
    strict: bool,
    order: np.ndarray | None,
    locate: Locator,
    questions_path: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """(question index int32, raw part int8) of every row."""
    index = np.arange(FIRST_QUESTION_INDEX, vocab.size, dtype=np.int32)
    question = _dense_lookup(vocab.question_ids, index, raw.content_id, UNKNOWN_QUESTION, np.int32)
    question[raw.is_lecture] = 0
    unknown = np.flatnonzero(question == UNKNOWN_QUESTION)
    if unknown.size:
        _report_unknown(raw, unknown, strict, order, locate, questions_path)
    part_table = np.concatenate([[-1, -1], vocab.parts]).astype(np.int8)
    part = part_table[question]
    if lectures is not None:
        lec = np.flatnonzero(raw.is_lecture)
        part[lec] = _dense_lookup(
            lectures[0], lectures[1].astype(np.int8), raw.content_id[lec], -1, np.int8
        )
    return question, part


def _report_unknown(
    raw: _Raw,
    unknown: np.ndarray,
    strict: bool,
    order: np.ndarray | None,
    locate: Locator,
    questions_path: Path,
) -> None:
    if strict:
        first = int(unknown.min() if order is None else order[unknown].min())
        path, line = locate(first)
        qid = raw.content_id[unknown[0] if order is None else unknown[np.argmin(order[unknown])]]
        raise DataError(
            path, line, "content_id", f"unknown question id {qid} (not in {questions_path})"
        )
    distinct = len(np.unique(raw.content_id[unknown]))
    logger.warning(
        "%d question rows (%d distinct ids) are not in %s; mapped to the unknown-question index",
        unknown.size,
        distinct,
        questions_path,
    )


def _apply_order(raw: _Raw, order: np.ndarray) -> None:
    for f in fields(raw):
        setattr(raw, f.name, getattr(raw, f.name)[order])


def _assemble(
    raw: _Raw,
    vocab: QuestionVocab,
    *,
    locate: Locator,
    shift_prior: bool,
    strict: bool,
    questions_path: Path,
    lectures: tuple[np.ndarray, np.ndarray] | None = None,
) -> Interactions:
    """Sort, validate, shift and map file-order columns into the final table."""
    order = _learner_order(raw, locate)
    if order is not None:
        _apply_order(raw, order)
    n = len(raw.user)
    starts = np.flatnonzero(np.concatenate([[True], raw.user[1:] != raw.user[:-1]]))
    for lo, hi in _learner_chunks(starts, n):
        _check_duplicates(raw, lo, hi, order, locate)
        if shift_prior:
            _shift_prior(raw, lo, hi)
    question, part = _map_content(raw, vocab, lectures, strict, order, locate, questions_path)
    offsets = np.append(starts, n).astype(np.int64)
    correct = raw.correct
    correct[raw.is_lecture] = -1
    return Interactions(
        user_ids=raw.user[starts].copy(),
        offsets=offsets,
        question=question,
        content_id=raw.content_id,
        is_lecture=raw.is_lecture,
        part=part,
        correct=correct,
        bundle=raw.container,
        timestamp=raw.timestamp,
        elapsed_ms=raw.elapsed,
        explanation=raw.explanation,
        row_id=raw.row_id,
        vocab=vocab,
    )


# ----------------------------------------------------------------------------------------------
# Riiid
# ----------------------------------------------------------------------------------------------


def _to_numpy(column: pa.Array, dtype: Any, fill: Any) -> np.ndarray:
    if column.null_count:
        column = pc.fill_null(column, fill)
    return column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _first_null(column: pa.Array) -> int:
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


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
        _raise_bad_cell(path, header, RIIID_TYPES, RIIID_REQUIRED, str(exc))


def _check_riiid_batch(path: Path, batch: pa.RecordBatch, start: int) -> None:
    """Required values present; codes in range. Raises DataError at the exact line."""
    for name in (*RIIID_REQUIRED, "row_id"):
        if name in batch.schema.names and batch.column(name).null_count:
            raise DataError(
                path,
                line_of_record(path, start + _first_null(batch.column(name))),
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


def _read_riiid(path: Path) -> _Raw:
    header = _read_header(path)
    _header_index(path, header, RIIID_REQUIRED)
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
    return _Raw(
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
        return _to_numpy(pc.cast(column, pa.int8()), np.int8, -1)
    if name == "prior_question_elapsed_time":
        return _to_numpy(column, np.float32, np.nan)
    if name == "content_type_id":
        return column.to_numpy().astype(np.bool_)
    if name == "answered_correctly":
        return column.to_numpy().astype(np.int8)
    return column.to_numpy()


def _file_key(path: Path) -> list[Any]:
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def _cached(
    cache_dir: Path | None, kind: str, key: list[Any], build: Callable[[], Interactions]
) -> Interactions:
    """Build, or reuse the table saved under a key of (inputs, their size/mtime, options)."""
    if cache_dir is None:
        return build()
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, kind, key]).encode()).hexdigest()[:20]
    target = Path(cache_dir) / f"{kind}-{digest}"
    if (target / "meta.json").exists():
        logger.info("loading cached %s table from %s", kind, target)
        return Interactions.load(target)
    inter = build()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    inter.save(target)
    logger.info("cached %s table (%d rows) in %s", kind, inter.n_rows, target)
    return inter


def load_riiid(
    train_csv: Path,
    questions_csv: Path,
    lectures_csv: Path | None = None,
    *,
    strict: bool = False,
    cache_dir: Path | None = None,
) -> Interactions:
    """Riiid train.csv (+ questions.csv, optional lectures.csv) -> Interactions."""
    train_csv, questions_csv = Path(train_csv), Path(questions_csv)
    for p in (train_csv, questions_csv, lectures_csv):
        if p is not None and not Path(p).is_file():
            raise DataError(p, 0, None, "no such file")
    inputs = [train_csv, questions_csv] + ([Path(lectures_csv)] if lectures_csv else [])
    key = [[_file_key(p) for p in inputs], {"strict": strict, "lectures": lectures_csv is not None}]

    def build() -> Interactions:
        vocab = load_questions(questions_csv)
        lectures = load_lecture_parts(Path(lectures_csv)) if lectures_csv else None
        raw = _read_riiid(train_csv)
        logger.info("read %d rows from %s", len(raw.user), train_csv)
        return _assemble(
            raw,
            vocab,
            locate=lambda i: (train_csv, line_of_record(train_csv, i)),
            shift_prior=True,
            strict=strict,
            questions_path=questions_csv,
            lectures=lectures,
        )

    return _cached(cache_dir, "riiid", key, build)


# ----------------------------------------------------------------------------------------------
# EdNet-KT1
# ----------------------------------------------------------------------------------------------


def _ednet_files(folder: Path) -> tuple[list[Path], np.ndarray]:
    """u<ID>.csv files of `folder`, by ascending learner id."""
    found = []
    with os.scandir(folder) as it:
        for entry in it:
            m = _EDNET_FILE.match(entry.name)
            if m:
                found.append((int(m.group(1)), entry.name))
    if not found:
        raise DataError(folder, 0, None, "no u<ID>.csv learner files in this folder")
    found.sort()
    return [folder / name for _, name in found], np.asarray([uid for uid, _ in found], np.int64)


@dataclass
class _EdnetChunk:
    header: bytes
    files: list[Path]
    users: list[int]
    counts: list[int]
    bodies: list[bytes]
    size: int = 0


def _ednet_chunks(files: list[Path], users: np.ndarray) -> Iterator[_EdnetChunk]:
    """Consecutive learner files with the same header, bodies concatenated up to ~16 MB."""
    chunk: _EdnetChunk | None = None
    for path, uid in zip(files, users.tolist(), strict=True):
        data = path.read_bytes()
        head, _, body = data.partition(b"\n")
        head = head.rstrip(b"\r").removeprefix(b"\xef\xbb\xbf")
        if not head.strip():
            raise DataError(path, 1, None, "empty file (no header line)")
        if not body.strip():
            raise DataError(path, 2, None, "no data rows (header only)")
        if not body.endswith(b"\n"):
            body += b"\n"
        if chunk is not None and (chunk.header != head or chunk.size >= _EDNET_CHUNK_BYTES):
            yield chunk
            chunk = None
        if chunk is None:
            chunk = _EdnetChunk(head, [], [], [], [])
        chunk.files.append(path)
        chunk.users.append(uid)
        chunk.counts.append(body.count(b"\n"))
        chunk.bodies.append(body)
        chunk.size += len(body)
    if chunk is not None:
        yield chunk


def _ednet_parse(data: bytes | Path, header: list[str]) -> pa.Table:
    names = [c for c in header if c in EDNET_TYPES]
    read = pacsv.ReadOptions(
        column_names=header, skip_rows=0 if isinstance(data, bytes) else 1, block_size=_BLOCK_SIZE
    )
    convert = pacsv.ConvertOptions(
        column_types={c: EDNET_TYPES[c] for c in names}, include_columns=names, null_values=[""]
    )
    stream = pa.BufferReader(data) if isinstance(data, bytes) else data
    return pacsv.read_csv(stream, read_options=read, convert_options=convert)


def _ednet_chunk_tables(chunk: _EdnetChunk) -> list[tuple[pa.Table, list[Path], list[int]]]:
    """Parse a chunk at once; fall back to file by file (exact counts and error lines) on trouble."""
    header = [c.strip() for c in chunk.header.decode("utf-8", "replace").split(",")]
    _header_index(chunk.files[0], header, EDNET_REQUIRED)
    try:
        table = _ednet_parse(b"".join(chunk.bodies), header)
        if table.num_rows == sum(chunk.counts):
            return [(table, chunk.files, chunk.counts)]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    out = []
    for path in chunk.files:
        try:
            table = _ednet_parse(path, header)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            _raise_bad_cell(path, header, EDNET_TYPES, EDNET_REQUIRED, str(exc))
        out.append((table, [path], [table.num_rows]))
    return out


def _decode_question_ids(values: pa.Array) -> np.ndarray:
    """Dictionary of 'q123' (or '123') strings -> int64 ids; -2 where not an id."""
    text = pc.utf8_trim_whitespace(values)
    body = pc.if_else(pc.starts_with(text, "q"), pc.utf8_slice_codeunits(text, 1), text)
    try:
        return pc.cast(body, pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # some bad value: find it in Python
        out = []
        for item in values.to_pylist():
            try:
                out.append(_parse_id(item, "q"))
            except ValueError:
                out.append(-2)
        return np.asarray(out, dtype=np.int64)


def _decode_answers(values: pa.Array) -> np.ndarray:
    """Dictionary of answers 'a'..'d' -> 0..3; -3 for anything else (counted as wrong)."""
    letters = pa.array(list(_ANSWER_LETTERS))
    codes = pc.index_in(pc.utf8_lower(pc.utf8_trim_whitespace(values)), value_set=letters)
    return _to_numpy(codes, np.int64, -3)


def _dictionary_codes(
    column: pa.ChunkedArray,
    decode: Callable[[pa.Array], np.ndarray],
    name: str,
    locate: Callable[[int], tuple[Path, int]],
) -> np.ndarray:
    """Dictionary-encoded strings -> int64 codes, decoding only the distinct values; -1 if null."""
    out = []
    done = 0
    for chunk in column.chunks:
        table = np.append(decode(chunk.dictionary), -1)  # last slot: null
        codes = _to_numpy(chunk.indices, np.int64, len(table) - 1)
        mapped = table[codes]
        bad = np.flatnonzero(mapped == -2)
        if bad.size:
            path, line = locate(done + int(bad[0]))
            raise DataError(
                path, line, name, f"invalid value {chunk.dictionary[codes[bad[0]]].as_py()!r}"
            )
        out.append(mapped)
        done += len(chunk)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _ednet_columns(table: pa.Table, files: list[Path], counts: list[int]) -> dict[str, np.ndarray]:
    bounds = np.cumsum([0, *counts]).tolist()

    def locate(i: int) -> tuple[Path, int]:
        k = bisect.bisect_right(bounds, i) - 1
        return files[k], line_of_record(files[k], i - bounds[k])

    for name in ("timestamp", "question_id"):
        if table.column(name).null_count:
            path, line = locate(_first_null(table.column(name).combine_chunks()))
            raise DataError(path, line, name, "missing value")
    elapsed = table.column("elapsed_time") if "elapsed_time" in table.column_names else None
    n = table.num_rows
    return {
        "timestamp": _to_numpy(table.column("timestamp").combine_chunks(), np.int64, 0),
        "question": _dictionary_codes(
            table.column("question_id"), _decode_question_ids, "question_id", locate
        ),
        "answer": _dictionary_codes(
            table.column("user_answer"), _decode_answers, "user_answer", locate
        ),
        "elapsed": _to_numpy(elapsed.combine_chunks(), np.float32, np.nan)
        if elapsed is not None
        else np.full(n, np.nan, np.float32),
    }


def _read_ednet(folder: Path) -> tuple[_Raw, list[Path], list[int]]:
    files, users = _ednet_files(folder)
    parts: dict[str, list[np.ndarray]] = {
        "user": [],
        "timestamp": [],
        "question": [],
        "answer": [],
        "elapsed": [],
    }
    all_files: list[Path] = []
    all_counts: list[int] = []
    for chunk in _ednet_chunks(files, users):
        user_of = dict(zip(chunk.files, chunk.users, strict=True))
        for table, tfiles, tcounts in _ednet_chunk_tables(chunk):
            cols = _ednet_columns(table, tfiles, tcounts)
            for name, values in cols.items():
                parts[name].append(values)
            parts["user"].append(
                np.repeat(np.asarray([user_of[f] for f in tfiles], np.int64), tcounts)
            )
            all_files.extend(tfiles)
            all_counts.extend(tcounts)
    n = sum(all_counts)
    raw = _Raw(
        user=_concat(parts["user"], np.int64),
        timestamp=_concat(parts["timestamp"], np.int64),
        content_id=_concat(parts["question"], np.int64),  # narrowed after validation
        is_lecture=np.zeros(n, bool),
        container=np.zeros(n, np.int32),
        correct=_concat(parts["answer"], np.int8),  # answer codes for now
        elapsed=_concat(parts["elapsed"], np.float32),
        explanation=np.full(n, -1, np.int8),
        row_id=np.arange(n, dtype=np.int64),
    )
    return raw, all_files, all_counts


def _ednet_correctness(
    raw: _Raw, table: QuestionTable, strict: bool, locate: Locator, questions_csv: Path
) -> _Raw:
    """Answer codes -> 0/1, bundle ids as containers; rows of unknown questions dropped (non-strict)."""
    vocab = table.vocab
    pos = _lookup(
        vocab.question_ids, np.arange(len(vocab.question_ids)), raw.content_id, -1, np.int64
    )
    unknown = np.flatnonzero(pos < 0)
    if unknown.size and strict:
        path, line = locate(int(unknown[0]))
        raise DataError(
            path,
            line,
            "question_id",
            f"unknown question id q{raw.content_id[unknown[0]]} (not in {questions_csv})",
        )
    if unknown.size:
        logger.warning(
            "%d rows (%d distinct questions) are not in %s; dropped (their correctness is unknown)",
            unknown.size,
            len(np.unique(raw.content_id[unknown])),
            questions_csv,
        )
    answer = raw.correct.astype(np.int64)
    invalid = np.flatnonzero((answer < 0) & (pos >= 0))
    if invalid.size and strict:
        path, line = locate(int(invalid[0]))
        raise DataError(path, line, "user_answer", "missing or not one of a, b, c, d")
    if invalid.size:
        logger.warning(
            "%d rows have a missing or invalid user_answer; counted as wrong", invalid.size
        )
    raw.correct = (answer == table.correct_answer[np.maximum(pos, 0)]).astype(np.int8)
    raw.container = table.bundle_id[np.maximum(pos, 0)].astype(np.int32)
    raw.content_id = raw.content_id.astype(np.int32)
    if unknown.size:
        keep = pos >= 0
        for f in fields(raw):
            setattr(raw, f.name, getattr(raw, f.name)[keep])
    return raw


def load_ednet(
    folder: Path, questions_csv: Path, *, strict: bool = False, cache_dir: Path | None = None
) -> Interactions:
    """EdNet-KT1 folder of u<ID>.csv (+ contents/questions.csv) -> Interactions.

    Correctness is user_answer == correct_answer; the container is the question's bundle_id.
    Rows of questions missing from questions.csv have no correctness: strict -> DataError,
    otherwise they are dropped with a warning.
    """
    folder, questions_csv = Path(folder), Path(questions_csv)
    if not folder.is_dir():
        raise DataError(folder, 0, None, "no such folder")
    if not questions_csv.is_file():
        raise DataError(questions_csv, 0, None, "no such file")
    n_files = sum(1 for name in os.listdir(folder) if _EDNET_FILE.match(name))
    st = folder.stat()
    key = [
        [str(folder.resolve()), st.st_mtime_ns, n_files],
        _file_key(questions_csv),
        {"strict": strict},
    ]

    def build() -> Interactions:
        table = read_question_table(questions_csv)
        raw, files, counts = _read_ednet(folder)
        bounds = np.cumsum([0, *counts]).tolist()

        def locate_source(r: int) -> tuple[Path, int]:  # r: running row index over all files
            k = bisect.bisect_right(bounds, r) - 1
            return files[k], line_of_record(files[k], r - bounds[k])

        raw = _ednet_correctness(raw, table, strict, locate_source, questions_csv)
        source_row = raw.row_id  # file order, after dropping unknown questions

        def locate(i: int) -> tuple[Path, int]:
            return locate_source(int(source_row[i]))

        logger.info("read %d rows from %d learner files in %s", len(raw.user), len(files), folder)
        return _assemble(
            raw,
            table.vocab,
            locate=locate,
            shift_prior=False,
            strict=strict,
            questions_path=questions_csv,
        )

    return _cached(cache_dir, "ednet", key, build)


def load_dataset(train_file: Path | str, questions_file: Path | str, **kw: Any) -> Interactions:
    """A directory -> EdNet-KT1 (`load_ednet`); a CSV file -> Riiid (`load_riiid`)."""
    train_file = Path(train_file)
    if train_file.is_dir():
        if kw.pop("lectures_csv", None) is not None:
            raise ValueError("lectures_csv applies to Riiid only")
        return load_ednet(train_file, Path(questions_file), **kw)
    return load_riiid(train_file, Path(questions_file), **kw)


# ----------------------------------------------------------------------------------------------
# Summary + CLI
# ----------------------------------------------------------------------------------------------


def describe(inter: Interactions) -> dict[str, Any]:
    """Dataset summary: sizes, parts, correct rate, per-learner question-history length percentiles."""
    is_q = ~inter.is_lecture
    cum = np.concatenate([[0], np.cumsum(is_q, dtype=np.int64)])
    lengths = cum[inter.offsets[1:]] - cum[inter.offsets[:-1]]
    parts, counts = np.unique(inter.part[is_q], return_counts=True)
    n_q = int(is_q.sum())
    pct = np.percentile(lengths, [5, 25, 50, 75, 95]) if len(lengths) else np.zeros(5)
    return {
        "learners": inter.n_learners,
        "rows": inter.n_rows,
        "question_rows": n_q,
        "lecture_rows": inter.n_rows - n_q,
        "distinct_questions": int(len(np.unique(inter.content_id[is_q]))),
        "vocab_questions": len(inter.vocab.question_ids),
        "unknown_question_rows": int(np.count_nonzero(inter.question[is_q] == UNKNOWN_QUESTION)),
        "parts": {str(int(p)): int(c) for p, c in zip(parts, counts, strict=True)},
        "correct_rate": round(float(inter.correct[is_q].mean()), 4) if n_q else None,
        "history_length": {
            **{f"p{q}": round(float(v), 2) for q, v in zip((5, 25, 50, 75, 95), pct, strict=True)},
            "max": int(lengths.max()) if len(lengths) else 0,
        },
    }


def _format_summary(summary: dict[str, Any]) -> str:
    lines = []
    for key, value in summary.items():
        if isinstance(value, dict):
            value = "  ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items()
            )
        lines.append(f"{key:<22} {value}")
    return "\n".join(lines)


def _default_questions(train: Path) -> Path | None:
    candidates = (
        [train / "contents" / "questions.csv", train.parent / "contents" / "questions.csv"]
        if train.is_dir()
        else [train.parent / "questions.csv"]
    )
    return next((c for c in candidates if c.is_file()), None)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        prog="python -m training.data", description="Inspect a KT dataset."
    )
    parser.add_argument(
        "--describe",
        type=Path,
        required=True,
        metavar="FILE",
        help="Riiid train.csv or EdNet-KT1 folder",
    )
    parser.add_argument("--questions", type=Path, help="questions.csv (default: next to FILE)")
    parser.add_argument("--lectures", type=Path, help="Riiid lectures.csv (optional)")
    parser.add_argument("--strict", action="store_true", help="unknown question ids are an error")
    parser.add_argument("--cache-dir", type=Path, help="reuse/save the preprocessed table here")
    args = parser.parse_args(argv)
    questions = args.questions or _default_questions(args.describe)
    if questions is None:
        parser.error("--questions is required (no questions.csv found next to FILE)")
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        kw: dict[str, Any] = {"strict": args.strict, "cache_dir": args.cache_dir}
        if args.lectures is not None:
            kw["lectures_csv"] = args.lectures
        inter = load_dataset(args.describe, questions, **kw)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = describe(inter)
    print(_format_summary(summary))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

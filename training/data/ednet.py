"""EdNet-KT1 format: a folder of `u<ID>.csv` learner files (+ `contents/questions.csv`).

Correctness is user_answer == the question's correct_answer; the container is its bundle_id.
The ~780k learner files are concatenated into ~16 MB chunks and parsed by pyarrow at once,
falling back to file-by-file parsing (exact counts and error lines) on trouble.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from training.data.assemble import (
    Locator,
    Raw,
    assemble,
    cached,
    check_policy,
    concat,
    file_key,
    first_null,
    lookup,
    to_numpy,
)
from training.data.interactions import DataError, Interactions
from training.data.locate import header_index, line_of_record, raise_bad_cell
from training.data.questions import _ANSWER_LETTERS, QuestionTable, _parse_id, read_question_table

logger = logging.getLogger(__name__)

_BLOCK_SIZE = 1 << 20  # pyarrow read block (bytes)
_EDNET_CHUNK_BYTES = 16 << 20  # learner files are concatenated into chunks of this size
EDNET_TYPES: dict[str, pa.DataType] = {
    "timestamp": pa.int64(),
    "question_id": pa.dictionary(pa.int32(), pa.string()),
    "user_answer": pa.dictionary(pa.int32(), pa.string()),
    "elapsed_time": pa.float32(),
}
EDNET_REQUIRED = ("timestamp", "question_id", "user_answer")
_EDNET_FILE = re.compile(r"^u(\d+)\.csv$")


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
    header_index(chunk.files[0], header, EDNET_REQUIRED)
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
            raise_bad_cell(path, header, EDNET_TYPES, EDNET_REQUIRED, str(exc))
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
    return to_numpy(codes, np.int64, -3)


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
        codes = to_numpy(chunk.indices, np.int64, len(table) - 1)
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
            path, line = locate(first_null(table.column(name).combine_chunks()))
            raise DataError(path, line, name, "missing value")
    elapsed = table.column("elapsed_time") if "elapsed_time" in table.column_names else None
    n = table.num_rows
    return {
        "timestamp": to_numpy(table.column("timestamp").combine_chunks(), np.int64, 0),
        "question": _dictionary_codes(
            table.column("question_id"), _decode_question_ids, "question_id", locate
        ),
        "answer": _dictionary_codes(
            table.column("user_answer"), _decode_answers, "user_answer", locate
        ),
        "elapsed": to_numpy(elapsed.combine_chunks(), np.float32, np.nan)
        if elapsed is not None
        else np.full(n, np.nan, np.float32),
    }


def _read_ednet(folder: Path) -> tuple[Raw, list[Path], list[int]]:
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
    raw = Raw(
        user=concat(parts["user"], np.int64),
        timestamp=concat(parts["timestamp"], np.int64),
        content_id=concat(parts["question"], np.int64),  # narrowed after validation
        is_lecture=np.zeros(n, bool),
        container=np.zeros(n, np.int32),
        correct=concat(parts["answer"], np.int8),  # answer codes for now
        elapsed=concat(parts["elapsed"], np.float32),
        explanation=np.full(n, -1, np.int8),
        row_id=np.arange(n, dtype=np.int64),
    )
    return raw, all_files, all_counts


def _ednet_correctness(
    raw: Raw, table: QuestionTable, strict: bool, locate: Locator, questions_csv: Path
) -> Raw:
    """Answer codes -> 0/1, bundle ids as containers; rows of unknown questions dropped (non-strict)."""
    vocab = table.vocab
    pos = lookup(
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
    folder: Path,
    questions_csv: Path,
    *,
    strict: bool = False,
    cache_dir: Path | None = None,
    duplicates: str = "first",
) -> Interactions:
    """EdNet-KT1 folder of u<ID>.csv (+ contents/questions.csv) -> Interactions.

    Correctness is user_answer == correct_answer; the container is the question's bundle_id.
    Rows of questions missing from questions.csv have no correctness: strict -> DataError,
    otherwise they are dropped with a warning. `duplicates`: as in `load_riiid`.
    """
    check_policy(duplicates)
    folder, questions_csv = Path(folder), Path(questions_csv)
    if not folder.is_dir():
        raise DataError(folder, 0, None, "no such folder")
    if not questions_csv.is_file():
        raise DataError(questions_csv, 0, None, "no such file")
    n_files = sum(1 for name in os.listdir(folder) if _EDNET_FILE.match(name))
    st = folder.stat()
    key = [
        [str(folder.resolve()), st.st_mtime_ns, n_files],
        file_key(questions_csv),
        {"strict": strict, "duplicates": duplicates},
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
        return assemble(
            raw,
            table.vocab,
            locate=locate,
            shift_prior=False,
            strict=strict,
            questions_path=questions_csv,
            duplicates=duplicates,
        )

    return cached(cache_dir, "ednet", key, build)

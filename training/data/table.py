"""Generic interaction logs (CSV or Parquet, one row per answer) -> `Interactions`.

A column mapping names the columns of each role: `user`, `item`, `correct` (required) and
`time`, `order`, `skills`, `elapsed`, `bundle` (optional), written `role=column[:unit]`, e.g.
`user=studentId,item=problemId,correct=correct,time=startTime:s,skills=skill`. Units (`ms`,
`s`, `us`) apply to `time` and `elapsed`; the default is ms. Presets (`TABLE_PRESETS`) cover
the public logs whose header identifies them (ASSISTments 2009 / 2012 / 2017, Junyi).

- ids: an integer value keeps its integer; any other string gets `stable_id` (a hash, the same
  on every machine; items and skills below 2**30, learners below 2**62). Item ids must fit int32.
- correct: 0/1, true/false (any case), 0.0/1.0.
- time: numbers (in the unit) or ISO 8601 date-times (naive = UTC) -> ms. Without a time column
  the order is the only time: rows are ordered by `order` (else file order) per learner and the
  synthetic timestamp is the rank of the row's order value in the learner's sequence (0, 1, 2,
  ...; rows with the same order value share it, so their duplicates are found); elapsed unknown.
- elapsed: numbers in the unit -> ms; empty or negative = unknown (NaN). Explanation unknown (-1).
- bundle: rows sharing (learner, time, bundle) form one bundle; without it each row is its own.
- skills: cell split by the skill separator (default '_', pyKT's; empty, 'nan', 'NA' = none).

Rows are sorted per learner by (time or order, file order); learners keep the order of their first
appearance. Without a questions table the vocabulary is the items seen, part 0, tags = the union
of the skills each item was seen with (all rows, duplicates included: ASSISTments 2009 repeats a
multi-skill answer once per skill), or the item's own id when no skills column is mapped.
Errors name the CSV line (Parquet: the 1-based row number) and the column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from training.data.assemble import Raw, assemble, cached, check_policy, file_key
from training.data.interactions import DataError, Interactions
from training.data.locate import line_of_record, read_header
from training.data.questions import read_question_table, stable_id, vocab_from_log

logger = logging.getLogger(__name__)

ROLES = ("user", "item", "correct", "time", "order", "skills", "elapsed", "bundle")
REQUIRED_ROLES = ("user", "item", "correct")
_UNITS = {"ms": 1.0, "s": 1000.0, "us": 0.001}
_NO_SKILL = frozenset({"", "nan", "na", "none", "null"})
_INT32_MAX = (1 << 31) - 1


@dataclass(frozen=True)
class ColumnMap:
    """role -> column name, and the unit of `time` / `elapsed` columns."""

    columns: dict[str, str]
    units: dict[str, str] = field(default_factory=dict)
    skill_separator: str = "_"
    name: str = "custom"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown column role {unknown[0]!r}; roles: {', '.join(ROLES)}")
        missing = [r for r in REQUIRED_ROLES if r not in self.columns]
        if missing:
            raise ValueError(f"the column mapping needs {', '.join(missing)}=COLUMN")
        for role, unit in self.units.items():
            if unit not in _UNITS:
                raise ValueError(f"unit of {role} must be one of ms, s, us, got {unit!r}")


TABLE_PRESETS: dict[str, ColumnMap] = {
    # 2012-2013-data-with-predictions-4-final.csv
    "assist2012": ColumnMap(
        {
            "user": "user_id",
            "item": "problem_id",
            "correct": "correct",
            "time": "start_time",
            "skills": "skill_id",
            "elapsed": "ms_first_response",
        },
        name="assist2012",
    ),
    # skill_builder_data(_corrected).csv: no time, order_id orders the answers
    "assist2009": ColumnMap(
        {
            "user": "user_id",
            "item": "problem_id",
            "correct": "correct",
            "order": "order_id",
            "skills": "skill_id",
            "elapsed": "ms_first_response",
        },
        name="assist2009",
    ),
    # anonymized_full_release_competition_dataset.csv: skill names, times in seconds
    "assist2017": ColumnMap(
        {
            "user": "studentId",
            "item": "problemId",
            "correct": "correct",
            "time": "startTime",
            "skills": "skill",
            "elapsed": "timeTaken",
        },
        units={"time": "s", "elapsed": "s"},
        skill_separator="",
        name="assist2017",
    ),
    # junyi_ProblemLog_original.csv: time_done in microseconds, time_taken in seconds
    "junyi": ColumnMap(
        {
            "user": "user_id",
            "item": "exercise",
            "correct": "correct",
            "time": "time_done",
            "elapsed": "time_taken",
        },
        units={"time": "us", "elapsed": "s"},
        name="junyi",
    ),
}


def parse_columns(text: str) -> ColumnMap:
    """`role=column[:unit],...` or a preset name -> ColumnMap (ValueError on bad syntax)."""
    text = text.strip()
    if text in TABLE_PRESETS:
        return TABLE_PRESETS[text]
    columns: dict[str, str] = {}
    units: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        role, eq, column = item.partition("=")
        role, column = role.strip(), column.strip()
        if not eq or not column:
            raise ValueError(f"--columns: expected role=column, got {item!r}")
        name, colon, unit = column.rpartition(":")
        if colon and unit in _UNITS:
            column = name
            units[role] = unit
        if role in columns:
            raise ValueError(f"--columns: role {role!r} given twice")
        columns[role] = column
    return ColumnMap(columns, units)


def match_preset(header: list[str]) -> ColumnMap | None:
    """The first preset whose columns are all in the header."""
    names = set(header)
    return next((p for p in TABLE_PRESETS.values() if set(p.columns.values()) <= names), None)


def is_parquet(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PAR1"


def table_header(path: Path) -> list[str]:
    if is_parquet(path):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return read_header(path)


def _read(path: Path, mapping: ColumnMap) -> tuple[pa.Table, Callable[[int], tuple[Path, int]]]:
    header = table_header(path)
    for role, name in mapping.columns.items():
        if name not in header:
            raise DataError(
                path,
                1,
                name,
                f"missing column '{name}' ({role}) of the column mapping "
                f"'{mapping.name}' (header: {','.join(header)})",
            )
    needed = sorted(set(mapping.columns.values()))
    if is_parquet(path):
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=needed), lambda i: (path, i + 1)
    read = pacsv.ReadOptions(block_size=1 << 22)
    convert = pacsv.ConvertOptions(
        include_columns=needed,
        column_types=dict.fromkeys(needed, pa.string()),
        strings_can_be_null=True,
        null_values=[""],
    )
    try:
        table = pacsv.read_csv(path, read_options=read, convert_options=convert)
    except pa.ArrowInvalid as exc:
        _raise_csv_problem(path, header, str(exc))
    return table, lambda i: (path, line_of_record(path, i))


def _raise_csv_problem(path: Path, header: list[str], cause: str) -> None:
    from training.data.locate import records

    for line, record in records(path):
        if len(record) != len(header):
            raise DataError(path, line, None, f"expected {len(header)} fields, got {len(record)}")
    raise DataError(path, 0, None, f"could not parse the file: {cause}")


def _text_id(text: str, bits: int) -> int | None:
    """An id cell -> int: integers (also '12.0') keep their value, other text is hashed."""
    text = text.strip()
    if text.lower() in _NO_SKILL:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
        if value.is_integer():
            return int(value)
    except ValueError:
        pass
    return stable_id(text, bits)


class _Column:
    """One mapped column with its error locator."""

    def __init__(self, table: pa.Table, name: str, locate: Callable[[int], tuple[Path, int]]):
        self.name = name
        self.values = table.column(name).combine_chunks()
        self.locate = locate

    def error(self, row: int, problem: str) -> DataError:
        path, line = self.locate(row)
        return DataError(path, line, self.name, problem)

    def require(self) -> None:
        if self.values.null_count:
            mask = self.values.is_null().to_numpy(zero_copy_only=False)
            raise self.error(int(np.flatnonzero(mask)[0]), "missing value")

    def ids(self, bits: int) -> np.ndarray:
        """Integer ids; non-integer text hashed (`stable_id`)."""
        self.require()
        if pa.types.is_integer(self.values.type):
            return self.values.to_numpy().astype(np.int64)
        if not pa.types.is_string(self.values.type):
            self.values = pc.cast(self.values, pa.string())
        try:
            return pc.cast(pc.utf8_trim_whitespace(self.values), pa.int64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        encoded = self.values.dictionary_encode()
        values = [_text_id(t, bits) for t in encoded.dictionary.to_pylist()]
        missing = np.flatnonzero([v is None for v in values])
        table = np.asarray([-1 if v is None else v for v in values], np.int64)
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        if missing.size:
            raise self.error(int(np.flatnonzero(np.isin(codes, missing))[0]), "missing value")
        return table[codes]

    def numbers(self, scale: float = 1.0) -> np.ndarray:
        """Float64 values times `scale`; NaN where empty."""
        try:
            values = pc.cast(self.values, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            texts = self.values.to_pylist()
            for i, text in enumerate(texts):
                try:
                    float(text) if text is not None else None
                except ValueError:
                    raise self.error(i, f"not a number: {text!r}") from None
            raise
        return values.to_numpy(zero_copy_only=False).astype(np.float64) * scale

    def correct(self) -> np.ndarray:
        self.require()
        text = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(self.values, pa.string())))
        ones = pc.is_in(text, value_set=pa.array(["1", "true", "1.0"]))
        zeros = pc.is_in(text, value_set=pa.array(["0", "false", "0.0"]))
        ok = pc.or_(ones, zeros).to_numpy(zero_copy_only=False)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise self.error(
                i, f"correct must be 0/1 or true/false, got {self.values[i].as_py()!r}"
            )
        return ones.to_numpy(zero_copy_only=False).astype(np.int8)

    def times_ms(self, unit: str) -> np.ndarray:
        self.require()
        if not pa.types.is_string(self.values.type):
            return np.rint(self.numbers(_UNITS[unit])).astype(np.int64)
        text = pc.utf8_trim_whitespace(self.values)
        try:
            return np.rint(pc.cast(text, pa.float64()).to_numpy() * _UNITS[unit]).astype(np.int64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        try:
            ns = pc.cast(pc.cast(text, pa.timestamp("ns")), pa.int64()).to_numpy()
            return ns // 1_000_000
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        encoded = text.dictionary_encode()
        ms = []
        for value in encoded.dictionary.to_pylist():
            try:
                ms.append(round(float(value) * _UNITS[unit]))
                continue
            except ValueError:
                pass
            try:
                moment = datetime.fromisoformat(value.replace(" UTC", "+00:00"))
            except ValueError:
                codes = encoded.indices.to_numpy(zero_copy_only=False)
                k = encoded.dictionary.to_pylist().index(value)
                raise self.error(
                    int(np.flatnonzero(codes == k)[0]),
                    f"not a time ({unit} number or ISO 8601 date-time): {value!r}",
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            ms.append(round(moment.timestamp() * 1000))
        return np.asarray(ms, np.int64)[encoded.indices.to_numpy(zero_copy_only=False)]


def _skill_pairs(
    column: _Column, items: np.ndarray, separator: str
) -> tuple[np.ndarray, np.ndarray]:
    """(item, skill id) pairs over all rows, each distinct pair once."""
    encoded = pc.cast(column.values, pa.string()).dictionary_encode()
    per_code: list[list[int]] = []
    for value in encoded.dictionary.to_pylist():
        parts = value.split(separator) if separator else [value]
        per_code.append([s for p in parts if (s := _text_id(p, 30)) is not None])
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    known = codes >= 0
    pairs = np.unique(np.stack([items[known], codes[known]], axis=1), axis=0).reshape(-1, 2)
    out_items, out_skills = [], []
    for item, code in pairs.tolist():
        for skill in per_code[code]:
            out_items.append(item)
            out_skills.append(skill)
    return np.asarray(out_items, np.int64), np.asarray(out_skills, np.int64)


def _order_rank(user: np.ndarray, key: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Permutation to (first appearance of learner, key, file order), and the sorted user ranks."""
    _, first, inverse = np.unique(user, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))[inverse]
    n = len(user)
    keys = (np.arange(n), rank) if key is None else (np.arange(n), key, rank)
    perm = np.lexsort(keys)
    return perm, rank[perm]


def load_table(
    path: Path,
    questions_csv: Path | None = None,
    *,
    columns: ColumnMap | str | None = None,
    skill_separator: str | None = None,
    strict: bool = False,
    cache_dir: Path | None = None,
    duplicates: str = "first",
) -> Interactions:
    """A CSV or Parquet log + column mapping (a ColumnMap, its text form, or None = the preset
    the header matches) -> Interactions. See the module doc for the rules."""
    check_policy(duplicates)
    path = Path(path)
    if not path.is_file():
        raise DataError(path, 0, None, "no such file")
    mapping = resolve_mapping(path, columns)
    separator = mapping.skill_separator if skill_separator is None else skill_separator
    inputs = [file_key(path)] + ([file_key(Path(questions_csv))] if questions_csv else [])
    options = {"strict": strict, "sep": separator, "duplicates": duplicates}
    key = [inputs, mapping.columns, mapping.units, options]

    def build() -> Interactions:
        table, locate_file = _read(path, mapping)
        if table.num_rows == 0:
            raise DataError(path, 2, None, "no data rows (header only)")
        col = {role: _Column(table, name, locate_file) for role, name in mapping.columns.items()}
        units = mapping.units
        user = col["user"].ids(62)
        items = col["item"].ids(30)
        bad = np.flatnonzero((items < 0) | (items > _INT32_MAX))
        if bad.size:
            raise col["item"].error(
                int(bad[0]), f"item id out of range 0..{_INT32_MAX}: {items[bad[0]]}"
            )
        correct = col["correct"].correct()
        n = table.num_rows
        if "time" in col:
            time = col["time"].times_ms(units.get("time", "ms"))
            perm, rank = _order_rank(user, time)
            timestamp = time[perm]
        else:
            order = col["order"].numbers() if "order" in col else None
            if order is not None and np.isnan(order).any():
                raise col["order"].error(int(np.flatnonzero(np.isnan(order))[0]), "missing value")
            perm, rank = _order_rank(user, order)
            timestamp = _order_only_time(rank, None if order is None else order[perm])
        elapsed = np.full(n, np.nan, np.float32)
        if "elapsed" in col:
            values = col["elapsed"].numbers(_UNITS[units.get("elapsed", "ms")])
            elapsed = np.where(values >= 0, values, np.nan).astype(np.float32)[perm]
        bundle = col["bundle"].ids(30) if "bundle" in col else np.arange(n, dtype=np.int64)
        raw = Raw(
            user=user[perm],
            timestamp=timestamp,
            content_id=items[perm].astype(np.int32),
            is_lecture=np.zeros(n, bool),
            container=bundle[perm].astype(np.int32),
            correct=correct[perm],
            elapsed=elapsed,
            explanation=np.full(n, -1, np.int8),
            row_id=perm.astype(np.int64),
        )
        if questions_csv is not None:
            vocab = read_question_table(Path(questions_csv)).vocab
        elif "skills" in col:
            pair_items, pair_skills = _skill_pairs(col["skills"], items, separator)
            vocab = vocab_from_log(items, pair_items, pair_skills, own_tag=False)
        else:
            vocab = vocab_from_log(items, items, items, own_tag=True)
        logger.info("read %d rows from %s (columns: %s)", n, path, mapping.name)
        return assemble(
            raw,
            vocab,
            locate=lambda i: locate_file(int(perm[i])),
            shift_prior=False,
            strict=strict,
            questions_path=Path(questions_csv) if questions_csv else path,
            duplicates=duplicates,
        )

    return cached(cache_dir, "table", key, build)


def _order_only_time(rank: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Synthetic timestamps of learner-sorted rows: the dense rank of the order value within the
    learner (file order: the position)."""
    n = len(rank)
    new_learner = np.ones(n, bool)
    new_learner[1:] = rank[1:] != rank[:-1]
    step = np.ones(n, np.int64)
    if order is not None:
        step[1:] = order[1:] != order[:-1]
    step[new_learner] = 0
    total = np.cumsum(step)
    return total - np.maximum.accumulate(np.where(new_learner, total, 0))


def resolve_mapping(path: Path, columns: ColumnMap | str | None) -> ColumnMap:
    if isinstance(columns, ColumnMap):
        return columns
    if columns:
        try:
            return parse_columns(columns)
        except ValueError as exc:
            raise DataError(path, 0, None, str(exc)) from None
    header = table_header(path)
    preset = match_preset(header)
    if preset is None:
        raise DataError(
            path,
            1,
            None,
            "no column mapping given and the header matches no preset "
            f"({', '.join(TABLE_PRESETS)}); pass columns='user=...,item=...,correct=...'",
        )
    return preset

"""Locating malformed input: file, line and column of the first bad value (the slow path).

The fast readers (pyarrow) cannot see line numbers; when something is wrong, the helpers here
re-scan the file with the `csv` module to name the exact physical line (blank lines counted, the
header is line 1) and column. They only ever run on the error path, plus header reading.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from training.data.interactions import DataError

_TRUE = frozenset({"1", "True", "TRUE", "true"})  # pyarrow's default boolean spellings
_FALSE = frozenset({"0", "False", "FALSE", "false"})


def open_text(path: Path) -> io.TextIOWrapper:
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


def header_index(path: Path, header: list[str], required: Sequence[str]) -> dict[str, int]:
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


def records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty data record, header skipped."""
    with open_text(path) as f:
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
    for k, (line, _) in enumerate(records(path)):
        if k == index:
            return line
    return index + 2


def value_problem(text: str, dtype: pa.DataType, required: bool) -> str | None:
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


def raise_bad_cell(
    path: Path,
    header: list[str],
    types: dict[str, pa.DataType],
    required: Sequence[str],
    cause: str,
) -> None:
    """Re-scan `path` with the csv module and raise a DataError for the first bad cell."""
    checks = [(header.index(name), name, dtype) for name, dtype in types.items() if name in header]
    for line, record in records(path):
        if len(record) != len(header):
            raise DataError(path, line, None, f"expected {len(header)} fields, got {len(record)}")
        for i, name, dtype in checks:
            problem = value_problem(record[i], dtype, name in required)
            if problem:
                raise DataError(path, line, name, problem)
    raise DataError(path, 0, None, f"could not parse the file: {cause}")


def read_header(path: Path) -> list[str]:
    with open_text(path) as f:
        try:
            first = f.readline()
        except UnicodeDecodeError:
            raise utf8_error(path) from None
    if not first.strip():
        raise DataError(path, 1, None, "empty file (no header line)")
    return [c.strip() for c in next(csv.reader([first]))]

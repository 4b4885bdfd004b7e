"""The format registry: format name -> loader, the `--format auto` sniffing, and `load_dataset`.

Add a format by adding a `Format` entry to `FORMATS` (a loader, a sniffer, whether it needs a
questions table), never an if/elif. `auto`: a folder is EdNet-KT1; a file is sniffed by each
format's `sniff` in `FORMATS` order (riiid header, table header with a preset or given columns,
sequence file count line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data.ednet import load_ednet
from training.data.interactions import DataError, Interactions
from training.data.riiid import RIIID_REQUIRED, load_riiid
from training.data.sequences import is_count_line, load_sequences
from training.data.table import ColumnMap, is_parquet, load_table, match_preset

_HEADER_SAMPLE = 1 << 16  # bytes read to sniff a file


@dataclass(frozen=True)
class Options:
    """Everything a loader may need beyond the two paths (each loader takes what applies)."""

    strict: bool = False
    cache_dir: Path | None = None
    duplicates: str = "first"
    lectures_csv: Path | None = None
    columns: ColumnMap | str | None = None
    skill_separator: str | None = None


@dataclass(frozen=True)
class Format:
    load: Callable[[Path, Path | None, Options], Interactions]
    sniff: Callable[[Path, Options], bool]  # does this file look like this format?
    needs_questions: bool
    description: str


def _first_line(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(_HEADER_SAMPLE)
    return head.removeprefix(b"\xef\xbb\xbf").split(b"\n", 1)[0].decode("utf-8", "replace").strip()


def _sniff_riiid(path: Path, opts: Options) -> bool:
    return (
        opts.columns is None and not is_parquet(path) and set(RIIID_REQUIRED) <= _csv_header(path)
    )


def _sniff_table(path: Path, opts: Options) -> bool:
    if opts.columns is not None or is_parquet(path):
        return True
    return match_preset(sorted(_csv_header(path))) is not None


def _sniff_sequences(path: Path, opts: Options) -> bool:
    return not is_parquet(path) and is_count_line(_first_line(path))


def _csv_header(path: Path) -> set[str]:
    return {c.strip() for c in _first_line(path).split(",")}


def _load_riiid(path: Path, questions: Path | None, o: Options) -> Interactions:
    assert questions is not None
    return load_riiid(
        path,
        questions,
        o.lectures_csv,
        strict=o.strict,
        cache_dir=o.cache_dir,
        duplicates=o.duplicates,
    )


def _load_ednet(path: Path, questions: Path | None, o: Options) -> Interactions:
    assert questions is not None
    return load_ednet(
        path, questions, strict=o.strict, cache_dir=o.cache_dir, duplicates=o.duplicates
    )


def _load_table(path: Path, questions: Path | None, o: Options) -> Interactions:
    return load_table(
        path,
        questions,
        columns=o.columns,
        skill_separator=o.skill_separator,
        strict=o.strict,
        cache_dir=o.cache_dir,
        duplicates=o.duplicates,
    )


def _load_sequences(path: Path, questions: Path | None, o: Options) -> Interactions:
    return load_sequences(
        path,
        questions,
        skill_separator=o.skill_separator,
        strict=o.strict,
        cache_dir=o.cache_dir,
        duplicates=o.duplicates,
    )


FORMATS: dict[str, Format] = {
    "riiid": Format(_load_riiid, _sniff_riiid, True, "Riiid train.csv (+ questions.csv)"),
    "table": Format(_load_table, _sniff_table, False, "CSV/Parquet log + column mapping"),
    "sequences": Format(
        _load_sequences, _sniff_sequences, False, "3/4-line sequence file (DKT/AKT/pyKT)"
    ),
    "ednet": Format(
        _load_ednet, lambda p, o: p.is_dir(), True, "EdNet-KT1 folder (+ contents/questions.csv)"
    ),
}
FORMAT_NAMES = ("auto", *FORMATS)


def detect_format(path: Path | str, columns: ColumnMap | str | None = None) -> str:
    """The format `auto` picks for `path` (DataError when nothing fits)."""
    path = Path(path)
    if path.is_dir():
        return "ednet"
    if not path.is_file():
        raise DataError(path, 0, None, "no such file or folder")
    opts = Options(columns=columns)
    for name, fmt in FORMATS.items():
        if name != "ednet" and fmt.sniff(path, opts):
            return name
    first = _first_line(path)
    if not first:
        raise DataError(path, 1, None, "empty file (no header line)")
    raise DataError(
        path,
        1,
        None,
        f"cannot tell the format from the first line {first[:60]!r}: not a Riiid header, no table "
        "preset matches (pass columns), not a sequence-file count; pass format=",
    )


def load_dataset(
    train_file: Path | str,
    questions_file: Path | str | None = None,
    format: str = "auto",
    columns: ColumnMap | str | None = None,
    duplicates: str = "first",
    *,
    skill_separator: str | None = None,
    lectures_csv: Path | str | None = None,
    strict: bool = False,
    cache_dir: Path | str | None = None,
    **unknown: Any,
) -> Interactions:
    """Any supported dataset -> Interactions.

    format: "auto" (a folder -> ednet; a file sniffed), or a key of `FORMATS`. questions_file:
    required for riiid/ednet; optional for table/sequences (None: vocabulary built from the log).
    columns: table column mapping ("role=col[:unit],...", a preset name, a ColumnMap; None = the
    preset the header matches). duplicates: "first" | "last" | "error" (exact duplicate rows)."""
    if unknown:
        raise TypeError(f"load_dataset got unexpected keyword arguments: {', '.join(unknown)}")
    if format not in FORMAT_NAMES:
        raise ValueError(f"unknown format {format!r}; known: {', '.join(FORMAT_NAMES)}")
    path = Path(train_file)
    name = detect_format(path, columns) if format == "auto" else format
    fmt = FORMATS[name]
    if questions_file is None and fmt.needs_questions:
        raise DataError(
            path, 0, None, f"the {name} format needs a questions file (questions.csv); none given"
        )
    if lectures_csv is not None and name != "riiid":
        raise ValueError(f"a lectures file applies to the riiid format only, not to {name}")
    if lectures_csv is not None and name != "riiid":
        raise ValueError(f"a lectures file applies to the riiid format only, not to {name}")
    opts = Options(
        strict=strict,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        duplicates=duplicates,
        lectures_csv=Path(lectures_csv) if lectures_csv is not None else None,
        columns=columns,
        skill_separator=skill_separator,
    )
    return fmt.load(path, Path(questions_file) if questions_file is not None else None, opts)

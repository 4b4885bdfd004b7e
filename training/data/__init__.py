"""Dataset loaders: Riiid, EdNet-KT1, generic CSV/Parquet logs and DKT/AKT/pyKT sequence files ->
one per-learner `Interactions` table (the type everything downstream consumes).

Modules (each owns one job):
- `interactions`: `Interactions` (CSR table of all learners' events, cache save/load), `DataError`.
- `locate`: naming the file, line and column of malformed input (the slow error path).
- `questions`: question/lecture tables -> `QuestionVocab`; vocabularies built from a log;
  `stable_id` for string ids.
- `assemble`: file-order columns -> `Interactions` (ordering, duplicate policy, prior_* shift,
  id mapping, cache).
- formats, one module each: `riiid`, `ednet`, `table` (column mapping + presets), `sequences`.
- `registry`: `FORMATS` (name -> loader), `--format auto` sniffing, `load_dataset`.
- `cli` / `__main__`: `python -m training.data --describe FILE ...`.

Everything other modules import from `training.data` is re-exported here.
"""

from training.data.assemble import DUPLICATE_POLICIES
from training.data.cli import LogArguments, describe, main
from training.data.ednet import load_ednet
from training.data.interactions import CACHE_FORMAT, DataError, Interactions
from training.data.locate import line_of_record, utf8_error
from training.data.questions import (
    QuestionTable,
    load_lectures,
    load_questions,
    read_question_table,
    stable_id,
    vocab_from_log,
)
from training.data.registry import FORMATS, Format, Options, detect_format, load_dataset
from training.data.riiid import load_riiid
from training.data.sequences import load_sequences, read_sequences
from training.data.table import TABLE_PRESETS, ColumnMap, load_table, parse_columns

__all__ = [
    "CACHE_FORMAT",
    "DUPLICATE_POLICIES",
    "FORMATS",
    "TABLE_PRESETS",
    "ColumnMap",
    "DataError",
    "Format",
    "Interactions",
    "Options",
    "QuestionTable",
    "LogArguments",
    "describe",
    "detect_format",
    "line_of_record",
    "load_dataset",
    "load_ednet",
    "load_lectures",
    "load_questions",
    "load_riiid",
    "load_sequences",
    "load_table",
    "main",
    "parse_columns",
    "read_question_table",
    "read_sequences",
    "stable_id",
    "utf8_error",
    "vocab_from_log",
]

"""`python -m training.data --describe FILE ...`: load any supported dataset and print its summary
(aligned lines, then the same as one JSON line). Bad input: one `error: ...` line, exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.vocab import UNKNOWN_QUESTION
from training.cli import DataclassArgumentParser, check_paths_exist, flag_field, flag_name
from training.data.assemble import DUPLICATE_POLICIES
from training.data.interactions import DataError, Interactions
from training.data.registry import FORMAT_NAMES, FORMATS, detect_format, load_dataset


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
        "vocab_tags": len(inter.vocab.tag_ids),
        "duplicates_dropped": int(inter.duplicates_dropped),
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


@dataclass
class LogArguments:
    """How a log file is read (shared by every command that reads logs: training.train, distill,
    evaluate, export, data); `load_options()` gives the `load_dataset` keyword arguments."""

    _argument_group_name = "log format"

    questions_file: str | None = flag_field(
        "questions table (Riiid questions.csv or EdNet contents/): required for those two formats; "
        "optional for tables and sequence files (then the vocabulary and skills come from the log)",
        default=None,
        aliases=["--questions"],
    )
    format: str = flag_field("input format", default="auto", choices=FORMAT_NAMES)
    columns: str | None = flag_field(
        "table: role=column[:unit],... (roles user,item,correct,time,order,skills,elapsed,bundle; "
        "units ms,s,us) or a preset name; default: the preset the header matches",
        default=None,
        metavar="MAP",
    )
    skill_separator: str | None = flag_field(
        "separator of several skill ids in one cell (default '_'; assist2017 preset: none)",
        default=None,
        metavar="S",
    )
    duplicates: str = flag_field(
        "exact duplicate rows: keep the first / last in file order, or fail",
        default="first",
        choices=DUPLICATE_POLICIES,
    )
    lectures_file: str | None = flag_field(
        "riiid: lectures.csv, the part and tag of each lecture the learners watched (default: "
        "lectures.csv next to the questions file, when there is one)",
        default=None,
        metavar="FILE",
        aliases=["--lectures"],
    )

    def check_files(self) -> None:
        """The named files exist (checked before any work, like a bad flag)."""
        check_paths_exist(self, ["questions_file", "lectures_file"])

    def load_options(self) -> dict[str, Any]:
        """The `load_dataset` keyword arguments of these flags (the questions file aside)."""
        return {
            "format": self.format,
            "columns": self.columns,
            "duplicates": self.duplicates,
            "skill_separator": self.skill_separator,
            "lectures_csv": self.lectures_file,
        }

    def questions_path(self) -> Path | None:
        return Path(self.questions_file) if self.questions_file else None

    def as_flags(self) -> list[str]:
        """These settings as command-line flags (to hand them to another command)."""
        flags: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                flags += [flag_name(f.name), str(value)]
        return flags


@dataclass
class DescribeArguments:
    _argument_group_name = "describe"

    describe: str = flag_field(
        "Riiid train.csv, EdNet-KT1 folder, CSV/Parquet log or sequence file",
        metavar="FILE",
    )
    strict: bool = flag_field("unknown question ids are an error", default=False)
    cache_dir: str | None = flag_field("reuse/save the preprocessed table here", default=None)


def main(argv: list[str] | None = None) -> int:
    parser = DataclassArgumentParser(
        [DescribeArguments, LogArguments],
        config=False,
        prog="python -m training.data",
        description="Inspect a KT dataset.",
    )
    options, log = parser.parse(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    path = Path(options.describe)
    try:
        fmt = detect_format(path, log.columns) if log.format == "auto" else log.format
        questions = log.questions_path()
        if questions is None and FORMATS[fmt].needs_questions:
            questions = _default_questions(path)
            if questions is None:
                parser.error("--questions is required (no questions.csv found next to FILE)")
        inter = load_dataset(
            path,
            questions,
            **{**log.load_options(), "format": fmt},
            strict=options.strict,
            cache_dir=options.cache_dir,
        )
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {**describe(inter), "format": fmt}
    print(_format_summary(summary))
    print(json.dumps(summary))
    return 0

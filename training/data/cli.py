"""`python -m training.data --describe FILE ...`: load any supported dataset and print its summary
(aligned lines, then the same as one JSON line). Bad input: one `error: ...` line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from models.features import UNKNOWN_QUESTION
from training.cli import OneLineArgumentParser
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


def add_format_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--format, --columns, --skill-separator, --duplicates: how a log file is read (shared by
    every command that reads logs; `dataset_options(args)` turns them into load_dataset kwargs)."""
    parser.add_argument(
        "--format", choices=FORMAT_NAMES, default="auto", help="input format (default: auto)"
    )
    parser.add_argument(
        "--columns",
        metavar="MAP",
        help="table: role=column[:unit],... (roles user,item,correct,time,order,skills,elapsed,"
        "bundle; units ms,s,us) or a preset name; default: the preset the header matches",
    )
    parser.add_argument(
        "--skill-separator",
        metavar="S",
        help="separator of several skill ids in one cell (default '_'; assist2017 preset: none)",
    )
    parser.add_argument(
        "--duplicates",
        choices=DUPLICATE_POLICIES,
        default="first",
        help="exact duplicate rows: keep the first / last in file order, or fail (default first)",
    )
    parser.add_argument(
        "--lectures-file",
        "--lectures",
        dest="lectures_file",
        type=Path,
        metavar="FILE",
        help="riiid: lectures.csv, the part and tag of each lecture the learners watched (default: "
        "lectures.csv next to the questions file, when there is one)",
    )


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """The load_dataset keyword arguments of the flags added by `add_format_flags`."""
    return {
        "format": args.format,
        "columns": args.columns,
        "duplicates": args.duplicates,
        "skill_separator": args.skill_separator,
        "lectures_csv": args.lectures_file,
    }


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        prog="python -m training.data", description="Inspect a KT dataset."
    )
    parser.add_argument(
        "--describe",
        type=Path,
        required=True,
        metavar="FILE",
        help="Riiid train.csv, EdNet-KT1 folder, CSV/Parquet log or sequence file",
    )
    parser.add_argument(
        "--questions",
        type=Path,
        help="questions table (riiid/ednet: required, default next to FILE; others: optional)",
    )
    add_format_flags(parser)
    parser.add_argument("--strict", action="store_true", help="unknown question ids are an error")
    parser.add_argument("--cache-dir", type=Path, help="reuse/save the preprocessed table here")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        fmt = detect_format(args.describe, args.columns) if args.format == "auto" else args.format
        questions = args.questions
        if questions is None and FORMATS[fmt].needs_questions:
            questions = _default_questions(args.describe)
            if questions is None:
                parser.error("--questions is required (no questions.csv found next to FILE)")
        inter = load_dataset(
            args.describe,
            questions,
            format=fmt,
            columns=args.columns,
            duplicates=args.duplicates,
            skill_separator=args.skill_separator,
            lectures_csv=args.lectures_file,
            strict=args.strict,
            cache_dir=args.cache_dir,
        )
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {**describe(inter), "format": fmt}
    print(_format_summary(summary))
    print(json.dumps(summary))
    return 0

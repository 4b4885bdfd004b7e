"""`python -m training.split_csv`: cut a Riiid-format CSV per learner in time: prefix -> history.csv,
continuation -> eval.csv (the protocol of `training.evaluate`, `training.replay` and the benchmarks).

Each learner's first (1 - f) of rows go to the history, the rest to eval; the cut is moved forward
to a bundle boundary so a task container is never split. Rows are copied verbatim (Riiid's prior_*
columns keep their meaning: they describe the learner's previous bundle, wherever it landed).
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

from training.cli import OneLineArgumentParser


def split_rows(
    rows: list[dict[str, str]], eval_fraction: float
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    by_user: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_user[row["user_id"]].append(row)
    history: list[dict[str, str]] = []
    evaluation: list[dict[str, str]] = []
    for user_rows in by_user.values():
        n = len(user_rows)
        cut = int(n * (1.0 - eval_fraction))
        key = lambda r: (r["timestamp"], r["task_container_id"])  # noqa: E731
        while 0 < cut < n and key(user_rows[cut]) == key(user_rows[cut - 1]):
            cut += 1
        history.extend(user_rows[:cut])
        evaluation.extend(user_rows[cut:])
    return history, evaluation


def split_file(train_csv: Path, out_dir: Path, eval_fraction: float) -> tuple[Path, Path]:
    with open(train_csv, newline="") as f:
        reader = csv.DictReader(f)
        fieldnames = list(reader.fieldnames or [])
        missing = {"user_id", "timestamp", "task_container_id"} - set(fieldnames)
        if missing:
            raise ValueError(f"{train_csv}:1: missing column(s) {', '.join(sorted(missing))}")
        rows = list(reader)
    history, evaluation = split_rows(rows, eval_fraction)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / "history.csv", out_dir / "eval.csv")
    for path, part in zip(paths, (history, evaluation), strict=True):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(part)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        prog="python -m training.split_csv", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--train-file", required=True)
    parser.add_argument("--eval-fraction", type=float, default=0.2)
    parser.add_argument("--out", required=True, help="directory for history.csv and eval.csv")
    args = parser.parse_args(argv)
    if not 0.0 < args.eval_fraction < 1.0:
        parser.error("--eval-fraction must be in (0, 1)")
    if not Path(args.train_file).exists():
        parser.error(f"--train-file: {args.train_file} does not exist")
    try:
        history, evaluation = split_file(Path(args.train_file), Path(args.out), args.eval_fraction)
    except (ValueError, OSError, csv.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {history} and {evaluation}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

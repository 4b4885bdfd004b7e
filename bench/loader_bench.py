"""Loader benchmark: rows/s and peak memory of `training.data.load_riiid` on a generated Riiid file.

Generates a >= 10M-row Riiid-format train.csv (+ questions.csv) in a temp dir with numpy/pyarrow,
then loads it in a fresh subprocess and reads that child's peak RSS (`ru_maxrss` of
RUSAGE_CHILDREN). A first child that only imports the loader gives the baseline, so the per-row
cost can be extrapolated to the full Riiid file (101,230,332 rows). Also times the binary cache.

    python -m bench.loader_bench [--rows 10500000] [--no-docs]

Prints the numbers and rewrites the `## Loader` section of docs/benchmarks.md (between the
`<!-- loader:start -->` / `<!-- loader:end -->` markers; the rest of the file is left alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from bench.report import BENCHMARKS_MD as DOCS
from bench.report import replace_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "loader"
RIIID_ROWS = 101_230_332
N_QUESTIONS, N_LECTURES = 13_523, 418
COMMAND = "python -m bench.loader_bench"


def _container_plan(
    rng: np.random.Generator, rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(learner of each container, container size, is-lecture) with >= `rows` rows in total."""
    users = int(rows / 250 * 1.2) + 10
    per_user = np.maximum(rng.lognormal(4.2, 1.3, users).astype(np.int64), 1)  # containers/learner
    container_user = np.repeat(np.arange(users), per_user)
    lecture = rng.random(len(container_user)) < 0.02
    size = np.where(lecture, 1, rng.choice([1, 1, 1, 2, 3, 4], len(container_user)))
    ends = np.cumsum(size)
    last = int(np.searchsorted(ends, rows))  # container that crosses `rows`: keep its learner whole
    keep = container_user <= container_user[min(last, len(ends) - 1)]
    return container_user[keep], size[keep], lecture[keep]


def generate(path: Path, rows: int, seed: int = 0) -> int:
    """Write a Riiid train.csv with about `rows` rows (whole learners); returns the row count."""
    rng = np.random.default_rng(seed)
    c_user, c_size, c_lecture = _container_plan(rng, rows)
    n_c = len(c_user)
    first = np.concatenate([[True], c_user[1:] != c_user[:-1]])
    c_index = np.arange(n_c) - np.maximum.accumulate(np.where(first, np.arange(n_c), 0))
    gap = np.where(first, 0, rng.exponential(60_000, n_c).astype(np.int64) + 1000)
    c_time = np.cumsum(gap)
    c_time -= np.maximum.accumulate(np.where(first, c_time, 0))  # every learner starts at 0
    ids = rng.permutation(np.unique(rng.integers(1, 2**31 - 1, 2 * (int(c_user[-1]) + 1))))
    row_c = np.repeat(np.arange(n_c), c_size)
    n = len(row_c)
    lec = c_lecture[row_c]
    pos = np.arange(n) - np.repeat(np.cumsum(c_size) - c_size, c_size)  # index within its container
    c_base = rng.integers(0, N_QUESTIONS, n_c)  # a bundle = consecutive question ids (no repeats)
    no_prior = first[row_c]
    c_elapsed = rng.integers(2, 60, n_c).astype(np.float32) * 1000  # one value per container
    c_explained = rng.random(n_c) < 0.9
    table = pa.table(
        {
            "row_id": np.arange(n, dtype=np.int64),
            "timestamp": c_time[row_c],
            "user_id": ids[c_user[row_c]],
            "content_id": np.where(
                lec, rng.integers(0, 32_000, n), (c_base[row_c] + pos) % N_QUESTIONS
            ),
            "content_type_id": lec.astype(np.int8),
            "task_container_id": c_index[row_c].astype(np.int32),
            "user_answer": np.where(lec, -1, rng.integers(0, 4, n)).astype(np.int8),
            "answered_correctly": np.where(lec, -1, rng.random(n) < 0.65).astype(np.int8),
            "prior_question_elapsed_time": pa.array(c_elapsed[row_c], mask=no_prior | lec),
            "prior_question_had_explanation": pa.array(c_explained[row_c], mask=no_prior | lec),
        }
    )
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="none"))
    return n


def write_questions(path: Path) -> None:
    rng = np.random.default_rng(1)
    lines = ["question_id,bundle_id,correct_answer,part,tags"]
    parts = rng.integers(1, 8, N_QUESTIONS)
    lines += [f"{q},{q},{q % 4},{p},1 2" for q, p in enumerate(parts.tolist())]
    path.write_text("\n".join(lines) + "\n")


CHILD = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from training.data import Interactions, load_riiid
mode, train, questions, cache = sys.argv[1:5]
if mode == "load":
    t = time.perf_counter()
    inter = load_riiid(Path(train), Path(questions))
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    inter.save(Path(cache))
    print(json.dumps({"rows": inter.n_rows, "learners": inter.n_learners, "load_s": load_s,
                      "save_s": time.perf_counter() - t}))
elif mode == "cache":
    t = time.perf_counter()
    inter = Interactions.load(Path(cache))
    print(json.dumps({"rows": inter.n_rows, "cache_load_s": time.perf_counter() - t}))
else:
    print(json.dumps({}))
"""


# A stdlib-only process that runs one command and reports its children's peak RSS. Measuring from
# here, not from the benchmark process, matters: a child forked from a big parent starts with the
# parent's RSS high-water mark (Linux keeps it across exec), which would swamp the numbers.
PROBE = """
import json, resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def run_child(*args: str) -> tuple[dict, int]:
    """Run CHILD with `args` under the probe; (its JSON output, its peak RSS in bytes)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", PROBE, sys.executable, "-c", CHILD, *args]
    probe = json.loads(
        subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=True).stdout
    )
    if probe["rc"] != 0:
        raise SystemExit(f"benchmark child {args[0]!r} failed:\n{probe['stderr']}")
    return json.loads(probe["stdout"].strip().splitlines()[-1]), probe["maxrss_kib"] * 1024


def measure(rows: int, tmp: Path) -> dict:
    """Generate `rows` rows in `tmp`, load them in fresh children; the numbers as a dict."""
    train, questions, cache = tmp / "train.csv", tmp / "questions.csv", tmp / "cache"
    t = time.perf_counter()
    n = generate(train, rows)
    write_questions(questions)
    gen_s = time.perf_counter() - t
    print(
        f"generated {n:,} rows ({train.stat().st_size / 1e6:.0f} MB) in {gen_s:.1f} s", flush=True
    )
    _, base = run_child("baseline", str(train), str(questions), str(cache))
    load, peak = run_child("load", str(train), str(questions), str(cache))
    cached, cache_peak = run_child("cache", str(train), str(questions), str(cache))
    per_row = (peak - base) / n
    return {
        "rows": n,
        "learners": load["learners"],
        "csv_mb": train.stat().st_size / 1e6,
        "load_s": load["load_s"],
        "rows_per_s": n / load["load_s"],
        "peak_rss_mb": peak / 1e6,
        "baseline_rss_mb": base / 1e6,
        "bytes_per_row": per_row,
        "projected_101m_gb": (base + per_row * RIIID_ROWS) / 1e9,
        "save_s": load["save_s"],
        "cache_load_s": cached["cache_load_s"],
        "cache_peak_rss_mb": cache_peak / 1e6,
        "loadavg_1m": os.getloadavg()[0],
    }


def render(r: dict) -> str:
    """The docs section (heading, setup, one table) of a `measure` result."""
    ok_speed = "yes" if r["rows_per_s"] >= 1e6 else "NO"
    ok_mem = "yes" if r["projected_101m_gb"] <= 8 else "NO"
    return "\n".join(
        [
            "## Loader",
            "",
            f"`load_riiid` end to end (CSV -> sorted, validated, prior_* shifted `Interactions`) on a "
            f"generated Riiid-format file. Reproduce: `{COMMAND}` (or `make bench`).",
            f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), shared; 1-min load average "
            f"during the run {r['loadavg_1m']:.1f}.",
            "Generated data: ~250 rows per learner (lognormal), bundles of 1-4 questions, 2% "
            "lectures, learner by learner in time order (the no-permutation fast path; a file with "
            "interleaved learners adds one stable lexsort, not measured here). Peak RSS is the load "
            "child's `ru_maxrss`; the extrapolation is linear in rows above the import baseline.",
            "",
            "| metric | value | target |",
            "|---|---|---|",
            f"| rows (learners) | {r['rows']:,} ({r['learners']:,}) | >= 10M |",
            f"| CSV size | {r['csv_mb']:.0f} MB | |",
            f"| load time | {r['load_s']:.2f} s | |",
            f"| throughput | {r['rows_per_s'] / 1e6:.2f} M rows/s | >= 1M rows/s: {ok_speed} |",
            f"| peak RSS (baseline after imports) | {r['peak_rss_mb']:.0f} MB ({r['baseline_rss_mb']:.0f} MB) | |",
            f"| bytes per row above baseline | {r['bytes_per_row']:.1f} | |",
            f"| peak RSS extrapolated to 101.2M rows | {r['projected_101m_gb']:.2f} GB | <= 8 GB: {ok_mem} |",
            f"| cache save / cache load (peak RSS) | {r['save_s']:.2f} s / {r['cache_load_s']:.2f} s "
            f"({r['cache_peak_rss_mb']:.0f} MB) | |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_500_000, help="rows to generate (>= 10M)")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the generated file goes")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="loader_bench_") as tmp:
        result = measure(args.rows, Path(tmp))
    section = render(result)
    print(section)
    print(json.dumps(result))
    if not args.no_docs:
        replace_section(DOCS, SECTION, section)
        print(f"updated {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Distillation benchmark: teacher vs distilled student vs scratch student (same size).

    python -m bench.distill_bench [--dataset sim|riiid] [--teacher DIR] [-- extra training.distill flags]

Runs `python -m training.distill` on the training part of the quality benchmark's time split
(bench/out/quality/<dataset>/split/history.csv; run `python -m bench.quality` first, whose SAINT+
can serve as the teacher with --teacher) and copies its report into the `distill-<dataset>`
section of docs/benchmarks.md (+ docs/distill_<dataset>.png).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.quality import RIIID_SAMPLE, ROOT
from bench.report import BENCHMARKS_MD, write_section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.distill_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dataset", choices=["sim", "riiid"], default="sim")
    parser.add_argument("--learners", type=int, default=2000)
    parser.add_argument(
        "--teacher", default=None, help="trained teacher model dir (else distill trains one)"
    )
    parser.add_argument("--out", default=None)
    args, extra = parser.parse_known_args(argv)
    quality = ROOT / "bench" / "out" / "quality"
    if args.dataset == "sim":
        split = quality / f"sim{args.learners}" / "split"
        questions = quality / f"sim{args.learners}" / "questions.csv"
    else:
        split = quality / "riiid" / "split"
        questions = RIIID_SAMPLE / "questions.csv"
    if not (split / "history.csv").exists():
        parser.error(
            f"{split}/history.csv not found: run `python -m bench.quality --datasets {args.dataset}` first"
        )
    out = Path(args.out) if args.out else ROOT / "bench" / "out" / f"distill_{args.dataset}"
    cmd = [
        sys.executable,
        "-m",
        "training.distill",
        "--train-file",
        str(split / "history.csv"),
        "--questions-file",
        str(questions),
        "--output-dir",
        str(out),
        "--report-to",
        "none",
        "--no-progress",
        *(["--teacher", args.teacher] if args.teacher else []),
        *extra,
    ]
    subprocess.run(cmd, check=True, cwd=ROOT)
    report = json.loads((out / "report.json").read_text())
    print(
        json.dumps({k: report[k] for k in ("teacher", "student", "scratch_student") if k in report})
    )
    png = ROOT / "docs" / f"distill_{args.dataset}.png"
    shutil.copy(out / "report.png", png)
    body = (out / "report.md").read_text().split("\n", 2)[2]
    command = "python -m bench.distill_bench --dataset " + args.dataset
    command += (" --teacher " + args.teacher) if args.teacher else ""
    command += (" " + " ".join(extra)) if extra else ""
    intro = (
        f"Data: the training part of the quality split ({args.dataset}); AUC/log loss on held-out learners "
        "(windows, 10%). Latency: ONNX Runtime, batch 1, T = 100, 1 thread, median of 200. "
        f"Reproduce: `{command}`.\n\n"
    )
    write_section(
        BENCHMARKS_MD,
        f"distill-{args.dataset}",
        f"Distillation ({args.dataset})",
        intro + body + f"\n![distillation]({png.name})\n",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

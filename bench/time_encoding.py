"""SAINT+ time features: bucketed vs continuous vs both (issue: "measure which is better").

    python -m bench.time_encoding [--datasets riiid,sim] [--sim-learners 500]

Same split and protocol as bench.quality (per-learner time split, evaluate bundle by bundle); only
`--time-encoding` changes. Also trains plain SAINT (no time features) as the time-blind reference.
Writes the `time-encoding` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.quality import ROOT, prepare_riiid, prepare_sim, train_and_evaluate
from bench.report import BENCHMARKS_MD, write_section

VARIANTS = (
    ("saint", "none"),
    ("saint_plus", "bucket"),
    ("saint_plus", "continuous"),
    ("saint_plus", "both"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.time_encoding", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--datasets", default="riiid,sim")
    parser.add_argument("--sim-learners", type=int, default=500)
    parser.add_argument("--sim-epochs", type=float, default=8.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "time_encoding"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    lines = [
        "Plain SAINT (no time features) and SAINT+ with lag/elapsed time as bucket embeddings, as a "
        "Linear(1, D) of the capped, scaled value, or both (summed). Validation AUC: held-out learners "
        "of the training part (what defaults are chosen on); test AUC: the eval rows, bundle by bundle. "
        f"Reproduce: `python -m bench.time_encoding --datasets {args.datasets} --sim-learners {args.sim_learners}`.",
        "",
        "| dataset | model | time encoding | validation AUC | test AUC | test log loss |",
        "|---|---|---|---|---|---|",
    ]
    for dataset in args.datasets.split(","):
        if dataset == "sim":
            split, questions, _ = prepare_sim(out, args.sim_learners)
            flags = ["--epochs", str(args.sim_epochs)]
        else:
            split, questions, _ = prepare_riiid(out)
            flags = []
        for model, encoding in VARIANTS:
            extra = flags + (["--time-encoding", encoding] if encoding != "none" else [])
            row = train_and_evaluate(model, split, questions, out / dataset / encoding, extra)
            print(
                json.dumps(
                    {
                        "dataset": dataset,
                        "encoding": encoding,
                        **{k: v for k, v in row.items() if not k.startswith("_")},
                    }
                )
            )
            lines.append(
                f"| {dataset} | {model} | {encoding} | {row['valid_auc']:.4f} | {row['auc']:.4f} | {row['logloss']:.4f} |"
            )
    print("\n".join(lines))
    write_section(BENCHMARKS_MD, "time-encoding", "SAINT+ time encodings", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

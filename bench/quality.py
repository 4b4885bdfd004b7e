"""Model quality benchmark: logistic, DKT, SAINT, SAINT+ on the same per-learner time split.

    python -m bench.quality [--datasets sim,riiid] [--models ...] [--epochs N]

Datasets: the simulator (2,000 learners, seed 0; its oracle AUC on the same eval rows is the
ceiling) and the Riiid sample in ../shared/data/riiid_sample (not in the repo). Each learner's first
80% of rows -> history.csv (training data, and the history at evaluation), last 20% -> eval.csv,
predicted bundle by bundle with `training.evaluate` (the service protocol). Every model is trained
by `python -m training.train` with its default hyperparameters unless flags say otherwise.
Writes the `quality` section of docs/benchmarks.md and docs/quality_calibration.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.report import write_section
from training.evaluate import evaluate, plot_calibration
from training.metrics import binary_metrics, roc_auc
from training.simulate import simulate, write
from training.split_csv import split_file

ROOT = Path(__file__).resolve().parents[1]
RIIID_SAMPLE = ROOT.parent / "shared" / "data" / "riiid_sample"
MODELS = ("logistic", "dkt", "saint", "saint_plus")


def prepare_sim(out: Path, learners: int) -> tuple[Path, Path, Path | None]:
    data = out / f"sim{learners}"
    if not (data / "train.csv").exists():
        write(simulate(learners, seed=0), data)
    split_file(data / "train.csv", data / "split", 0.2)
    return data / "split", data / "questions.csv", data / "truth.csv"


def prepare_riiid(out: Path) -> tuple[Path, Path, None]:
    if not (RIIID_SAMPLE / "train.csv").exists():
        raise FileNotFoundError(
            f"{RIIID_SAMPLE} not found (the Riiid sample is not part of the repo)"
        )
    split_file(RIIID_SAMPLE / "train.csv", out / "riiid" / "split", 0.2)
    return out / "riiid" / "split", RIIID_SAMPLE / "questions.csv", None


def oracle_auc(split: Path, truth: Path) -> float:
    with open(truth, newline="") as f:
        p_by_row = {int(r["row_id"]): float(r["p_correct"]) for r in csv.DictReader(f)}
    ys, ps = [], []
    with open(split / "eval.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["content_type_id"] == "0":
                ys.append(int(r["answered_correctly"]))
                ps.append(p_by_row[int(r["row_id"])])
    return roc_auc(np.array(ys), np.array(ps))


def train_and_evaluate(
    name: str, split: Path, questions: Path, out: Path, extra: list[str]
) -> dict:
    model_dir = out / name
    cmd = [
        sys.executable,
        "-m",
        "training.train",
        "--train-file",
        str(split / "history.csv"),
        "--questions-file",
        str(questions),
        "--model",
        name,
        "--output-dir",
        str(model_dir),
        "--report-to",
        "none",
        "--no-progress",
        *extra,
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    train_metrics = json.loads((model_dir / "metrics.json").read_text())
    metrics, labels, probs = evaluate(
        model_dir, split / "eval.csv", questions, split / "history.csv"
    )
    raw = uncalibrated_metrics(model_dir, split, questions)
    return {
        "model": name,
        "auc": metrics["auc"],
        "acc": metrics["acc"],
        "logloss": metrics["logloss"],
        "ece": metrics["ece"],
        "brier": metrics["brier"],
        "logloss_raw": raw["logloss"],
        "ece_raw": raw["ece"],
        "n": metrics["n"],
        "params": train_metrics["params"],
        "train_s": train_metrics["train_seconds"],
        "wall_s": round(wall, 1),
        "seq_per_s": train_metrics["train_sequences_per_s"],
        "valid_auc": train_metrics.get("auc"),
        "_labels": labels,
        "_probs": probs,
    }


def uncalibrated_metrics(model_dir: Path, split: Path, questions: Path) -> dict:
    """The same evaluation with the model's Platt calibration switched off (scale 1, bias 0)."""
    raw_dir = model_dir.with_name(model_dir.name + "_uncalibrated")
    shutil.rmtree(raw_dir, ignore_errors=True)
    shutil.copytree(model_dir, raw_dir, ignore=shutil.ignore_patterns("checkpoints", "runs"))
    config = json.loads((raw_dir / "config.json").read_text())
    config.update({"calibration_scale": 1.0, "calibration_bias": 0.0})
    (raw_dir / "config.json").write_text(json.dumps(config))
    metrics, _, _ = evaluate(raw_dir, split / "eval.csv", questions, split / "history.csv")
    return metrics


def reference_rows(split: Path) -> list[dict]:
    """Base rate (the training mean for every row) and question mean (each question's training
    accuracy, shrunk to the base rate by 5 pseudo-answers): the floors every model must beat."""

    def answers(path: Path) -> tuple[np.ndarray, np.ndarray]:
        q, y = [], []
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if r["content_type_id"] == "0":
                    q.append(int(r["content_id"]))
                    y.append(int(r["answered_correctly"]))
        return np.array(q), np.array(y, dtype=np.float64)

    train_q, train_y = answers(split / "history.csv")
    eval_q, eval_y = answers(split / "eval.csv")
    base = float(train_y.mean())
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for q, y in zip(train_q.tolist(), train_y.tolist(), strict=True):
        sums[q] = sums.get(q, 0.0) + y
        counts[q] = counts.get(q, 0) + 1
    prior = 5.0
    q_mean = np.array(
        [(sums.get(q, 0.0) + prior * base) / (counts.get(q, 0) + prior) for q in eval_q]
    )
    rows = []
    for name, probs in (("base rate", np.full(len(eval_y), base)), ("question mean", q_mean)):
        m = binary_metrics(eval_y, probs)
        rows.append({"model": name, **m})
    return rows


def table(
    rows: list[dict], oracle: float | None, references: list[dict] | None = None
) -> list[str]:
    lines = [
        "| model | AUC | ACC | log loss | ECE | Brier | log loss / ECE uncalibrated | params | train s | train seq/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    if oracle is not None:
        lines.append(f"| oracle (simulator truth) | {oracle:.4f} | | | | | | | | |")
    for r in references or []:
        lines.append(
            f"| {r['model']} | {r['auc']:.4f} | {r['acc']:.4f} | {r['logloss']:.4f} | {r['ece']:.4f} "
            f"| {r['brier']:.4f} | | | | |"
        )
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['auc']:.4f} | {r['acc']:.4f} | {r['logloss']:.4f} | {r['ece']:.4f} "
            f"| {r['brier']:.4f} | {r['logloss_raw']:.4f} / {r['ece_raw']:.4f} | {r['params']:,} "
            f"| {r['train_s']:.0f} | {r['seq_per_s']:.0f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--datasets", default="sim,riiid")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--learners", type=int, default=2000)
    parser.add_argument(
        "--sim-epochs",
        type=float,
        default=6.0,
        help="epochs on the simulator (400k rows; the Riiid sample uses the defaults)",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "quality"))
    parser.add_argument(
        "--no-docs", action="store_true", help="print only; do not touch docs/benchmarks.md"
    )
    args, extra = parser.parse_known_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections: list[str] = [
        "Per-learner time split (first 80% of each learner's rows -> training + history, last 20% -> "
        "eval, predicted bundle by bundle with `training.evaluate`). Default `training.train` "
        "(probabilities Platt-calibrated on the validation learners; the uncalibrated column is "
        "the same model with the calibration switched off) "
        f"hyperparameters{(' plus ' + ' '.join(extra)) if extra else ''} (simulator: --epochs {args.sim_epochs:g}). Reproduce: "
        f"`python -m bench.quality --datasets {args.datasets}{(' ' + ' '.join(extra)) if extra else ''}`.",
        "",
    ]
    calib: list[tuple[str, np.ndarray, np.ndarray]] = []
    for dataset in args.datasets.split(","):
        if dataset == "sim":
            split, questions, truth = prepare_sim(out, args.learners)
            title = f"Simulator, {args.learners} learners (seed 0)"
        elif dataset == "riiid":
            split, questions, truth = prepare_riiid(out)
            title = "Riiid sample (299 learners, real data)"
        else:
            parser.error(f"unknown dataset {dataset!r}")
        oracle = oracle_auc(split, truth) if truth is not None else None
        rows = []
        for name in args.models.split(","):
            flags = [*extra, "--epochs", str(args.sim_epochs)] if dataset == "sim" else extra
            row = train_and_evaluate(name, split, questions, out / dataset, flags)
            print(
                json.dumps(
                    {"dataset": dataset, **{k: v for k, v in row.items() if not k.startswith("_")}}
                )
            )
            rows.append(row)
            if name == "saint_plus":
                calib.append((dataset, row["_labels"], row["_probs"]))
        references = reference_rows(split)
        sections += [f"### {title}", "", *table(rows, oracle, references), ""]
        print("\n".join(table(rows, oracle, references)))
    if calib and not args.no_docs:
        plot_calibration(
            calib[0][1],
            calib[0][2],
            ROOT / "docs" / "quality_calibration.png",
            title=f"SAINT+ calibration ({calib[0][0]})",
        )
        sections += ["![SAINT+ calibration](quality_calibration.png)", ""]
    if not args.no_docs:
        write_section(
            ROOT / "docs" / "benchmarks.md", "quality", "Model quality", "\n".join(sections)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

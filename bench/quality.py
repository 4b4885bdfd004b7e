"""Model quality benchmark: logistic, DKT, SAINT, SAINT+ on the same per-learner time split.

    python -m bench.quality [--datasets riiid,statics,sim,retry] [--learners 500,2000] [--models ...]

Datasets: the simulator (seed 0, one run per --learners size; its oracle AUC on the same eval rows
is the ceiling, and its history-only reference, which knows the generative model but not the
learners' latent traits, the fairer one), the Riiid sample in ../shared/data/riiid_sample and Statics 2011 in
../shared/data/statics2011_akt (neither is in the repo). Riiid and simulator: each learner's first
80% of rows -> history.csv (training data, and the history at evaluation), last 20% -> eval.csv.
Statics: fold 1 of the AKT split, train on statics_train1 (validation learners drawn from it),
report statics_test1 (learners never seen). Eval rows are predicted bundle by bundle with
`training.evaluate` (the service protocol). Every model is trained by `python -m training.train`
with its default hyperparameters unless flags say otherwise. Every model row carries 95 %
intervals of its AUC and ECE over learner resamples, and SAINT+ is compared with each other model by
the paired AUC difference and its interval (`training.bootstrap`). Writes the `quality` section of
docs/benchmarks.md, docs/quality_calibration.png and (several simulator sizes) docs/quality_curve.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report import write_section
from models.numeric import sigmoid
from training.binary_metrics import binary_metrics
from training.bootstrap import paired_auc_difference
from training.data import load_dataset
from training.evaluate import evaluate, plot_calibration
from training.simulate import SimParams, SimulatedData, simulate, write
from training.split_csv import split_file

ROOT = Path(__file__).resolve().parents[1]
RIIID_SAMPLE = ROOT.parent / "shared" / "data" / "riiid_sample"
STATICS = ROOT.parent / "shared" / "data" / "statics2011_akt"
MODELS = ("logistic", "dkt", "saint", "saint_plus")
BOOTSTRAP = 200  # learner resamples of every interval in the tables (training.bootstrap)


@dataclass
class Benchmark:
    """One data set: what to train on, what to predict (with which history), what it is."""

    name: str
    title: str
    train_file: Path
    eval_file: Path
    history_file: Path | None  # None: eval learners are predicted from an empty history
    questions: Path | None  # None: the vocabulary comes from the log (sequence files)
    truth: Path | None = None  # simulator ground truth (oracle AUC)


def first_line(path: Path) -> str:
    with open(path) as f:
        return f.readline()


def prepare_sim(out: Path, learners: int) -> Benchmark:
    data = out / f"sim{learners}"
    truth = data / "truth.csv"
    if not truth.exists() or "p_history_only" not in first_line(truth):
        write(simulate(learners, seed=0), data)  # same seed: the same log, with today's truth
    split = data / "split"
    split_file(data / "train.csv", split, 0.2)
    return Benchmark(
        f"sim{learners}",
        f"Simulator, {learners:,} learners (seed 0)",
        split / "history.csv",
        split / "eval.csv",
        split / "history.csv",
        data / "questions.csv",
        data / "truth.csv",
    )


# The "retry" data set stands in for the medium-size real log we are judged on (about 940k answers
# from 1.7k learners, no timestamps, many repeated attempts at the same item in a row): simulated
# learners who retry a wrongly answered bundle (RETRY_PROB), long histories, written as 4-line
# sequence files (order is the only time; a question's skills on the skill line).
RETRY_PROB = 0.5
RETRY_MEAN_LENGTH = 550.0


def write_sequences(sim: SimulatedData, learners: np.ndarray, path: Path) -> int:
    """Write the question rows of `learners` as a 4-line sequence file; returns the answers."""
    rows = sim.train
    is_q = rows["content_type_id"] == 0
    tags = dict(zip(sim.questions["question_id"].tolist(), sim.questions["tags"], strict=True))
    n_answers = 0
    with open(path, "w") as f:
        for user in learners.tolist():
            sel = is_q & (rows["user_id"] == user)
            qs = rows["content_id"][sel].tolist()
            ys = rows["answered_correctly"][sel].tolist()
            skills = [str(tags[q]).replace(" ", "_") for q in qs]
            f.write(f"{len(qs)}\n{','.join(map(str, qs))}\n{','.join(skills)}\n")
            f.write(",".join(map(str, ys)) + "\n")
            n_answers += len(qs)
    return n_answers


def prepare_retry(out: Path, learners: int) -> Benchmark:
    data = out / f"retry{learners}"
    train, test = data / "train.txt", data / "test.txt"
    if not test.exists():
        data.mkdir(parents=True, exist_ok=True)
        sim = simulate(
            learners,
            seed=0,
            mean_length=RETRY_MEAN_LENGTH,
            params=SimParams(retry_prob=RETRY_PROB),
        )
        users = np.unique(sim.train["user_id"])
        n_test = max(1, len(users) // 5)
        write_sequences(sim, users[n_test:], train)
        write_sequences(sim, users[:n_test], test)
    return Benchmark(
        f"retry{learners}",
        f"Simulator with retries, {learners:,} learners (seed 0; retry prob. {RETRY_PROB}, "
        f"mean length {RETRY_MEAN_LENGTH:.0f}; sequence files, order-only time; 20% of the "
        "learners held out)",
        train,
        test,
        None,
        None,
    )


def prepare_riiid(out: Path) -> Benchmark:
    if not (RIIID_SAMPLE / "train.csv").exists():
        raise FileNotFoundError(
            f"{RIIID_SAMPLE} not found (the Riiid sample is not part of the repo)"
        )
    split = out / "riiid" / "split"
    split_file(RIIID_SAMPLE / "train.csv", split, 0.2)
    return Benchmark(
        "riiid",
        "Riiid sample (299 learners, real data)",
        split / "history.csv",
        split / "eval.csv",
        split / "history.csv",
        RIIID_SAMPLE / "questions.csv",
    )


def prepare_statics() -> Benchmark:
    if not (STATICS / "statics_train1.csv").exists():
        raise FileNotFoundError(f"{STATICS} not found (Statics 2011 is not part of the repo)")
    return Benchmark(
        "statics",
        "Statics 2011 (AKT fold 1: train on train1, report test1; real data, order-only time)",
        STATICS / "statics_train1.csv",
        STATICS / "statics_test1.csv",
        None,
        None,
    )


TRUTH_ROWS = {"oracle": "p_correct", "history-only": "p_history_only"}
TRUTH_TITLES = {
    "oracle": "oracle (simulator truth: knows the latent state)",
    "history-only": "history-only reference (knows the generative model, infers the learner)",
}


def truth_rows(split: Path, truth: Path) -> list[dict]:
    """The simulator's two ceilings on the eval rows: the oracle and the history-only reference."""
    with open(truth, newline="") as f:
        by_row = {int(r["row_id"]): r for r in csv.DictReader(f)}
    rows = []
    with open(split / "eval.csv", newline="") as f:
        eval_rows = [r for r in csv.DictReader(f) if r["content_type_id"] == "0"]
    labels = np.array([int(r["answered_correctly"]) for r in eval_rows])
    for name, column in TRUTH_ROWS.items():
        probs = np.array([float(by_row[int(r["row_id"])][column]) for r in eval_rows])
        rows.append({"model": TRUTH_TITLES[name], "curve": name, **binary_metrics(labels, probs)})
    return rows


def row_files(model_dir: Path) -> tuple[Path, Path]:
    """Where a model's table row (JSON) and its eval labels and probabilities (npz) are saved."""
    return model_dir / "bench_row.json", model_dir / "bench_eval.npz"


def saved_row(model_dir: Path, extra: list[str]) -> dict | None:
    """The row an earlier run saved for this model dir with the same flags, or None."""
    saved, saved_eval = row_files(model_dir)
    if not (saved.exists() and saved_eval.exists()):
        return None
    row = json.loads(saved.read_text())
    if row.get("flags") != extra:
        return None
    arrays = np.load(saved_eval)
    learners = arrays["learners"] if "learners" in arrays.files else None  # older runs: none
    return {**row, "_labels": arrays["labels"], "_probs": arrays["probs"], "_learners": learners}


def train_and_evaluate(
    name: str, bench: Benchmark, out: Path, extra: list[str], reuse: bool = False
) -> dict:
    """Train `name` with default flags plus `extra`, evaluate it, return its table row.

    The row is saved as `<model_dir>/bench_row.json` (labels and probabilities beside it as
    `bench_eval.npz`); with `reuse`, a saved row trained with the same flags is returned as is.
    """
    model_dir = out / name
    if reuse and (row := saved_row(model_dir, extra)) is not None:
        return row
    questions = ["--questions-file", str(bench.questions)] if bench.questions else []
    cmd = [
        sys.executable,
        "-m",
        "training.train",
        "--train-file",
        str(bench.train_file),
        *questions,
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
    metrics, labels, probs, learners = evaluate(
        model_dir, bench.eval_file, bench.questions, bench.history_file, bootstrap=BOOTSTRAP
    )
    raw = uncalibrated_metrics(model_dir, labels, probs)
    row = {
        "model": name,
        "flags": extra,
        "auc": metrics["auc"],
        "acc": metrics["acc"],
        "logloss": metrics["logloss"],
        "ece": metrics["ece"],
        "brier": metrics["brier"],
        "logloss_raw": raw["logloss"],
        "ece_raw": raw["ece"],
        "auc_ci95": metrics["auc_ci95"],
        "ece_ci95": metrics["ece_ci95"],
        "n": metrics["n"],
        "params": train_metrics["params"],
        "train_s": train_metrics["train_seconds"],
        "wall_s": round(wall, 1),
        "seq_per_s": train_metrics["train_sequences_per_s"],
        "valid_auc": train_metrics.get("auc"),
    }
    saved, saved_eval = row_files(model_dir)
    saved.write_text(json.dumps(row))
    np.savez(saved_eval, labels=labels, probs=probs, learners=learners)
    return {**row, "_labels": labels, "_probs": probs, "_learners": learners}


def uncalibrated_metrics(model_dir: Path, labels: np.ndarray, probs: np.ndarray) -> dict:
    """The same evaluation with the model's Platt calibration switched off: the served logit is
    scale * raw + bias, so raw = (logit(p) - bias) / scale, exactly (no second evaluation)."""
    config = json.loads((model_dir / "config.json").read_text())
    scale = float(config.get("calibration_scale", 1.0))
    bias = float(config.get("calibration_bias", 0.0))
    p = np.clip(probs, 1e-12, 1.0 - 1e-12)
    raw = sigmoid((np.log(p) - np.log1p(-p) - bias) / scale)
    return binary_metrics(labels, raw)


def reference_rows(bench: Benchmark) -> list[dict]:
    """Base rate (the training mean for every row) and question mean (each question's training
    accuracy, shrunk to the base rate by 5 pseudo-answers): the floors every model must beat."""

    def answers(path: Path) -> tuple[np.ndarray, np.ndarray]:
        inter = load_dataset(path, bench.questions)
        is_q = ~inter.is_lecture
        return inter.content_id[is_q].astype(np.int64), inter.correct[is_q].astype(np.float64)

    train_q, train_y = answers(bench.train_file)
    eval_q, eval_y = answers(bench.eval_file)
    base = float(train_y.mean())
    prior = 5.0
    ids, inverse = np.unique(train_q, return_inverse=True)
    sums = np.bincount(inverse, weights=train_y, minlength=len(ids))
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    pos = np.clip(np.searchsorted(ids, eval_q), 0, max(len(ids) - 1, 0))
    known = ids[pos] == eval_q
    q_mean = np.where(known, (sums[pos] + prior * base) / (counts[pos] + prior), base)
    rows = []
    for name, probs in (("base rate", np.full(len(eval_y), base)), ("question mean", q_mean)):
        m = binary_metrics(eval_y, probs)
        rows.append({"model": name, **m})
    return rows


def _ci(row: dict, key: str) -> str:
    """'lo–hi' of a row's 95 % learner-bootstrap interval, or '' when the run has none."""
    interval = row.get(key)
    return f"{interval[0]:.4f}–{interval[1]:.4f}" if interval else ""


def table(rows: list[dict], references: list[dict]) -> list[str]:
    """Markdown rows: the references (ceilings, base rate, question mean), then the models."""
    lines = [
        "| model | AUC | AUC 95% CI | ACC | log loss | ECE | ECE 95% CI | Brier "
        "| log loss / ECE uncalibrated | params | train s | train seq/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in references:
        lines.append(
            f"| {r['model']} | {r['auc']:.4f} | | {r['acc']:.4f} | {r['logloss']:.4f} "
            f"| {r['ece']:.4f} | | {r['brier']:.4f} | | | | |"
        )
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['auc']:.4f} | {_ci(r, 'auc_ci95')} | {r['acc']:.4f} "
            f"| {r['logloss']:.4f} | {r['ece']:.4f} | {_ci(r, 'ece_ci95')} | {r['brier']:.4f} "
            f"| {r['logloss_raw']:.4f} / {r['ece_raw']:.4f} | {r['params']:,} "
            f"| {r['train_s']:.0f} | {r['seq_per_s']:.0f} |"
        )
    return lines


def paired_lines(rows: list[dict], reference: str = "saint_plus") -> list[str]:
    """SAINT+'s AUC minus each other model's on the same eval answers, with the 95 % interval of
    the difference (learners resampled together for both models: `paired_auc_difference`)."""
    ref = next((r for r in rows if r["model"] == reference), None)
    if ref is None or ref.get("_learners") is None:
        return []
    lines = []
    for r in rows:
        if r is ref or r.get("_learners") is None:
            continue
        if not np.array_equal(r["_labels"], ref["_labels"]):
            raise ValueError(f"{r['model']} and {reference} were evaluated on different answers")
        diff = paired_auc_difference(
            ref["_labels"], ref["_probs"], r["_probs"], ref["_learners"], n_resamples=BOOTSTRAP
        )
        lo, hi = diff["auc_diff_ci95"]
        lines.append(
            f"- {reference} − {r['model']}: AUC {diff['auc_diff']:+.4f} "
            f"(95% CI {lo:+.4f} … {hi:+.4f})"
        )
    if lines:
        lines.insert(
            0,
            f"Paired AUC differences on the same eval answers ({BOOTSTRAP} resamples of the "
            "learners, both models resampled together; the AUC and ECE intervals above resample "
            "the learners of each model alone):",
        )
    return lines


def plot_curve(curve: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """AUC against simulated learners, one line per model, the two simulator ceilings dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curve.items():
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, "--" if name in TRUTH_ROWS else "o-", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("simulated learners (80% of each history trains)")
    ax.set_ylabel("eval AUC")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--datasets", default="riiid,statics,sim")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--learners", default="500,2000", help="simulator sizes, comma-separated (learning curve)"
    )
    parser.add_argument(
        "--sim-epochs",
        type=float,
        default=6.0,
        help="epochs on the simulator (400k rows; the Riiid sample uses the defaults)",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "quality"))
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a model's row from an earlier run (bench_row.json in its folder) when it was "
        "trained with the same flags, instead of training it again",
    )
    parser.add_argument(
        "--reuse-only",
        action="store_true",
        help="train nothing: render the saved rows, leaving out (and naming) the models without one",
    )
    parser.add_argument(
        "--no-docs", action="store_true", help="print only; do not touch docs/benchmarks.md"
    )
    parser.add_argument(
        "--section",
        default="quality",
        help="docs/benchmarks.md section to (re)write (default quality; e.g. quality-sim to keep "
        "a separate run of other datasets beside it)",
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
        f"`python -m bench.quality --datasets {args.datasets} --learners {args.learners} "
        f"--section {args.section}{(' ' + ' '.join(extra)) if extra else ''}`.",
        "",
    ]
    calib: list[tuple[str, np.ndarray, np.ndarray]] = []
    curve: dict[str, list[tuple[int, float]]] = {}
    benches: list[Benchmark] = []
    for dataset in args.datasets.split(","):
        if dataset == "sim":
            benches += [prepare_sim(out, int(n)) for n in args.learners.split(",")]
        elif dataset == "retry":
            benches += [prepare_retry(out, int(n)) for n in args.learners.split(",")]
        elif dataset == "riiid":
            benches.append(prepare_riiid(out))
        elif dataset == "statics":
            benches.append(prepare_statics())
        else:
            parser.error(f"unknown dataset {dataset!r}")
    for bench in benches:
        is_sim = bench.truth is not None
        ceilings = truth_rows(bench.eval_file.parent, bench.truth) if bench.truth else []
        rows = []
        for name in args.models.split(","):
            flags = [*extra, "--epochs", str(args.sim_epochs)] if is_sim else extra
            if args.reuse_only:
                found = saved_row(out / bench.name / name, flags)
                if found is None:
                    print(f"{bench.name}: no saved row for {name} (not run)")
                    continue
                row = found
            else:
                row = train_and_evaluate(name, bench, out / bench.name, flags, args.reuse)
            print(
                json.dumps(
                    {
                        "dataset": bench.name,
                        **{k: v for k, v in row.items() if not k.startswith("_")},
                    }
                )
            )
            rows.append(row)
            if is_sim:
                curve.setdefault(name, []).append((int(bench.name[3:]), row["auc"]))
            if name == "saint_plus":
                calib.append((bench.name, row["_labels"], row["_probs"]))
        for ceiling in ceilings:
            curve.setdefault(ceiling["curve"], []).append((int(bench.name[3:]), ceiling["auc"]))
        references = ceilings + reference_rows(bench)
        paired = paired_lines(rows)
        sections += [f"### {bench.title}", "", *table(rows, references), ""]
        sections += [*paired, ""] if paired else []
        print("\n".join([*table(rows, references), *paired]))
    if len(curve.get("oracle", [])) > 1 and not args.no_docs:
        plot_curve(curve, ROOT / "docs" / f"{args.section}_curve.png")
        sections += [f"![AUC against simulated learners]({args.section}_curve.png)", ""]
    if calib and not args.no_docs:
        plot_calibration(
            calib[0][1],
            calib[0][2],
            ROOT / "docs" / f"{args.section}_calibration.png",
            title=f"SAINT+ calibration ({calib[0][0]})",
        )
        sections += [f"![SAINT+ calibration]({args.section}_calibration.png)", ""]
    if not args.no_docs:
        title = "Model quality" if args.section == "quality" else f"Model quality ({args.section})"
        write_section(ROOT / "docs" / "benchmarks.md", args.section, title, "\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())

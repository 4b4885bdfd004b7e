"""Training throughput: our SAINT+ against pyKT's SAINT, side by side, in one run.

    pip install --no-deps --target bench/out/pykt pykt-toolkit==0.0.38 pandas python-dateutil pytz \
        tzdata six     # once, beside the project (never a dependency of it); SAINT imports pandas
    python -m bench.throughput [--pykt-path bench/out/pykt] [--steps 20] [--no-docs]

The setting of pyKT's SAINT benchmark configuration: d_model 256, 2 encoder + 2 decoder blocks, 8
heads, sequences of 200, batch 64, CPU, 1 thread (`torch.set_num_threads(1)`). Both models train on
the same simulated learners (200-answer sequences, 1,000 questions) with AdamW; one step = forward,
BCE loss over the labelled positions, backward, optimizer step. The batches are built before the
timed loop for both (pyKT's loader hands over ready tensors; ours is timed separately as "window
encoding", the numpy work a DataLoader worker does per window). Reported: median seconds per step
over `--steps` steps after 3 warm-up steps, and sequences per second = 64 / that median.

pyKT's modules are loaded from their files (`pykt/models/saint.py` + `utils.py`) without running
`pykt/__init__.py`, which imports every model and its optional dependencies.

Prints the numbers and rewrites the `throughput` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import BENCHMARKS_MD, ROOT, write_section

D_MODEL, BLOCKS, HEADS, LENGTH, BATCH = 256, 2, 8, 200, 64
N_QUESTIONS = 1000


def interleaved_steps(
    steps: dict[str, Callable[[], None]], n: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Seconds of each of `n` steps per model, the models taking turns step by step, so that a
    change in the machine's load during the run hits every model alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(n):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    return times


def simulated_windows() -> tuple[Any, Any, list[dict[str, np.ndarray]], float]:
    """(spec, vocab, BATCH encoded windows of LENGTH answers, encoding seconds per window)."""
    import tempfile

    from models.feature_spec import FeatureSpec
    from training.data import load_dataset
    from training.simulate import simulate, write
    from training.windows import WindowDataset, learner_histories

    with tempfile.TemporaryDirectory() as tmp:
        write(simulate(BATCH * 2, seed=0, n_questions=N_QUESTIONS, mean_length=3 * LENGTH), tmp)
        inter = load_dataset(Path(tmp) / "train.csv", Path(tmp) / "questions.csv")
    vocab = inter.vocab
    spec = FeatureSpec(
        window=LENGTH, n_questions=vocab.size, n_parts=vocab.n_parts, n_tags=vocab.n_tags
    )
    histories = [h for h in learner_histories(inter) if len(h) >= LENGTH]
    data = WindowDataset(histories, spec, vocab.item_table(), stride=LENGTH)
    full = [i for i, w in enumerate(data.windows) if w.end - w.start == LENGTH][:BATCH]
    if len(full) < BATCH:
        raise RuntimeError(f"only {len(full)} full windows of {LENGTH} answers")
    started = time.perf_counter()
    windows = [data[i] for i in full]
    per_window = (time.perf_counter() - started) / len(windows)
    return spec, vocab, windows, per_window


def ours(
    ffn_mult: int = 4, attention_dropout: float | None = None, bf16: bool = False
) -> tuple[Callable[[], None], dict[str, Any]]:
    """A training step of our SAINT+; `bf16`: under bfloat16 autocast, as `training.train --bf16`
    (the Trainer's CPU mixed precision) runs it."""
    from models.config import config_for_spec
    from models.registry import build_model
    from training.trainer import KTForTraining
    from training.windows import collate_windows

    spec, vocab, windows, per_window = simulated_windows()
    config = config_for_spec(
        "saint_plus",
        spec,
        vocab,
        d_model=D_MODEL,
        n_layers=BLOCKS,
        n_heads=HEADS,
        ffn_mult=ffn_mult,
        attention_dropout=attention_dropout,
    )
    torch.manual_seed(0)
    model = KTForTraining(build_model(config)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = collate_windows(windows)
    n_labels = int((batch["labels"] >= 0).sum())
    losses: list[float] = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch, num_items_in_batch=n_labels)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    info = {
        "params": sum(p.numel() for p in model.parameters()),
        "encode_ms_per_window": per_window * 1000,
        "losses": losses,
    }
    return step, info


def load_pykt_saint(pykt_path: Path) -> type:
    models_dir = pykt_path / "pykt" / "models"
    if not (models_dir / "saint.py").exists():
        raise SystemExit(
            f"error: no pyKT at {pykt_path} (pip install --no-deps --target {pykt_path} "
            "pykt-toolkit==0.0.38 pandas python-dateutil pytz tzdata six)"
        )
    sys.path.append(str(pykt_path))  # pyKT's own imports (pandas) come from the same folder
    package = types.ModuleType("pykt_saint_only")
    package.__path__ = [str(models_dir)]
    sys.modules["pykt_saint_only"] = package
    module = importlib.import_module("pykt_saint_only.saint")
    return module.SAINT  # type: ignore[no-any-return]


def pykt(pykt_path: Path) -> tuple[Callable[[], None], dict[str, Any]]:
    saint_cls = load_pykt_saint(pykt_path)
    torch.manual_seed(0)
    model = saint_cls(
        num_q=N_QUESTIONS,
        num_c=N_QUESTIONS // 10,
        seq_len=LENGTH,
        emb_size=D_MODEL,
        num_attn_heads=HEADS,
        dropout=0.2,
        n_blocks=BLOCKS,
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    q = torch.from_numpy(rng.integers(1, N_QUESTIONS, (BATCH, LENGTH)))
    c = torch.from_numpy(rng.integers(1, N_QUESTIONS // 10, (BATCH, LENGTH)))
    r = torch.from_numpy(rng.integers(0, 2, (BATCH, LENGTH)))
    loss_fn = torch.nn.BCELoss()
    losses: list[float] = []

    def step() -> None:
        # pyKT's train_model for saint: y = model(cq, cc, r[:, :-1])[:, 1:], BCE on r[:, 1:]
        optimizer.zero_grad(set_to_none=True)
        y = model(q, c, r[:, :-1])[:, 1:]
        loss = loss_fn(y.double(), r[:, 1:].double())
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    return step, {"params": sum(p.numel() for p in model.parameters()), "losses": losses}


NAMES = {
    "pykt": "pyKT SAINT (0.0.38)",
    "ours": "our SAINT+ (defaults: FFN 4 x d_model)",
    "ours_ffn1": "our SAINT+ with pyKT's FFN width (1 x d_model)",
    "ours_fused": "our SAINT+, defaults but `--attention-dropout 0` (fused SDPA kernel)",
    "ours_bf16": "our SAINT+, defaults + `--bf16` (bfloat16 autocast)",
    "ours_bf16_fused": "our SAINT+, `--bf16 --attention-dropout 0`",
    "ours_pykt_size": "our SAINT+ at pyKT's FFN width, `--bf16 --attention-dropout 0`",
}


def render(result: dict[str, Any]) -> str:
    rows = [
        "| model | parameters | median s / step | sequences / s | loss, first -> last step |",
        "|---|---|---|---|---|",
    ]
    for key, name in NAMES.items():
        r = result[key]
        rows.append(
            f"| {name} | {r['params']:,} | {r['step_s']:.3f} | {BATCH / r['step_s']:.1f} "
            f"| {r['loss_first']:.3f} -> {r['loss_last']:.3f} |"
        )
    ratio = result["pykt"]["step_s"] / result["ours"]["step_s"]
    ratio_ffn1 = result["pykt"]["step_s"] / result["ours_ffn1"]["step_s"]
    ratio_fused = result["pykt"]["step_s"] / result["ours_fused"]["step_s"]
    ratio_bf16 = result["pykt"]["step_s"] / result["ours_bf16"]["step_s"]
    ratio_bf16_fused = result["pykt"]["step_s"] / result["ours_bf16_fused"]["step_s"]
    ratio_pykt_size = result["pykt"]["step_s"] / result["ours_pykt_size"]["step_s"]
    encode = result["ours"]["encode_ms_per_window"]
    return (
        f"Setting: d_model {D_MODEL}, {BLOCKS}+{BLOCKS} blocks, {HEADS} heads, length {LENGTH}, batch "
        f"{BATCH}, CPU, 1 thread, AdamW; median of {result['steps']} steps after 3 warm-up steps, the "
        f"models taking turns step by step in one run (`python -m bench.throughput`, {result['date']}; "
        "the machine is shared, so compare the rows, not runs). pyKT trains on random ids (its loss "
        "stays near chance), ours on simulated learners.\n\n"
        + "\n".join(rows)
        + f"\n\nSequences per second against pyKT's SAINT: **{ratio:.2f}×** with our defaults, "
        f"**{ratio_ffn1:.2f}×** at pyKT's FFN width, **{ratio_fused:.2f}×** without attention-weight "
        f"dropout, **{ratio_bf16:.2f}×** with `--bf16`, **{ratio_bf16_fused:.2f}×** with both, and "
        f"**{ratio_pykt_size:.2f}×** with both at pyKT's FFN width (target ≥ 1.5×). `--bf16` runs the forward pass under bfloat16 autocast (weights and "
        "optimizer state stay float32); it pays on CPUs with native bfloat16 (AVX512-BF16 / AMX, "
        "this machine has AVX512-BF16) and is off by default. With weight dropout, SDPA on CPU falls back to its unfused maths "
        "(matmul, safe softmax, a Bernoulli mask over every (B, H, T, S) weight); without it the fused "
        "kernel runs. Our SAINT+ also reads part, tags, "
        "lag/elapsed time and the learner statistics; building its input costs "
        f"{encode:.2f} ms per window of {LENGTH} in numpy (a DataLoader worker's job; "
        f"{encode * BATCH / 1000:.2f} s per batch of {BATCH} if done in the training process).\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.add_argument("--pykt-path", default=str(ROOT / "bench" / "out" / "pykt"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models = {
        "pykt": pykt(Path(args.pykt_path)),
        "ours": ours(),
        "ours_ffn1": ours(ffn_mult=1),
        "ours_fused": ours(attention_dropout=0.0),
        "ours_bf16": ours(bf16=True),
        "ours_bf16_fused": ours(attention_dropout=0.0, bf16=True),
        "ours_pykt_size": ours(ffn_mult=1, attention_dropout=0.0, bf16=True),
    }
    times = interleaved_steps({k: step for k, (step, _) in models.items()}, args.steps)
    result: dict[str, Any] = {"steps": args.steps, "date": time.strftime("%Y-%m-%d")}
    for key, (_, info) in models.items():
        losses = info.pop("losses")
        result[key] = {
            **info,
            "step_s": statistics.median(times[key]),
            "loss_first": losses[0],
            "loss_last": losses[-1],
        }
    print(result)
    section = render(result)
    print(section)
    if not args.no_docs:
        write_section(BENCHMARKS_MD, "throughput", "Training throughput against pyKT", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

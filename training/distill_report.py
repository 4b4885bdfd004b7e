"""What `training.distill` reports: the teachers' ensemble metrics as the student sees its soft
target, an artifact's ORT latency, and report.md / report.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from models.numeric import sigmoid
from training.binary_metrics import binary_metrics
from training.calibration import raw_logits_and_labels
from training.distill_losses import DistillationConfig
from training.windows import WindowDataset


def ensemble_metrics(
    teachers: list[nn.Module], dataset: WindowDataset, cfg: DistillationConfig
) -> dict[str, float]:
    """Metrics of the teachers' averaged soft target, exactly as the student sees it: raw logits,
    probabilities averaged at the distillation temperature, back to a logit at temperature 1."""
    probs: list[np.ndarray] = []
    labels = np.zeros(0)
    for t in teachers:
        logits, labels = raw_logits_and_labels(t, dataset)
        probs.append(sigmoid(logits / cfg.temperature))
    p = np.clip(np.mean(probs, axis=0), 1e-6, 1 - 1e-6)
    p = sigmoid(np.log(p / (1 - p)) * cfg.temperature)
    return {k: float(v) for k, v in binary_metrics(labels, p).items()}


def artifact_latency_ms(artifact_dir: Path, runs: int = 200) -> float:
    """Median ORT latency (ms): batch 1, a full window (T = 100 by default), 1 thread."""
    from models.feature_spec import load_spec
    from training.int8 import latency_batch, ort_latency_ms

    spec, vocab = load_spec(artifact_dir / "feature_spec.json")
    batch = latency_batch(spec, vocab, batch_size=1, length=spec.window)
    return ort_latency_ms(artifact_dir / "model.onnx", batch, threads=1, runs=runs, warmup=20)


def write_report_md(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("teacher", "scratch_student", "student") if n in report]
    lines = [
        "| model | AUC | log loss | params | ONNX bytes | ORT latency ms (B=1, T=100, 1 thread, median) |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        r = report[n]
        lines.append(
            f"| {n} | {r['auc']:.4f} | {r['logloss']:.4f} | {r['params']:,} | {r['onnx_bytes']:,} | {r['latency_ms']:.3f} |"
        )
    if "teacher" in report and "student" in report:
        t, s = report["teacher"], report["student"]
        lines.append("")
        lines.append(
            f"Student AUC - teacher AUC: {s['auc'] - t['auc']:+.4f}; latency ratio teacher/student: {t['latency_ms'] / s['latency_ms']:.1f}x"
        )
    if "scratch_student" in report:
        lines.append(
            f"Distilled - scratch student AUC: {report['student']['auc'] - report['scratch_student']['auc']:+.4f}"
        )
    if "student_int8" in report:
        q = report["student_int8"]
        lines.append(
            f"Dynamic INT8 student: AUC {q['int8_auc']:.4f} vs {q['fp32_auc']:.4f} (loss {q['auc_loss']:+.4f}), "
            f"speedup {q.get('speedup')}x -> {'served' if q['kept'] else 'not kept'} ({q['rule']})"
        )
    (out / "report.md").write_text("# Distillation report\n\n" + "\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(names, [report[n]["auc"] for n in names], color=["C0", "C1", "C2"][: len(names)])
    axes[0].set_ylim(
        min(report[n]["auc"] for n in names) - 0.02, max(report[n]["auc"] for n in names) + 0.01
    )
    axes[0].set_ylabel("AUC")
    axes[1].bar(
        names, [report[n]["latency_ms"] for n in names], color=["C0", "C1", "C2"][: len(names)]
    )
    axes[1].set_ylabel("ORT latency ms")
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=100)
    plt.close(fig)

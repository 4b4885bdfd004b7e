"""Dynamic INT8 quantization of an artifact's model.onnx: `quantize_artifact` measures it (size,
latency, logit difference), `decide_int8` serves it only if it keeps the AUC on held-out data and
is faster (`int8_gate`), and then makes the manifest describe the served graph."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.feature_spec import MODEL_INPUTS, FeatureSpec, load_spec
from models.features import collate, encode
from models.numeric import sigmoid
from models.vocab import UNKNOWN_QUESTION, QuestionVocab
from training.artifacts import SPEC_FILE
from training.binary_metrics import binary_metrics
from training.data import LogArguments
from training.manifest import (
    BUNDLE_ONNX_FILE,
    FP32_FILE,
    INT8_FILE,
    ITEMS_ONNX_FILE,
    MANIFEST_FILE,
    ONNX_FILE,
    artifact_version,
    opset_of,
    read_manifest,
    sha256_file,
    write_manifest,
)
from training.parity import ort_session, parity_batches, random_history
from training.windows import IGNORE_LABEL, WindowDataset, collate_windows, learner_histories

logger = logging.getLogger(__name__)


def latency_batch(
    spec: FeatureSpec, vocab: QuestionVocab, batch_size: int = 1, length: int = 100, seed: int = 0
) -> dict[str, np.ndarray]:
    """A (batch_size, length) batch of full windows, for latency measurements."""
    rng = np.random.default_rng(seed)
    table = vocab.item_table()
    length = min(length, spec.window)
    items = [
        encode(random_history(rng, length, vocab), spec, table, start=0) for _ in range(batch_size)
    ]
    return collate(items, length=length)


def ort_latency_ms(
    onnx_path: str | Path,
    batch: dict[str, np.ndarray],
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
) -> float:
    """Median wall time (ms) of one ORT run on `batch`."""
    session = ort_session(onnx_path, threads=threads)
    feed = {k: batch[k] for k in MODEL_INPUTS}
    for _ in range(warmup):
        session.run(["logits"], feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(["logits"], feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


def quantize_artifact(artifact_dir: str | Path, runs: int = 50) -> Path:
    """Dynamic INT8 quantization of A/model.onnx -> A/model.int8.onnx; records size, latency
    (B=1, T=window, 1 thread, median) and max |logit diff| vs fp32 in the manifest's `int8` entry.
    Whether to serve it is `decide_int8`'s call (AUC on held-out data); this only measures."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    art = Path(artifact_dir)
    fp32 = art / ONNX_FILE
    if not fp32.is_file():
        raise ValueError(f"{art}: no {ONNX_FILE} to quantize")
    spec, vocab = load_spec(art / SPEC_FILE)
    int8_path = art / INT8_FILE
    quantize_dynamic(str(fp32), str(int8_path), weight_type=QuantType.QInt8)
    batch = latency_batch(spec, vocab, batch_size=1, length=spec.window)
    lat_fp32 = ort_latency_ms(fp32, batch, runs=runs)
    lat_int8 = ort_latency_ms(int8_path, batch, runs=runs)
    diff = onnx_logit_diff(fp32, int8_path, spec, vocab)
    info = {
        "file": INT8_FILE,
        "sha256": sha256_file(int8_path),
        "size_bytes": int8_path.stat().st_size,
        "fp32_size_bytes": fp32.stat().st_size,
        "latency_ms": round(lat_int8, 4),
        "fp32_latency_ms": round(lat_fp32, 4),
        "speedup": round(lat_fp32 / lat_int8, 3) if lat_int8 > 0 else None,
        "max_abs_logit_diff_vs_fp32": diff["max_abs_diff"],
        "latency_setup": f"B=1, T={spec.window}, 1 thread, median of {runs}",
    }
    logger.info(
        "int8: %d -> %d bytes, latency %.3f -> %.3f ms, max |logit diff| %.3g",
        info["fp32_size_bytes"],
        info["size_bytes"],
        lat_fp32,
        lat_int8,
        info["max_abs_logit_diff_vs_fp32"],
    )
    manifest_path = art / MANIFEST_FILE
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        manifest["int8"] = info
        write_manifest(art, manifest)
    return int8_path


def onnx_logit_diff(
    reference: Path, other: Path, spec: FeatureSpec, vocab: QuestionVocab
) -> dict[str, Any]:
    """Max |logit difference| of two ONNX graphs on `parity_batches` (overall and per case)."""
    ref_session, other_session = ort_session(reference), ort_session(other)
    cases: list[dict[str, Any]] = []
    diffs: list[float] = []
    for name, batch in parity_batches(spec, vocab):
        feed = {k: batch[k] for k in MODEL_INPUTS}
        a = ref_session.run(["logits"], feed)[0]
        b = other_session.run(["logits"], feed)[0]
        diffs.append(float(np.max(np.abs(a - b))))
        cases.append({"case": name, "shape": list(b.shape), "max_abs_diff": diffs[-1]})
    return {"max_abs_diff": max(diffs), "cases": cases}


def onnx_metrics(
    onnx_path: Path, dataset: WindowDataset, batch_size: int = 256
) -> dict[str, float]:
    """AUC / acc / logloss of an ONNX graph (ORT, CPU) on a window dataset's labelled positions."""
    session = ort_session(onnx_path, threads=1)
    probs, labels = [], []
    for i in range(0, len(dataset), batch_size):
        batch = collate_windows([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))])
        y = batch.pop("labels").numpy()
        logits = session.run(["logits"], {k: batch[k].numpy() for k in MODEL_INPUTS})[0]
        mask = y != IGNORE_LABEL
        probs.append(sigmoid(logits[mask]))
        labels.append(y[mask])
    return binary_metrics(np.concatenate(labels), np.concatenate(probs))


def int8_dataset(
    artifact_dir: Path, data_file: Path, log: LogArguments | None = None
) -> WindowDataset:
    """Windows over held-out data (read with the log-format flags `log`), encoded with the
    artifact's own spec and vocabulary (items matched by raw id), for the INT8 AUC gate."""
    from training.data import load_dataset

    log = log or LogArguments()
    spec, vocab = load_spec(Path(artifact_dir) / SPEC_FILE)
    inter = load_dataset(data_file, log.questions_path(), **log.load_options())
    histories = learner_histories(inter, vocab)
    n = sum(len(h) for h in histories)
    unknown = sum(int((h.question == UNKNOWN_QUESTION).sum()) for h in histories)
    if n and unknown > n / 2:
        raise ValueError(
            f"--int8-data {data_file}: {unknown} of {n} answers are to questions the model does not "
            "know; measure INT8 on held-out data of the model's own question bank"
        )
    return WindowDataset(histories, spec, vocab.item_table())


# Float slack for the AUC comparison: 0.75 - 0.748 is 0.0020000000000000018, which must still
# count as a loss of 0.002 (the documented rule is "at most --max-auc-loss").
_AUC_LOSS_SLACK = 1e-12


def int8_gate(
    fp32_auc: float, int8_auc: float, speedup: float | None, max_auc_loss: float
) -> tuple[bool, str]:
    """The INT8 serving decision from its measurements alone: (kept, reason).

    Kept iff the AUC loss (fp32 - int8) is at most `max_auc_loss` and INT8 is faster here
    (speedup = fp32 latency / int8 latency > 1). A NaN AUC or a missing speedup rejects it.
    """
    auc_loss = fp32_auc - int8_auc
    if not auc_loss <= max_auc_loss + _AUC_LOSS_SLACK:  # also False for NaN
        return False, f"AUC loss {auc_loss:.4g} > max {max_auc_loss:g}"
    if speedup is None or not speedup > 1.0:
        return False, f"not faster here (speedup {speedup})"
    return True, f"AUC loss {auc_loss:.4g} <= max {max_auc_loss:g} and speedup {speedup} > 1"


def decide_int8(
    artifact_dir: Path, dataset: WindowDataset, max_auc_loss: float = 0.002
) -> dict[str, Any]:
    """Serve the dynamic-INT8 graph only if `int8_gate` keeps it, on AUC over `dataset` and the
    speedup `quantize_artifact` measured (the manifest's `int8.speedup`).

    Kept: model.onnx becomes the INT8 graph (the FP32 one is kept as model.fp32.onnx) and the
    manifest describes the served graph: `version` (own digest, `-int8` suffix), `onnx_sha256`,
    `onnx_size_bytes`, `opset`, `parity` (INT8 vs the FP32 graph, itself checked against torch;
    the FP32 entries move to `fp32_*`). Not kept: model.int8.onnx is removed, model.onnx and the
    manifest's graph fields are untouched. Either way `int8` records both measurements and the
    reason, and `held_out_metrics` the served graph's metrics on `dataset`.
    """
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    info = dict(manifest.get("int8") or {})
    fp32_path, int8_path = artifact_dir / ONNX_FILE, artifact_dir / INT8_FILE
    if not int8_path.is_file():
        raise ValueError(f"{artifact_dir}: no {INT8_FILE} (run quantize_artifact first)")
    fp32 = onnx_metrics(fp32_path, dataset)
    int8 = onnx_metrics(int8_path, dataset)
    kept, reason = int8_gate(fp32["auc"], int8["auc"], info.get("speedup"), max_auc_loss)
    info.update(
        {
            "fp32_auc": fp32["auc"],
            "int8_auc": int8["auc"],
            "auc_loss": fp32["auc"] - int8["auc"],
            "fp32_metrics": fp32,
            "int8_metrics": int8,
            "kept": kept,
            "reason": reason,
            "rule": f"kept iff AUC loss <= {max_auc_loss} and faster (speedup > 1)",
        }
    )
    if kept:
        fp32_kept = artifact_dir / FP32_FILE
        fp32_path.rename(fp32_kept)
        int8_path.rename(fp32_path)
        spec, vocab = load_spec(artifact_dir / SPEC_FILE)
        parity = onnx_logit_diff(fp32_kept, fp32_path, spec, vocab)
        parity["reference"] = f"{FP32_FILE} (within {manifest['parity']['tolerance']:g} of torch)"
        digest = sha256_file(fp32_path)
        for key in ("version", "onnx_sha256", "onnx_size_bytes", "opset", "parity"):
            manifest[f"fp32_{key}"] = manifest.get(key)
        created = datetime.fromisoformat(manifest["created_at"])
        manifest.update(
            {
                "version": artifact_version(manifest["model"], created, digest, "int8"),
                "onnx_sha256": digest,
                "onnx_size_bytes": fp32_path.stat().st_size,
                "opset": opset_of(fp32_path),
                "parity_max_abs_diff": parity["max_abs_diff"],
                "parity": parity,
                "quantization": "dynamic-int8",
                "held_out_metrics": int8,
                # one served model: the fp32 bundle graph would score banks with other weights
                "bundle_onnx_sha256": None,
                "items_onnx_sha256": None,
                "bundle_parity_max_abs_diff": None,
            }
        )
        (artifact_dir / BUNDLE_ONNX_FILE).unlink(missing_ok=True)
        (artifact_dir / ITEMS_ONNX_FILE).unlink(missing_ok=True)
        info["file"] = ONNX_FILE
        info["fp32_file"] = FP32_FILE
    else:
        int8_path.unlink()
        manifest["held_out_metrics"] = fp32
    manifest["int8"] = info
    write_manifest(artifact_dir, manifest)
    logger.info(
        "int8: AUC %.4f -> %.4f, speedup %s -> %s (%s)",
        fp32["auc"],
        int8["auc"],
        info.get("speedup"),
        "served" if kept else "not kept",
        reason,
    )
    return info

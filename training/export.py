"""Torch model directory -> serving artifact (ONNX + config + feature spec + manifest), with parity.

    python -m training.export --model-dir D --output-dir A [--int8 [--int8-data F --questions-file Q]]

The artifact directory is the only contract with the service (docs/design.md):
    A/model.onnx          inputs = models.feature_spec.MODEL_INPUTS, each (batch, seq); output `logits`
                          (batch, seq) float32. Batch and length are dynamic, so one graph scores a
                          history + K candidates (one bundle) in a single run.
    A/config.json         models.config.ModelConfig
    A/feature_spec.json   models.feature_spec.save_spec (window, caps, vocabulary, question -> part)
    A/manifest.json       version, model, data fingerprint, metrics, created_at, opset, sha256,
                          parity max abs diff (+ int8 size/latency when --int8)
    A/model.int8.onnx     optional dynamic INT8 quantization, only measured; with --int8-data the
                          AUC gate (`int8_gate`) decides: served as model.onnx (fp32 kept as
                          model.fp32.onnx) iff AUC loss <= --max-auc-loss and faster, else
                          removed. Served: the manifest's version (own digest + "-int8"),
                          sha256, size, opset and parity describe the INT8 graph (fp32_* keep
                          the fp32 values)

Exporter: torch.onnx's dynamo exporter (`dynamo=True`, torch.export with symbolic batch/seq dims)
for every registry model, LSTM included; the legacy TorchScript exporter is only a logged fallback.
Export is never trusted blindly: onnx.checker, then onnxruntime-vs-torch parity on windows of several
lengths (empty history + 1 candidate, 5, 37, window - 1 + K candidates; batch 1 and 3; mixed padding).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx
import torch

from models.feature_spec import MODEL_INPUTS, save_spec
from models.registry import count_parameters
from training.arguments import ExportArguments
from training.artifacts import CONFIG_FILE, SPEC_FILE, load_metrics, load_model_dir
from training.cli import DataclassArgumentParser
from training.data import LogArguments
from training.int8 import decide_int8, int8_dataset, quantize_artifact
from training.manifest import (
    BUNDLE_ONNX_FILE,
    ITEMS_ONNX_FILE,
    ONNX_FILE,
    artifact_version,
    opset_of,
    read_manifest,
    sha256_file,
    write_manifest,
)
from training.onnx_graphs import export_bundle_onnx, export_onnx
from training.parity import ExportError, check_bundle_parity, check_parity

logger = logging.getLogger(__name__)


def export_artifact(
    model_dir: str | Path,
    output_dir: str | Path,
    *,
    int8: bool = False,
    opset: int | None = None,
) -> Path:
    """Export a torch model directory to a serving artifact directory; returns `output_dir`.

    The graph is written to a temporary directory and only moved into `output_dir` after the checker
    and the parity check pass, so a failed export never leaves a half-valid artifact behind.
    """
    model, config, spec, vocab = load_model_dir(model_dir)
    metrics = load_metrics(model_dir) or {}
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: output path exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp_onnx = Path(tmp) / ONNX_FILE
        started = time.perf_counter()
        exporter = export_onnx(model, tmp_onnx, spec, vocab, opset=opset)
        export_s = time.perf_counter() - started
        try:
            onnx.checker.check_model(str(tmp_onnx))
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"onnx.checker rejected the graph: {exc}") from exc
        parity = check_parity(model, tmp_onnx, spec, vocab)
        bundle_parity = None
        if hasattr(model, "forward_bundle"):
            tmp_bundle, tmp_items = Path(tmp) / BUNDLE_ONNX_FILE, Path(tmp) / ITEMS_ONNX_FILE
            export_bundle_onnx(model, tmp_bundle, tmp_items, spec, vocab, opset)
            onnx.checker.check_model(str(tmp_bundle))
            onnx.checker.check_model(str(tmp_items))
            bundle_parity = check_bundle_parity(model, tmp_bundle, tmp_items, spec, vocab)
            shutil.move(str(tmp_bundle), out / BUNDLE_ONNX_FILE)
            shutil.move(str(tmp_items), out / ITEMS_ONNX_FILE)
        else:  # stale ones from an earlier export
            (out / BUNDLE_ONNX_FILE).unlink(missing_ok=True)
            (out / ITEMS_ONNX_FILE).unlink(missing_ok=True)
        shutil.move(str(tmp_onnx), out / ONNX_FILE)

    onnx_path = out / ONNX_FILE
    config.to_json(out / CONFIG_FILE)
    save_spec(out / SPEC_FILE, spec, vocab)
    digest = sha256_file(onnx_path)
    now = datetime.now(UTC)
    manifest: dict[str, Any] = {
        "version": artifact_version(config.name, now, digest),
        "model": config.name,
        "created_at": now.isoformat(timespec="seconds"),
        "data_fingerprint": metrics.get("data_fingerprint"),
        "metrics": metrics,
        "opset": opset_of(onnx_path),
        "exporter": exporter,
        "torch_version": torch.__version__,
        "onnx_file": ONNX_FILE,
        "onnx_sha256": digest,
        "onnx_size_bytes": onnx_path.stat().st_size,
        "inputs": list(MODEL_INPUTS),
        "output": "logits",
        # Platt calibration folded into the graph ((1, 0) = none): logits are already calibrated
        "calibration": {"scale": config.calibration_scale, "bias": config.calibration_bias},
        "params": count_parameters(model),
        "window": spec.window,
        "parity_max_abs_diff": parity["max_abs_diff"],
        "parity": parity,
        # the bundle graph (/recommend, mastery, the catalogue): None for models without one
        "bundle_onnx_sha256": sha256_file(out / BUNDLE_ONNX_FILE)
        if bundle_parity is not None
        else None,
        "items_onnx_sha256": sha256_file(out / ITEMS_ONNX_FILE)
        if bundle_parity is not None
        else None,
        "bundle_parity_max_abs_diff": bundle_parity,
        "export_seconds": round(export_s, 2),
    }
    write_manifest(out, manifest)
    logger.info(
        "exported %s (%s exporter, opset %s) to %s; parity max abs diff %.3g",
        config.name,
        exporter,
        manifest["opset"],
        onnx_path,
        parity["max_abs_diff"],
    )
    if int8:
        quantize_artifact(out)
    return out


def quiet_exporter_logs() -> None:
    """CLI logging: the dynamo exporter's onnx_ir passes log one INFO line per initializer."""
    for name in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def build_parser() -> DataclassArgumentParser:
    return DataclassArgumentParser(
        [ExportArguments, LogArguments],
        config=False,
        prog="python -m training.export",
        description=__doc__.split("\n\n")[0],
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, log = parser.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_exporter_logs()
    try:
        out = export_artifact(
            Path(args.model_dir), Path(args.output_dir), int8=args.int8, opset=args.opset
        )
        if args.int8_data is not None:
            decide_int8(out, int8_dataset(out, Path(args.int8_data), log), args.max_auc_loss)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    manifest = read_manifest(out)
    summary = {
        "artifact": str(out),
        "version": manifest["version"],
        "parity_max_abs_diff": manifest["parity_max_abs_diff"],
    }
    if "int8" in manifest:
        keys = ("size_bytes", "latency_ms", "fp32_latency_ms", "auc_loss", "kept")
        summary["int8"] = {k: manifest["int8"][k] for k in keys if k in manifest["int8"]}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

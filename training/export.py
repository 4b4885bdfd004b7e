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

import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from models.bundle import (
    BUNDLE_ITEM_INPUTS,
    ITEM_GRAPH_INPUTS,
    ITEM_GRAPH_OUTPUTS,
    bundle_feeds,
    bundle_input_names,
)
from models.feature_spec import MODEL_INPUTS, FeatureSpec, load_spec, save_spec
from models.features import History, collate, encode
from models.numeric import sigmoid
from models.registry import count_parameters
from models.vocab import UNKNOWN_QUESTION, QuestionVocab
from service.predictor import ort_session as service_session
from training.arguments import ExportArguments
from training.artifacts import CONFIG_FILE, SPEC_FILE, load_metrics, load_model_dir
from training.binary_metrics import binary_metrics
from training.calibration import Platt, model_calibration
from training.cli import DataclassArgumentParser
from training.data import LogArguments
from training.windows import IGNORE_LABEL, WindowDataset, collate_windows, learner_histories

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
# One bundle of N items after a history at O(N x S) attention (SAINT.forward_bundle): what
# /recommend, mastery and the catalogue score a whole bank with (optional; fp32 even under INT8)
BUNDLE_ONNX_FILE = "bundle.onnx"
ITEMS_ONNX_FILE = "items.onnx"  # each item's own part of bundle.onnx's input (models.bundle)
INT8_FILE = "model.int8.onnx"
FP32_FILE = "model.fp32.onnx"  # the fp32 graph, kept next to a served INT8 model.onnx
MANIFEST_FILE = "manifest.json"
PARITY_TOLERANCE = 1e-4
PARITY_CANDIDATES = 4  # K in the "window - 1 + K" parity case


class ExportError(ValueError):
    """Export or parity failed (a ValueError, so callers and the CLI treat it as bad input)."""


class _CalibratedGraph(nn.Module):
    """What both exported graphs share: the model, and its config's Platt calibration folded into
    the graph, so the service serves calibrated probabilities with no knowledge of it
    (training.calibration)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calibration = model_calibration(model)

    def calibrated(self, logits: Tensor) -> Tensor:
        if self.calibration != Platt():
            logits = logits * self.calibration.scale + self.calibration.bias
        return logits


class OnnxWrapper(_CalibratedGraph):
    """The graph's signature: the 12 arrays positionally in MODEL_INPUTS order -> logits (B, T).

    Named parameters (not *args) so torch.export sees 12 inputs and the ONNX inputs get these names.
    """

    def forward(
        self,
        question: Tensor,
        part: Tensor,
        position: Tensor,
        bundle: Tensor,
        lag: Tensor,
        lag_bucket: Tensor,
        response: Tensor,
        elapsed: Tensor,
        elapsed_bucket: Tensor,
        explanation: Tensor,
        tags: Tensor,
        stats: Tensor,
    ) -> Tensor:
        batch = {
            "question": question,
            "part": part,
            "position": position,
            "bundle": bundle,
            "lag": lag,
            "lag_bucket": lag_bucket,
            "response": response,
            "elapsed": elapsed,
            "elapsed_bucket": elapsed_bucket,
            "explanation": explanation,
            "tags": tags,
            "stats": stats,
        }
        return self.calibrated(self.model(batch))  # (B, T)


# The wrapper's parameter order *is* the graph's input order; fail at import if they ever drift.
if OnnxWrapper.forward.__code__.co_varnames[1 : 1 + len(MODEL_INPUTS)] != MODEL_INPUTS:
    raise ImportError("OnnxWrapper.forward arguments must follow models.feature_spec.MODEL_INPUTS")


class BundleOnnxWrapper(_CalibratedGraph):
    """bundle.onnx's signature (models.bundle): the history's 12 arrays (B, S), then the items'
    side (embedding (B, N, D), difficulty (B, N): items.onnx's outputs) and encoded inputs
    (B, N) -> logits (B, N), calibrated as model.onnx's. Named parameters, as in OnnxWrapper, so
    the graph's inputs get these names."""

    def forward(
        self,
        question: Tensor,
        part: Tensor,
        position: Tensor,
        bundle: Tensor,
        lag: Tensor,
        lag_bucket: Tensor,
        response: Tensor,
        elapsed: Tensor,
        elapsed_bucket: Tensor,
        explanation: Tensor,
        tags: Tensor,
        stats: Tensor,
        item_embedding: Tensor,
        item_difficulty: Tensor,
        item_position: Tensor,
        item_bundle: Tensor,
        item_stats: Tensor,
        item_lag: Tensor,
        item_lag_bucket: Tensor,
    ) -> Tensor:
        arrays = locals()
        history = {name: arrays[name] for name in MODEL_INPUTS}
        items = {name: arrays[f"item_{name}"] for name in BUNDLE_ITEM_INPUTS}
        scorer: Any = self.model  # a SAINT (export_artifact checks for forward_bundle)
        return self.calibrated(scorer.forward_bundle(history, items))  # (B, N)


class ItemsOnnxWrapper(nn.Module):
    """items.onnx's signature (models.bundle): question, part (B, N), tags (B, N, M) -> the items'
    embedding (B, N, D) and prior difficulty (B, N) (`SAINT.item_side`; no calibration: that
    acts on bundle.onnx's logits)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, question: Tensor, part: Tensor, tags: Tensor) -> tuple[Tensor, Tensor]:
        scorer: Any = self.model
        return scorer.item_side(question, part, tags)  # type: ignore[no-any-return]


# The wrappers' parameter orders *are* the graphs' input orders; fail at import if they drift.
_BUNDLE_NAMES = tuple(bundle_input_names())
if BundleOnnxWrapper.forward.__code__.co_varnames[1 : 1 + len(_BUNDLE_NAMES)] != _BUNDLE_NAMES:
    raise ImportError("BundleOnnxWrapper.forward arguments must follow models.bundle's order")
if ItemsOnnxWrapper.forward.__code__.co_varnames[1:4] != ITEM_GRAPH_INPUTS:
    raise ImportError("ItemsOnnxWrapper.forward arguments must follow models.bundle's order")


# --------------------------------------------------------------------------- sample windows


def random_history(rng: np.random.Generator, n: int, vocab: QuestionVocab) -> History:
    """A plausible random history of n items (bundles of 1-3, some unknown questions/times)."""
    sizes = rng.integers(1, 4, size=max(n, 1))
    bundle = np.repeat(np.arange(len(sizes)), sizes)[:n].astype(np.int64)
    gaps = rng.integers(1_000, 2 * 86_400_000, size=max(n, 1))
    elapsed = rng.uniform(500, 400_000, size=n).astype(np.float32)
    elapsed[rng.random(n) < 0.1] = np.nan  # unknown elapsed time
    timestamp = np.cumsum(gaps)[bundle].astype(np.int64)
    # a few lectures between items, at the previous item's time
    after = np.sort(rng.integers(0, n + 1, size=int(rng.integers(0, 4)))).astype(np.int64)
    return History(
        question=rng.integers(1, vocab.size, size=n).astype(np.int64),  # 1 = unknown question
        correct=rng.integers(0, 2, size=n).astype(np.int8),
        timestamp=timestamp,
        bundle=bundle,
        elapsed_ms=elapsed,
        explanation=rng.integers(-1, 2, size=n).astype(np.int8),
        lecture_after=after,
        lecture_timestamp=timestamp[np.maximum(after - 1, 0)]
        if n
        else np.zeros(len(after), np.int64),
        lecture_part=rng.integers(0, vocab.n_parts, size=len(after)).astype(np.int64),
        lecture_tag=rng.integers(0, vocab.n_tags, size=len(after)).astype(np.int64),
    )


def parity_batches(
    spec: FeatureSpec, vocab: QuestionVocab, seed: int = 0
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Named (B, T) batches covering the shapes the service and evaluation produce."""
    rng = np.random.default_rng(seed)
    table = vocab.item_table()
    k = PARITY_CANDIDATES

    def cands(n: int) -> np.ndarray:
        return rng.integers(1, vocab.size, size=n)

    def request(n_hist: int, n_cand: int) -> dict[str, np.ndarray]:
        history = random_history(rng, n_hist, vocab)
        ts = int(history.timestamp[-1]) + 60_000 if n_hist else None
        return encode(history, spec, table, candidates=cands(n_cand), candidate_timestamp=ts)

    def window(n: int) -> dict[str, np.ndarray]:
        return encode(random_history(rng, n, vocab), spec, table)

    full = spec.window - 1  # history items that fit next to candidates
    cases = [
        ("T=1 empty history + 1 candidate, B=1", collate([request(0, 1)])),
        ("T=5 history, B=1", collate([window(5)])),
        ("T=37 history, B=1", collate([window(37)])),
        ("T=37/5/1 mixed padding, B=3", collate([window(37), window(5), window(1)])),
        (f"T=window-1+{k} candidates, B=1", collate([request(full, k)])),
        (
            f"T=window-1+{k} candidates, mixed padding, B=3",
            collate([request(full, k), request(0, 1), request(3, k)]),
        ),
    ]
    return cases


# --------------------------------------------------------------------------- export + parity


def _example_args(spec: FeatureSpec, vocab: QuestionVocab) -> tuple[Tensor, ...]:
    # B=3 and T>=2: torch.export specialises dimensions whose example size is 0 or 1.
    rng = np.random.default_rng(123)
    table = vocab.item_table()
    n = min(spec.window, 11)
    items = [encode(random_history(rng, m, vocab), spec, table) for m in (n, max(n - 4, 1), 2)]
    batch = collate(items)
    # torch.export specialises example dimensions of size 1: give the tag axis at least 2 columns
    if batch["tags"].shape[2] < 2:
        batch["tags"] = np.pad(batch["tags"], ((0, 0), (0, 0), (0, 2 - batch["tags"].shape[2])))
    return tuple(torch.from_numpy(batch[name]) for name in MODEL_INPUTS)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    spec: FeatureSpec,
    vocab: QuestionVocab,
    opset: int | None = None,
) -> str:
    """Write `model` as ONNX with dynamic (batch, seq) axes; returns the exporter used."""
    path = Path(path)
    wrapper = OnnxWrapper(model).eval()
    args = _example_args(spec, vocab)
    batch_dim = torch.export.Dim("batch")
    seq_dim = torch.export.Dim("seq")
    tag_dim = torch.export.Dim("tags")
    try:
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            dynamo=True,
            input_names=list(MODEL_INPUTS),
            output_names=["logits"],
            dynamic_shapes=tuple(
                {0: batch_dim, 1: seq_dim, 2: tag_dim}
                if name == "tags"
                else {0: batch_dim, 1: seq_dim}
                for name in MODEL_INPUTS
            ),
            opset_version=opset,
            external_data=False,  # one self-contained file in the artifact
            verbose=False,  # keep stdout for the CLI summary line
            optimize=True,
        )
        return "dynamo"
    except Exception as exc:  # noqa: BLE001 - any dynamo failure -> documented legacy fallback
        logger.warning("dynamo export failed (%s); falling back to the legacy exporter", exc)
    axes = {name: {0: "batch", 1: "seq"} for name in (*MODEL_INPUTS, "logits")}
    axes["tags"] = {0: "batch", 1: "seq", 2: "tags"}
    try:
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            dynamo=False,
            input_names=list(MODEL_INPUTS),
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset or 17,
        )
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"ONNX export failed with both exporters: {exc}") from exc
    return "legacy"


def bundle_rows(
    spec: FeatureSpec, vocab: QuestionVocab, shapes: list[tuple[int, int]], seed: int
) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    """Encoded rows [random history of S items, N candidates of one bundle] for (S, N) `shapes`."""
    rng = np.random.default_rng(seed)
    table = vocab.item_table()
    rows = []
    for n_hist, n_items in shapes:
        history = random_history(rng, n_hist, vocab)
        ts = int(history.timestamp[-1]) + 60_000 if n_hist else None
        cands = rng.integers(1, vocab.size, size=n_items)
        rows.append(encode(history, spec, table, candidates=cands, candidate_timestamp=ts))
    return rows, [n for _, n in shapes]


def _item_inputs(row: dict[str, np.ndarray], n_items: int) -> dict[str, np.ndarray]:
    """items.onnx's inputs (B = 1) for the last `n_items` items of an encoded row."""
    tail = _tail(row, n_items)
    return {name: tail[name][None] for name in ITEM_GRAPH_INPUTS}


def _torch_item_sides(
    model: nn.Module, rows: list[dict[str, np.ndarray]], counts: list[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each row's items' (embedding (N, D), difficulty (N,)) from the torch model."""
    scorer: Any = model
    sides = []
    with torch.no_grad():
        for row, n in zip(rows, counts, strict=True):
            inputs = {k: torch.from_numpy(v) for k, v in _item_inputs(row, n).items()}
            emb, diff = scorer.item_side(inputs["question"], inputs["part"], inputs["tags"])
            sides.append((emb[0].numpy(), diff[0].numpy()))
    return sides


def export_bundle_onnx(
    model: nn.Module,
    path: Path,
    items_path: Path,
    spec: FeatureSpec,
    vocab: QuestionVocab,
    opset: int | None,
) -> None:
    """Write bundle.onnx and items.onnx (dynamo exporter; dynamic batch, history length, item
    count, tag axes)."""
    n = min(spec.window - 1, 10)
    # B=3, every dynamic example dimension >= 2 (torch.export specialises sizes 0 and 1)
    rows, counts = bundle_rows(spec, vocab, [(n, 3), (max(n - 4, 2), 2), (2, 3)], seed=321)
    feeds = bundle_feeds(rows, counts, _torch_item_sides(model, rows, counts))
    item_feeds = collate([_tail(row, c) for row, c in zip(rows, counts, strict=True)])
    item_feeds = {name: item_feeds[name] for name in ITEM_GRAPH_INPUTS}  # (B, N) / (B, N, M)
    for arrays in (feeds, item_feeds):
        if arrays["tags"].shape[2] < 2:
            arrays["tags"] = np.pad(
                arrays["tags"], ((0, 0), (0, 0), (0, 2 - arrays["tags"].shape[2]))
            )
    batch, seq, items = (
        torch.export.Dim("batch"),
        torch.export.Dim("seq"),
        torch.export.Dim("items"),
    )
    tags = torch.export.Dim("tags")
    names = bundle_input_names()
    shapes = tuple(
        {0: batch, 1: items if name.startswith("item_") else seq}
        | ({2: tags} if name == "tags" else {})
        for name in names
    )
    item_shapes = tuple(
        {0: batch, 1: items} | ({2: tags} if name == "tags" else {}) for name in ITEM_GRAPH_INPUTS
    )
    for wrapper, target, arrays, inputs, outputs, dims in (
        (BundleOnnxWrapper(model), path, feeds, names, ["logits"], shapes),
        (
            ItemsOnnxWrapper(model),
            items_path,
            item_feeds,
            list(ITEM_GRAPH_INPUTS),
            list(ITEM_GRAPH_OUTPUTS),
            item_shapes,
        ),
    ):
        torch.onnx.export(
            wrapper.eval(),
            tuple(torch.from_numpy(arrays[name]) for name in inputs),
            str(target),
            dynamo=True,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=dims,
            opset_version=opset,
            external_data=False,
            verbose=False,
            optimize=True,
        )


def _tail(row: dict[str, np.ndarray], n_items: int) -> dict[str, np.ndarray]:
    """The last `n_items` positions of an encoded row (every input)."""
    h = len(row["question"]) - n_items
    return {k: v[h:] for k, v in row.items()}


def check_bundle_parity(
    model: nn.Module,
    path: Path,
    items_path: Path,
    spec: FeatureSpec,
    vocab: QuestionVocab,
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """items.onnx then bundle.onnx vs the torch model's `forward` on the whole rows at the items'
    positions (the dense scoring /predict does); ExportError above `tolerance`. Returns the max
    abs diff."""
    session, items_session = ort_session(path), ort_session(items_path)
    full = spec.window - 1
    cases = [
        [(full, PARITY_CANDIDATES)],
        [(0, 1)],
        [(5, 7)],
        [(full, 40), (0, 3), (3, 17)],  # mixed history lengths and item counts (padding)
    ]
    worst = 0.0
    for k, shapes in enumerate(cases):
        rows, counts = bundle_rows(spec, vocab, shapes, seed=k)
        dense = torch_logits(model, collate(rows))  # (B, T)
        sides = []
        for row, n in zip(rows, counts, strict=True):
            emb, diff = items_session.run(list(ITEM_GRAPH_OUTPUTS), _item_inputs(row, n))
            sides.append((emb[0], diff[0]))
        got = session.run(["logits"], bundle_feeds(rows, counts, sides))[0]  # (B, N)
        for b, (row, n) in enumerate(zip(rows, counts, strict=True)):
            h = len(row["question"]) - n
            diff = float(np.max(np.abs(got[b, :n] - dense[b, h : h + n])))
            if not np.isfinite(diff) or diff > tolerance:
                raise ExportError(
                    f"bundle.onnx parity failed: max abs diff {diff:.3g} > {tolerance:g} "
                    f"(history {h}, {n} items)"
                )
            worst = max(worst, diff)
    return worst


def ort_session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """CPU session with explicit thread count (the default ignores container CPU limits)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return service_session(Path(path), opts, ["CPUExecutionProvider"])  # as the service runs it


def torch_logits(model: nn.Module, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The served logits in torch: the model's output with its config's calibration applied."""
    with torch.no_grad():
        out = model({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()})
    return model_calibration(model).apply(out.numpy()).astype(np.float32)


def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    spec: FeatureSpec,
    vocab: QuestionVocab,
    tolerance: float = PARITY_TOLERANCE,
    seed: int = 0,
) -> dict[str, Any]:
    """onnxruntime vs torch logits on `parity_batches`; ExportError if any max abs diff > tolerance."""
    session = ort_session(onnx_path)
    names = tuple(i.name for i in session.get_inputs())
    if names != MODEL_INPUTS:
        # The service feeds all 10 arrays by name; an exporter that pruned unused inputs (the legacy
        # one does, for models that ignore lag/elapsed) would break it.
        raise ExportError(f"graph inputs {list(names)} != MODEL_INPUTS {list(MODEL_INPUTS)}")
    model.eval()
    cases: list[dict[str, Any]] = []
    diffs: list[float] = []
    for name, batch in parity_batches(spec, vocab, seed):
        expected = torch_logits(model, batch)
        got = session.run(["logits"], {k: batch[k] for k in MODEL_INPUTS})[0]
        if got.shape != expected.shape:
            raise ExportError(
                f"parity: {name}: ONNX output shape {got.shape} != torch {expected.shape}"
            )
        diff = float(np.max(np.abs(got - expected)))
        if not np.isfinite(diff):
            raise ExportError(f"parity: {name}: non-finite logits")
        cases.append({"case": name, "shape": list(got.shape), "max_abs_diff": diff})
        diffs.append(diff)
    worst = max(diffs)
    if worst > tolerance:
        bad = [c for c in cases if c["max_abs_diff"] > tolerance]
        raise ExportError(
            f"parity failed: onnxruntime vs torch max abs diff {worst:.3g} > {tolerance:g} in "
            + "; ".join(f"{c['case']} ({c['max_abs_diff']:.3g})" for c in bad)
        )
    return {"max_abs_diff": worst, "tolerance": tolerance, "cases": cases}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _opset_of(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


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
        "opset": _opset_of(onnx_path),
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


def artifact_version(
    model_name: str, created: datetime, onnx_sha256: str, quantization: str | None = None
) -> str:
    """`<model>-<UTC time>-<first 8 hex of the served graph's sha256>[-<quantization>]`.

    The service reports it as `model_version`, so it names the graph actually served: an INT8
    graph that replaces model.onnx gets its own digest and the `-int8` suffix.
    """
    version = f"{model_name}-{created:%Y%m%dT%H%M%SZ}-{onnx_sha256[:8]}"
    return f"{version}-{quantization}" if quantization else version


def write_manifest(artifact_dir: str | Path, manifest: dict[str, Any]) -> None:
    (Path(artifact_dir) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(artifact_dir: str | Path) -> dict[str, Any]:
    path = Path(artifact_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ValueError(f"{artifact_dir}: not an artifact directory (no {MANIFEST_FILE})")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- latency + int8


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
                "opset": _opset_of(fp32_path),
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


# --------------------------------------------------------------------------- CLI


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

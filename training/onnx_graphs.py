"""The graphs of a serving artifact as torch modules, and how each is written as ONNX: model.onnx
(`OnnxWrapper`, `export_onnx`), bundle.onnx and items.onnx (`BundleOnnxWrapper`,
`ItemsOnnxWrapper`, `export_bundle_onnx`). The config's Platt calibration is folded into the
logits of model.onnx and bundle.onnx."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.bundle import (
    BUNDLE_ITEM_INPUTS,
    ITEM_GRAPH_INPUTS,
    ITEM_GRAPH_OUTPUTS,
    bundle_feeds,
    bundle_input_names,
)
from models.feature_spec import MODEL_INPUTS, FeatureSpec
from models.features import collate, encode
from models.vocab import QuestionVocab
from training.calibration import Platt, model_calibration
from training.parity import ExportError, bundle_rows, bundle_tail, random_history, torch_item_sides

logger = logging.getLogger(__name__)


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
        arrays = locals()  # the parameters are MODEL_INPUTS (checked below), as BundleOnnxWrapper
        batch = {name: arrays[name] for name in MODEL_INPUTS}
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
    feeds = bundle_feeds(rows, counts, torch_item_sides(model, rows, counts))
    item_feeds = collate([bundle_tail(row, c) for row, c in zip(rows, counts, strict=True)])
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

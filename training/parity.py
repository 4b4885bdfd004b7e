"""Export is never trusted blindly: onnxruntime against torch on sample windows of the shapes the
service and evaluation produce (`check_parity` for model.onnx, `check_bundle_parity` for items.onnx
then bundle.onnx), and the sample histories and rows they use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from models.bundle import ITEM_GRAPH_INPUTS, ITEM_GRAPH_OUTPUTS, bundle_feeds
from models.feature_spec import MODEL_INPUTS, FeatureSpec
from models.features import History, collate, encode
from models.vocab import QuestionVocab
from service.predictor import ort_session as service_session
from training.calibration import model_calibration

PARITY_TOLERANCE = 1e-4
PARITY_CANDIDATES = 4  # K in the "window - 1 + K" parity case


class ExportError(ValueError):
    """Export or parity failed (a ValueError, so callers and the CLI treat it as bad input)."""


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
    tail = bundle_tail(row, n_items)
    return {name: tail[name][None] for name in ITEM_GRAPH_INPUTS}


def torch_item_sides(
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


def bundle_tail(row: dict[str, np.ndarray], n_items: int) -> dict[str, np.ndarray]:
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

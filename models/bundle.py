"""Inputs of the bundle graph (`bundle.onnx`, optional in an artifact; torch-free).

The bundle graph scores N items that form ONE bundle after a learner's history (SAINT.forward_bundle):
the history's 12 model inputs (B, S) in MODEL_INPUTS order, then the items' query-side inputs
(B, N) named item_<name> in BUNDLE_ITEM_INPUTS order -> logits (B, N). The items are encoded with
the history exactly as `/predict` candidates are (`models.features.encode` with candidates), then
split off the row, so both graphs read the same features.
"""

from __future__ import annotations

import numpy as np

from models.features import MODEL_INPUTS, THREE_D_INPUTS, collate

# what an item of the bundle contributes (its response, elapsed time and explanation are never seen)
BUNDLE_ITEM_INPUTS = (
    "question",
    "part",
    "tags",
    "position",
    "bundle",
    "stats",
    "lag",
    "lag_bucket",
)


def bundle_input_names() -> list[str]:
    """The bundle graph's input names, in order."""
    return [*MODEL_INPUTS, *(f"item_{name}" for name in BUNDLE_ITEM_INPUTS)]


def split_bundle_row(
    row: dict[str, np.ndarray], n_items: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """An encoded row [history, n_items items of one bundle] (1-D arrays) -> (history, items)."""
    h = len(row["question"]) - n_items
    return {k: v[:h] for k, v in row.items()}, {k: row[k][h:] for k in BUNDLE_ITEM_INPUTS}


def bundle_feeds(rows: list[dict[str, np.ndarray]], n_items: list[int]) -> dict[str, np.ndarray]:
    """The bundle graph's inputs for encoded rows (each: a history, then `n_items` items of one
    bundle), right-padded to (B, S) and (B, N) (an empty history becomes one padding position)."""
    parts = [split_bundle_row(r, n) for r, n in zip(rows, n_items, strict=True)]
    history = collate([h for h, _ in parts])
    padded = collate([{**_blank(len(i["question"])), **i} for _, i in parts])  # (B, N)
    return {**history, **{f"item_{k}": padded[k] for k in BUNDLE_ITEM_INPUTS}}


def _blank(n: int) -> dict[str, np.ndarray]:
    """Zero arrays for the 1-D model inputs an item part lacks (collate wants every input)."""
    return {name: np.zeros(n, np.int64) for name in MODEL_INPUTS if name not in THREE_D_INPUTS}

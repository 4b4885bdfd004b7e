"""Inputs of the two bank graphs (`items.onnx` and `bundle.onnx`, optional in an artifact; torch-free).

They score N items that form ONE bundle after a learner's history (SAINT.forward_bundle), in two
steps, so that what depends on an item alone is computed once per bank, not once per request:

- items.onnx (`SAINT.item_side`): ITEM_GRAPH_INPUTS (B, N) (tags (B, N, M)) -> each item's
  embedding (B, N, D) and prior difficulty (B, N) (ITEM_GRAPH_OUTPUTS: item_embedding and
  item_difficulty, bundle.onnx's inputs of those names). The service runs it over
  its whole bank when it first needs it and keeps the rows (`item_graph_feeds`).
- bundle.onnx: the history's 12 model inputs (B, S) in MODEL_INPUTS order, then the items'
  inputs named item_<name> in BUNDLE_ITEM_INPUTS order: the two item-side rows, then what the
  encoding gives of the items with the history (position, bundle, stats, lag; (B, N)) -> logits
  (B, N). The items are encoded with the history exactly as `/predict` candidates are
  (`models.features.encode` with candidates), then split off the row, so both graphs read the
  same features.
"""

from __future__ import annotations

import numpy as np

from models.feature_spec import INPUT_DTYPES, MODEL_INPUTS, THREE_D_INPUTS, FeatureSpec
from models.features import batch_of_one, collate, model_question
from models.vocab import ItemTable

ITEM_GRAPH_INPUTS = ("question", "part", "tags")
ITEM_SIDE = ("embedding", "difficulty")  # what depends on the item alone
ITEM_GRAPH_OUTPUTS = tuple(f"item_{name}" for name in ITEM_SIDE)  # = bundle.onnx's input names
# what the encoding gives of an item of the bundle (its response, elapsed time and explanation
# are never seen)
ENCODED_ITEM_INPUTS = ("position", "bundle", "stats", "lag", "lag_bucket")
BUNDLE_ITEM_INPUTS = (*ITEM_SIDE, *ENCODED_ITEM_INPUTS)


def bundle_input_names() -> list[str]:
    """bundle.onnx's input names, in order."""
    return [*MODEL_INPUTS, *(f"item_{name}" for name in BUNDLE_ITEM_INPUTS)]


def item_graph_feeds(
    indices: np.ndarray, items: ItemTable, spec: FeatureSpec
) -> dict[str, np.ndarray]:
    """items.onnx's inputs (B = 1, N) for question indices (N,) of `items`, as `encode` gives them
    to the model (a question registered after training is the unknown question, with its part
    and tags)."""
    indices = np.asarray(indices, dtype=np.int64)
    return {
        "question": model_question(indices, spec)[None],
        "part": items.parts.take(indices)[None],
        "tags": items.tags.take(indices, axis=0)[None],
    }


def split_bundle_row(
    row: dict[str, np.ndarray], n_items: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """An encoded row [history, n_items items of one bundle] (1-D arrays) -> (history, the items'
    ENCODED_ITEM_INPUTS)."""
    h = len(row["question"]) - n_items
    return {k: v[:h] for k, v in row.items()}, {k: row[k][h:] for k in ENCODED_ITEM_INPUTS}


def bundle_feeds(
    rows: list[dict[str, np.ndarray]],
    n_items: list[int],
    item_sides: list[tuple[np.ndarray, np.ndarray]],
) -> dict[str, np.ndarray]:
    """bundle.onnx's inputs for encoded rows (each: a history, then `n_items` items of one
    bundle) and each row's items' side (embedding (N, D), difficulty (N,): items.onnx's rows),
    right-padded to (B, S) and (B, N) (an empty history becomes one padding position)."""
    if len(rows) == 1 and len(rows[0]["question"]) > n_items[0]:
        return _one_row_feeds(rows[0], n_items[0], item_sides[0])
    parts = [split_bundle_row(r, n) for r, n in zip(rows, n_items, strict=True)]
    history = collate([h for h, _ in parts])
    padded = collate([{**_blank(len(i["position"])), **i} for _, i in parts])  # (B, N)
    width = max(n_items)
    embedding = np.zeros((len(rows), width, item_sides[0][0].shape[1]), np.float32)  # (B, N, D)
    difficulty = np.zeros((len(rows), width), np.float32)  # (B, N)
    for b, (emb, diff) in enumerate(item_sides):
        embedding[b, : len(emb)] = emb
        difficulty[b, : len(diff)] = diff
    return {
        **history,
        "item_embedding": embedding,
        "item_difficulty": difficulty,
        **{f"item_{k}": padded[k] for k in ENCODED_ITEM_INPUTS},
    }


def _one_row_feeds(
    row: dict[str, np.ndarray], n_items: int, item_side: tuple[np.ndarray, np.ndarray]
) -> dict[str, np.ndarray]:
    """`bundle_feeds` of one row with a history (a /predict): nothing to pad, so each input is a
    (1, ...) view of the row's array where its dtype fits (no copies, no blank item inputs)."""
    history, own = split_bundle_row(row, n_items)
    dtypes = dict(INPUT_DTYPES)
    embedding, difficulty = item_side
    return {
        **batch_of_one(history, copy=False),
        "item_embedding": np.asarray(embedding[None], np.float32),
        "item_difficulty": np.asarray(difficulty[None], np.float32),
        **{f"item_{k}": np.asarray(own[k][None], dtypes[k]) for k in ENCODED_ITEM_INPUTS},
    }


def _blank(n: int) -> dict[str, np.ndarray]:
    """Zero arrays for the model inputs an item part lacks (collate wants every input)."""
    blank = {name: np.zeros(n, np.int64) for name in MODEL_INPUTS if name not in THREE_D_INPUTS}
    blank["tags"] = np.zeros((n, 1), np.int64)
    return blank

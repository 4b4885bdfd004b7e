"""Torch datasets of training windows, built on `models.features` (the encoding the service uses).

A learner's history is cut into overlapping windows of `spec.window` items (`training_windows`);
each item is scored (has a label) in exactly one window, so every item counts once per epoch.
Time-based validation scores only a learner's continuation, with its prefix as context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from models.feature_spec import INT_INPUTS, MODEL_INPUTS, FeatureSpec
from models.features import History, collate, encode, training_windows
from models.vocab import FIRST_QUESTION_INDEX, PAD, UNKNOWN_QUESTION, ItemTable, QuestionVocab
from training.data import Interactions

IGNORE_LABEL = -100.0


@dataclass(frozen=True)
class WindowRef:
    learner: int  # index into the dataset's histories
    start: int
    end: int
    score_from: int  # items [score_from, end) carry labels


def learner_histories(inter: Interactions, vocab: QuestionVocab | None = None) -> list[History]:
    """One `History` (question rows only) per learner, in `inter` order; with `vocab`, question
    indices are re-mapped by raw id into that vocabulary (e.g. a model's, for data loaded without
    its questions file)."""
    histories = [inter.history(i, lecture_vocab=vocab) for i in range(inter.n_learners)]
    if vocab is None or vocab is inter.vocab:
        return histories
    # old index -> raw id -> new index (pad and unknown stay themselves)
    raw = np.concatenate([[-1, -1], inter.vocab.question_ids])
    mapping = np.concatenate([[PAD, UNKNOWN_QUESTION], vocab.to_index(raw[FIRST_QUESTION_INDEX:])])
    for h in histories:
        h.question = mapping[h.question]
    return histories


class WindowDataset(Dataset):
    """Windows over learner histories; `score_from[i]` (default 0) hides labels of learner i's prefix."""

    def __init__(
        self,
        histories: list[History],
        spec: FeatureSpec,
        items: ItemTable,
        *,
        score_from: list[int] | None = None,
        stride: int | None = None,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.histories = histories
        # per learner, the first item that carries a label (0: all; --validation time: the cut)
        self.score_from = [0] * len(histories) if score_from is None else list(score_from)
        self.spec = spec
        self.items = items
        # Window augmentation (training only): every epoch, each window's end moves by a random
        # offset of up to half a stride, so the model sees each item at many window positions and
        # with many contexts instead of the same fixed chunks.
        self.augment = augment
        self.stride = max(spec.window // 2, 1) if stride is None else stride
        self._rng = np.random.default_rng(seed)
        if augment and score_from is not None:
            raise ValueError("window augmentation is for training data (no score_from prefixes)")
        self.windows: list[WindowRef] = []
        for i, history in enumerate(histories):
            first_scored = 0 if score_from is None else score_from[i]
            for start, end, loss_start in training_windows(len(history), spec.window, stride):
                lo = max(loss_start, first_scored)
                if lo < end:
                    self.windows.append(WindowRef(i, start, end, lo))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        ref = self.windows[idx]
        history = self.histories[ref.learner]
        if self.augment:
            ref = self._shifted(ref, len(history))
        item = encode(history, self.spec, self.items, start=ref.start, end=ref.end)
        labels = history.correct[ref.start : ref.end].astype(np.float32)
        labels[: ref.score_from - ref.start] = IGNORE_LABEL
        item["labels"] = labels
        return item

    def _shifted(self, ref: WindowRef, n: int) -> WindowRef:
        """`ref` with its end moved by up to +-stride/2 (within the history); the items scored are
        the last `stride` of the window (all of them when it starts at the history's start), so
        every scored item keeps at least `window - stride` items of context, as without shifting."""
        half = self.stride // 2
        if n <= self.spec.window or half == 0:
            return ref
        end = int(np.clip(ref.end + self._rng.integers(-half, half + 1), self.spec.window, n))
        start = end - self.spec.window
        first = 0 if start == 0 else end - self.stride
        return WindowRef(ref.learner, start, end, first)

    def n_scored(self) -> int:
        return sum(w.end - w.score_from for w in self.windows)


def answer_counts(dataset: WindowDataset, vocab: QuestionVocab) -> np.ndarray:
    """(Q,) how many answers to each vocabulary question the dataset's histories hold."""
    counts = np.zeros(vocab.size, np.int64)
    for h in dataset.histories:
        counts += np.bincount(np.asarray(h.question, np.int64), minlength=vocab.size)
    return counts[FIRST_QUESTION_INDEX:]


def collate_windows(items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Pad a list of encoded windows to a (B, T) batch of tensors; padded labels are IGNORE_LABEL."""
    batch = collate(items)
    t = batch["question"].shape[1]
    labels = np.full((len(items), t), IGNORE_LABEL, dtype=np.float32)
    for b, it in enumerate(items):
        labels[b, : len(it["labels"])] = it["labels"]
    out = {
        name: torch.from_numpy(batch[name]).long()
        if name in INT_INPUTS
        else torch.from_numpy(batch[name]).float()
        for name in MODEL_INPUTS
    }
    out["labels"] = torch.from_numpy(labels)
    return out

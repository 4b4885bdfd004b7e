"""Questions and lectures as the encoding knows them (numpy only): raw question ids <-> contiguous
indices (0 pad, 1 unknown, 2.. known) with each question's part and tags (`QuestionVocab`, saved in
an artifact's `feature_spec.json`), and the per-index table the encoding reads (`ItemTable`, which
the service extends with questions registered after training)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

PAD = 0
UNKNOWN_QUESTION = 1
FIRST_QUESTION_INDEX = 2
# Raw question ids up to this (or 16 per question) get a dense lookup table (QuestionVocab.to_index).
DENSE_INDEX_MIN_SPAN = 1 << 16


@dataclass(frozen=True)
class ItemTable:
    """Per question index (0 pad, 1 unknown, 2.. known): what the encoding knows of each item.

    Built by `QuestionVocab.item_table()`; the service extends it with registered questions.
    """

    parts: np.ndarray  # (V,) int64 encoded part (0 = pad/unknown)
    tags: (
        np.ndarray
    )  # (V, M) int64 encoded tags (0 = no tag; 1.. = QuestionVocab.tag_ids index + 1)

    def __post_init__(self) -> None:
        if self.parts.ndim != 1 or self.tags.ndim != 2 or len(self.parts) != len(self.tags):
            raise ValueError("ItemTable needs parts (V,) and tags (V, M) of the same length V")

    @cached_property
    def content_groups(self) -> tuple[np.ndarray, int]:
        """(group of each index (V,) int64, number of groups): indices share a group iff they
        have the same part and the same tags in the same order. Computed on first use and kept
        (the Riiid bank: 13,523 questions, 1,580 groups)."""
        rows = np.column_stack([self.parts, self.tags])  # (V, 1 + M)
        _, group = np.unique(rows, axis=0, return_inverse=True)
        group = group.reshape(-1).astype(np.int64)  # (V,)
        return group, int(group.max(initial=-1)) + 1


@dataclass
class QuestionVocab:
    """Raw question ids <-> contiguous indices (0 pad, 1 unknown, 2.. known), their part and tags.

    Tags are whatever is shared across questions: Riiid tags, EdNet tags, skill / KC ids of other
    logs (several per item allowed). `tags` holds raw tag ids, -1 padded to the widest item; tag
    ids are encoded 1.. in the order of `tag_ids` (0 = no tag), so a model can pool questions that
    share a tag, and a question never seen in training still has a content representation.
    """

    question_ids: np.ndarray  # (Q,) int64, sorted ascending, unique
    parts: np.ndarray  # (Q,) int64, raw part of each question (>= 0)
    tags: np.ndarray | None = None  # (Q, M) int64 raw tag ids, -1 = none; None = no tags
    # Catalogue facts the encoding does not read (GET /questions): raw bundle id (-1 unknown; None =
    # no questions table) and answers in the model's training data (None = not recorded).
    bundles: np.ndarray | None = None  # (Q,) int64
    train_answers: np.ndarray | None = None  # (Q,) int64
    # Lectures (Riiid lectures.csv; None = no table): raw ids, sorted and unique; raw part (-1 =
    # unknown) and raw tag (-1 = none) of each. Lecture tags share the question tags' id space.
    lecture_ids: np.ndarray | None = None  # (L,) int64
    lecture_parts: np.ndarray | None = None  # (L,) int64
    lecture_tags: np.ndarray | None = None  # (L,) int64
    tag_ids: np.ndarray = field(init=False)  # (n_tags - 1,) sorted unique raw tag ids
    _index_parts: np.ndarray = field(init=False, repr=False)
    _dense_index: np.ndarray | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.question_ids = np.asarray(self.question_ids, dtype=np.int64)
        self.parts = np.asarray(self.parts, dtype=np.int64)
        if self.question_ids.shape != self.parts.shape or self.question_ids.ndim != 1:
            raise ValueError("question_ids and parts must be 1-D arrays of the same length")
        if len(self.question_ids) > 1 and np.any(np.diff(self.question_ids) <= 0):
            raise ValueError("question_ids must be sorted and unique")
        if np.any(self.parts < 0):
            raise ValueError("parts must be non-negative")
        q = len(self.question_ids)
        tags = np.full((q, 1), -1, np.int64) if self.tags is None else np.asarray(self.tags)
        if tags.ndim != 2 or tags.shape[0] != q:
            raise ValueError(f"tags must be a (Q, M) array with Q = {q}, got shape {tags.shape}")
        self.tags = np.where(tags >= 0, tags, -1).astype(np.int64)
        for name in ("bundles", "train_answers"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.int64)
                if value.shape != (q,):
                    raise ValueError(f"{name} must be a (Q,) array with Q = {q}, got {value.shape}")
                setattr(self, name, value)
        self._check_lectures()
        self.tag_ids = np.unique(self.tags[self.tags >= 0])
        # index -> encoded part (pad and unknown -> 0)
        self._index_parts = np.concatenate([[PAD, PAD], self.parts + 1]).astype(np.int64)
        self._dense_index = _dense_index(self.question_ids)

    def _check_lectures(self) -> None:
        given = [x is not None for x in (self.lecture_ids, self.lecture_parts, self.lecture_tags)]
        if not any(given):
            return
        if not all(given):
            raise ValueError("lecture_ids, lecture_parts and lecture_tags go together")
        ids = np.asarray(self.lecture_ids, dtype=np.int64)
        parts = np.asarray(self.lecture_parts, dtype=np.int64)
        tags = np.asarray(self.lecture_tags, dtype=np.int64)
        if ids.ndim != 1 or parts.shape != ids.shape or tags.shape != ids.shape:
            raise ValueError("lecture_ids, lecture_parts and lecture_tags must be (L,) arrays")
        if len(ids) > 1 and np.any(np.diff(ids) <= 0):
            raise ValueError("lecture_ids must be sorted and unique")
        self.lecture_ids, self.lecture_parts = ids, np.where(parts >= 0, parts, -1)
        self.lecture_tags = np.where(tags >= 0, tags, -1)

    def lecture_content(self, raw_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw lecture ids -> (encoded part, encoded tag) as the items' (part p -> p + 1; tags by
        `encode_tags`); 0 where the lecture or its part/tag is unknown."""
        raw = np.asarray(raw_ids, dtype=np.int64)
        if self.lecture_ids is None or len(self.lecture_ids) == 0:
            return np.zeros(raw.shape, np.int64), np.zeros(raw.shape, np.int64)
        assert self.lecture_parts is not None and self.lecture_tags is not None
        pos = np.minimum(np.searchsorted(self.lecture_ids, raw), len(self.lecture_ids) - 1)
        found = self.lecture_ids[pos] == raw
        part = np.where(found, self.lecture_parts[pos] + 1, 0)
        tag = self.encode_tags(np.where(found, self.lecture_tags[pos], -1))
        return part.astype(np.int64), tag

    @classmethod
    def build(
        cls,
        question_ids: np.ndarray,
        parts: np.ndarray,
        tags: list[list[int]] | np.ndarray | None = None,
    ) -> QuestionVocab:
        """From unsorted ids; `tags` is one sequence of raw tag ids per question (or None)."""
        question_ids = np.asarray(question_ids, dtype=np.int64)
        order = np.argsort(question_ids, kind="stable")
        table = None if tags is None else pad_tags(tags)[order]
        return cls(question_ids[order], np.asarray(parts, dtype=np.int64)[order], table)

    @property
    def size(self) -> int:
        """Vocabulary size including pad and unknown."""
        return len(self.question_ids) + FIRST_QUESTION_INDEX

    @property
    def n_parts(self) -> int:
        """Encoded part vocabulary size (pad + max part + 1)."""
        return int(self.parts.max()) + 2 if len(self.parts) else 2

    @property
    def n_tags(self) -> int:
        """Encoded tag vocabulary size (0 = no tag, then one per distinct raw tag)."""
        return len(self.tag_ids) + 1

    def encode_tags(self, raw_tags: np.ndarray) -> np.ndarray:
        """Raw tag ids (any shape, -1 = none) -> encoded tags (0 = none or a tag not in the vocab)."""
        raw = np.asarray(raw_tags, dtype=np.int64)
        if len(self.tag_ids) == 0:
            return np.zeros(raw.shape, np.int64)
        pos = np.searchsorted(self.tag_ids, raw)
        clipped = np.minimum(pos, len(self.tag_ids) - 1)
        found = (raw >= 0) & (self.tag_ids[clipped] == raw)
        return np.where(found, clipped + 1, 0).astype(np.int64)

    def item_table(self) -> ItemTable:
        """Encoded part and tags of every question index (pad and unknown rows are all 0)."""
        assert self.tags is not None  # set in __post_init__
        m = self.tags.shape[1]
        tags = np.concatenate(
            [np.zeros((FIRST_QUESTION_INDEX, m), np.int64), self.encode_tags(self.tags)]
        )
        return ItemTable(parts=self._index_parts.copy(), tags=tags)

    def to_index(self, raw_ids: np.ndarray) -> np.ndarray:
        """Raw ids -> indices; ids not in the vocabulary map to UNKNOWN_QUESTION."""
        raw = np.asarray(raw_ids, dtype=np.int64)
        if self._dense_index is not None:  # slot 0: any id < 0; the last slot: any id beyond
            return self._dense_index.take(raw + 1, mode="clip")
        pos = np.searchsorted(self.question_ids, raw)
        pos_clipped = np.minimum(pos, max(len(self.question_ids) - 1, 0))
        found = (
            (pos < len(self.question_ids)) & (self.question_ids[pos_clipped] == raw)
            if len(self.question_ids)
            else np.zeros(raw.shape, dtype=bool)
        )
        return np.where(found, pos_clipped + FIRST_QUESTION_INDEX, UNKNOWN_QUESTION).astype(
            np.int64
        )

    def unknown(self, raw_ids: np.ndarray) -> np.ndarray:
        """The raw ids that are not in the vocabulary (in input order)."""
        raw = np.asarray(raw_ids, dtype=np.int64)
        return raw[self.to_index(raw) == UNKNOWN_QUESTION]

    def part_of(self, index: np.ndarray) -> np.ndarray:
        """Encoded part of question indices."""
        return self._index_parts[np.asarray(index, dtype=np.int64)]

    def to_dict(self) -> dict[str, Any]:
        assert self.tags is not None
        data: dict[str, Any] = {
            "question_ids": self.question_ids.tolist(),
            "parts": self.parts.tolist(),
        }
        if len(self.tag_ids):
            data["tags"] = [[int(t) for t in row if t >= 0] for row in self.tags]
        for name in ("bundles", "train_answers"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value.tolist()
        if self.lecture_ids is not None:
            assert self.lecture_parts is not None and self.lecture_tags is not None
            data["lectures"] = {
                "ids": self.lecture_ids.tolist(),
                "parts": self.lecture_parts.tolist(),
                "tags": self.lecture_tags.tolist(),
            }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuestionVocab:
        tags = data.get("tags")
        optional: dict[str, np.ndarray] = {
            k: np.asarray(data[k]) for k in ("bundles", "train_answers") if k in data
        }
        if "lectures" in data:
            lectures = data["lectures"]
            optional["lecture_ids"] = np.asarray(lectures["ids"], dtype=np.int64)
            optional["lecture_parts"] = np.asarray(lectures["parts"], dtype=np.int64)
            optional["lecture_tags"] = np.asarray(lectures["tags"], dtype=np.int64)
        return cls(
            np.asarray(data["question_ids"]),
            np.asarray(data["parts"]),
            None if tags is None else pad_tags(tags),
            **optional,
        )


def pad_tags(tags: list[list[int]] | np.ndarray) -> np.ndarray:
    """One sequence of raw tag ids per question -> (Q, M) int64, -1 padded (M >= 1)."""
    if isinstance(tags, np.ndarray) and tags.ndim == 2:
        return tags.astype(np.int64)
    rows = [np.asarray(list(t), dtype=np.int64).reshape(-1) for t in tags]
    width = max([1, *(len(r) for r in rows)])
    out = np.full((len(rows), width), -1, np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _dense_index(question_ids: np.ndarray) -> np.ndarray | None:
    """A raw id -> index table over [-1, max id + 1] (shifted by one), when the sorted ids are
    compact enough: one gather per lookup instead of a binary search (~1.5 against ~7 us for the
    100 ids of a history). Slot 0 and the last slot answer UNKNOWN_QUESTION for the ids below and
    above the range."""
    if len(question_ids) == 0 or question_ids[0] < 0:
        return None
    top = int(question_ids[-1])
    if top >= max(16 * len(question_ids), DENSE_INDEX_MIN_SPAN):
        return None
    table = np.full(top + 3, UNKNOWN_QUESTION, np.int64)
    table[question_ids + 1] = np.arange(len(question_ids)) + FIRST_QUESTION_INDEX
    return table

"""The internal representation every loader produces: `Interactions` (one CSR table of all
learners' events) and `DataError` (malformed input, located as "<file>:<line>:<column>: <problem>").

`Interactions` also owns its on-disk cache layout (`save` / `load`, a directory of .npy files).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np

from models.features import History, lecture_arrays
from models.vocab import QuestionVocab

CACHE_FORMAT = 3  # bump when the on-disk layout or the loader semantics change


class DataError(ValueError):
    """Malformed input: "<file>:<line>:<column>: <problem>".

    `line` is the 1-based physical line of the file (the header is line 1; 0 = the file as a
    whole, e.g. it does not exist); `column` is a column name, or "-" when no column applies.
    """

    def __init__(self, path: Path | str, line: int, column: str | None, problem: str) -> None:
        self.path = str(path)
        self.line = int(line)
        self.column = column or "-"
        self.problem = problem
        super().__init__(f"{self.path}:{self.line}:{self.column}: {problem}")


_ROW_FIELDS = (
    "question",
    "content_id",
    "is_lecture",
    "part",
    "correct",
    "bundle",
    "timestamp",
    "elapsed_ms",
    "explanation",
    "row_id",
)


@dataclass
class Interactions:
    """All learners, CSR layout: rows of learner i are offsets[i]:offsets[i+1], sorted by (timestamp, bundle, source order)."""

    user_ids: np.ndarray  # (U,) int64 raw learner ids
    offsets: np.ndarray  # (U+1,) int64
    question: (
        np.ndarray
    )  # (N,) int32 question index from vocab (0 for lecture rows, 1 = unknown question)
    content_id: np.ndarray  # (N,) int32 raw content id (question id or lecture id)
    is_lecture: np.ndarray  # (N,) bool
    part: np.ndarray  # (N,) int8 raw part (-1 unknown)
    correct: np.ndarray  # (N,) int8 0/1, -1 for lectures
    bundle: (
        np.ndarray
    )  # (N,) int32 raw container id (Riiid task_container_id, EdNet bundle_id or -1)
    timestamp: np.ndarray  # (N,) int64 ms
    elapsed_ms: np.ndarray  # (N,) float32 elapsed time of this interaction's bundle, NaN unknown
    explanation: np.ndarray  # (N,) int8 explanation flag of this interaction, -1 unknown
    row_id: np.ndarray  # (N,) int64 source row_id (Riiid) or running index
    vocab: QuestionVocab
    # rows the loader dropped as exact duplicates (`duplicates="first"|"last"`); not a row column
    duplicates_dropped: int = field(default=0, compare=False)

    @property
    def n_learners(self) -> int:
        return len(self.user_ids)

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1]) if len(self.offsets) else 0

    def rows(self, i: int) -> slice:
        """Row range of learner i."""
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def history(self, i: int, lecture_vocab: QuestionVocab | None = None) -> History:
        """Learner i's question rows as a `History`; `bundle` is a per-learner ordinal (0, 0, 1, ...).
        Lecture rows become the history's lectures, with the part and tag of `lecture_vocab`'s
        lecture table (default: this table's vocabulary; a model's, to encode as it was trained)."""
        rows = self.rows(i)
        lecture = self.is_lecture[rows]
        keep = ~lecture
        timestamp = self.timestamp[rows][keep].astype(np.int64)
        container = self.bundle[rows][keep]
        change = (timestamp[1:] != timestamp[:-1]) | (container[1:] != container[:-1])
        ordinal = np.concatenate([np.zeros(min(len(timestamp), 1), np.int64), np.cumsum(change)])
        return History(
            question=self.question[rows][keep].astype(np.int64),
            correct=self.correct[rows][keep].astype(np.int8),
            timestamp=timestamp,
            bundle=ordinal.astype(np.int64),
            elapsed_ms=self.elapsed_ms[rows][keep].astype(np.float32),
            explanation=self.explanation[rows][keep].astype(np.int8),
            **lecture_arrays(
                lecture, self.content_id[rows], self.timestamp[rows], lecture_vocab or self.vocab
            ),
        )

    def select(self, learner_indices: np.ndarray) -> Interactions:
        """The given learners (in the given order) as a new table."""
        idx = np.asarray(learner_indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_learners):
            raise IndexError(f"learner index out of range 0..{self.n_learners - 1}")
        return self.take_ranges(self.user_ids[idx], self.offsets[idx], self.offsets[idx + 1])

    def take_ranges(
        self, user_ids: np.ndarray, starts: np.ndarray, ends: np.ndarray
    ) -> Interactions:
        """A new table whose learner k holds rows starts[k]:ends[k] of this one."""
        starts = np.asarray(starts, dtype=np.int64)
        lengths = np.asarray(ends, dtype=np.int64) - starts
        offsets = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        rows = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        columns = {name: getattr(self, name)[rows] for name in _ROW_FIELDS}
        return Interactions(
            user_ids=np.asarray(user_ids, np.int64).copy(),
            offsets=offsets,
            vocab=self.vocab,
            **columns,
        )

    def save(self, path: Path) -> None:
        """Write a directory of .npy files (+ meta.json); replaced atomically."""
        path = Path(path)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in fields(self):
            if f.name in _ROW_FIELDS or f.name in ("user_ids", "offsets"):
                np.save(tmp / f"{f.name}.npy", getattr(self, f.name), allow_pickle=False)
        np.save(tmp / "vocab_question_ids.npy", self.vocab.question_ids, allow_pickle=False)
        np.save(tmp / "vocab_parts.npy", self.vocab.parts, allow_pickle=False)
        assert self.vocab.tags is not None  # set by QuestionVocab.__post_init__
        np.save(tmp / "vocab_tags.npy", self.vocab.tags, allow_pickle=False)
        if self.vocab.bundles is not None:
            np.save(tmp / "vocab_bundles.npy", self.vocab.bundles, allow_pickle=False)
        for name in ("lecture_ids", "lecture_parts", "lecture_tags"):
            if (value := getattr(self.vocab, name)) is not None:
                np.save(tmp / f"vocab_{name}.npy", value, allow_pickle=False)
        meta = {
            "format": CACHE_FORMAT,
            "n_learners": self.n_learners,
            "n_rows": self.n_rows,
            "duplicates_dropped": self.duplicates_dropped,
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, *, mmap: bool = False) -> Interactions:
        """Read a directory written by `save` (memory-mapped, read-only arrays if `mmap`)."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{path}: cache format {meta.get('format')}, expected {CACHE_FORMAT}")
        mode: Literal["r"] | None = "r" if mmap else None
        arrays = {
            f.name: np.load(path / f"{f.name}.npy", mmap_mode=mode, allow_pickle=False)
            for f in fields(cls)
            if f.name in _ROW_FIELDS or f.name in ("user_ids", "offsets")
        }
        vocab = QuestionVocab(
            np.load(path / "vocab_question_ids.npy"),
            np.load(path / "vocab_parts.npy"),
            np.load(path / "vocab_tags.npy"),
            bundles=np.load(bundles) if (bundles := path / "vocab_bundles.npy").exists() else None,
            **{
                name: np.load(path / f"vocab_{name}.npy")
                for name in ("lecture_ids", "lecture_parts", "lecture_tags")
                if (path / f"vocab_{name}.npy").exists()
            },
        )
        return cls(vocab=vocab, duplicates_dropped=int(meta.get("duplicates_dropped", 0)), **arrays)

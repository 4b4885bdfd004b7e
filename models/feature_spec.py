"""What the encoding produces and how it is configured (numpy only): the model inputs' names, order
and dtypes, the names of the learner statistics, the time buckets, and `FeatureSpec`, saved with the
question vocabulary in an artifact's `feature_spec.json` (`save_spec` / `load_spec`).
`models.features` computes the arrays."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.vocab import FIRST_QUESTION_INDEX, QuestionVocab

PAD_BUNDLE = 1 << 30  # the `bundle` input at padding: larger than any real bundle ordinal

# Array names, in the order of the ONNX graph inputs.
MODEL_INPUTS: tuple[str, ...] = (
    "question",
    "part",
    "position",
    "bundle",
    "lag",
    "lag_bucket",
    "response",
    "elapsed",
    "elapsed_bucket",
    "explanation",
    "tags",
    "stats",
)
INT_INPUTS = frozenset(
    {
        "question",
        "part",
        "position",
        "bundle",
        "lag_bucket",
        "response",
        "elapsed_bucket",
        "explanation",
        "tags",
    }
)
# Inputs with a third axis: tags (B, T, M) and stats (B, T, N_STATS); the others are (B, T).
THREE_D_INPUTS = frozenset({"tags", "stats"})
INPUT_DTYPES = tuple(
    (name, np.int64 if name in INT_INPUTS else np.float32) for name in MODEL_INPUTS
)

# Learner statistics of each position, from the responses of STRICTLY EARLIER bundles in the window
# (never the item's own answer or its bundle-mates'), so they are known when the item is shown and
# live on the query side. Counts are log1p-scaled by the window, accuracies Laplace-smoothed (0.5 cold),
# "last" features are +1 right / -1 wrong / 0 none, recencies are in [0, 1] (1 = just now, 0 = never).
STAT_NAMES: tuple[str, ...] = (
    "count",  # answers before this bundle in the window
    "accuracy",
    "part_count",  # ... of questions of the same part
    "part_accuracy",
    "tag_count",  # ... of questions with the same tag (mean over the item's tags)
    "tag_accuracy",
    "question_count",  # earlier attempts at this very question (attempt number - 1)
    "question_accuracy",
    "question_last",  # outcome of the latest earlier attempt at this question
    "question_recency",  # 1 / (bundles since that attempt)
    "question_time",  # time since that attempt (1 - log-scaled over the lag cap; 0 = never/unknown)
    "tag_time",  # time since the latest answer with one of the item's tags
    "recent_accuracy",  # the last models.learner_stats.RECENT_ANSWERS answers
    "last_bundle",  # mean outcome of the previous bundle, as +1..-1
)
N_STATS = len(STAT_NAMES)

# Lectures as learning events (appended to the statistics when `FeatureSpec.lecture_stats`): what the
# learner watched before this bundle in the window. A lecture is never predicted; it only feeds the
# query side of later items. Counts are log1p-scaled like the answer counts, times are recencies.
LECTURE_STAT_NAMES: tuple[str, ...] = (
    "lecture_count",  # lectures watched before this bundle in the window
    "lecture_part_count",  # ... of the item's part
    "lecture_tag_count",  # ... with one of the item's tags
    "lecture_time",  # time since the latest of them (1 = just now, 0 = never/unknown)
    "lecture_tag_time",  # time since the latest one with one of the item's tags
)

_SECOND = 1000
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
# Bucket edges in ms (bucket b covers [edges[b-1], edges[b]) ; bucket 1 is below the first edge).
DEFAULT_LAG_EDGES_MS: tuple[int, ...] = tuple(
    int(x)
    for x in (
        [1 * _SECOND, 3 * _SECOND, 10 * _SECOND, 20 * _SECOND, 30 * _SECOND, 45 * _SECOND]
        + [m * _MINUTE for m in (1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 45)]
        + [h * _HOUR for h in (1, 1.5, 2, 3, 5, 8, 12, 18)]
        + [d * _DAY for d in (1, 1.5, 2, 3, 5, 7, 10, 14, 21, 30)]
    )
)
DEFAULT_ELAPSED_EDGES_MS: tuple[int, ...] = tuple(
    int(s * _SECOND)
    for s in (
        1,
        2,
        3,
        4,
        5,
        6,
        8,
        10,
        12,
        15,
        18,
        21,
        25,
        30,
        35,
        40,
        50,
        60,
        75,
        90,
        120,
        150,
        200,
        250,
        300,
    )
)


@dataclass
class FeatureSpec:
    """Everything the encoding needs; saved in the model artifact as `feature_spec.json`."""

    window: int = 100  # max interactions of history a prediction looks at (model sequence length)
    elapsed_cap_ms: int = 300_000  # SAINT+: elapsed time capped at 300 s
    lag_cap_ms: int = 7 * _DAY  # lag time capped (log-scaled below the cap)
    lag_edges_ms: tuple[int, ...] = DEFAULT_LAG_EDGES_MS
    elapsed_edges_ms: tuple[int, ...] = DEFAULT_ELAPSED_EDGES_MS
    n_questions: int = FIRST_QUESTION_INDEX  # vocabulary size incl. pad + unknown
    n_parts: int = 9  # part vocabulary size incl. pad (Riiid parts 1..7 -> 2..8)
    n_tags: int = 1  # tag vocabulary size incl. 0 = no tag (QuestionVocab.n_tags)
    # append LECTURE_STAT_NAMES to the statistics (artifacts written before lectures were an input
    # have no such key and load as False, so their graphs keep N_STATS statistics)
    lecture_stats: bool = True

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        if self.elapsed_cap_ms <= 0 or self.lag_cap_ms <= 0:
            raise ValueError("elapsed_cap_ms and lag_cap_ms must be positive")
        self.lag_edges_ms = tuple(int(x) for x in self.lag_edges_ms)
        self.elapsed_edges_ms = tuple(int(x) for x in self.elapsed_edges_ms)
        for name in ("lag_edges_ms", "elapsed_edges_ms"):
            edges = getattr(self, name)
            if len(edges) == 0 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise ValueError(f"{name} must be non-empty and strictly increasing")
        if self.n_questions < FIRST_QUESTION_INDEX:
            raise ValueError(f"n_questions must be >= {FIRST_QUESTION_INDEX}")
        if self.n_parts < 2:
            raise ValueError("n_parts must be >= 2")
        if self.n_tags < 1:
            raise ValueError("n_tags must be >= 1")

    @property
    def n_stats(self) -> int:
        """Width of the `stats` input."""
        return N_STATS + (len(LECTURE_STAT_NAMES) if self.lecture_stats else 0)

    @property
    def n_lag_buckets(self) -> int:
        return len(self.lag_edges_ms) + 2  # pad/unknown + below first edge + one per edge

    @property
    def n_elapsed_buckets(self) -> int:
        return len(self.elapsed_edges_ms) + 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "elapsed_cap_ms": self.elapsed_cap_ms,
            "lag_cap_ms": self.lag_cap_ms,
            "lag_edges_ms": list(self.lag_edges_ms),
            "elapsed_edges_ms": list(self.elapsed_edges_ms),
            "n_questions": self.n_questions,
            "n_parts": self.n_parts,
            "n_tags": self.n_tags,
            "lecture_stats": self.lecture_stats,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.setdefault("lecture_stats", False)  # an artifact from before lecture statistics
        return cls(**known)


def save_spec(path: Path, spec: FeatureSpec, vocab: QuestionVocab) -> None:
    """Write `feature_spec.json` (spec + question -> part table)."""
    data = {"spec": spec.to_dict(), "vocab": vocab.to_dict()}
    Path(path).write_text(json.dumps(data))


def load_spec(path: Path) -> tuple[FeatureSpec, QuestionVocab]:
    data = json.loads(Path(path).read_text())
    try:
        return FeatureSpec.from_dict(data["spec"]), QuestionVocab.from_dict(data["vocab"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a valid feature spec ({exc})") from exc

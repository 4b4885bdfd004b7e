"""Question and lecture tables: what is known of each item, as a `models.vocab.QuestionVocab`.

Either read from a questions table (Riiid `questions.csv`, EdNet `contents/questions.csv`, with
parts, bundles, correct answers and tags) or, for logs that carry what is known of an item
themselves (sequence files, generic tables), built from the training log: ids seen, part 0, tags
from the skill ids (`vocab_from_log`). Also the stable integer id of a string item / skill /
learner id (`stable_id`), the rule serving must apply to map such ids the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.vocab import QuestionVocab, pad_tags
from training.data.interactions import DataError
from training.data.locate import header_index, read_header, records

_ANSWER_LETTERS = ("a", "b", "c", "d")


@dataclass
class QuestionTable:
    """questions.csv with what the loaders need beyond the vocabulary."""

    vocab: QuestionVocab
    bundle_id: np.ndarray  # (Q,) int64, aligned with vocab.question_ids; -1 unknown
    correct_answer: np.ndarray  # (Q,) int8 answer code 0..3 (a..d); -1 unknown


def _parse_id(text: str, prefix: str) -> int:
    """'123' or '<prefix>123' -> 123 (EdNet writes q123, b45, ...)."""
    text = text.strip()
    if text[:1] == prefix:
        text = text[1:]
    return int(text)


def _answer_code(text: str) -> int:
    """Answer 'a'..'d' or 0..3 -> 0..3; raises ValueError otherwise."""
    text = text.strip().lower()
    if text in _ANSWER_LETTERS:
        return _ANSWER_LETTERS.index(text)
    return int(text)


def read_question_table(path: Path) -> QuestionTable:
    """Riiid questions.csv (question_id, bundle_id, correct_answer 0-3, part, tags) or EdNet
    contents/questions.csv (question_id q123, bundle_id b45, correct_answer a-d, part, ...)."""
    path = Path(path)
    header = read_header(path)
    col = header_index(path, header, ("question_id", "part"))
    ids: list[int] = []
    parts: list[int] = []
    bundles: list[int] = []
    answers: list[int] = []
    tags: list[list[int]] = []
    lines: list[int] = []  # physical line of each row (blank lines are skipped, not counted)
    for line, record in records(path):
        if len(record) != len(header):
            raise DataError(path, line, None, f"expected {len(header)} fields, got {len(record)}")
        ids.append(_table_int(path, line, record, col, "question_id", "q"))
        part = _table_int(path, line, record, col, "part", "")
        if part < 0:
            raise DataError(path, line, "part", f"part must be >= 0, got {part}")
        parts.append(part)
        bundles.append(_table_int(path, line, record, col, "bundle_id", "b", default=-1))
        answers.append(_table_answer(path, line, record, col))
        tags.append(_table_tags(path, line, record, col))
        lines.append(line)
    if not ids:
        raise DataError(path, 2, None, "no data rows (header only)")
    return _question_table(path, ids, parts, bundles, answers, lines, tags)


def _table_tags(path: Path, line: int, record: list[str], col: dict[str, int]) -> list[int]:
    """The `tags` cell: integer tag ids separated by spaces (Riiid) or ';' (EdNet); empty = none."""
    if "tags" not in col:
        return []
    text = record[col["tags"]].replace(";", " ").split()
    try:
        return [int(t) for t in text]
    except ValueError:
        raise DataError(
            path, line, "tags", f"tags must be integer ids, got {record[col['tags']]!r}"
        ) from None


def _table_int(
    path: Path,
    line: int,
    record: list[str],
    col: dict[str, int],
    name: str,
    prefix: str,
    default: int | None = None,
) -> int:
    if name not in col or (default is not None and not record[col[name]].strip()):
        return -1 if default is None else default
    try:
        return _parse_id(record[col[name]], prefix)
    except ValueError:
        raise DataError(path, line, name, f"not an integer id: {record[col[name]]!r}") from None


def _table_answer(path: Path, line: int, record: list[str], col: dict[str, int]) -> int:
    if "correct_answer" not in col or not record[col["correct_answer"]].strip():
        return -1
    try:
        return _answer_code(record[col["correct_answer"]])
    except ValueError:
        raise DataError(
            path,
            line,
            "correct_answer",
            f"expected a-d or 0-3, got {record[col['correct_answer']]!r}",
        ) from None


def _question_table(
    path: Path,
    ids: list[int],
    parts: list[int],
    bundles: list[int],
    answers: list[int],
    lines: list[int],
    tags: list[list[int]] | None = None,
) -> QuestionTable:
    raw = np.asarray(ids, dtype=np.int64)
    order = np.argsort(raw, kind="stable")
    sorted_ids = raw[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if dup.size:
        qid = int(sorted_ids[dup[0]])
        raise DataError(
            path, lines[int(order[dup[0] + 1])], "question_id", f"duplicate question_id {qid}"
        )
    tag_table = None if tags is None else pad_tags(tags)[order]
    bundle_id = np.asarray(bundles, dtype=np.int64)[order]
    vocab = QuestionVocab(
        sorted_ids, np.asarray(parts, dtype=np.int64)[order], tag_table, bundles=bundle_id
    )
    return QuestionTable(
        vocab=vocab,
        bundle_id=bundle_id,
        correct_answer=np.asarray(answers, dtype=np.int8)[order],
    )


def load_questions(path: Path) -> QuestionVocab:
    """Question vocabulary (ids -> indices, parts) from a Riiid or EdNet questions.csv."""
    return read_question_table(path).vocab


def load_lectures(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Riiid lectures.csv -> (sorted lecture ids, their parts, their tags; -1 where the optional
    `tag` column is absent or blank). A repeated lecture_id is an error at its line."""
    path = Path(path)
    header = read_header(path)
    col = header_index(path, header, ("lecture_id", "part"))
    ids, parts, tags = [], [], []
    seen: dict[int, int] = {}
    for line, record in records(path):
        if len(record) != len(header):
            raise DataError(path, line, None, f"expected {len(header)} fields, got {len(record)}")
        lecture_id = _table_int(path, line, record, col, "lecture_id", "l")
        if lecture_id in seen:
            raise DataError(
                path,
                line,
                "lecture_id",
                f"lecture {lecture_id} again (first at line {seen[lecture_id]})",
            )
        seen[lecture_id] = line
        ids.append(lecture_id)
        parts.append(_table_int(path, line, record, col, "part", ""))
        tags.append(_table_int(path, line, record, col, "tag", "", default=-1))
    order = np.argsort(np.asarray(ids, np.int64), kind="stable")
    return (
        np.asarray(ids, np.int64)[order],
        np.asarray(parts, np.int64)[order],
        np.asarray(tags, np.int64)[order],
    )


def stable_id(text: str, bits: int = 30) -> int:
    """A string id -> a stable non-negative integer below 2**bits, the same on every machine and
    run: the first 8 bytes of its BLAKE2b digest, modulo 2**bits. Used for non-integer item ids
    (bits=30: they must fit the int32 content_id), skill names and learner ids (bits=62)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (1 << bits)


def vocab_from_log(
    item_ids: np.ndarray, pair_items: np.ndarray, pair_tags: np.ndarray, *, own_tag: bool
) -> QuestionVocab:
    """The vocabulary of a log without a questions table: every item seen, part 0, and as tags
    the union of the skill ids it was seen with (`pair_items[k]` carries `pair_tags[k]`).

    `own_tag`: no skill information at all, so each item is its own knowledge component (tag =
    its own id; models that pool by tag still get a per-item tag)."""
    ids = np.unique(np.asarray(item_ids, np.int64))
    if own_tag:
        return QuestionVocab(ids, np.zeros(len(ids), np.int64), ids.reshape(-1, 1).copy())
    pairs = np.unique(
        np.stack([np.asarray(pair_items, np.int64), np.asarray(pair_tags, np.int64)], axis=1),
        axis=0,
    ).reshape(-1, 2)
    pos = np.searchsorted(ids, pairs[:, 0])
    counts = np.bincount(pos, minlength=len(ids))
    width = max(1, int(counts.max()) if len(counts) else 1)
    tags = np.full((len(ids), width), -1, np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(pairs)) - starts[pos]
    tags[pos, rank] = pairs[:, 1]
    return QuestionVocab(ids, np.zeros(len(ids), np.int64), tags)

"""Sequence files of DKT / AKT / pyKT benchmark code -> `Interactions`.

No header; one record per learner, either 3 lines

    N[,learner id]          count of answers (learner id optional)
    q1,q2,...,qN            question ids (integers)
    a1,a2,...,aN            answers, 0/1

or 4 lines, with a line of skill ids between the question ids and the answers (one cell per
answer; several skills of one answer joined by the skill separator, '_' as in pyKT). Blank lines
are skipped; one trailing comma on a line is tolerated. The layout is detected from the first
record, falling back to the other layout when only that one parses (`read_sequences`).

Order is the only time: answers are in the order given, each answer is its own bundle, and the
synthetic timestamp is the answer's position in the learner's sequence (0, 1, 2, ... "ms"; a
learner id seen in several records continues its count). Elapsed time is unknown (NaN),
explanation unknown (-1), every row is a question, part 0 (unless a questions table says more).

Vocabulary without a questions table: every question id seen; tags = the union of the skill ids
the question was answered with (4-line), or the question's own id (3-line: the question is its
own knowledge component). Errors: "<file>:<line>:<field>: <problem>", field = 1-based position
of the value on that line.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.vocab import QuestionVocab
from training.data.assemble import Raw, assemble, cached, check_policy, file_key
from training.data.interactions import DataError, Interactions
from training.data.questions import read_question_table, stable_id, vocab_from_log

logger = logging.getLogger(__name__)

_COUNT = re.compile(r"^\s*(\d+)\s*(?:,\s*([^,]*?)\s*)?,?\s*$")  # "N", "N,learner", "N,"
_INT32_MAX = (1 << 31) - 1


def is_count_line(text: str) -> bool:
    """True for a sequence file's first line: an integer, optionally ',learner id'."""
    return _COUNT.match(text) is not None


@dataclass
class _Records:
    users: list[int] = field(default_factory=list)
    questions: list[np.ndarray] = field(default_factory=list)
    answers: list[np.ndarray] = field(default_factory=list)
    skill_items: list[np.ndarray] = field(default_factory=list)  # (item, skill) pairs
    skill_ids: list[np.ndarray] = field(default_factory=list)
    question_lines: list[int] = field(default_factory=list)


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(physical line number, text) of every non-blank line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, 0, None, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, 0, None, "is a directory, expected a sequence file") from None
    out = []
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            column = str(raw[: exc.start].count(b",") + 1)
            raise DataError(
                path, number, column, f"not UTF-8 text (byte {raw[exc.start]:#04x})"
            ) from None
        if text.strip():
            out.append((number, text))
    if not out:
        raise DataError(path, 1, None, "empty file")
    return out


def _cells(path: Path, line: int, text: str, n: int, role: str, count_line: int) -> list[str]:
    cells = text.split(",")
    if len(cells) == n + 1 and not cells[-1].strip():
        cells.pop()  # one trailing comma
    if len(cells) != n:
        col = str(min(len(cells), n) + 1)
        raise DataError(
            path,
            line,
            col,
            f"{role}: expected {n} values (the count on line {count_line}), got {len(cells)}",
        )
    return cells


def _ints(path: Path, line: int, cells: list[str], role: str) -> np.ndarray:
    try:
        return np.asarray(cells).astype(np.int64)
    except (ValueError, OverflowError):
        for k, cell in enumerate(cells):
            try:
                int(cell)
            except ValueError:
                raise DataError(
                    path, line, str(k + 1), f"{role}: not an integer: {cell.strip()!r}"
                ) from None
        raise  # pragma: no cover - numpy refused what int() accepts


def _answers(path: Path, line: int, cells: list[str]) -> np.ndarray:
    values = _ints(path, line, cells, "answers")
    bad = np.flatnonzero((values != 0) & (values != 1))
    if bad.size:
        k = int(bad[0])
        raise DataError(path, line, str(k + 1), f"answers must be 0 or 1, got {cells[k].strip()!r}")
    return values.astype(np.int8)


def _skills(
    path: Path, line: int, cells: list[str], separator: str, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(item, skill) pairs of a skill line; empty cells carry no skill."""
    if separator and not any(separator in c for c in cells):
        keep = [k for k, c in enumerate(cells) if c.strip()]
        values = _ints(path, line, [cells[k] for k in keep], "skill ids")
        return items[keep], values
    pair_items, pair_skills = [], []
    for k, cell in enumerate(cells):
        for part in cell.split(separator) if separator else [cell]:
            if not part.strip():
                continue
            try:
                pair_skills.append(int(part))
            except ValueError:
                raise DataError(
                    path, line, str(k + 1), f"skill ids: not an integer: {part.strip()!r}"
                ) from None
            pair_items.append(int(items[k]))
    return np.asarray(pair_items, np.int64), np.asarray(pair_skills, np.int64)


def _parse(path: Path, lines: list[tuple[int, str]], layout: int, separator: str) -> _Records:
    out = _Records()
    i = 0
    while i < len(lines):
        number, text = lines[i]
        m = _COUNT.match(text)
        if m is None:
            raise DataError(
                path,
                number,
                "1",
                f"expected a count line (an integer, optionally ',learner id'), got {text[:40]!r}",
            )
        if i + layout > len(lines):
            raise DataError(
                path,
                lines[-1][0] + 1,
                None,
                f"incomplete record: the count on line {number} starts a {layout}-line record, "
                f"the file ends after {len(lines) - i}",
            )
        n = int(m.group(1))
        q_line, q_text = lines[i + 1]
        questions = _ints(
            path, q_line, _cells(path, q_line, q_text, n, "question ids", number), "question ids"
        )
        bad = np.flatnonzero((questions < 0) | (questions > _INT32_MAX))
        if bad.size:
            raise DataError(
                path,
                q_line,
                str(int(bad[0]) + 1),
                f"question ids must be in 0..{_INT32_MAX}, got {questions[bad[0]]}",
            )
        if layout == 4:
            s_line, s_text = lines[i + 2]
            cells = _cells(path, s_line, s_text, n, "skill ids", number)
            items, skills = _skills(path, s_line, cells, separator, questions)
            out.skill_items.append(items)
            out.skill_ids.append(skills)
        a_line, a_text = lines[i + layout - 1]
        out.answers.append(
            _answers(path, a_line, _cells(path, a_line, a_text, n, "answers", number))
        )
        learner = m.group(2)
        if learner:
            out.users.append(
                int(learner) if learner.lstrip("-").isdigit() else stable_id(learner, 62)
            )
        else:
            out.users.append(len(out.questions))  # record ordinal
        out.questions.append(questions)
        out.question_lines.append(q_line)
        i += layout
    return out


def read_sequences(path: Path, skill_separator: str = "_") -> tuple[_Records, int]:
    """Parse a 3- or 4-line sequence file; returns the records and the layout detected.

    The first record suggests the layout (3-line when its 4th line is another count line or
    absent, else 4-line; for counts <= 2, whose answers look like a count line, 3-line only when
    its 3rd line is all 0/1). The suggestion is used when it parses; otherwise the other layout when that
    parses (e.g. a 4-line file whose first answer line holds a single value); if neither does,
    the error is the suggested layout's."""
    lines = _read_lines(path)
    guess = 3 if len(lines) < 4 or is_count_line(lines[3][1]) else 4
    first = _COUNT.match(lines[0][1])
    if guess == 3 and len(lines) >= 4 and first is not None and int(first.group(1)) <= 2:
        # a 4-line record's answers of one or two values also look like a count line
        binary = set(lines[2][1].replace(",", " ").split()) <= {"0", "1"}
        guess = 3 if binary else 4
    try:
        return _parse(path, lines, guess, skill_separator), guess
    except DataError as exc:
        other = 7 - guess
        try:
            return _parse(path, lines, other, skill_separator), other
        except DataError:
            raise exc from None


def load_sequences(
    path: Path,
    questions_csv: Path | None = None,
    *,
    skill_separator: str | None = None,
    strict: bool = False,
    cache_dir: Path | None = None,
    duplicates: str = "first",
) -> Interactions:
    """A 3- or 4-line sequence file (+ optional questions table) -> Interactions.

    Without `questions_csv` the vocabulary is built from the file itself (see the module doc).
    `duplicates` is accepted for a uniform API; order-only timestamps never collide."""
    check_policy(duplicates)
    path = Path(path)
    separator = "_" if skill_separator is None else skill_separator
    if not path.is_file():
        raise DataError(path, 0, None, "no such file")
    inputs = [file_key(path)] + ([file_key(Path(questions_csv))] if questions_csv else [])
    key = [inputs, {"strict": strict, "skill_separator": separator, "duplicates": duplicates}]

    def build() -> Interactions:
        records, layout = read_sequences(path, separator)
        counts = np.asarray([len(q) for q in records.questions], np.int64)
        users = np.asarray(records.users, np.int64)
        user = np.repeat(users, counts)
        n = int(counts.sum())
        if n == 0:
            raise DataError(path, 1, None, "no answers (every count is 0)")
        content = np.concatenate(records.questions)
        timestamp = _positions(users, counts)
        raw = Raw(
            user=user,
            timestamp=timestamp,
            content_id=content.astype(np.int32),
            is_lecture=np.zeros(n, bool),
            container=timestamp.astype(np.int32),
            correct=np.concatenate(records.answers),
            elapsed=np.full(n, np.nan, np.float32),
            explanation=np.full(n, -1, np.int8),
            row_id=np.arange(n, dtype=np.int64),
        )
        vocab = _vocab(records, layout, content, questions_csv)
        record_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        q_lines = np.asarray(records.question_lines, np.int64)

        def locate(i: int) -> tuple[Path, int]:
            return path, int(q_lines[np.searchsorted(record_start, i, side="right") - 1])

        logger.info(
            "read %d answers of %d records (%d-line layout) from %s", n, len(users), layout, path
        )
        return assemble(
            raw,
            vocab,
            locate=locate,
            shift_prior=False,
            strict=strict,
            questions_path=Path(questions_csv) if questions_csv else path,
            duplicates=duplicates,
        )

    return cached(cache_dir, "sequences", key, build)


def _positions(users: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per answer, its position in its learner's sequence (a learner's records continue)."""
    base = np.zeros(len(users), np.int64)
    seen: dict[int, int] = {}
    for k, (uid, c) in enumerate(zip(users.tolist(), counts.tolist(), strict=True)):
        base[k] = seen.get(uid, 0)
        seen[uid] = base[k] + c
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts - base, counts)


def _vocab(
    records: _Records, layout: int, content: np.ndarray, questions_csv: Path | None
) -> QuestionVocab:
    if questions_csv is not None:
        return read_question_table(Path(questions_csv)).vocab
    if layout == 3:
        return vocab_from_log(content, content, content, own_tag=True)
    items = np.concatenate(records.skill_items) if records.skill_items else np.zeros(0, np.int64)
    skills = np.concatenate(records.skill_ids) if records.skill_ids else np.zeros(0, np.int64)
    return vocab_from_log(content, items, skills, own_tag=False)

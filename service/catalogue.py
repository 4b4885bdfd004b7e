"""Questions registered after training (`PUT /questions/{id}`) and the bank they extend.

A registered question has no embedding row of its own: the model sees it as the unknown question
with its part and tags (the content-aware item representation of docs/models.md), so its
predictions come from its content; the learner statistics still count it as its own question.
Registrations live in the history store (`put_question` / `get_questions`: one table shared by
every worker and replica, kept across restarts and reloads). Each process caches them in a
`Catalogue` and asks the store again for ids it does not know, so a question registered through
one worker is known to every other worker on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from models.vocab import FIRST_QUESTION_INDEX, UNKNOWN_QUESTION, ItemTable, QuestionVocab
from service.recommend import bank_indices, filter_mask


@dataclass(frozen=True)
class RegisteredQuestion:
    question_id: int
    part: int
    tags: tuple[int, ...]
    bundle_id: int | None

    def to_json(self) -> str:
        return json.dumps(
            {"part": self.part, "tags": list(self.tags), "bundle_id": self.bundle_id},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, question_id: int, text: str) -> RegisteredQuestion:
        data = json.loads(text)
        return cls(question_id, int(data["part"]), tuple(data["tags"]), data.get("bundle_id"))


class ExtendedBank:
    """The model's vocabulary plus registered questions, which take indices vocab.size + j (j in
    ascending raw id); `items` has an encoding row (part, tags) for every index."""

    def __init__(self, vocab: QuestionVocab, registered: dict[int, RegisteredQuestion]) -> None:
        self.vocab = vocab
        known = vocab.to_index(np.array(sorted(registered), np.int64)) == UNKNOWN_QUESTION
        self.ids = np.array(sorted(registered), np.int64)[known]  # (R,) ascending raw ids
        self.records = [registered[int(q)] for q in self.ids]
        base = vocab.item_table()
        encoded = [vocab.encode_tags(np.array(r.tags, np.int64)) for r in self.records]
        encoded = [t[t > 0] for t in encoded]  # tags the model does not know carry nothing
        width = max([base.tags.shape[1], *(len(t) for t in encoded)])
        tags = np.zeros((len(base.parts) + len(self.records), width), np.int64)
        tags[: len(base.parts), : base.tags.shape[1]] = base.tags
        for j, t in enumerate(encoded):
            tags[len(base.parts) + j, : len(t)] = t
        parts = np.concatenate([base.parts, [r.part + 1 for r in self.records]]).astype(np.int64)
        self.items = ItemTable(parts=parts, tags=tags)

    def to_index(self, raw_ids: np.ndarray) -> np.ndarray:
        """Raw ids -> indices: the model's, else the registered index, else UNKNOWN_QUESTION."""
        raw = np.asarray(raw_ids, dtype=np.int64)
        index = self.vocab.to_index(raw)
        if len(self.ids):
            pos = np.minimum(np.searchsorted(self.ids, raw), len(self.ids) - 1)
            registered = (index == UNKNOWN_QUESTION) & (self.ids[pos] == raw)
            index = np.where(registered, self.vocab.size + pos, index)
        return index

    def unknown(self, raw_ids: np.ndarray) -> np.ndarray:
        """The raw ids neither trained on nor registered (in input order)."""
        raw = np.asarray(raw_ids, dtype=np.int64)
        return raw[self.to_index(raw) == UNKNOWN_QUESTION]

    def is_registered(self, index: np.ndarray | int) -> np.ndarray:
        """True where an index is a registered question (elementwise; a 0-d array for an int)."""
        return np.asarray(index) >= self.vocab.size

    @property
    def raw_tags(self) -> np.ndarray:
        """(R, M) raw tags of the registered questions, -1 padded (unknown tags included)."""
        width = max([1, *(len(r.tags) for r in self.records)])
        out = np.full((len(self.records), width), -1, np.int64)
        for j, r in enumerate(self.records):
            out[j, : len(r.tags)] = r.tags
        return out

    def indices(
        self,
        parts: list[int] | None = None,
        tags: list[int] | None = None,
        question_ids: list[int] | None = None,
    ) -> np.ndarray:
        """Indices of the model's questions, then of the registered ones, that pass every given
        filter (each group ascending)."""
        part = np.array([r.part for r in self.records], np.int64)
        keep = filter_mask(self.ids, part, self.raw_tags, parts, tags, question_ids)
        registered = np.flatnonzero(keep).astype(np.int64) + self.vocab.size
        return np.concatenate([bank_indices(self.vocab, parts, tags, question_ids), registered])

    def raw_ids_of(self, indices: np.ndarray) -> np.ndarray:
        """Raw ids of model or registered indices (vectorised)."""
        idx = np.asarray(indices, np.int64)
        all_ids = np.concatenate([[-1, -1], self.vocab.question_ids, self.ids]).astype(np.int64)
        return all_ids[idx]

    def describe(self, index: int) -> tuple[int, int, list[int], int | None]:
        """(raw id, part, raw tags, bundle id or None) of a model or registered index."""
        if index >= self.vocab.size:
            r = self.records[index - self.vocab.size]
            return r.question_id, r.part, list(r.tags), r.bundle_id
        pos = index - FIRST_QUESTION_INDEX
        vocab = self.vocab
        assert vocab.tags is not None  # set by QuestionVocab.__post_init__
        bundle = None if vocab.bundles is None else int(vocab.bundles[pos])
        return (
            int(vocab.question_ids[pos]),
            int(vocab.parts[pos]),
            [int(t) for t in vocab.tags[pos] if t >= 0],
            bundle if bundle is None or bundle >= 0 else None,
        )


class Catalogue:
    """This process's cache of the registered questions and the bank it builds for a model."""

    def __init__(self) -> None:
        self.registered: dict[int, RegisteredQuestion] = {}
        # the banks of the two latest vocabularies: during a hot reload the new model (its item
        # rows computed at load, service.lifecycle) and the old one still serving each keep theirs
        self._banks: list[ExtendedBank] = []

    def add(self, records: dict[int, str]) -> None:
        changed = False
        for question_id, text in records.items():
            record = RegisteredQuestion.from_json(question_id, text)
            if self.registered.get(question_id) != record:
                self.registered[question_id] = record
                changed = True
        if changed:
            self._banks = []

    def bank(self, vocab: QuestionVocab) -> ExtendedBank:
        """The extended bank for `vocab`: the same object until a registration changes it
        (`Predictor.item_side_rows` keeps its rows per bank), for the two latest vocabularies."""
        banks = self._banks
        for bank in banks:
            if bank.vocab is vocab:
                return bank
        bank = ExtendedBank(vocab, self.registered)
        self._banks = [*banks[-1:], bank]
        return bank

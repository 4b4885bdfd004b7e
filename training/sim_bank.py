"""The simulator's content (`training.simulate` has the generative model in full): questions in
bundles of one part, the skills (tags) each bundle tests, each question's difficulty, and the
lectures (one skill each, every skill has one), as Riiid-format tables plus the lookup arrays the
simulation loop reads (`Bank`, `make_bank`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # training.sim_learners imports this module
    from training.sim_learners import SimParams

Table = dict[str, np.ndarray]

MAX_BUNDLE = 5
MAX_SKILLS_PER_BUNDLE = 2
# Riiid question counts per part (13,523 questions); parts above 7 get a neutral weight.
RIIID_PART_WEIGHTS = (992, 1647, 1562, 1439, 5511, 1212, 1160)
LECTURE_TYPES = np.array(["concept", "solving question", "intention", "starter"])
LECTURE_TYPE_WEIGHTS = (0.53, 0.44, 0.02, 0.01)


@dataclass(frozen=True)
class Bank:
    """Question and lecture tables plus the lookup arrays the simulation loop needs."""

    questions: Table
    lectures: Table
    difficulty: np.ndarray  # (Q,) float
    bundle_questions: np.ndarray  # (B, MAX_BUNDLE) question ids, -1 padded; bundles sorted by part
    bundle_skills: np.ndarray  # (B, 2) skill ids, -1 padded
    bundle_part: np.ndarray  # (B,) part (1-based)
    part_first_bundle: np.ndarray  # (P,) index of each part's first bundle
    part_n_bundles: np.ndarray  # (P,)
    part_probs: np.ndarray  # (P,) prob. of a part when a learner switches part
    lectures_by_skill: np.ndarray  # (L,) lecture rows sorted by tag
    skill_first_lecture: np.ndarray  # (K,) first position of each skill in lectures_by_skill
    skill_n_lectures: np.ndarray  # (K,)


def _bundle_size(part: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = np.ones(len(part), dtype=np.int64)
    size[(part == 3) | (part == 4)] = 3
    size[part == 6] = 4
    p7 = part == 7
    size[p7] = rng.integers(2, MAX_BUNDLE + 1, size=int(p7.sum()))
    return size


def _draw_bundles(n_questions: int, n_parts: int, rng: np.random.Generator) -> np.ndarray:
    """Part of each bundle, in question order; every part gets at least one bundle."""
    weights = np.array(
        [RIIID_PART_WEIGHTS[p] if p < len(RIIID_PART_WEIGHTS) else 1000 for p in range(n_parts)],
        dtype=np.float64,
    )
    parts = rng.choice(np.arange(1, n_parts + 1), size=n_questions, p=weights / weights.sum())
    parts[:n_parts] = np.arange(1, n_parts + 1)
    return parts


def _skills_of_bundles(
    part: np.ndarray, n_parts: int, n_skills: int, p_second: float, rng: np.random.Generator
) -> np.ndarray:
    """(B, 2) skills per bundle: skill k belongs to part 1 + k % n_parts."""
    n_in_part = np.array([len(range(p, n_skills, n_parts)) for p in range(n_parts)])
    j0 = (rng.random(len(part)) * n_in_part[part - 1]).astype(np.int64)
    # second skill: a different one of the same part (offset 1..n-1 modulo n)
    has2 = (rng.random(len(part)) < p_second) & (n_in_part[part - 1] > 1)
    off = 1 + (rng.random(len(part)) * np.maximum(n_in_part[part - 1] - 1, 1)).astype(np.int64)
    j1 = (j0 + off) % n_in_part[part - 1]
    skills = np.full((len(part), MAX_SKILLS_PER_BUNDLE), -1, dtype=np.int64)
    skills[:, 0] = (part - 1) + j0 * n_parts
    skills[has2, 1] = ((part - 1) + j1 * n_parts)[has2]
    return skills


def _make_lectures(
    n_questions: int, n_parts: int, n_skills: int, rng: np.random.Generator
) -> Table:
    n_lect = max(n_skills, n_questions // 30)
    extra = rng.integers(0, n_skills, n_lect - n_skills)
    tags = rng.permutation(np.concatenate([np.arange(n_skills), extra]))
    # ids overlap the question id range on purpose: only content_type_id tells them apart (Riiid)
    ids = np.sort(rng.choice(2 * n_questions + n_lect, size=n_lect, replace=False))
    kinds = rng.choice(len(LECTURE_TYPES), size=n_lect, p=LECTURE_TYPE_WEIGHTS)
    return {
        "lecture_id": ids.astype(np.int64),
        "tag": tags.astype(np.int64),
        "part": (1 + tags % n_parts).astype(np.int64),
        "type_of": LECTURE_TYPES[kinds],
    }


def make_bank(
    n_questions: int, n_parts: int, n_skills: int, params: SimParams, rng: np.random.Generator
) -> Bank:
    """Draw the question bank (bundles, parts, skills, difficulty) and the lecture table."""
    parts = _draw_bundles(n_questions, n_parts, rng)
    sizes = _bundle_size(parts, rng)
    ends = np.cumsum(sizes)
    n_b = int(np.searchsorted(ends, n_questions) + 1)  # bundles needed to reach n_questions
    parts, sizes = parts[:n_b], sizes[:n_b]
    sizes[-1] -= int(ends[n_b - 1] - n_questions)  # the last bundle is cut to fit
    first_q = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    skills = _skills_of_bundles(parts, n_parts, n_skills, params.second_skill_prob, rng)

    part_offset = rng.normal(0.0, 0.3, n_parts)
    d_bundle = part_offset[parts - 1] + rng.normal(
        params.difficulty_mean, params.difficulty_sd, n_b
    )
    q_bundle = np.repeat(np.arange(n_b), sizes)
    difficulty = d_bundle[q_bundle] + rng.normal(0.0, 0.4, n_questions)

    tag_strings = np.array(
        [" ".join(str(s) for s in row if s >= 0) for row in skills.tolist()], dtype=object
    )
    questions: Table = {
        "question_id": np.arange(n_questions, dtype=np.int64),
        "bundle_id": first_q[q_bundle].astype(np.int64),
        "correct_answer": rng.integers(0, 4, n_questions).astype(np.int64),
        "part": parts[q_bundle].astype(np.int64),
        "tags": tag_strings[q_bundle],
    }

    slots = np.arange(MAX_BUNDLE)
    bq = np.where(slots < sizes[:, None], first_q[:, None] + slots, -1)
    order = np.argsort(parts, kind="stable")  # bundles grouped by part for O(1) sampling
    part_n = np.bincount(parts - 1, minlength=n_parts)
    lectures = _make_lectures(n_questions, n_parts, n_skills, rng)
    by_skill = np.argsort(lectures["tag"], kind="stable")
    skill_n = np.bincount(lectures["tag"], minlength=n_skills)
    return Bank(
        questions=questions,
        lectures=lectures,
        difficulty=difficulty,
        bundle_questions=bq[order],
        bundle_skills=skills[order],
        bundle_part=parts[order],
        part_first_bundle=np.concatenate([[0], np.cumsum(part_n)[:-1]]),
        part_n_bundles=part_n,
        part_probs=part_n / part_n.sum(),
        lectures_by_skill=by_skill,
        skill_first_lecture=np.concatenate([[0], np.cumsum(skill_n)[:-1]]),
        skill_n_lectures=skill_n,
    )

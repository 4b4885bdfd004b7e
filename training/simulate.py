"""Learner simulator with ground truth, written in Riiid format.

``python -m training.simulate --learners N --seed S --out DIR`` writes ``train.csv``, ``questions.csv``,
``lectures.csv`` (Riiid schemas) and ``truth.csv`` (``row_id,p_correct,p_history_only``: the
probability each answer was drawn from, and the history-only reference of ``training.sim_reference``:
the best prediction for someone who knows the generative model but not the learner's latent
traits), then prints both AUCs (against the outcomes). Library use: ``simulate(...)`` returns
a :class:`SimulatedData`; ``write(sim, out_dir)`` writes the files. Everything is drawn from one
``np.random.default_rng(seed)``: same arguments, byte-identical files.

Generative model (all constants live in :class:`SimParams`; defaults in brackets)
-------------------------------------------------------------------------------
Content. Parts ``p = 1..P``; skill ``k = 0..K-1`` belongs to part ``1 + k mod P`` (so K >= P).
Questions come in bundles (``bundle_id`` = id of the bundle's first question). As in Riiid, parts 3
and 4 are listening sets of 3, part 6 reading sets of 4, part 7 sets of 2-5; other parts single
questions. A bundle tests 1-2 skills of its part (second one with prob ``second_skill_prob``
[0.35]); its questions share part and tags. Difficulty ``d_q = c_p + d_b + e_q`` with part offset
``c_p ~ N(0, 0.3)``, bundle level ``d_b ~ N(difficulty_mean, difficulty_sd)`` [0.7, 0.8] and item
jitter ``e_q ~ N(0, 0.4)``.
Lectures (``max(K, Q // 30)``; every skill has at least one) have one tag (skill) and its part.

Learner ``n``. General ability ``beta_n ~ N(0, ability_sd)`` [0.6], skill offsets
``u_nk ~ N(0, skill_sd)`` [0.5], speed ``s_n ~ LogN(0, 0.3)``, rushing tendency ``mu_n ~ N(0, 0.3)``,
explanation habit ``x_n ~ N(1.2, 1.0)`` (logit), session-end rate ``pi_n ~ Beta(2, 40)`` per event. History length
(rows) ``~ LogN(log(mean_length) - 1/2, 1)``: heavy-tailed with mean ``mean_length``.

Knowledge state per skill: permanent part ``S_nk`` and transient part ``M_nk`` (both start at 0),
last touch ``t_nk`` and practice count ``c_nk``. At time ``t`` (lag ``dt = t - t_nk``):

    M_nk(t) = M_nk * 2 ** (-dt / H_nk),        H_nk = half_life * (1 + half_life_growth * c_nk)
    A_nk(t) = beta_n + u_nk + S_nk + M_nk(t)                        (forgetting toward a baseline)
    R_nk(t) = recency_boost * exp(-dt / recency_tau)                (warm-up, fades in ~1 h)
    F_n(t)  = fatigue * min(1, minutes_into_session / fatigue_minutes)

[half_life 1 day, half_life_growth 0.05, recency_boost 1.2, recency_tau 30 min, fatigue 0.4,
fatigue_minutes 90]. For a bundle with skills ``B`` the learner's effective ability is
``a = mean_{k in B} (A_nk + R_nk) - F_n`` and for question q of the bundle ``theta = a - d_q``.

Elapsed time and answer (per question):

    need = base_seconds * s_n * exp(-elapsed_slope * theta)    (slower when the item is hard for n)
    z ~ N(mu_n, rush_sd);  elapsed = need * exp(z)  (whole seconds, 1 s .. 300 s)
    p_correct = guess + (1 - guess) * sigmoid(theta + rush_penalty * min(z, 0))   (rushed -> worse)
    answered_correctly ~ Bernoulli(p_correct)

[base_seconds 18, elapsed_slope 0.3, rush_sd 0.5, rush_penalty 1.0, guess 0.1]. A wrong answer's
``user_answer`` is one of the three other choices, uniformly.

After a bundle the learner sees the explanation with prob ``sigmoid(x_n + 1.5 * any_wrong)``. Each
skill of the bundle gains ``G = sum_q [eta_correct * c_q + (eta_wrong + eta_explained * e) * (1 - c_q)]``
[0.10, 0.04, 0.12] (so the biggest gain is a wrong answer followed by its explanation), damped by
``(1 - (S + M(t)) / max_gain)`` [3.0]; a share ``permanent_share`` [0.15] goes to ``S``, the rest to
``M`` (most of what is learned fades over days unless practised again); ``t_nk = t``;
``c_nk += |bundle|``. A lecture (prob ``lecture_rate`` [0.03] per event, on the skill of the last
bundle half of the time) adds ``eta_lecture`` [0.35] the same way and touches the skill.

Why time matters: after a session gap the recency boost is gone and M has decayed (first bundle
of a session: p_correct ~0.41 vs ~0.69 a minute after the previous bundle, seed 1, 1,000
learners); the previous bundle's elapsed time reveals how hard it was for the learner and whether
the learner rushes. A model blind to timestamps and elapsed times cannot see either.

Time line. The first event is at 0 ms. Next event time = this event's time + its duration (sum of
elapsed, + ~8 s review if the explanation was seen; ~2 min for a lecture) + a gap: within a
session ``LogN(log 4 s, 0.8)``; the session ends with prob ``pi_n`` and the gap is then
``LogN(log 20 h, 1.6)`` clipped to [30 min, 120 days] (hours to weeks, heavy-tailed). Part choice:
stay in the previous bundle's part with prob ``stay_in_part`` [0.75], else a random bundle.
Retries (``retry_prob`` [0], CLI ``--retry-rate``): after a bundle with a wrong answer the learner
answers the same bundle again as the next question event with this prob. (and again after another
wrong one), as in ASSISTments skill builders: repeated attempts at the same item in a row.

Riiid columns. ``task_container_id`` = the learner's event index (lectures take one too);
``prior_question_elapsed_time`` = floor(mean elapsed ms of the learner's previous *question* bundle),
``prior_question_had_explanation`` = that bundle's explanation flag; both empty on the first
question bundle and on lecture rows.

Measured (2 shared cores), ``--learners 2000 --seed 0`` with defaults: 402,046 rows, 0.8-1.2 s to
simulate; the whole CLI run 2.3-3.0 s wall before the history-only reference, 12.7 s with it while a
training shared the cores; oracle AUC 0.8112, history-only AUC 0.7890, correct rate 0.671. More in
docs/simulator.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.numeric import sigmoid
from training.binary_metrics import roc_auc
from training.cli import OneLineArgumentParser
from training.sim_reference import history_only_reference

logger = logging.getLogger(__name__)

Table = dict[str, np.ndarray]

MAX_BUNDLE = 5
MAX_SKILLS_PER_BUNDLE = 2
# Riiid question counts per part (13,523 questions); parts above 7 get a neutral weight.
RIIID_PART_WEIGHTS = (992, 1647, 1562, 1439, 5511, 1212, 1160)
LECTURE_TYPES = np.array(["concept", "solving question", "intention", "starter"])
LECTURE_TYPE_WEIGHTS = (0.53, 0.44, 0.02, 0.01)
TRAIN_COLUMNS = (
    "row_id",
    "timestamp",
    "user_id",
    "content_id",
    "content_type_id",
    "task_container_id",
    "user_answer",
    "answered_correctly",
    "prior_question_elapsed_time",
    "prior_question_had_explanation",
)
QUESTION_COLUMNS = ("question_id", "bundle_id", "correct_answer", "part", "tags")
LECTURE_COLUMNS = ("lecture_id", "tag", "part", "type_of")
FAR_PAST_MS = -1.0e15  # "never touched": every decay/recency term is exactly 0 there
MINUTE_MS = 60_000.0
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class SimParams:
    """Constants of the generative model (see the module docstring for the formulas)."""

    difficulty_mean: float = 0.7  # mean bundle difficulty (logits); sets the correct rate
    difficulty_sd: float = 0.8  # sd of bundle difficulty
    ability_sd: float = 0.6  # sd of general ability beta_n
    skill_sd: float = 0.5  # sd of per-skill offsets u_nk
    second_skill_prob: float = 0.35  # a bundle tests two skills of its part with this prob
    half_life_days: float = 1.0  # half-life of the transient knowledge M
    half_life_growth: float = 0.05  # each practised question stretches the half-life by 5 %
    recency_boost: float = 1.2  # logit bonus right after touching the skill ...
    recency_tau_min: float = 30.0  # ... fading with this time constant (minutes)
    fatigue: float = 0.4  # logit penalty reached after fatigue_minutes in one session
    fatigue_minutes: float = 90.0
    base_seconds: float = 18.0  # typical time per question for theta = 0, speed 1
    elapsed_slope: float = 0.3  # log-time slope in theta: hard items take longer
    rush_mu_sd: float = 0.3  # sd of the learners' rushing tendency mu_n
    rush_sd: float = 0.5  # sd of log(elapsed / need)
    rush_penalty: float = 1.0  # logit penalty per unit of log-time below need
    guess: float = 0.1  # floor of p_correct (4-choice questions)
    eta_correct: float = 0.10  # knowledge gain per correct answer
    eta_wrong: float = 0.04  # ... per wrong answer
    eta_explained: float = 0.12  # extra per wrong answer when the explanation was seen
    eta_lecture: float = 0.35  # gain from a lecture on the skill
    max_gain: float = 3.0  # learned knowledge saturates at this many logits
    permanent_share: float = 0.15  # share of each gain that never decays
    stay_in_part: float = 0.75  # prob. the next bundle comes from the same part
    session_gap_median_h: float = 20.0  # median gap between sessions (hours)
    session_gap_sigma: float = 1.6  # log-normal sigma of that gap (heavy tail)
    retry_prob: float = 0.0  # after a bundle with a wrong answer, retry it next with this prob.


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


@dataclass
class SimulatedData:
    """Simulated log (Riiid column order) with ground truth aligned to its rows.

    ``train`` holds the CSV columns: ``prior_question_elapsed_time`` is NaN when empty and
    ``prior_question_had_explanation`` is -1 when empty (else 0/1). The other arrays are not
    written to train.csv; they are the truth per row (lecture rows: NaN / 0 / -1).
    """

    train: Table
    questions: Table
    lectures: Table
    p_correct: np.ndarray  # (R,) probability the answer was drawn from; NaN on lectures
    elapsed_ms: np.ndarray  # (R,) this question's own elapsed time; 0 on lectures
    had_explanation: np.ndarray  # (R,) this bundle's explanation flag; -1 on lectures
    lag_ms: np.ndarray  # (R,) time since the learner's previous event; -1 on the first
    ability: np.ndarray  # (R,) effective ability a (before difficulty and rushing); NaN lectures
    # (R,) the part of `ability` the history determines: a minus the mean over the bundle's
    # skills of the latent beta_n + u_nk (S, M, recency, fatigue); NaN on lectures
    known_ability: np.ndarray
    skills: np.ndarray  # (R, 2) skills of the row's bundle, -1 padded; -1 on lectures
    difficulty: np.ndarray  # (Q,) true difficulty d_q per question id
    params: SimParams = field(default_factory=SimParams)
    meta: dict[str, float] = field(default_factory=dict)
    _history_only: np.ndarray | None = field(default=None, repr=False)

    @property
    def question_rows(self) -> np.ndarray:
        return self.train["content_type_id"] == 0

    @property
    def p_history_only(self) -> np.ndarray:
        """(R,) the history-only reference (training.sim_reference), computed once; NaN lectures."""
        if self._history_only is None:
            self._history_only = history_only_reference(self)
        return self._history_only

    def summary(self) -> dict[str, float | int]:
        """The CLI's JSON line: learners, rows, oracle and history-only AUC, correct rate."""
        q = self.question_rows
        y = self.train["answered_correctly"][q]
        return {
            "learners": int(len(np.unique(self.train["user_id"]))),
            "rows": int(len(q)),
            "oracle_auc": round(roc_auc(y, self.p_correct[q]), 4),
            "history_only_auc": round(roc_auc(y, self.p_history_only[q]), 4),
            "correct_rate": round(float(y.mean()), 4),
        }


# --------------------------------------------------------------------------------------------
# content: questions, bundles, skills, lectures


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


# --------------------------------------------------------------------------------------------
# learners and their state


@dataclass
class Learners:
    """Per-learner traits (N,) and per-skill knowledge state (N, K), updated in place."""

    base: np.ndarray  # (N, K) beta_n + u_nk
    speed: np.ndarray  # (N,)
    rush_mu: np.ndarray  # (N,)
    expl_logit: np.ndarray  # (N,)
    p_end: np.ndarray  # (N,) session-end prob. per event
    target_rows: np.ndarray  # (N,)
    perm: np.ndarray  # (N, K) S
    trans: np.ndarray  # (N, K) M at time touch
    touch: np.ndarray  # (N, K) last touch (ms)
    count: np.ndarray  # (N, K) questions practised
    t_next: np.ndarray  # (N,) time of the next event (ms)
    t_prev: np.ndarray  # (N,) time of the previous event (ms), NaN before the first
    session_start: np.ndarray  # (N,)
    rows_done: np.ndarray  # (N,)
    last_part: np.ndarray  # (N,) part of the last bundle, 0 = none
    last_skill: np.ndarray  # (N,) primary skill of the last bundle, -1 = none
    prev_elapsed: np.ndarray  # (N,) mean elapsed of the last question bundle, NaN = none
    prev_expl: np.ndarray  # (N,) explanation flag of the last question bundle, -1 = none
    retry: np.ndarray  # (N,) bundle to answer again next (retry_prob), -1 = none


def make_learners(
    n: int, n_skills: int, mean_length: float, params: SimParams, rng: np.random.Generator
) -> Learners:
    sigma = 1.0
    lengths = rng.lognormal(np.log(mean_length) - sigma**2 / 2, sigma, n)
    target = np.clip(np.rint(lengths), 1, 20 * mean_length).astype(np.int64)
    base = rng.normal(0.0, params.ability_sd, (n, 1)) + rng.normal(
        0.0, params.skill_sd, (n, n_skills)
    )
    zeros = np.zeros((n, n_skills))
    return Learners(
        base=base,
        speed=rng.lognormal(0.0, 0.3, n),
        rush_mu=rng.normal(0.0, params.rush_mu_sd, n),
        expl_logit=rng.normal(1.2, 1.0, n),
        p_end=rng.beta(2.0, 40.0, n),
        target_rows=target,
        perm=zeros.copy(),
        trans=zeros.copy(),
        touch=np.full((n, n_skills), FAR_PAST_MS),
        count=np.zeros((n, n_skills), dtype=np.int64),
        t_next=np.zeros(n),
        t_prev=np.full(n, np.nan),
        session_start=np.zeros(n),
        rows_done=np.zeros(n, dtype=np.int64),
        last_part=np.zeros(n, dtype=np.int64),
        last_skill=np.full(n, -1, dtype=np.int64),
        prev_elapsed=np.full(n, np.nan),
        prev_expl=np.full(n, -1, dtype=np.int8),
        retry=np.full(n, -1, dtype=np.int64),
    )


def decayed_transient(
    trans: np.ndarray, count: np.ndarray, dt_ms: np.ndarray, params: SimParams
) -> np.ndarray:
    """M(t) = M * 2^(-dt / H), H = half_life * (1 + growth * practice count)."""
    half_life = params.half_life_days * DAY_MS * (1.0 + params.half_life_growth * count)
    return trans * np.exp2(-dt_ms / half_life)


def recency(dt_ms: np.ndarray, params: SimParams) -> np.ndarray:
    """Short-term warm-up boost, fading over minutes to hours."""
    return params.recency_boost * np.exp(-dt_ms / (params.recency_tau_min * MINUTE_MS))


def _learn(
    lr: Learners, who: np.ndarray, skill: np.ndarray, t: np.ndarray, gain: np.ndarray, p: SimParams
) -> None:
    """Decay M to t, add a saturating gain split into permanent/transient parts, touch the skill."""
    m_now = decayed_transient(
        lr.trans[who, skill], lr.count[who, skill], t - lr.touch[who, skill], p
    )
    learned = lr.perm[who, skill] + m_now
    delta = gain * np.clip(1.0 - learned / p.max_gain, 0.0, 1.0)
    lr.perm[who, skill] += p.permanent_share * delta
    lr.trans[who, skill] = m_now + (1.0 - p.permanent_share) * delta
    lr.touch[who, skill] = t


# --------------------------------------------------------------------------------------------
# one simulation step: a question bundle or a lecture for each active learner


def _pick_bundles(
    who: np.ndarray, bank: Bank, lr: Learners, params: SimParams, rng: np.random.Generator
) -> np.ndarray:
    n = len(who)
    switch = (rng.random(n) >= params.stay_in_part) | (lr.last_part[who] == 0)
    new_part = 1 + np.searchsorted(np.cumsum(bank.part_probs), rng.random(n), side="right")
    part = np.where(switch, np.minimum(new_part, len(bank.part_probs)), lr.last_part[who])
    within = (rng.random(n) * bank.part_n_bundles[part - 1]).astype(np.int64)
    picked = bank.part_first_bundle[part - 1] + within
    return np.where(lr.retry[who] >= 0, lr.retry[who], picked)


def _ability(
    who: np.ndarray, skills: np.ndarray, t: np.ndarray, lr: Learners, params: SimParams
) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the bundle's skills of A_nk(t) + R_nk(t), and of its latent part beta_n + u_nk.

    Returns two (n,) arrays; their difference (S + M(t) + R(t)) follows from the history alone.
    """
    total = np.zeros(len(who))
    latent = np.zeros(len(who))
    for j in range(MAX_SKILLS_PER_BUNDLE):
        k = np.maximum(skills[:, j], 0)
        dt = t - lr.touch[who, k]
        m_now = decayed_transient(lr.trans[who, k], lr.count[who, k], dt, params)
        a = lr.base[who, k] + lr.perm[who, k] + m_now + recency(dt, params)
        total += np.where(skills[:, j] >= 0, a, 0.0)
        latent += np.where(skills[:, j] >= 0, lr.base[who, k], 0.0)
    n_skills = (skills >= 0).sum(axis=1)
    return total / n_skills, latent / n_skills


@dataclass
class Chunk:
    """Rows produced in one step for one event kind; concatenated and sorted at the end."""

    learner: np.ndarray
    slot: np.ndarray
    content_id: np.ndarray
    content_type: int
    timestamp: np.ndarray
    user_answer: np.ndarray
    correct: np.ndarray
    prior_elapsed: np.ndarray
    prior_expl: np.ndarray
    p_correct: np.ndarray
    elapsed_ms: np.ndarray
    had_expl: np.ndarray
    lag_ms: np.ndarray
    ability: np.ndarray
    known_ability: np.ndarray
    skills: np.ndarray  # (rows, 2)


def _bundle_step(
    who: np.ndarray, bank: Bank, lr: Learners, params: SimParams, rng: np.random.Generator
) -> tuple[Chunk, np.ndarray]:
    """Answer one bundle per learner in ``who``; returns its rows and each event's duration (ms)."""
    n = len(who)
    t = lr.t_next[who]
    b = _pick_bundles(who, bank, lr, params, rng)
    qs = bank.bundle_questions[b]  # (n, 5), -1 padded
    mask = qs >= 0
    skills = bank.bundle_skills[b]  # (n, 2)
    fatigue = params.fatigue * np.minimum(
        1.0, (t - lr.session_start[who]) / (params.fatigue_minutes * MINUTE_MS)
    )
    mean_ability, latent = _ability(who, skills, t, lr, params)
    a = mean_ability - fatigue  # (n,)
    theta = a[:, None] - bank.difficulty[np.maximum(qs, 0)]  # (n, 5)

    need_s = params.base_seconds * lr.speed[who, None] * np.exp(-params.elapsed_slope * theta)
    z = rng.normal(lr.rush_mu[who, None], params.rush_sd, (n, MAX_BUNDLE))
    elapsed = np.clip(np.rint(need_s * np.exp(z)), 1.0, 300.0) * 1000.0  # (n, 5) ms
    logit = theta + params.rush_penalty * np.minimum(z, 0.0)
    p = params.guess + (1.0 - params.guess) * sigmoid(logit)
    correct = (rng.random((n, MAX_BUNDLE)) < p) & mask
    answer_key = bank.questions["correct_answer"][np.maximum(qs, 0)]
    wrong_answer = (answer_key + rng.integers(1, 4, (n, MAX_BUNDLE))) % 4
    user_answer = np.where(correct, answer_key, wrong_answer)

    any_wrong = (mask & ~correct).any(axis=1)
    expl = rng.random(n) < sigmoid(lr.expl_logit[who] + 1.5 * any_wrong)
    wrong = mask & ~correct
    gain = params.eta_correct * correct.sum(1) + (
        params.eta_wrong + params.eta_explained * expl
    ) * wrong.sum(1)
    for j in range(MAX_SKILLS_PER_BUNDLE):
        has = skills[:, j] >= 0
        _learn(lr, who[has], skills[has, j], t[has], gain[has], params)
        lr.count[who[has], skills[has, j]] += mask[has].sum(1)

    rows = _bundle_rows(
        who, qs, mask, t, user_answer, correct, p, elapsed, expl, a, latent, skills, lr
    )
    size = mask.sum(1)
    lr.prev_elapsed[who] = np.floor((elapsed * mask).sum(1) / size)
    lr.prev_expl[who] = expl
    lr.last_part[who] = bank.bundle_part[b]
    lr.last_skill[who] = skills[:, 0]
    if params.retry_prob > 0:  # no draw otherwise: default runs keep their random stream
        again = any_wrong & (rng.random(n) < params.retry_prob)
        lr.retry[who] = np.where(again, b, -1)
    review = np.where(expl, rng.lognormal(np.log(8000.0), 0.5, n), 0.0)
    return rows, (elapsed * mask).sum(1) + review


def _bundle_rows(
    who: np.ndarray,
    qs: np.ndarray,
    mask: np.ndarray,
    t: np.ndarray,
    user_answer: np.ndarray,
    correct: np.ndarray,
    p: np.ndarray,
    elapsed: np.ndarray,
    expl: np.ndarray,
    a: np.ndarray,
    latent: np.ndarray,
    skills: np.ndarray,
    lr: Learners,
) -> Chunk:
    """Flatten the (n, 5) bundle arrays to one row per real question (prior_* = previous bundle)."""
    r, j = np.nonzero(mask)
    lag = np.where(np.isnan(lr.t_prev[who]), -1.0, t - lr.t_prev[who])
    return Chunk(
        learner=who[r],
        slot=j,
        content_id=qs[r, j],
        content_type=0,
        timestamp=t[r],
        user_answer=user_answer[r, j],
        correct=correct[r, j].astype(np.int64),
        prior_elapsed=lr.prev_elapsed[who][r],
        prior_expl=lr.prev_expl[who][r],
        p_correct=p[r, j],
        elapsed_ms=elapsed[r, j],
        had_expl=expl[r].astype(np.int8),
        lag_ms=lag[r],
        ability=a[r],
        known_ability=(a - latent)[r],
        skills=skills[r],
    )


def _lecture_step(
    who: np.ndarray, bank: Bank, lr: Learners, params: SimParams, rng: np.random.Generator
) -> tuple[Chunk, np.ndarray]:
    """Watch one lecture per learner in ``who``: on the last bundle's skill half of the time."""
    n = len(who)
    t = lr.t_next[who]
    k = lr.base.shape[1]
    own = (rng.random(n) < 0.5) & (lr.last_skill[who] >= 0)
    skill = np.where(own, lr.last_skill[who], rng.integers(0, k, n))
    pos = bank.skill_first_lecture[skill] + (rng.random(n) * bank.skill_n_lectures[skill])
    idx = bank.lectures_by_skill[pos.astype(np.int64)]
    _learn(lr, who, skill, t, np.full(n, params.eta_lecture), params)
    lag = np.where(np.isnan(lr.t_prev[who]), -1.0, t - lr.t_prev[who])
    chunk = Chunk(
        learner=who,
        slot=np.zeros(n, dtype=np.int64),
        content_id=bank.lectures["lecture_id"][idx],
        content_type=1,
        timestamp=t,
        user_answer=np.full(n, -1, dtype=np.int64),
        correct=np.full(n, -1, dtype=np.int64),
        prior_elapsed=np.full(n, np.nan),
        prior_expl=np.full(n, -1, dtype=np.int8),
        p_correct=np.full(n, np.nan),
        elapsed_ms=np.zeros(n),
        had_expl=np.full(n, -1, dtype=np.int8),
        lag_ms=lag,
        ability=np.full(n, np.nan),
        known_ability=np.full(n, np.nan),
        skills=np.full((n, MAX_SKILLS_PER_BUNDLE), -1, dtype=np.int64),
    )
    return chunk, rng.lognormal(np.log(120_000.0), 0.6, n)


def _advance_clock(
    who: np.ndarray, duration: np.ndarray, lr: Learners, params: SimParams, rng: np.random.Generator
) -> None:
    """Schedule each learner's next event: a short gap, or a heavy-tailed one after the session."""
    n = len(who)
    ends = rng.random(n) < lr.p_end[who]
    within = rng.lognormal(np.log(4000.0), 0.8, n)
    between = np.clip(
        rng.lognormal(np.log(params.session_gap_median_h * HOUR_MS), params.session_gap_sigma, n),
        30 * MINUTE_MS,
        120 * DAY_MS,
    )
    t = lr.t_next[who]
    lr.t_prev[who] = t
    lr.t_next[who] = t + np.rint(duration + np.where(ends, between, within))
    lr.session_start[who] = np.where(ends, lr.t_next[who], lr.session_start[who])


# --------------------------------------------------------------------------------------------
# public API


def _validate(
    n_learners: int,
    n_questions: int,
    n_parts: int,
    n_skills: int,
    mean_length: float,
    lecture_rate: float,
) -> None:
    if n_learners < 1:
        raise ValueError(f"learners must be >= 1, got {n_learners}")
    if n_parts < 1:
        raise ValueError(f"parts must be >= 1, got {n_parts}")
    if n_skills < n_parts:
        raise ValueError(
            f"skills ({n_skills}) must be >= parts ({n_parts}): each part needs a skill"
        )
    if n_questions < n_parts * MAX_BUNDLE:
        raise ValueError(
            f"questions must be >= {n_parts * MAX_BUNDLE} for {n_parts} parts, got {n_questions}"
        )
    if not mean_length >= 1:
        raise ValueError(f"mean-length must be >= 1, got {mean_length}")
    if not 0.0 <= lecture_rate < 1.0:
        raise ValueError(f"lecture-rate must be in [0, 1), got {lecture_rate}")


def simulate(
    n_learners: int,
    seed: int,
    *,
    n_questions: int = 1000,
    n_parts: int = 7,
    n_skills: int = 20,
    mean_length: float = 200.0,
    lecture_rate: float = 0.03,
    params: SimParams | None = None,
) -> SimulatedData:
    """Simulate ``n_learners`` learners; deterministic for ``seed``. See the module docstring."""
    _validate(n_learners, n_questions, n_parts, n_skills, mean_length, lecture_rate)
    params = params or SimParams()
    if not 0.0 <= params.retry_prob < 1.0:
        raise ValueError(f"retry-rate must be in [0, 1), got {params.retry_prob}")
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    bank = make_bank(n_questions, n_parts, n_skills, params, rng)
    lr = make_learners(n_learners, n_skills, mean_length, params, rng)
    chunks: list[tuple[int, Chunk]] = []
    step = 0
    while True:
        active = np.flatnonzero(lr.rows_done < lr.target_rows)
        if len(active) == 0:
            break
        lecture = rng.random(len(active)) < lecture_rate
        duration = np.empty(len(active))
        for is_lec, fn in ((False, _bundle_step), (True, _lecture_step)):
            sel = lecture == is_lec
            if sel.any():
                chunk, duration[sel] = fn(active[sel], bank, lr, params, rng)
                lr.rows_done[active[sel]] += np.bincount(
                    np.searchsorted(active[sel], chunk.learner), minlength=int(sel.sum())
                )
                chunks.append((step, chunk))
        _advance_clock(active, duration, lr, params, rng)
        step += 1
    sim = _assemble(chunks, bank, n_learners, params, rng)
    sim.meta = {"steps": step, "seconds": round(time.perf_counter() - start, 3)}
    logger.info(
        "simulated %d learners, %d rows in %.2f s",
        n_learners,
        len(sim.p_correct),
        sim.meta["seconds"],
    )
    return sim


def _assemble(
    chunks: list[tuple[int, Chunk]],
    bank: Bank,
    n_learners: int,
    params: SimParams,
    rng: np.random.Generator,
) -> SimulatedData:
    """Concatenate the step chunks and sort rows by learner, then event (= container), then slot."""

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(c, name) for _, c in chunks])

    learner = cat("learner")
    container = np.concatenate([np.full(len(c.learner), s, dtype=np.int64) for s, c in chunks])
    ctype = np.concatenate(
        [np.full(len(c.learner), c.content_type, dtype=np.int64) for _, c in chunks]
    )
    order = np.lexsort((cat("slot"), container, learner))
    user_ids = 115 + np.cumsum(rng.integers(1, 50_000, n_learners))  # sorted, Riiid-like ids
    train: Table = {
        "row_id": np.arange(len(order), dtype=np.int64),
        "timestamp": cat("timestamp")[order].astype(np.int64),
        "user_id": user_ids[learner[order]].astype(np.int64),
        "content_id": cat("content_id")[order].astype(np.int64),
        "content_type_id": ctype[order],
        "task_container_id": container[order],
        "user_answer": cat("user_answer")[order].astype(np.int64),
        "answered_correctly": cat("correct")[order].astype(np.int64),
        "prior_question_elapsed_time": cat("prior_elapsed")[order],
        "prior_question_had_explanation": cat("prior_expl")[order].astype(np.int8),
    }
    return SimulatedData(
        train=train,
        questions=bank.questions,
        lectures=bank.lectures,
        p_correct=cat("p_correct")[order],
        elapsed_ms=cat("elapsed_ms")[order],
        had_explanation=cat("had_expl")[order].astype(np.int8),
        lag_ms=cat("lag_ms")[order],
        ability=cat("ability")[order],
        known_ability=cat("known_ability")[order],
        skills=cat("skills")[order],
        difficulty=bank.difficulty,
        params=params,
    )


# --------------------------------------------------------------------------------------------
# CSV output


Formatter = Callable[[np.ndarray], list[str]]
WRITE_BLOCK_ROWS = 100_000  # rows formatted at a time: memory stays flat for any size


def _int_strings(a: np.ndarray) -> list[str]:
    return a.astype(np.int64).astype(str).tolist()


def _float_or_empty(a: np.ndarray) -> list[str]:
    """Riiid writes elapsed times as floats ('27333.0'); NaN -> empty."""
    text = np.char.add(np.nan_to_num(a).astype(np.int64).astype(str), ".0")
    return np.where(np.isnan(a), "", text).tolist()


def _bool_or_empty(a: np.ndarray) -> list[str]:
    return np.array(["", "False", "True"])[a.astype(np.int64) + 1].tolist()


def _float_repr(a: np.ndarray) -> list[str]:
    return [repr(x) for x in a.tolist()]  # shortest round-trip form


def _strings(a: np.ndarray) -> list[str]:
    return [str(x) for x in a.tolist()]


def _write_csv(path: Path, columns: dict[str, tuple[np.ndarray, Formatter]]) -> None:
    n = len(next(iter(columns.values()))[0])
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(",".join(columns) + "\n")
        for lo in range(0, n, WRITE_BLOCK_ROWS):
            cols = [fmt(a[lo : lo + WRITE_BLOCK_ROWS]) for a, fmt in columns.values()]
            f.write("".join(",".join(row) + "\n" for row in zip(*cols, strict=True)))


def _csv_columns(sim: SimulatedData) -> dict[str, dict[str, tuple[np.ndarray, Formatter]]]:
    """File name -> column name -> (values, formatter), in Riiid column order."""
    special: dict[str, Formatter] = {
        "prior_question_elapsed_time": _float_or_empty,
        "prior_question_had_explanation": _bool_or_empty,
        "tags": _strings,
        "type_of": _strings,
    }
    tables = {"train.csv": sim.train, "questions.csv": sim.questions, "lectures.csv": sim.lectures}
    files = {
        name: {c: (table[c], special.get(c, _int_strings)) for c in table}
        for name, table in tables.items()
    }
    is_q = sim.question_rows
    files["truth.csv"] = {
        "row_id": (sim.train["row_id"][is_q], _int_strings),
        "p_correct": (sim.p_correct[is_q], _float_repr),
        "p_history_only": (sim.p_history_only[is_q], _float_repr),
    }
    return files


def write(sim: SimulatedData, out_dir: str | Path) -> list[Path]:
    """Write train.csv, questions.csv, lectures.csv and truth.csv into ``out_dir`` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, columns in _csv_columns(sim).items():
        _write_csv(out / name, columns)
        paths.append(out / name)
    logger.info("wrote %s", ", ".join(map(str, paths)))
    return paths


# --------------------------------------------------------------------------------------------
# CLI


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _mean_length(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}") from None
    if not 1.0 <= value <= 1e6:
        raise argparse.ArgumentTypeError(f"expected a number in [1, 1e6], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog="python -m training.simulate", description=__doc__.splitlines()[0]
    )
    p.add_argument("--learners", type=_positive_int, required=True, help="number of learners")
    p.add_argument("--seed", type=_seed, required=True, help="random seed (same seed, same files)")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--questions", type=_positive_int, default=1000, help="question bank size")
    p.add_argument("--parts", type=_positive_int, default=7, help="number of parts (1..P)")
    p.add_argument("--skills", type=_positive_int, default=20, help="number of skills (tags)")
    p.add_argument("--mean-length", type=_mean_length, default=200.0, help="mean rows per learner")
    p.add_argument("--lecture-rate", type=_rate, default=0.03, help="prob. an event is a lecture")
    p.add_argument(
        "--retry-rate",
        type=_rate,
        default=0.0,
        help="prob. a bundle with a wrong answer is answered again right after (default 0)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        sim = simulate(
            args.learners,
            args.seed,
            n_questions=args.questions,
            n_parts=args.parts,
            n_skills=args.skills,
            mean_length=args.mean_length,
            lecture_rate=args.lecture_rate,
            params=SimParams(retry_prob=args.retry_rate),
        )
        write(sim, args.out)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    s = sim.summary()
    print(
        f"simulated {s['learners']} learners, {s['rows']} rows in {sim.meta['seconds']} s -> {args.out}; "
        f"oracle AUC {s['oracle_auc']:.4f}, history-only AUC {s['history_only_auc']:.4f}, correct rate {s['correct_rate']:.3f}"
    )
    print(json.dumps(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

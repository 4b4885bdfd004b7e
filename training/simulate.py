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
from dataclasses import dataclass, field

import numpy as np

from training.binary_metrics import roc_auc
from training.cli import OneLineArgumentParser
from training.sim_bank import MAX_BUNDLE, Bank, Table, make_bank
from training.sim_csv import write
from training.sim_learners import (
    Chunk,
    SimParams,
    advance_clock,
    bundle_step,
    lecture_step,
    make_learners,
)
from training.sim_reference import history_only_reference

logger = logging.getLogger(__name__)


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
        for is_lec, fn in ((False, bundle_step), (True, lecture_step)):
            sel = lecture == is_lec
            if sel.any():
                chunk, duration[sel] = fn(active[sel], bank, lr, params, rng)
                lr.rows_done[active[sel]] += np.bincount(
                    np.searchsorted(active[sel], chunk.learner), minlength=int(sel.sum())
                )
                chunks.append((step, chunk))
        advance_clock(active, duration, lr, params, rng)
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

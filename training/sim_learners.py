"""The simulator's learners (`training.simulate` has the generative model in full): the model's
constants (`SimParams`), each learner's traits and per-skill knowledge state (`Learners`), how
knowledge decays and grows, and one step of the simulation: a question bundle (`bundle_step`) or a
lecture (`lecture_step`) for each active learner, then their clocks (`advance_clock`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.numeric import sigmoid
from training.sim_bank import MAX_BUNDLE, MAX_SKILLS_PER_BUNDLE, Bank

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


def bundle_step(
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


def lecture_step(
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


def advance_clock(
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

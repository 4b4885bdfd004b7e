"""The simulator's history-only reference: the best prediction without the learner's latent traits.

The oracle (``p_correct`` in truth.csv) knows every learner's latent traits; no model can. This
reference knows what a model could at best learn from unlimited data — every constant of the
generative model (:class:`~training.sim_learners.SimParams`, each question's difficulty and skills) and
the part of a learner's state that follows from their history (permanent and transient knowledge,
recency, fatigue: ``SimulatedData.known_ability``) — but not the learner's latent abilities
``x_n = (beta_n + u_nk)_k``. It infers those from the learner's earlier answers, as a Bayesian
filter, so it is a fairer ceiling for a knowledge-tracing model than the oracle.

Model (docs/simulator.md has the generative model):

    x_n ~ N(0, ability_sd^2 * 1 1^T + skill_sd^2 * I)                       (K skills)
    s = w^T x_n,  w = 1_B / |B| for a bundle testing skills B;  theta = s + known - d_q
    P(correct | s) = guess + (1 - guess) * E_z sigmoid(theta + rush_penalty * min(z, 0))

with the rushing draw ``z ~ N(0, sqrt(rush_sd^2 + rush_mu_sd^2))`` marginalised over learners: the
reference reads answers, not elapsed times (which say a little about a learner's rushing habit and
about how hard an item was for them), so a model that reads elapsed times can in principle edge
past it.

Filter: assumed-density filtering. The posterior of ``x_n`` stays Gaussian ``N(m, Sigma)``; after
each answer its moments along ``w`` are matched exactly (Gauss-Hermite quadrature of the 1-D
marginal of ``s``) and carried to the whole vector by the rank-one update
``m += c (m_s' - m_s) / v_s``, ``Sigma += c c^T (v_s' - v_s) / v_s^2`` with ``c = Sigma w``. Every
question of a bundle is predicted from the posterior before the bundle (the service's protocol).
Learners are filtered in lockstep, one bundle each per step, vectorised over learners.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from models.numeric import sigmoid

if TYPE_CHECKING:  # the simulator imports this module to write truth.csv
    from training.sim_learners import SimParams
    from training.simulate import SimulatedData

QUADRATURE_NODES = 48  # Gauss-Hermite nodes over s (and over the rushing draw z)
# physicists' Gauss-Hermite rule (weight exp(-x^2)), computed once: s = mean + sqrt(2 var) x
GH_NODES, GH_WEIGHTS = np.polynomial.hermite.hermgauss(QUADRATURE_NODES)
# logits at which E_z sigmoid(. + penalty * min(z, 0)) is tabulated (then interpolated)
GRID = np.linspace(-40.0, 40.0, 32_001)


def rushed_sigmoid(params: SimParams) -> np.ndarray:
    """E_z sigmoid(x + rush_penalty * min(z, 0)) at the logits of GRID, z marginal over learners."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(QUADRATURE_NODES)  # weight exp(-x^2 / 2)
    z = np.hypot(params.rush_sd, params.rush_mu_sd) * nodes
    values = sigmoid(GRID[:, None] + params.rush_penalty * np.minimum(z, 0.0)[None, :])
    return values @ (weights / weights.sum())


class AnswerLikelihood:
    """P(correct | theta) of the generative model with the rushing draw integrated out."""

    def __init__(self, params: SimParams):
        self.guess = params.guess
        self.table = rushed_sigmoid(params)

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        return self.guess + (1.0 - self.guess) * np.interp(theta, GRID, self.table)


def moments_given_answer(
    mean: np.ndarray,
    var: np.ndarray,
    offset: np.ndarray,
    correct: np.ndarray,
    likelihood: AnswerLikelihood,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and variance of s ~ N(mean, var) after one answer with logit s + offset.

    All arrays (n,). Gauss-Hermite quadrature of the exact 1-D posterior.
    """
    s = mean[:, None] + np.sqrt(2.0 * var)[:, None] * GH_NODES[None, :]  # (n, G)
    p = likelihood(s + offset[:, None])
    lik = np.where(correct[:, None], p, 1.0 - p) * GH_WEIGHTS  # (n, G)
    z = lik.sum(1)
    new_mean = (lik * s).sum(1) / z
    new_var = np.maximum((lik * (s - new_mean[:, None]) ** 2).sum(1) / z, 1e-12)
    return new_mean, new_var


def predictive(
    mean: np.ndarray, var: np.ndarray, offset: np.ndarray, likelihood: AnswerLikelihood
) -> np.ndarray:
    """P(correct) = E_s P(correct | s + offset) for s ~ N(mean, var): (n,) x (n, J) -> (n, J)."""
    s = mean[:, None] + np.sqrt(2.0 * var)[:, None] * GH_NODES[None, :]  # (n, G)
    p = likelihood(s[:, None, :] + offset[:, :, None])  # (n, J, G)
    return p @ (GH_WEIGHTS / np.sqrt(np.pi))


def _bundles(sim: SimulatedData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Question bundles in row order: learner index (b,), rank in the learner (b,), rows (b, J).

    J is the largest bundle; shorter bundles' rows are padded with -1.
    """
    q_rows = np.flatnonzero(sim.question_rows)
    user = sim.train["user_id"][q_rows]
    container = sim.train["task_container_id"][q_rows]
    new = np.r_[True, (user[1:] != user[:-1]) | (container[1:] != container[:-1])]
    starts = np.flatnonzero(new)
    sizes = np.diff(np.r_[starts, len(q_rows)])
    max_bundle = int(sizes.max()) if len(sizes) else 1
    learner = np.unique(user, return_inverse=True)[1][starts]
    first = np.r_[True, learner[1:] != learner[:-1]]
    rank = np.arange(len(starts)) - np.maximum.accumulate(
        np.where(first, np.arange(len(starts)), 0)
    )
    slots = np.arange(max_bundle)
    rows = np.where(
        slots < sizes[:, None], q_rows[np.minimum(starts[:, None] + slots, len(q_rows) - 1)], -1
    )
    return learner, rank, rows


def history_only_reference(sim: SimulatedData) -> np.ndarray:
    """P(correct) per row from the generative model and the learner's earlier answers; NaN on lectures."""
    params = sim.params
    likelihood = AnswerLikelihood(params)
    learner, rank, bundle_rows = _bundles(sim)
    n_learners = int(learner.max()) + 1 if len(learner) else 0
    n_skills = int(sim.skills.max()) + 1 if len(sim.skills) else 0
    prior = params.ability_sd**2 * np.ones((n_skills, n_skills)) + params.skill_sd**2 * np.eye(
        n_skills
    )
    mean = np.zeros((n_learners, n_skills))
    cov = np.broadcast_to(prior, (n_learners, n_skills, n_skills)).copy()
    correct = sim.train["answered_correctly"] == 1
    question_id = np.where(sim.question_rows, sim.train["content_id"], 0)
    offset_of_row = sim.known_ability - sim.difficulty[question_id]  # theta - s; NaN on lectures
    out = np.full(len(sim.p_correct), np.nan)

    order = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[order], np.arange(rank.max() + 2 if len(rank) else 1))
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        b = order[lo:hi]  # one bundle per learner
        who, rows = learner[b], bundle_rows[b]  # (n,), (n, J)
        present = rows >= 0
        skills = sim.skills[rows[:, 0]]  # (n, 2): the bundle's skills, -1 padded
        w = np.zeros((len(b), n_skills))  # (n, K): the bundle's mean over its skills
        for j in range(skills.shape[1]):
            has = skills[:, j] >= 0
            w[np.flatnonzero(has), skills[has, j]] += 1.0
        w /= w.sum(1, keepdims=True)
        m, sigma = mean[who], cov[who]  # (n, K), (n, K, K)
        c = np.einsum("nkl,nl->nk", sigma, w)  # (n, K)
        s_mean, s_var = (w * m).sum(1), (w * c).sum(1)  # (n,)
        offset = np.where(present, offset_of_row[np.maximum(rows, 0)], 0.0)  # (n, J)
        p = predictive(s_mean, s_var, offset, likelihood)
        out[rows[present]] = p[present]
        for j in range(rows.shape[1]):  # then learn from the bundle's answers, one at a time
            sel = np.flatnonzero(present[:, j])
            if len(sel) == 0:
                break
            new_mean, new_var = moments_given_answer(
                s_mean[sel], s_var[sel], offset[sel, j], correct[rows[sel, j]], likelihood
            )
            old_var = s_var[sel]
            m[sel] += c[sel] * ((new_mean - s_mean[sel]) / old_var)[:, None]
            shrink = (new_var - old_var) / old_var**2
            sigma[sel] += shrink[:, None, None] * c[sel][:, :, None] * c[sel][:, None, :]
            c[sel] *= (new_var / old_var)[:, None]  # Sigma' w = c * v_s' / v_s
            s_mean[sel], s_var[sel] = new_mean, new_var
        mean[who], cov[who] = m, sigma
    return out

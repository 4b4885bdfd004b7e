"""The simulator's history-only reference (training.sim_reference): exact where it must be, a filter
that learns from earlier answers only, and between the prior and the oracle."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from training.binary_metrics import binary_metrics
from training.sim_reference import (
    AnswerLikelihood,
    history_only_reference,
    moments_given_answer,
    predictive,
)
from training.simulate import SimParams, simulate

SMALL = {"n_questions": 200, "mean_length": 60.0}


def _grid_posterior(mean: float, var: float, offset: float, correct: bool, lik: AnswerLikelihood):
    """Mean and variance of s | answer by brute-force integration on a fine grid."""
    s = np.linspace(mean - 12 * np.sqrt(var), mean + 12 * np.sqrt(var), 200_001)
    prior = np.exp(-((s - mean) ** 2) / (2 * var))
    p = lik(s + offset)
    post = prior * (p if correct else 1 - p)
    post /= post.sum()
    m = (post * s).sum()
    return m, (post * (s - m) ** 2).sum()


@pytest.mark.parametrize(
    ("mean", "var", "offset", "correct"),
    [(0.0, 0.61, -0.7, True), (0.4, 0.2, 1.5, False), (-1.0, 2.5, 0.3, False)],
)
def test_one_answer_moments_match_the_exact_posterior(mean, var, offset, correct) -> None:
    lik = AnswerLikelihood(SimParams())
    got_mean, got_var = moments_given_answer(
        np.array([mean]), np.array([var]), np.array([offset]), np.array([correct]), lik
    )
    want_mean, want_var = _grid_posterior(mean, var, offset, correct, lik)
    assert got_mean[0] == pytest.approx(want_mean, abs=1e-6)
    assert got_var[0] == pytest.approx(want_var, abs=1e-6)


def test_predictive_matches_numerical_integration() -> None:
    lik = AnswerLikelihood(SimParams())
    s = np.linspace(0.3 - 12 * 0.8, 0.3 + 12 * 0.8, 200_001)
    density = np.exp(-((s - 0.3) ** 2) / (2 * 0.64))
    want = [(density * lik(s + o)).sum() / density.sum() for o in (-1.0, 0.0, 2.0)]
    got = predictive(np.array([0.3]), np.array([0.64]), np.array([[-1.0, 0.0, 2.0]]), lik)
    np.testing.assert_allclose(got[0], want, atol=1e-7)


def test_without_latent_traits_or_rushing_it_is_the_oracle() -> None:
    """Nothing left to infer: the history determines p_correct, so the reference must equal it.

    This checks the bookkeeping of the known part of ability (S, M, recency, fatigue) and
    the difficulty per row, not only the filter.
    """
    params = SimParams(ability_sd=1e-6, skill_sd=1e-6, rush_penalty=0.0)
    sim = simulate(80, seed=5, params=params, **SMALL)
    q = sim.question_rows
    np.testing.assert_allclose(sim.p_history_only[q], sim.p_correct[q], atol=1e-5)
    assert np.all(np.isnan(sim.p_history_only[~q]))


def test_a_prediction_never_sees_its_own_bundle_or_later_answers() -> None:
    sim = simulate(30, seed=2, **SMALL)
    before = history_only_reference(sim)
    is_q = sim.question_rows
    user, container = sim.train["user_id"], sim.train["task_container_id"]
    rng = np.random.default_rng(0)
    for row in rng.choice(np.flatnonzero(is_q), size=10, replace=False):
        same_learner = (user == user[row]) & is_q
        flipped = replace(sim, train={**sim.train}, _history_only=None)
        answers = sim.train["answered_correctly"].copy()
        answers[same_learner & (container >= container[row])] ^= 1  # this bundle and every later
        flipped.train["answered_correctly"] = answers
        after = history_only_reference(flipped)
        seen_before = is_q & ~(same_learner & (container > container[row]))
        np.testing.assert_array_equal(after[seen_before], before[seen_before])
        later = same_learner & (container > container[row])
        if later.any():  # ... while the later bundles do learn from the flipped answers
            assert not np.allclose(after[later], before[later])


def test_between_the_prior_and_the_oracle() -> None:
    """Learning from answers beats knowing only the population; knowing the traits beats both."""
    sim = simulate(300, seed=0, **SMALL)
    q = sim.question_rows
    y = sim.train["answered_correctly"][q]
    # the prior-only prediction: the predictive at the prior N(0, Sigma_0) along each bundle's w
    squared_weights = np.where(sim.skills[q, 1] >= 0, 0.5, 1.0)  # sum_k w_k^2, 1 or 2 skills
    ones_weight = 1.0  # (sum_k w_k)^2
    var = sim.params.ability_sd**2 * ones_weight + sim.params.skill_sd**2 * squared_weights
    offset = sim.known_ability[q] - sim.difficulty[sim.train["content_id"][q]]
    lik = AnswerLikelihood(sim.params)
    prior_p = predictive(np.zeros(len(var)), var, offset[:, None], lik)[:, 0]
    prior = binary_metrics(y, prior_p)
    reference = binary_metrics(y, sim.p_history_only[q])
    oracle = binary_metrics(y, sim.p_correct[q])
    assert prior["logloss"] > reference["logloss"] + 0.01
    assert reference["logloss"] > oracle["logloss"] + 0.005
    assert prior["auc"] < reference["auc"] < oracle["auc"]

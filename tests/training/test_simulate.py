"""Learner simulator: determinism, Riiid schema and semantics, ground truth, time effects, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.binary_metrics import roc_auc
from training.sim_csv import LECTURE_COLUMNS, QUESTION_COLUMNS, TRAIN_COLUMNS
from training.sim_learners import SimParams, decayed_transient, recency
from training.simulate import SimulatedData, main, simulate, write

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"n_questions": 200, "mean_length": 60.0}
HOUR_MS = 3_600_000.0
NO_TIME_EFFECTS = SimParams(permanent_share=1.0, recency_boost=0.0, fatigue=0.0)


@pytest.fixture(scope="module")
def sim() -> SimulatedData:
    return simulate(120, 7, **SMALL)


@pytest.fixture(scope="module")
def big() -> SimulatedData:
    """A few hundred learners: enough rows for AUC bands and time-effect statistics."""
    return simulate(300, 11, n_questions=400, mean_length=100.0)


@pytest.fixture(scope="module")
def written(sim: SimulatedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    write(sim, out)
    return out


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _bundles(sim: SimulatedData) -> list[np.ndarray]:
    """Row indices of each (learner, container) event, in file order."""
    tr = sim.train
    key = np.stack([tr["user_id"], tr["task_container_id"]], axis=1)
    starts = np.flatnonzero(np.r_[True, (key[1:] != key[:-1]).any(axis=1)])
    return np.split(np.arange(len(key)), starts[1:])


# ---------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write(simulate(40, 3, **SMALL), a)
    write(simulate(40, 3, **SMALL), b)
    for name in ("train.csv", "questions.csv", "lectures.csv", "truth.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_different_seeds_differ() -> None:
    a, b = simulate(40, 3, **SMALL), simulate(40, 4, **SMALL)
    assert len(a.p_correct) != len(b.p_correct) or not np.array_equal(
        a.train["content_id"], b.train["content_id"]
    )


# ---------------------------------------------------------------------------- schema


def test_files_have_exact_riiid_headers(written: Path) -> None:
    expected = {
        "train.csv": list(TRAIN_COLUMNS),
        "questions.csv": list(QUESTION_COLUMNS),
        "lectures.csv": list(LECTURE_COLUMNS),
        "truth.csv": ["row_id", "p_correct", "p_history_only"],
    }
    assert expected["train.csv"] == [
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
    ]
    assert expected["questions.csv"] == [
        "question_id",
        "bundle_id",
        "correct_answer",
        "part",
        "tags",
    ]
    assert expected["lectures.csv"] == ["lecture_id", "tag", "part", "type_of"]
    for name, header in expected.items():
        assert (written / name).read_text().splitlines()[0] == ",".join(header), name


def test_written_values_use_riiid_representations(written: Path, sim: SimulatedData) -> None:
    _, rows = _read(written / "train.csv")
    assert len(rows) == len(sim.p_correct)
    assert [int(r["row_id"]) for r in rows] == list(range(len(rows)))
    assert {r["prior_question_had_explanation"] for r in rows} == {"", "True", "False"}
    elapsed = [r["prior_question_elapsed_time"] for r in rows if r["prior_question_elapsed_time"]]
    assert elapsed and all(e.endswith(".0") and float(e) >= 1000 for e in elapsed)
    assert {r["content_type_id"] for r in rows} == {"0", "1"}
    assert all(
        r["user_answer"] in {"0", "1", "2", "3"} for r in rows if r["content_type_id"] == "0"
    )


def test_rows_sorted_by_learner_then_time(sim: SimulatedData) -> None:
    tr = sim.train
    same_user = tr["user_id"][1:] == tr["user_id"][:-1]
    assert np.all(tr["user_id"][1:] >= tr["user_id"][:-1])
    assert np.all(np.diff(tr["timestamp"])[same_user] >= 0)
    assert np.all(np.diff(tr["task_container_id"])[same_user] >= 0)
    firsts = np.r_[True, ~same_user]
    assert np.all(tr["timestamp"][firsts] == 0)  # ms since the learner's first event
    assert np.all(tr["task_container_id"][firsts] == 0)


def test_bundle_rows_share_timestamp_container_and_questions_bundle(sim: SimulatedData) -> None:
    tr, q = sim.train, sim.questions
    events = _bundles(sim)
    sizes = [len(e) for e in events]
    assert max(sizes) <= 5 and max(sizes) >= 2  # multi-question bundles do occur
    for rows in events:
        assert len(set(tr["timestamp"][rows])) == 1
        if tr["content_type_id"][rows[0]] == 0:
            assert len(set(q["bundle_id"][tr["content_id"][rows]])) == 1
        else:
            assert len(rows) == 1  # a lecture is an event of its own
    # one event per container, and containers strictly increase per learner
    user = np.array([tr["user_id"][e[0]] for e in events])
    cont = np.array([tr["task_container_id"][e[0]] for e in events])
    assert np.all(np.diff(cont)[user[1:] == user[:-1]] > 0)


def test_question_bank_bundles_share_part_and_tags(sim: SimulatedData) -> None:
    q = sim.questions
    assert np.array_equal(q["question_id"], np.arange(200))
    assert set(q["correct_answer"].tolist()) <= {0, 1, 2, 3}
    assert set(q["part"].tolist()) == set(range(1, 8))
    for b in np.unique(q["bundle_id"]):
        members = np.flatnonzero(q["bundle_id"] == b)
        assert members[0] == b and 1 <= len(members) <= 5
        assert len(set(q["part"][members])) == 1 and len(set(q["tags"][members])) == 1
        assert 1 <= len(q["tags"][members[0]].split()) <= 2
    sets = q["part"][np.flatnonzero(np.bincount(q["bundle_id"]) > 1)]
    assert set(sets.tolist()) <= {3, 4, 6, 7} and sets.size > 0


def test_lectures_present_and_not_answered(sim: SimulatedData, written: Path) -> None:
    tr = sim.train
    lec = tr["content_type_id"] == 1
    assert lec.sum() > 0
    assert np.all(tr["answered_correctly"][lec] == -1) and np.all(tr["user_answer"][lec] == -1)
    assert np.all(np.isnan(tr["prior_question_elapsed_time"][lec]))
    assert np.all(tr["prior_question_had_explanation"][lec] == -1)
    assert set(tr["content_id"][lec].tolist()) <= set(sim.lectures["lecture_id"].tolist())
    _, lectures = _read(written / "lectures.csv")
    assert {r["type_of"] for r in lectures} <= {
        "concept",
        "solving question",
        "intention",
        "starter",
    }
    tags = {int(r["tag"]) for r in lectures}
    assert tags == set(range(20))  # every skill has a lecture


# ---------------------------------------------------------------------------- prior_* semantics


def test_prior_columns_describe_the_previous_question_bundle(sim: SimulatedData) -> None:
    tr = sim.train
    prev: dict[int, tuple[float, int]] = {}
    for rows in _bundles(sim):
        user = int(tr["user_id"][rows[0]])
        elapsed = tr["prior_question_elapsed_time"][rows]
        expl = tr["prior_question_had_explanation"][rows]
        if tr["content_type_id"][rows[0]] == 1:
            continue  # lectures: empty, and they do not reset the previous question bundle
        if user not in prev:
            assert np.all(np.isnan(elapsed)) and np.all(expl == -1)
        else:
            assert np.all(elapsed == prev[user][0]) and np.all(expl == prev[user][1])
        own = sim.elapsed_ms[rows]
        assert len(set(sim.had_explanation[rows])) == 1
        prev[user] = (float(np.floor(own.mean())), int(sim.had_explanation[rows[0]]))


# ---------------------------------------------------------------------------- ground truth


def test_truth_aligns_with_question_rows(sim: SimulatedData, written: Path) -> None:
    _, truth = _read(written / "truth.csv")
    q = sim.train["content_type_id"] == 0
    assert [int(r["row_id"]) for r in truth] == sim.train["row_id"][q].tolist()
    p = np.array([float(r["p_correct"]) for r in truth])
    assert np.array_equal(p, sim.p_correct[q])  # repr round-trips exactly
    assert np.all((p > 0) & (p < 1))
    assert np.all(np.isnan(sim.p_correct[~q]))
    reference = np.array([float(r["p_history_only"]) for r in truth])
    assert np.array_equal(reference, sim.p_history_only[q])
    assert np.all((reference > 0) & (reference < 1))


def test_wrong_answers_pick_another_choice(sim: SimulatedData) -> None:
    tr = sim.train
    q = tr["content_type_id"] == 0
    key = sim.questions["correct_answer"][tr["content_id"][q]]
    correct = tr["answered_correctly"][q] == 1
    assert np.array_equal(tr["user_answer"][q] == key, correct)


def test_oracle_auc_and_correct_rate_are_riiid_like(big: SimulatedData) -> None:
    s = big.summary()
    assert 0.75 <= s["oracle_auc"] <= 0.84, s
    assert 0.58 <= s["correct_rate"] <= 0.74, s
    q = big.question_rows
    y = big.train["answered_correctly"][q]
    assert abs(float(big.p_correct[q].mean()) - float(y.mean())) < 0.02  # outcomes follow truth
    assert s["oracle_auc"] == round(roc_auc(y, big.p_correct[q]), 4)


def test_history_lengths_heavy_tailed_with_requested_mean(big: SimulatedData) -> None:
    _, counts = np.unique(big.train["user_id"], return_counts=True)
    assert len(counts) == 300
    assert 75 <= counts.mean() <= 125
    assert counts.max() > 4 * np.median(counts)


def test_session_gaps_span_seconds_to_weeks(big: SimulatedData) -> None:
    lag = big.lag_ms[big.lag_ms >= 0]
    assert np.mean(lag < 5 * 60_000) > 0.8  # mostly within sessions
    assert np.any(lag > 24 * HOUR_MS) and np.any(lag > 7 * 24 * HOUR_MS)
    assert np.min(lag) >= 1000


# ---------------------------------------------------------------------------- time effects


def _long_minus_short_lag(sim: SimulatedData) -> float:
    """Mean over learners of mean p_correct after a >6 h lag minus after a <5 min lag."""
    q = sim.question_rows
    user, p, lag = sim.train["user_id"][q], sim.p_correct[q], sim.lag_ms[q]
    long, short = lag > 6 * HOUR_MS, (lag >= 0) & (lag < 5 * 60_000)
    diffs = [
        p[(user == u) & long].mean() - p[(user == u) & short].mean()
        for u in np.unique(user)
        if ((user == u) & long).any() and ((user == u) & short).sum() >= 5
    ]
    assert len(diffs) >= 50
    return float(np.mean(diffs))


def test_long_lags_lower_p_correct_for_the_same_learner(big: SimulatedData) -> None:
    assert _long_minus_short_lag(big) < -0.08


def test_lag_effect_vanishes_without_time_effects() -> None:
    flat = simulate(300, 11, n_questions=400, mean_length=100.0, params=NO_TIME_EFFECTS)
    assert abs(_long_minus_short_lag(flat)) < 0.03


def test_same_skill_ability_drops_over_long_gaps_and_rises_over_short_ones(
    big: SimulatedData,
) -> None:
    """Consecutive bundles of one learner on the same skills: compare the ability before/after."""
    tr, q = big.train, big.questions
    starts = [rows[0] for rows in _bundles(big) if tr["content_type_id"][rows[0]] == 0]
    idx = np.array(starts)
    user, tags = tr["user_id"][idx], q["tags"][tr["content_id"][idx]]
    same = (user[1:] == user[:-1]) & (tags[1:] == tags[:-1])
    gap = (tr["timestamp"][idx][1:] - tr["timestamp"][idx][:-1])[same]
    change = np.diff(big.ability[idx])[same]
    assert change[gap > 24 * HOUR_MS].mean() < -0.3
    assert change[gap < 5 * 60_000].mean() > 0.0


def test_decay_and_recency_are_monotone_in_lag() -> None:
    p = SimParams()
    dt = np.array([0.0, 60_000.0, HOUR_MS, 24 * HOUR_MS, 7 * 24 * HOUR_MS])
    m = decayed_transient(np.ones(5), np.zeros(5), dt, p)
    assert np.all(np.diff(m) < 0) and m[0] == 1.0
    assert m[3] == pytest.approx(0.5 ** (24 / (p.half_life_days * 24)))
    r = recency(dt, p)
    assert np.all(np.diff(r) < 0) and r[0] == p.recency_boost and r[-1] < 1e-6
    # practice stretches the half-life (spacing effect)
    assert decayed_transient(np.ones(1), np.full(1, 40), dt[3:4], p)[0] > m[3]


def test_elapsed_time_grows_with_difficulty_and_rushing_hurts(big: SimulatedData) -> None:
    q = big.question_rows
    theta = big.ability[q] - big.difficulty[big.train["content_id"][q]]
    log_elapsed = np.log(big.elapsed_ms[q])
    assert np.corrcoef(theta, log_elapsed)[0, 1] < -0.15
    # rush penalty = logit of the guess-free p minus theta: never positive, worse when fast
    g = SimParams().guess
    pp = (big.p_correct[q] - g) / (1 - g)
    penalty = np.log(pp / (1 - pp)) - theta
    assert penalty.max() < 1e-6
    fast = log_elapsed < np.median(log_elapsed)
    assert penalty[fast].mean() < penalty[~fast].mean() - 0.05


def _question_bundles(sim: SimulatedData) -> list[tuple[int, int, bool]]:
    """(learner, bundle, any wrong) per answered bundle, in each learner's order."""
    rows = sim.train
    is_q = rows["content_type_id"] == 0
    bundle_of = dict(zip(sim.questions["question_id"], sim.questions["bundle_id"], strict=True))
    out: list[tuple[int, int, bool]] = []
    last: tuple[int, float] | None = None
    for user, t, q, y in zip(
        rows["user_id"][is_q],
        rows["timestamp"][is_q],
        rows["content_id"][is_q],
        rows["answered_correctly"][is_q],
        strict=True,
    ):
        if (user, t) != last:
            out.append((int(user), int(bundle_of[q]), False))
            last = (user, t)
        if y == 0:
            out[-1] = (out[-1][0], out[-1][1], True)
    return out


@pytest.mark.parametrize("retry_prob", [0.0, 0.6])
def test_retries_repeat_a_wrongly_answered_bundle_at_the_given_rate(retry_prob: float) -> None:
    sim = simulate(300, 3, **SMALL, params=SimParams(retry_prob=retry_prob))
    bundles = _question_bundles(sim)
    after_wrong = [
        cur[1] == nxt[1]
        for cur, nxt in zip(bundles, bundles[1:], strict=False)
        if cur[0] == nxt[0] and cur[2]
    ]
    after_right = [
        cur[1] == nxt[1]
        for cur, nxt in zip(bundles, bundles[1:], strict=False)
        if cur[0] == nxt[0] and not cur[2]
    ]
    # after a right answer the next bundle is the same only by chance (a small bank: ~4 %) ...
    chance = float(np.mean(after_right))
    assert chance < 0.08
    # ... after a wrong one, by retry or by chance
    expected = retry_prob + (1 - retry_prob) * chance
    assert np.mean(after_wrong) == pytest.approx(expected, abs=0.03)


def test_no_retries_keeps_the_default_random_stream() -> None:
    default = simulate(50, 4, **SMALL)
    explicit = simulate(50, 4, **SMALL, params=SimParams(retry_prob=0.0))
    for name, column in default.train.items():
        np.testing.assert_array_equal(column, explicit.train[name])


# ---------------------------------------------------------------------------- errors and CLI


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_learners": 0}, "learners"),
        ({"n_skills": 3}, "skills"),
        ({"n_questions": 10}, "questions"),
        ({"mean_length": 0.5}, "mean-length"),
        ({"lecture_rate": 1.5}, "lecture-rate"),
        ({"params": SimParams(retry_prob=1.0)}, "retry-rate"),
    ],
)
def test_simulate_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"n_learners": 5, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        simulate(args.pop("n_learners"), args.pop("seed"), **args)


@pytest.mark.parametrize(
    "argv",
    [
        ["--learners", "0", "--seed", "1", "--out", "{tmp}"],
        ["--learners", "abc", "--seed", "1", "--out", "{tmp}"],
        ["--learners", "5", "--seed", "-1", "--out", "{tmp}"],
        ["--learners", "5", "--seed", "1", "--out", "{tmp}", "--lecture-rate", "2"],
        ["--learners", "5", "--seed", "1", "--out", "{tmp}", "--skills", "3"],
        ["--learners", "5", "--seed", "1"],
        ["--learners", "5", "--seed", "1", "--out", "{file}/sub"],
    ],
)
def test_cli_bad_input_is_one_error_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("not a directory")
    args = [a.format(tmp=tmp_path / "out", file=tmp_path / "file") for a in argv]
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err


def test_cli_end_to_end_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    cmd = [sys.executable, "-m", "training.simulate", "--learners", "30", "--seed", "5"]
    cmd += [
        "--out",
        str(out),
        "--questions",
        "150",
        "--mean-length",
        "50",
        "--lecture-rate",
        "0.05",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "oracle AUC" in lines[0]
    summary = json.loads(lines[-1])
    assert set(summary) == {"learners", "rows", "oracle_auc", "history_only_auc", "correct_rate"}
    assert summary["learners"] == 30
    assert summary["rows"] == len((out / "train.csv").read_text().splitlines()) - 1
    for name in ("train.csv", "questions.csv", "lectures.csv", "truth.csv"):
        assert (out / name).is_file()


def test_cli_bad_input_subprocess_exit_code(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "training.simulate", "--learners", "x", "--seed", "1"]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: argument --learners: expected a positive integer, got 'x'"
    ]

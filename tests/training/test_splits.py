"""Splits on a small fixture table (written here, loaded through the real loader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import Interactions, load_riiid
from training.splits import split_by_learner, split_by_time

HEADER = "row_id,timestamp,user_id,content_id,content_type_id,task_container_id,answered_correctly"


@pytest.fixture
def inter(tmp_path: Path) -> Interactions:
    """20 learners; learner u has u + 1 containers of 1-3 questions (some with a lecture first)."""
    rng = np.random.default_rng(1)
    lines, rid = [HEADER], 0
    for user in range(20):
        for container in range(user + 1):
            ts = container * 1000
            if container % 4 == 3:
                lines.append(f"{rid},{ts},{user},7,1,{container},-1")
                rid += 1
            for qid in range(int(rng.integers(1, 4))):
                lines.append(f"{rid},{ts + 1},{user},{qid},0,{container},{rng.integers(0, 2)}")
                rid += 1
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "q.csv").write_text("question_id,part\n0,1\n1,2\n2,3\n")
    return load_riiid(tmp_path / "train.csv", tmp_path / "q.csv")


def test_split_by_learner_is_seeded_and_disjoint(inter: Interactions) -> None:
    train, valid = split_by_learner(inter, 0.25, seed=3)
    assert valid.n_learners == 5 and train.n_learners == 15
    assert set(train.user_ids) | set(valid.user_ids) == set(inter.user_ids)
    assert not set(train.user_ids) & set(valid.user_ids)
    assert train.n_rows + valid.n_rows == inter.n_rows
    again, _ = split_by_learner(inter, 0.25, seed=3)
    assert again.user_ids.tolist() == train.user_ids.tolist()
    other, _ = split_by_learner(inter, 0.25, seed=4)
    assert other.user_ids.tolist() != train.user_ids.tolist()
    # learners keep their rows intact
    k = int(np.flatnonzero(inter.user_ids == valid.user_ids[0])[0])
    np.testing.assert_array_equal(valid.row_id[valid.rows(0)], inter.row_id[inter.rows(k)])


def test_split_by_learner_edges(inter: Interactions) -> None:
    train, valid = split_by_learner(inter, 0.001, seed=0)
    assert valid.n_learners == 1  # a non-zero fraction gets at least one learner
    train, valid = split_by_learner(inter, 0.0, seed=0)
    assert valid.n_learners == 0 and train.n_learners == 20
    with pytest.raises(ValueError, match="valid_fraction"):
        split_by_learner(inter, 1.5, seed=0)


def test_split_by_time_prefix_continuation_at_bundle_boundaries(inter: Interactions) -> None:
    hist, ev = split_by_time(inter, 0.3)
    assert hist.user_ids.tolist() == ev.user_ids.tolist() == inter.user_ids.tolist()
    assert hist.n_rows + ev.n_rows == inter.n_rows
    for i in range(inter.n_learners):
        full = inter.row_id[inter.rows(i)]
        head, tail = hist.row_id[hist.rows(i)], ev.row_id[ev.rows(i)]
        np.testing.assert_array_equal(np.concatenate([head, tail]), full)  # prefix + continuation
        if len(head) and len(tail):  # never cut inside a bundle (timestamp, container)
            last, first = hist.rows(i).stop - 1, ev.rows(i).start
            assert (hist.timestamp[last], hist.bundle[last]) != (
                ev.timestamp[first],
                ev.bundle[first],
            )
            assert hist.timestamp[last] <= ev.timestamp[first]
        n = len(full)
        assert len(head) >= round(0.7 * n)  # the cut only moves forward
    assert ev.n_rows == pytest.approx(0.3 * inter.n_rows, rel=0.35)
    again, _ = split_by_time(inter, 0.3)
    np.testing.assert_array_equal(again.offsets, hist.offsets)


def test_split_by_time_extremes(inter: Interactions) -> None:
    hist, ev = split_by_time(inter, 0.0)
    assert hist.n_rows == inter.n_rows and ev.n_rows == 0
    hist, ev = split_by_time(inter, 1.0)
    assert hist.n_rows == 0 and ev.n_rows == inter.n_rows
    assert len(ev.history(5)) == len(inter.history(5))
    with pytest.raises(ValueError, match="eval_fraction"):
        split_by_time(inter, -0.1)

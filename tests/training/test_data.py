"""Loaders on tiny fixture files written here (never the shared data)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from training import data
from training.data import (
    DataError,
    Interactions,
    describe,
    load_dataset,
    load_ednet,
    load_questions,
    load_riiid,
)
from training.data import assemble as assemble_module
from training.data import riiid as riiid_module

HEADER = (
    "row_id,timestamp,user_id,content_id,content_type_id,task_container_id,user_answer,"
    "answered_correctly,prior_question_elapsed_time,prior_question_had_explanation"
)
# user 7: bundle 0 (q10), bundle 1 (q11, q12), a lecture, bundle 2 (q13) ; user 5: two bundles.
ROWS = [
    "0,0,7,10,0,0,1,1,,",
    "1,1000,7,11,0,1,2,0,5000,False",
    "2,1000,7,12,0,1,3,1,5000,False",
    "3,2000,7,3,1,2,-1,-1,,",
    "4,9000,7,13,0,3,0,1,8000,True",
    "5,0,5,10,0,0,0,0,,",
    "6,500,5,11,0,1,1,1,7000,True",
]
QUESTIONS = "question_id,bundle_id,correct_answer,part,tags\n10,10,1,1,1 2\n11,11,2,2,3\n12,11,3,2,3\n13,13,0,5,4\n"
LECTURES = "lecture_id,tag,part,type_of\n3,10,4,concept\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def qfile(tmp_path: Path) -> Path:
    return write(tmp_path / "questions.csv", QUESTIONS)


def riiid(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "train.csv") -> Path:
    return write(tmp_path / name, "\n".join([header, *rows]) + "\n")


def drop_columns(rows: list[str], header: str, names: set[str]) -> tuple[list[str], str]:
    cols = header.split(",")
    keep = [i for i, c in enumerate(cols) if c not in names]
    pick = lambda line: ",".join(line.split(",")[i] for i in keep)  # noqa: E731
    return [pick(r) for r in rows], pick(header)


def error_of(call, *args, **kw) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kw)
    return str(info.value)


# ---------------------------------------------------------------------------------------------


def test_riiid_layout_order_and_shift(tmp_path: Path, qfile: Path) -> None:
    inter = load_riiid(riiid(tmp_path, ROWS), qfile, write(tmp_path / "lectures.csv", LECTURES))
    assert inter.n_learners == 2 and inter.n_rows == 7
    assert inter.user_ids.tolist() == [7, 5]  # order of first appearance
    assert inter.offsets.tolist() == [0, 5, 7]
    s = inter.rows(0)
    assert inter.content_id[s].tolist() == [10, 11, 12, 3, 13]
    assert inter.is_lecture[s].tolist() == [False, False, False, True, False]
    assert inter.question[s].tolist() == [2, 3, 4, 0, 5]
    assert inter.part[s].tolist() == [1, 2, 2, 4, 5]
    assert inter.correct[s].tolist() == [1, 0, 1, -1, 1]
    # prior_* of each bundle's first row describe the previous question bundle (lecture skipped)
    np.testing.assert_array_equal(inter.elapsed_ms[s], [5000, 8000, 8000, np.nan, np.nan])
    assert inter.explanation[s].tolist() == [0, 1, 1, -1, -1]
    np.testing.assert_array_equal(inter.elapsed_ms[inter.rows(1)], [7000, np.nan])
    assert inter.explanation[inter.rows(1)].tolist() == [1, -1]
    assert inter.row_id.tolist() == [0, 1, 2, 3, 4, 5, 6]
    dtypes = {
        n: getattr(inter, n).dtype
        for n in ("question", "part", "correct", "elapsed_ms", "explanation")
    }
    assert dtypes == {
        "question": np.int32,
        "part": np.int8,
        "correct": np.int8,
        "elapsed_ms": np.float32,
        "explanation": np.int8,
    }


def test_history_is_question_rows_with_bundle_ordinals(tmp_path: Path, qfile: Path) -> None:
    h = load_riiid(riiid(tmp_path, ROWS), qfile).history(0)
    assert h.question.tolist() == [2, 3, 4, 5]
    assert h.bundle.tolist() == [0, 1, 1, 2]
    assert h.correct.tolist() == [1, 0, 1, 1]
    assert h.timestamp.tolist() == [0, 1000, 1000, 9000]
    np.testing.assert_array_equal(h.elapsed_ms, [5000, 8000, 8000, np.nan])


def test_interleaved_learners_and_same_time_containers_are_sorted(
    tmp_path: Path, qfile: Path
) -> None:
    rows = [ROWS[5], ROWS[0], ROWS[6], ROWS[1], ROWS[2], ROWS[3], ROWS[4]]
    inter = load_riiid(riiid(tmp_path, rows), qfile)
    assert inter.user_ids.tolist() == [5, 7]
    assert inter.content_id[inter.rows(1)].tolist() == [10, 11, 12, 3, 13]
    # two containers at one timestamp, listed in the wrong order -> (timestamp, container) order
    rows2 = ["0,0,1,11,0,4,1,1,,", "1,0,1,10,0,3,1,1,,", "2,50,1,12,0,5,1,0,3000,True"]
    other = load_riiid(riiid(tmp_path, rows2, name="t2.csv"), qfile)
    assert other.content_id.tolist() == [10, 11, 12]
    assert other.history(0).bundle.tolist() == [0, 1, 2]
    # container 3's outcome sits on container 4's row (empty here); container 4's on container 5's
    np.testing.assert_array_equal(other.elapsed_ms, [np.nan, 3000, np.nan])


def test_optional_columns_absent(tmp_path: Path, qfile: Path) -> None:
    optional = {
        "row_id",
        "user_answer",
        "prior_question_elapsed_time",
        "prior_question_had_explanation",
    }
    rows, header = drop_columns(ROWS, HEADER, optional)
    inter = load_riiid(riiid(tmp_path, rows, header), qfile)
    assert inter.row_id.tolist() == list(range(7))
    assert np.isnan(inter.elapsed_ms).all() and (inter.explanation == -1).all()
    assert inter.part[3] == -1  # lecture without lectures.csv


def test_small_batches_and_chunks_give_the_same_table(
    tmp_path: Path, qfile: Path, monkeypatch
) -> None:
    rng = np.random.default_rng(0)
    lines, rid = [], 0
    for user in range(40):
        ts = 0
        for container in range(int(rng.integers(1, 30))):
            ts += int(rng.integers(1, 10_000))
            for qid in rng.choice([10, 11, 12, 13], size=int(rng.integers(1, 4)), replace=False):
                lines.append(
                    f"{rid},{ts},{user},{qid},0,{container},0,{rng.integers(0, 2)},{container * 7},True"
                )
                rid += 1
    path = riiid(tmp_path, lines)
    ref = load_riiid(path, qfile)
    monkeypatch.setattr(riiid_module, "_BLOCK_SIZE", 1024)
    monkeypatch.setattr(assemble_module, "_MAP_CHUNK", 50)
    small = load_riiid(path, qfile)
    for name in ("offsets", "question", "timestamp", "elapsed_ms", "explanation", "row_id"):
        np.testing.assert_array_equal(getattr(small, name), getattr(ref, name))
    # elapsed of bundle c is the prior_* of bundle c + 1, i.e. (c + 1) * 7
    h = ref.history(0)
    ends = np.flatnonzero(np.diff(h.bundle)) + 1
    np.testing.assert_array_equal(h.elapsed_ms[: ends[0]], 7.0)


def test_unknown_question_strict_and_lenient(tmp_path: Path, qfile: Path, caplog) -> None:
    rows = [*ROWS[:5], "5,0,5,99,0,0,0,0,,", "6,500,5,99,0,1,1,1,7000,True"]
    path = riiid(tmp_path, rows)
    msg = error_of(load_riiid, path, qfile, strict=True)
    assert msg.startswith(f"{path}:7:content_id: unknown question id 99")
    with caplog.at_level(logging.WARNING, logger="training.data"):
        inter = load_riiid(path, qfile)
    assert inter.question[inter.rows(1)].tolist() == [1, 1]
    assert inter.part[inter.rows(1)].tolist() == [-1, -1]
    assert "2 question rows (1 distinct ids)" in caplog.text


@pytest.mark.parametrize(
    ("rows", "line", "column", "fragment"),
    [
        ([ROWS[0], "1,1000,7,abc,0,1,2,0,5000,False"], 3, "content_id", "not an integer: 'abc'"),
        (
            [ROWS[0], ROWS[1], "2,1000,7,12,0,1,3,1,fast,False"],
            4,
            "prior_question_elapsed_time",
            "not a number",
        ),
        (
            [ROWS[0], "1,1000,7,11,0,1,2,0,5000,maybe"],
            3,
            "prior_question_had_explanation",
            "not a boolean",
        ),
        ([ROWS[0], "1,,7,11,0,1,2,0,5000,False"], 3, "timestamp", "missing value"),
        ([ROWS[0], "1,1000,7,11,0,1,2,0,5000"], 3, "-", "expected 10 fields, got 9"),
        ([ROWS[0], "1,1000,7,11,0,1,2,2,5000,False"], 3, "answered_correctly", "got 2"),
        (
            [ROWS[0], "1,1000,7,11,0,1,2,-1,5000,False"],
            3,
            "answered_correctly",
            "-1 on a question row",
        ),
        ([ROWS[0], "1,1000,7,11,3,1,2,0,5000,False"], 3, "content_type_id", "got 3"),
        (
            [ROWS[0], "1,1000,7,11,0,1,2,0,5000,False", "2,900,7,12,0,2,3,1,1,False"],
            4,
            "timestamp",
            "unsorted",
        ),
        ([ROWS[0], ROWS[1], "2,1000,7,11,0,1,2,1,5000,False"], 4, "content_id", "duplicate row"),
    ],
)
def test_bad_rows_name_file_line_and_column(tmp_path, qfile, rows, line, column, fragment) -> None:
    path = riiid(tmp_path, rows)
    msg = error_of(load_riiid, path, qfile, duplicates="error")
    assert msg.startswith(f"{path}:{line}:{column}: "), msg
    assert fragment in msg


def test_error_line_counts_blank_lines_and_later_batches(
    tmp_path: Path, qfile: Path, monkeypatch
) -> None:
    good = [f"{i},{i * 10},1,10,0,{i},0,1,," for i in range(300)]
    path = write(
        tmp_path / "t.csv", HEADER + "\n" + "\n".join(good) + "\n\n" + "300,5000,1,x,0,300,0,1,,\n"
    )
    monkeypatch.setattr(riiid_module, "_BLOCK_SIZE", 1024)
    assert error_of(load_riiid, path, qfile).startswith(
        f"{path}:303:content_id: not an integer: 'x'"
    )
    dup = write(tmp_path / "d.csv", HEADER + "\n" + "\n".join(good) + "\n\n" + good[-1] + "\n")
    assert error_of(load_riiid, dup, qfile, duplicates="error").startswith(
        f"{dup}:303:content_id: duplicate row"
    )


def test_unsorted_interleaved_learners(tmp_path: Path, qfile: Path) -> None:
    rows = [ROWS[0], ROWS[5], "2,50,7,11,0,1,0,1,,", "3,10,7,12,0,2,0,1,,"]
    path = riiid(tmp_path, rows)
    msg = error_of(load_riiid, path, qfile)
    assert msg.startswith(f"{path}:5:timestamp: unsorted") and "line 4" in msg


def test_file_level_errors(tmp_path: Path, qfile: Path) -> None:
    empty = write(tmp_path / "empty.csv", "")
    assert error_of(load_riiid, empty, qfile) == f"{empty}:1:-: empty file (no header line)"
    only = write(tmp_path / "only.csv", HEADER + "\n")
    assert error_of(load_riiid, only, qfile) == f"{only}:2:-: no data rows (header only)"
    rows, header = drop_columns(ROWS, HEADER, {"task_container_id"})
    missing = riiid(tmp_path, rows, header, name="m.csv")
    assert error_of(load_riiid, missing, qfile).startswith(
        f"{missing}:1:task_container_id: missing required column 'task_container_id'"
    )
    assert error_of(load_riiid, tmp_path / "nope.csv", qfile).endswith(":0:-: no such file")


def test_questions_tables(tmp_path: Path) -> None:
    vocab = load_questions(write(tmp_path / "q.csv", QUESTIONS))
    assert vocab.question_ids.tolist() == [10, 11, 12, 13] and vocab.parts.tolist() == [1, 2, 2, 5]
    ednet = "question_id,bundle_id,explanation_id,correct_answer,part,tags,deployed_at\nq5,b5,e5,c,3,1;2,0\nq2,b1,e2,a,1,3,0\n"
    vocab = load_questions(write(tmp_path / "e.csv", ednet))
    assert vocab.question_ids.tolist() == [2, 5] and vocab.parts.tolist() == [1, 3]
    dup = write(tmp_path / "dup.csv", QUESTIONS + "11,11,2,2,3\n")
    assert error_of(load_questions, dup).startswith(
        f"{dup}:6:question_id: duplicate question_id 11"
    )
    bad = write(tmp_path / "bad.csv", "question_id,part\n1,x\n")
    assert error_of(load_questions, bad).startswith(f"{bad}:2:part: not an integer")
    nopart = write(tmp_path / "np.csv", "question_id,bundle_id\n1,1\n")
    assert error_of(load_questions, nopart).startswith(f"{nopart}:1:part: missing required column")


def test_save_load_select_roundtrip(tmp_path: Path, qfile: Path) -> None:
    inter = load_riiid(riiid(tmp_path, ROWS), qfile)
    inter.save(tmp_path / "cache")
    back = Interactions.load(tmp_path / "cache")
    for name in ("user_ids", "offsets", "question", "elapsed_ms", "part", "is_lecture", "row_id"):
        np.testing.assert_array_equal(getattr(back, name), getattr(inter, name))
    assert back.vocab.question_ids.tolist() == inter.vocab.question_ids.tolist()
    sub = inter.select(np.array([1]))
    assert sub.user_ids.tolist() == [5] and sub.offsets.tolist() == [0, 2]
    assert sub.content_id.tolist() == [10, 11]


def test_cache_is_reused_and_invalidated(tmp_path: Path, qfile: Path, monkeypatch) -> None:
    path = riiid(tmp_path, ROWS)
    cache = tmp_path / "cache"
    first = load_riiid(path, qfile, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    calls = []
    real = riiid_module._read_riiid
    monkeypatch.setattr(riiid_module, "_read_riiid", lambda p: calls.append(p) or real(p))
    again = load_riiid(path, qfile, cache_dir=cache)
    assert calls == [] and again.n_rows == first.n_rows
    load_riiid(path, qfile, cache_dir=cache, strict=True)  # other options -> other entry
    assert len(calls) == 1
    riiid(tmp_path, ROWS[:5])  # rewritten file (size changes) -> rebuilt
    assert load_riiid(path, qfile, cache_dir=cache).n_rows == 5


# --------------------------------------------------------------------------------------------- EdNet

EDNET_Q = (
    "question_id,bundle_id,explanation_id,correct_answer,part,tags,deployed_at\n"
    "q1,b1,e1,a,1,1,0\nq2,b2,e2,b,2,1,0\nq3,b2,e3,c,2,1,0\nq4,b4,e4,d,5,1,0\n"
)
EDNET_HEADER = "timestamp,solving_id,question_id,user_answer,elapsed_time"


def ednet(
    tmp_path: Path, files: dict[str, list[str]], header: str = EDNET_HEADER
) -> tuple[Path, Path]:
    folder = tmp_path / "KT1"
    folder.mkdir(exist_ok=True)
    for name, rows in files.items():
        write(folder / name, "\n".join([header, *rows]) + "\n")
    return folder, write(tmp_path / "questions.csv", EDNET_Q)


EDNET_FILES = {
    "u12.csv": ["100,1,q1,a,3000", "200,2,q2,b,4000", "200,2,q3,a,4000", "900,3,q4,d,1000"],
    "u3.csv": ["50,1,q4,c,2000"],
    "notes.txt": ["ignored"],
}


def test_ednet_folder(tmp_path: Path) -> None:
    folder, q = ednet(tmp_path, EDNET_FILES)
    inter = load_ednet(folder, q)
    assert inter.user_ids.tolist() == [3, 12]  # ascending learner id from the file name
    assert inter.offsets.tolist() == [0, 1, 5]
    s = inter.rows(1)
    assert inter.content_id[s].tolist() == [1, 2, 3, 4]
    assert inter.correct[s].tolist() == [1, 1, 0, 1]
    assert inter.correct[inter.rows(0)].tolist() == [0]
    assert inter.part[s].tolist() == [1, 2, 2, 5]
    assert inter.bundle[s].tolist() == [1, 2, 2, 4]
    np.testing.assert_array_equal(inter.elapsed_ms[s], [3000, 4000, 4000, 1000])  # own, no shift
    assert (inter.explanation == -1).all() and not inter.is_lecture.any()
    assert inter.history(1).bundle.tolist() == [0, 1, 1, 2]
    assert load_dataset(folder, q).n_rows == 5


def test_ednet_fallbacks_and_errors(tmp_path: Path, caplog) -> None:
    files = {
        "u1.csv": ["100,1,q1,a,3000", "", "200,2,q9,b,4000"],  # blank line + unknown question
        "u2.csv": ["10,1,q2,b,1"],
    }
    folder, q = ednet(tmp_path, files)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        inter = load_ednet(folder, q)
    assert inter.n_rows == 2 and "1 rows (1 distinct questions)" in caplog.text
    assert error_of(load_ednet, folder, q, strict=True).startswith(
        f"{folder / 'u1.csv'}:4:question_id: unknown question id q9"
    )
    write(folder / "u2.csv", EDNET_HEADER + "\n10,1,q2,b,1\nlate,1,q3,b,1\n")
    assert error_of(load_ednet, folder, q).startswith(
        f"{folder / 'u2.csv'}:3:timestamp: not an integer: 'late'"
    )
    write(folder / "u2.csv", EDNET_HEADER + "\n10,1,q2,b,1\n5,1,q3,b,1\n")
    assert error_of(load_ednet, folder, q).startswith(f"{folder / 'u2.csv'}:3:timestamp: unsorted")
    write(folder / "u2.csv", EDNET_HEADER + "\n10,1,x2,b,1\n")
    assert error_of(load_ednet, folder, q).startswith(
        f"{folder / 'u2.csv'}:2:question_id: invalid value 'x2'"
    )
    write(folder / "u2.csv", "timestamp,solving_id,user_answer\n10,1,b\n")
    assert error_of(load_ednet, folder, q).startswith(
        f"{folder / 'u2.csv'}:1:question_id: missing required column"
    )
    write(folder / "u2.csv", EDNET_HEADER + "\n")
    assert error_of(load_ednet, folder, q) == f"{folder / 'u2.csv'}:2:-: no data rows (header only)"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert error_of(load_ednet, empty, q).endswith(
        ":0:-: no u<ID>.csv learner files in this folder"
    )


# --------------------------------------------------------------------------------------------- describe / CLI


def test_describe(tmp_path: Path, qfile: Path) -> None:
    summary = describe(load_riiid(riiid(tmp_path, ROWS), qfile))
    assert summary["learners"] == 2 and summary["rows"] == 7
    assert summary["question_rows"] == 6 and summary["lecture_rows"] == 1
    assert summary["distinct_questions"] == 4
    assert summary["parts"] == {"1": 2, "2": 3, "5": 1}
    assert summary["correct_rate"] == pytest.approx(4 / 6, abs=1e-4)
    assert summary["history_length"]["max"] == 4 and summary["history_length"]["p50"] == 3.0


def test_cli_describe_and_errors(tmp_path: Path, qfile: Path, capsys) -> None:
    path = riiid(tmp_path, ROWS)
    assert data.main(["--describe", str(path)]) == 0  # questions.csv found next to the file
    out = capsys.readouterr().out.strip().splitlines()
    assert "learners" in out[0] and json.loads(out[-1])["rows"] == 7
    bad = riiid(tmp_path, [ROWS[0], "1,1000,7,abc,0,1,2,0,5000,False"], name="bad.csv")
    assert data.main(["--describe", str(bad), "--questions", str(qfile)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bad}:3:content_id: not an integer: 'abc'"]
    with pytest.raises(SystemExit) as info:
        data.main([])
    assert info.value.code == 2


def test_interleaved_file_equals_grouped_file(tmp_path: Path, qfile: Path) -> None:
    rng = np.random.default_rng(5)
    per_user: list[list[str]] = []
    for user in range(12):
        rows, ts = [], 0
        for container in range(int(rng.integers(1, 12))):
            # an odd container may share its timestamp with the previous one (never a question)
            ts += 1000 if container % 2 == 0 else int(rng.integers(0, 2)) * 1000
            qids = [10 + (2 * container + j) % 4 for j in range(int(rng.integers(1, 3)))]
            rows += [
                f"{user * 100 + container},{ts},{user},{q},0,{container},0,1,{container},False"
                for q in qids
            ]
        per_user.append(rows)
    grouped = load_riiid(
        riiid(tmp_path, [r for rows in per_user for r in rows], name="g.csv"), qfile
    )
    queues = [list(rows) for rows in per_user]
    mixed: list[str] = []
    while any(queues):  # random interleaving that keeps each learner's own row order
        k = int(rng.choice([i for i, q in enumerate(queues) if q]))
        mixed.append(queues[k].pop(0))
    inter = load_riiid(riiid(tmp_path, mixed, name="m.csv"), qfile)
    order = [int(np.flatnonzero(inter.user_ids == u)[0]) for u in grouped.user_ids]
    same = inter.select(np.array(order))
    for name in (
        "offsets",
        "question",
        "timestamp",
        "bundle",
        "elapsed_ms",
        "explanation",
        "row_id",
    ):
        np.testing.assert_array_equal(getattr(same, name), getattr(grouped, name), err_msg=name)


def test_ednet_invalid_answer(tmp_path: Path, caplog) -> None:
    folder, q = ednet(tmp_path, {"u1.csv": ["100,1,q1,a,3000", "200,2,q2,z,4000"]})
    msg = error_of(load_ednet, folder, q, strict=True)
    assert msg.startswith(f"{folder / 'u1.csv'}:3:user_answer: missing or not one of a, b, c, d")
    with caplog.at_level(logging.WARNING, logger="training.data"):
        assert load_ednet(folder, q).correct.tolist() == [1, 0]
    assert "1 rows have a missing or invalid user_answer" in caplog.text


def test_non_utf8_bytes_are_located_by_line_and_column(tmp_path: Path, qfile: Path) -> None:
    train = tmp_path / "latin1.csv"
    train.write_bytes(
        (HEADER + "\n" + ROWS[0] + "\n" + ROWS[1] + "\n").encode() + b"3,99,7,\xe9,0\n"
    )
    msg = error_of(load_riiid, train, qfile)
    assert msg.startswith(f"{train}:4:content_id: not UTF-8 text (byte 0xe9)"), msg
    questions = tmp_path / "q_latin1.csv"
    questions.write_bytes(QUESTIONS.encode() + b"14,14,1,2,caf\xe9\n")
    msg = error_of(load_questions, questions)
    assert msg.startswith(f"{questions}:6:tags: not UTF-8 text (byte 0xe9)"), msg
    lectures = tmp_path / "l.csv"
    lectures.write_bytes(b"lecture_id,tag,part,type_of\n89,159,5,concept\n100,70,1,\xff\n")
    msg = error_of(data.load_lectures, lectures)
    assert msg.startswith(f"{lectures}:3:type_of: not UTF-8 text (byte 0xff)"), msg


def test_question_table_line_numbers_skip_blank_lines(tmp_path: Path) -> None:
    dup = write(tmp_path / "dup.csv", QUESTIONS + "\n\n11,11,2,2,3\n")
    assert error_of(load_questions, dup).startswith(
        f"{dup}:8:question_id: duplicate question_id 11"
    )
    short = write(tmp_path / "l.csv", "lecture_id,tag,part,type_of\n89,159\n")
    assert error_of(data.load_lectures, short).startswith(f"{short}:2:-: expected 4 fields")


def test_lectures_become_history_lectures_and_survive_the_cache(
    tmp_path: Path, qfile: Path
) -> None:
    """A lecture row is no answer: it becomes a lecture of the learner's History, after the answers
    before it, with the part and tag of lectures.csv (found next to questions.csv by default)."""
    write(tmp_path / "lectures.csv", "lecture_id,tag,part,type_of\n3,3,4,concept\n")
    for cache in (None, tmp_path / "cache", tmp_path / "cache"):  # build, write, then read back
        inter = load_riiid(riiid(tmp_path, ROWS), qfile, cache_dir=cache)
        h = inter.history(0)
        assert len(h) == 4 and h.lecture_after.tolist() == [3]  # after q10, q11, q12
        assert h.lecture_timestamp.tolist() == [2000]
        assert h.lecture_part.tolist() == [5]  # part 4, encoded + 1
        assert h.lecture_tag.tolist() == inter.vocab.encode_tags(np.array([3])).tolist() != [0]
        assert inter.history(1).n_lectures == 0
    assert inter.vocab.lecture_ids is not None and inter.vocab.lecture_ids.tolist() == [3]
    dup = write(tmp_path / "dup.csv", "lecture_id,tag,part,type_of\n3,3,4,concept\n3,1,1,concept\n")
    assert error_of(data.load_lectures, dup).startswith(f"{dup}:3:lecture_id: lecture 3 again")
    with pytest.raises(ValueError, match="riiid format only"):
        load_dataset(riiid(tmp_path, ROWS), qfile, format="ednet", lectures_csv=dup)

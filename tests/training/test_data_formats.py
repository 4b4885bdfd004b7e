"""Sequence files, generic tables, the duplicate policy and format auto-detection, on tiny fixture
files written here (never the shared data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training import data
from training.data import (
    DataError,
    describe,
    detect_format,
    load_dataset,
    load_riiid,
    load_sequences,
    load_table,
    stable_id,
)

RIIID_HEADER = (
    "row_id,timestamp,user_id,content_id,content_type_id,task_container_id,user_answer,"
    "answered_correctly,prior_question_elapsed_time,prior_question_had_explanation"
)
QUESTIONS = "question_id,bundle_id,correct_answer,part,tags\n10,10,1,1,1 2\n11,11,2,2,3\n"

THREE_LINE = "3\n5,7,5\n1,0,1\n2\n7,9\n0,0\n"
FOUR_LINE = "2,101\n5,7\n30_31,32\n1,0\n3,102\n5,5,9\n31,30,33\n0,1,1\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def error_of(call, *args, **kw) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kw)
    return str(info.value)


def tags_of(inter, qid: int) -> list[int]:
    row = inter.vocab.tags[int(np.flatnonzero(inter.vocab.question_ids == qid)[0])]
    return sorted(int(t) for t in row if t >= 0)


# --------------------------------------------------------------------------------------------- sequences


def test_three_line_sequences(tmp_path: Path) -> None:
    inter = load_dataset(write(tmp_path / "s.csv", THREE_LINE))  # auto, no questions file
    assert inter.user_ids.tolist() == [0, 1] and inter.offsets.tolist() == [0, 3, 5]
    assert inter.content_id.tolist() == [5, 7, 5, 7, 9]
    assert inter.correct.tolist() == [1, 0, 1, 0, 0]
    assert inter.timestamp.tolist() == [0, 1, 2, 0, 1]  # order only
    assert inter.history(0).bundle.tolist() == [0, 1, 2]  # each answer its own bundle
    assert np.isnan(inter.elapsed_ms).all() and (inter.explanation == -1).all()
    assert inter.vocab.question_ids.tolist() == [5, 7, 9] and inter.vocab.parts.tolist() == [0] * 3
    assert [tags_of(inter, q) for q in (5, 7, 9)] == [[5], [7], [9]]  # own knowledge component
    assert inter.question.tolist() == [2, 3, 2, 3, 4]


def test_four_line_sequences_union_skills_and_learner_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "s4.csv", FOUR_LINE)
    inter = load_sequences(path)
    assert inter.user_ids.tolist() == [101, 102]
    assert inter.content_id.tolist() == [5, 7, 5, 5, 9]
    assert inter.correct.tolist() == [1, 0, 0, 1, 1]
    assert tags_of(inter, 5) == [30, 31]  # '30_31' on one row, '31' and '30' on others
    assert tags_of(inter, 7) == [32] and tags_of(inter, 9) == [33]
    assert describe(inter)["vocab_tags"] == 4


def test_sequences_trailing_commas_crlf_and_repeated_learner(tmp_path: Path) -> None:
    text = "2,7\r\n5,6,\r\n1,1,\r\n\r\n1,7\r\n8\r\n0\r\n"
    inter = load_sequences(write(tmp_path / "t.csv", text))
    assert inter.user_ids.tolist() == [7] and inter.timestamp.tolist() == [0, 1, 2]


def test_sequences_with_questions_table(tmp_path: Path) -> None:
    q = write(tmp_path / "q.csv", QUESTIONS)
    inter = load_dataset(write(tmp_path / "s.csv", "2\n10,12\n1,0\n"), q, format="sequences")
    assert inter.part.tolist() == [1, -1] and inter.question.tolist() == [2, 1]
    assert error_of(load_sequences, tmp_path / "s.csv", q, strict=True).startswith(
        f"{tmp_path / 's.csv'}:2:content_id: unknown question id 12"
    )


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("3\n5,7\n1,0\n", 2, "3", "question ids: expected 3 values (the count on line 1), got 2"),
        ("2\n5,7,9\n1,0\n", 2, "3", "expected 2 values"),
        ("2\n5,x\n1,0\n", 2, "2", "question ids: not an integer: 'x'"),
        ("2\n5,7\n1,2\n", 3, "2", "answers must be 0 or 1, got '2'"),
        ("2\n5,7\n1,0\n1\n5\n0\nx\n", 7, "1", "expected a count line"),
        ("2\n5,7\n1,0\n1\n5\n", 6, "-", "incomplete record"),
        ("2\n5,7\n3_x,4\n1,0\n", 3, "1", "skill ids: not an integer: 'x'"),
        ("2\n5,-7\n1,0\n", 2, "2", "question ids must be in 0.."),
    ],
)
def test_sequence_errors_name_file_line_and_column(tmp_path, text, line, column, fragment) -> None:
    path = write(tmp_path / "bad.csv", text)
    msg = error_of(load_sequences, path)
    assert msg.startswith(f"{path}:{line}:{column}: "), msg
    assert fragment in msg


def test_sequence_file_level_errors(tmp_path: Path) -> None:
    empty = write(tmp_path / "e.csv", "\n\n")
    assert error_of(load_sequences, empty) == f"{empty}:1:-: empty file"
    raw = tmp_path / "latin.csv"
    raw.write_bytes(b"2\n5,7\n1,\xe9\n")
    assert error_of(load_sequences, raw).startswith(f"{raw}:3:2: not UTF-8 text (byte 0xe9)")


# --------------------------------------------------------------------------------------------- tables

ASSIST2009 = (
    "order_id,user_id,problem_id,correct,ms_first_response,skill_id,skill_name\n"
    "1,70,500,1,3000,10,a\n"
    "1,70,500,1,3000,11,b\n"  # the same answer repeated for its second skill
    "2,70,501,0,-5,,c\n"  # no skill, negative elapsed (unknown)
    "5,80,500,0,1000,10,a\n"
    "3,70,502,1,2000,12_13,d\n"
)


def test_assist2009_preset_order_only_multi_skill(tmp_path: Path) -> None:
    path = write(tmp_path / "skill_builder.csv", ASSIST2009)
    assert detect_format(path) == "table"
    inter = load_dataset(path)
    assert inter.user_ids.tolist() == [70, 80]
    assert inter.content_id[inter.rows(0)].tolist() == [500, 501, 502]  # by order_id
    assert inter.timestamp[inter.rows(0)].tolist() == [0, 1, 2]  # rank of order_id
    assert inter.duplicates_dropped == 1
    np.testing.assert_array_equal(inter.elapsed_ms[inter.rows(0)], [3000, np.nan, 2000])
    assert tags_of(inter, 500) == [10, 11] and tags_of(inter, 502) == [12, 13]
    assert tags_of(inter, 501) == []
    summary = describe(inter)
    assert summary["duplicates_dropped"] == 1 and summary["rows"] == 4
    assert error_of(load_table, path, duplicates="error").startswith(
        f"{path}:3:content_id: duplicate row: same user_id 70, timestamp 0, content_id 500"
    )


ASSIST2017 = (
    "studentId,problemId,correct,startTime,timeTaken,skill\n"
    "9,40,1,1100,5,equation-solving\n"
    "9,41,0,1000,7,area\n"
    "3,40,0,1050,2,equation-solving\n"
)


def test_assist2017_preset_times_in_seconds_and_skill_names(tmp_path: Path) -> None:
    inter = load_table(write(tmp_path / "a17.csv", ASSIST2017))
    assert inter.user_ids.tolist() == [9, 3]
    assert inter.content_id[inter.rows(0)].tolist() == [41, 40]  # sorted by time
    assert inter.timestamp[inter.rows(0)].tolist() == [1_000_000, 1_100_000]
    np.testing.assert_array_equal(inter.elapsed_ms[inter.rows(0)], [7000, 5000])
    assert tags_of(inter, 40) == [stable_id("equation-solving")]
    assert inter.row_id[inter.rows(0)].tolist() == [1, 0]  # source row


def test_custom_columns_string_ids_datetimes_and_last_policy(tmp_path: Path) -> None:
    text = (
        "learner,exercise,ok,when,group\n"
        "ann,addition_1,true,2012-09-26 16:32:28.000000,g1\n"
        "ann,addition_1,false,2012-09-26 16:32:28.000000,g1\n"
        "ann,7,TRUE,2012-09-26 16:32:30,g2\n"
    )
    path = write(tmp_path / "log.csv", text)
    cols = "user=learner,item=exercise,correct=ok,time=when,bundle=group"
    assert detect_format(path, cols) == "table"
    first = load_dataset(path, None, format="auto", columns=cols)
    last = load_dataset(path, None, format="table", columns=cols, duplicates="last")
    assert first.user_ids.tolist() == [stable_id("ann", 62)]
    assert first.content_id.tolist() == [stable_id("addition_1"), 7]
    assert first.correct.tolist() == [1, 1] and last.correct.tolist() == [0, 1]
    assert first.timestamp.tolist() == [1348677148000, 1348677150000]
    assert tags_of(first, 7) == [7]  # no skills column: the item is its own tag
    assert first.bundle.tolist() == [stable_id("g1"), stable_id("g2")]


def test_parquet_table(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    table = pa.table({"u": [1, 1, 2], "i": [3, 4, 3], "c": [1, 0, 1], "sk": ["5", "5_6", None]})
    pq.write_table(table, path)
    inter = load_dataset(path, columns="user=u,item=i,correct=c,skills=sk")
    assert inter.offsets.tolist() == [0, 2, 3] and inter.timestamp.tolist() == [0, 1, 0]
    assert tags_of(inter, 4) == [5, 6]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"u": [1, 1], "i": [3, 4], "c": [1, 3]}), bad)
    assert error_of(load_table, bad, columns="user=u,item=i,correct=c").startswith(
        f"{bad}:2:c: correct must be 0/1 or true/false, got 3"
    )


@pytest.mark.parametrize(
    ("text", "columns", "line", "column", "fragment"),
    [
        ("u,i,c\n1,2,1\n1,3,x\n", "user=u,item=i,correct=c", 3, "c", "got 'x'"),
        ("u,i,c\n1,2,1\n\n1,,1\n", "user=u,item=i,correct=c", 4, "i", "missing value"),
        ("u,i,c,t\n1,2,1,5\n1,3,0,soon\n", "user=u,item=i,correct=c,time=t", 3, "t", "not a time"),
        ("u,i,c\n1,2,1\n", "user=u,item=q,correct=c", 1, "q", "missing column 'q' (item)"),
        ("u,i,c\n1,2,1\n1,3\n", "user=u,item=i,correct=c", 3, "-", "expected 3 fields, got 2"),
        ("u,i,c\n1,99999999999,1\n", "user=u,item=i,correct=c", 2, "i", "out of range"),
        ("u,i,c,e\n1,2,1,fast\n", "user=u,item=i,correct=c,elapsed=e", 2, "e", "not a number"),
    ],
)
def test_table_errors_name_file_line_and_column(tmp_path, text, columns, line, column, fragment):
    path = write(tmp_path / "t.csv", text)
    msg = error_of(load_table, path, columns=columns)
    assert msg.startswith(f"{path}:{line}:{column}: "), msg
    assert fragment in msg


def test_bad_column_mappings(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "u,i,c\n1,2,1\n")
    assert "needs correct=COLUMN" in error_of(load_table, path, columns="user=u,item=i")
    assert "unknown column role 'color'" in error_of(load_table, path, columns="color=u")
    assert "matches no preset" in error_of(load_table, path)


# --------------------------------------------------------------------------------------------- duplicates

ROWS = [
    "0,0,7,10,0,0,1,1,,",
    "1,1000,7,11,0,1,2,0,5000,False",
    "2,1000,7,11,0,1,2,1,5000,False",  # exact duplicate of the row above (other answer)
    "3,2000,7,10,0,2,0,1,6000,True",
]


@pytest.mark.parametrize(("policy", "kept"), [("first", 0), ("last", 1)])
def test_duplicate_policies(tmp_path: Path, policy: str, kept: int) -> None:
    path = write(tmp_path / "train.csv", "\n".join([RIIID_HEADER, *ROWS]) + "\n")
    q = write(tmp_path / "questions.csv", QUESTIONS)
    inter = load_riiid(path, q, duplicates=policy)
    assert inter.n_rows == 3 and inter.duplicates_dropped == 1
    assert inter.row_id.tolist() == [0, 1 + kept, 3]
    assert inter.correct.tolist() == [1, kept, 1]
    np.testing.assert_array_equal(inter.elapsed_ms, [5000, 6000, np.nan])  # shift after the drop
    msg = error_of(load_riiid, path, q, duplicates="error")
    assert msg.startswith(f"{path}:4:content_id: duplicate row") and "as line 3" in msg
    with pytest.raises(ValueError, match="duplicates must be one of"):
        load_riiid(path, q, duplicates="keep")
    inter.save(tmp_path / "cache")
    assert data.Interactions.load(tmp_path / "cache").duplicates_dropped == 1


# --------------------------------------------------------------------------------------------- auto + CLI


def test_auto_detection(tmp_path: Path) -> None:
    riiid = write(tmp_path / "train.csv", "\n".join([RIIID_HEADER, *ROWS]) + "\n")
    assert detect_format(riiid) == "riiid"
    assert detect_format(write(tmp_path / "s.csv", THREE_LINE)) == "sequences"
    assert detect_format(write(tmp_path / "s4.csv", FOUR_LINE)) == "sequences"
    assert detect_format(write(tmp_path / "a.csv", ASSIST2017)) == "table"
    assert detect_format(tmp_path) == "ednet"
    other = write(tmp_path / "o.csv", "x,y\n1,2\n")
    assert "cannot tell the format" in error_of(detect_format, other)
    assert error_of(load_dataset, riiid).endswith(
        ":0:-: the riiid format needs a questions file (questions.csv); none given"
    )
    with pytest.raises(ValueError, match="unknown format"):
        load_dataset(riiid, format="xml")


def test_cli_describe_sequences_and_table(tmp_path: Path, capsys) -> None:
    seq = write(tmp_path / "s4.csv", FOUR_LINE)
    assert data.main(["--describe", str(seq)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["format"] == "sequences" and summary["rows"] == 5
    assert summary["duplicates_dropped"] == 0 and summary["vocab_tags"] == 4
    table = write(tmp_path / "a09.csv", ASSIST2009)
    assert data.main(["--describe", str(table), "--duplicates", "last"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["duplicates_dropped"] == 1
    assert data.main(["--describe", str(table), "--duplicates", "error"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {table}:3:content_id: duplicate row")
    bad = write(tmp_path / "bad.csv", "2\n5,7\n1,2\n")
    assert data.main(["--describe", str(bad)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {bad}:3:2: answers must be 0 or 1, got '2'"
    ]
    assert data.main(["--describe", str(table), "--columns", "user=user_id"]) == 2
    assert "needs item, correct" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        data.main(["--describe", str(table), "--duplicates", "keep"])
    assert info.value.code == 2

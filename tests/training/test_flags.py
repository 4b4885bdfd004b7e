"""`--config FILE.json`: a whole run's flags in one file, checked as the command line checks them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import parse_with_config


def _parsers():
    from training.distill import build_parser as distill_parser
    from training.train import build_parser as train_parser

    return {"train": train_parser, "distill": distill_parser}


@pytest.mark.parametrize("entry", ["train", "distill"])
def test_config_file_sets_defaults_and_the_command_line_wins(entry: str, tmp_path: Path) -> None:
    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {
                "train-file": "log.csv",
                "output_dir": "out",
                "epochs": "auto",
                "max-steps": 7,
                "stats": False,
                "learning-rate": 0.003,
                "report_to": "none",
            }
        )
    )
    parser = _parsers()[entry]()
    args = parse_with_config(parser, ["--config", str(config), "--max-steps", "9"])
    assert args.train_file == "log.csv" and args.output_dir == "out"  # required flags from the file
    assert args.epochs == "auto" and args.stats is False and args.learning_rate == 0.003
    assert args.max_steps == 9  # the command line wins


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"modle": "dkt"}', "unknown flag 'modle'"),
        ('{"model": "xgboost"}', "'model' must be one of"),
        ('{"stats": "yes"}', "'stats' must be true or false"),
        ('{"epochs": -1}', "--epochs must be > 0"),
        ('{"dropout": [0.1]}', "'dropout' must be a single value"),
        ("[1, 2]", "expected a JSON object"),
        ('{"model": ', "run.json:1:"),
    ],
)
def test_bad_config_is_one_error_line(
    content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.train import main

    config = tmp_path / "run.json"
    config.write_text(content)
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(config), "--train-file", "x", "--output-dir", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    # conversion errors name the file; a value out of bounds names the flag, wherever it came from
    prefix = "error: --epochs" if message.startswith("--epochs") else "error: --config"
    assert len(err) == 1 and err[0].startswith(prefix) and message in err[0], err


def test_missing_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.train import main

    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "nope.json"), "--output-dir", "o"])
    assert "nope.json" in capsys.readouterr().err


def test_flags_are_dataclasses_checked_wherever_they_are_built(tmp_path: Path) -> None:
    """The bounds live in the dataclasses: a run built in code is checked like a command line."""
    from training.arguments import DataArguments, OptimizationArguments

    with pytest.raises(ValueError, match="--valid-fraction"):
        DataArguments(train_file="x", valid_fraction=1.0)
    with pytest.raises(ValueError, match="--epochs"):
        OptimizationArguments(output_dir="o", epochs="many")
    optim = OptimizationArguments(output_dir="o", epochs="6", resume_from_checkpoint="true")
    assert optim.epoch_count == 6.0 and optim.resume is True
    assert optim.learning_rate_for("logistic") == 1e-2 and optim.learning_rate_for("dkt") == 1e-3


def test_boolean_flags_have_both_forms_and_every_flag_keeps_its_name() -> None:
    from training.train import build_parser

    parser = build_parser()
    base = ["--train-file", "x", "--output-dir", "o"]
    data, log, model, arch, optim = parser.parse([*base, "--question-residual", "--no-stats"])
    assert arch.question_residual is True and arch.stats is False
    assert parser.parse([*base, "--no-question-residual"])[3].question_residual is False
    assert parser.parse([*base, "--lectures", "l.csv"])[1].lectures_file == "l.csv"  # the alias
    flags = {s for a in parser._actions for s in a.option_strings}
    for flag in ("--train-file", "--questions-file", "--lectures-file", "--model", "--d-model",
                 "--seq-len", "--no-irt-prior", "--no-load-best-model-at-end", "--no-progress",
                 "--epochs", "--early-stopping-patience", "--resume-from-checkpoint", "--config"):  # fmt: skip
        assert flag in flags, flag


def test_teacher_and_student_runs_are_derived_not_edited(tmp_path: Path) -> None:
    """distill derives the teacher's run with dataclasses.replace: the parsed run is unchanged."""
    from training.arguments import PRESETS
    from training.distill import parse, student_spec, teacher_run

    train = tmp_path / "train.csv"
    train.write_text("x\n")
    run, distill = parse(
        ["--train-file", str(train), "--output-dir", str(tmp_path / "o"), "--teacher-preset", "base",
         "--ensemble-teacher", "dkt", "--ensemble-teacher", "logistic", "--dropout", "0.2"]
    )  # fmt: skip
    before = repr(run)
    teacher = teacher_run(run, distill, model="dkt")
    assert (teacher.model.model, teacher.model.d_model) == ("dkt", PRESETS["base"]["d_model"])
    assert teacher.optim.output_dir == str(tmp_path / "o" / "teacher_dkt")
    assert repr(run) == before  # nothing was edited
    assert distill.ensemble_teacher == ["dkt", "logistic"]  # repeatable
    student = student_spec("tiny", "saint_plus", run.arch)
    assert (student.model.d_model, student.arch.dropout) == (PRESETS["tiny"]["d_model"], 0.2)


def test_the_demo_ships_the_lean_student_unless_told_otherwise(tmp_path: Path) -> None:
    """--demo distils into the lean preset (one attention block: the fastest to serve); an explicit
    --student wins; without --demo the default student is tiny."""
    from training.arguments import PRESETS
    from training.distill import parse, student_spec

    out = tmp_path / "o"
    (out / "data").mkdir(parents=True)
    for name in ("train.csv", "questions.csv"):  # apply_demo reuses simulated data if present
        (out / "data" / name).write_text("x\n")
    _, demo = parse(["--demo", "--output-dir", str(out)])
    assert demo.student == "lean"
    _, chosen = parse(["--demo", "--student", "small", "--output-dir", str(out)])
    assert chosen.student == "small"
    train = tmp_path / "train.csv"
    train.write_text("x\n")
    run, plain = parse(["--train-file", str(train), "--output-dir", str(tmp_path / "p")])
    assert plain.student is None
    lean = student_spec("lean", "saint_plus", run.arch).model
    assert (lean.d_model, lean.encoder_layers, lean.cross_attention) == (
        PRESETS["lean"]["d_model"],
        0,
        False,
    )

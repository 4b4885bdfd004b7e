"""`--config FILE.json`: a whole run's flags in one file, checked as the command line checks them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.flags import parse_with_config


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
        ('{"epochs": -1}', "'epochs'"),
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
    assert len(err) == 1 and err[0].startswith("error: --config") and message in err[0], err


def test_missing_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.train import main

    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "nope.json"), "--output-dir", "o"])
    assert "nope.json" in capsys.readouterr().err

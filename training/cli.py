"""What every `python -m training.<name>` CLI shares: bad input is one `error: ...` line, exit 2;
flags defined once, as dataclasses (`training.arguments`, `training.data.LogArguments`) parsed by
`transformers.HfArgumentParser`, with `--config FILE.json` for a whole run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from transformers import HfArgumentParser


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad input as one ``error: ...`` line (exit 2), without the usage
    block argparse prints first (`--help` still shows it)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def flag_field(text: str, default: Any = dataclasses.MISSING, **more: Any) -> Any:
    """A dataclass field that is a flag: its help (and any other `add_argument` keyword)."""
    return dataclasses.field(default=default, metadata={"help": text, **more})


def flag_name(name: str) -> str:
    """A field name as its flag: `train_file` -> `--train-file`."""
    return "--" + name.replace("_", "-")


def check_paths_exist(args: Any, names: Sequence[str]) -> None:
    """ValueError naming the flag when one of these path fields is set to a missing path."""
    for name in names:
        value = getattr(args, name)
        if value is not None and not Path(value).exists():
            raise ValueError(f"{flag_name(name)}: {value} does not exist")


class DataclassArgumentParser(HfArgumentParser, OneLineArgumentParser):
    """HfArgumentParser with the one-line `error: ...` contract (exit 2), `--config FILE.json`
    (unless `config=False`),
    `--no-X` for every boolean flag and the bounds of `__post_init__` reported as flag errors."""

    def __init__(
        self, dataclass_types: Sequence[Any], *, config: bool = True, **kwargs: Any
    ) -> None:
        # no abbreviations: `--model` must never be taken for `--model-dir` (evaluate hands the
        # flags it does not know to training.train)
        super().__init__(dataclass_types, **{"allow_abbrev": False, **kwargs})
        false_default_bools = self._false_default_bools()
        for action in list(self._actions):  # HfArgumentParser adds --no-X only for default-True
            if action.dest in false_default_bools and not any(
                s.startswith("--no") for s in action.option_strings
            ):
                self._group_of(action).add_argument(
                    f"--no-{flag_name(action.dest)[2:]}", dest=action.dest, action="store_false"
                )
        for action in self._actions:  # show --flag-name before HfArgumentParser's --flag_name
            action.option_strings = sorted(action.option_strings, key=lambda o: "_" in o)
            if isinstance(action, argparse._StoreFalseAction):
                action.help = f"turn {flag_name(action.dest)} off"
                action.default = argparse.SUPPRESS  # the flag's own default is the one shown
        if not config:  # a command that is not a training run
            return
        self.add_argument(
            "--config",
            metavar="FILE.json",
            help='a whole run\'s flags as one JSON object ({"model": "dkt", "epochs": 10, ...}: keys '
            "are flag names, with - or _); flags given on the command line win",
        )

    def _false_default_bools(self) -> set[str]:
        return {
            f.name
            for dtype in self.dataclass_types
            for f in dataclasses.fields(dtype)
            if f.type in (bool, "bool") and f.default is False
        }

    def _group_of(self, action: argparse.Action) -> Any:
        for group in self._action_groups:
            if action in group._group_actions:
                return group
        return self

    def error(self, message: str) -> NoReturn:  # one line, exit 2 (OneLineArgumentParser)
        OneLineArgumentParser.error(self, message)

    def parse(self, argv: list[str] | None) -> tuple[Any, ...]:
        """The dataclasses of `argv` (defaults first taken from `--config FILE.json`)."""
        return self._dataclasses(parse_with_config(self, argv))

    def parse_known(self, argv: list[str] | None) -> tuple[tuple[Any, ...], list[str]]:
        """The dataclasses of the known flags of `argv`, and the rest (for another command)."""
        namespace, rest = self.parse_known_args(argv)
        return self._dataclasses(namespace), rest

    def _dataclasses(self, namespace: argparse.Namespace) -> tuple[Any, ...]:
        values = vars(namespace)
        out = []
        for dtype in self.dataclass_types:
            names = {f.name for f in dataclasses.fields(dtype) if f.init}
            try:
                out.append(dtype(**{k: v for k, v in values.items() if k in names}))
            except ValueError as exc:
                self.error(str(exc))
        return tuple(out)


def parse_with_config(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> argparse.Namespace:
    """`parser.parse_args(argv)`, with the defaults first taken from `--config FILE.json`."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        path = Path(known.config)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            parser.error(f"--config: {path}: {exc.strerror or exc}")
        except json.JSONDecodeError as exc:
            parser.error(f"--config: {path}:{exc.lineno}:{exc.colno}: {exc.msg}")
        if not isinstance(data, dict):
            parser.error(f"--config: {path}: expected a JSON object of flag names")
        actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
        defaults = {}
        for key, value in data.items():
            dest = str(key).lstrip("-").replace("-", "_")
            if dest not in actions or dest == "config":
                parser.error(f"--config: {path}: unknown flag {key!r}")
            defaults[dest] = _config_value(parser, actions[dest], key, value)
            actions[dest].required = False  # given by the file
        parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def _config_value(
    parser: argparse.ArgumentParser, action: argparse.Action, key: str, value: object
) -> object:
    """A JSON value for `action`, converted and checked as the command line would be."""
    where = f"--config: {key!r}"
    if action.const is True or isinstance(action, argparse._StoreFalseAction):
        if not isinstance(value, bool):
            parser.error(f"{where} must be true or false, got {value!r}")
        return value
    if value is None:
        return None
    if action.nargs in ("+", "*") or isinstance(
        action, argparse._AppendAction | argparse._ExtendAction
    ):
        items = value if isinstance(value, list) else [value]
        return [_convert(parser, action, where, v) for v in items]
    return _convert(parser, action, where, value)


def _convert(
    parser: argparse.ArgumentParser, action: argparse.Action, where: str, value: object
) -> object:
    if isinstance(value, bool | list | dict):
        parser.error(f"{where} must be a single value, got {value!r}")
    converted: object = value
    if callable(action.type):
        try:
            converted = action.type(str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            parser.error(f"{where}: {exc}")
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        parser.error(f"{where} must be one of {choices}, got {value!r}")
    return converted

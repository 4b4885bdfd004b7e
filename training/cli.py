"""What every `python -m training.<name>` CLI shares: bad input is one `error: ...` line, exit 2."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad input as one ``error: ...`` line (exit 2), without the usage
    block argparse prints first (`--help` still shows it)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)

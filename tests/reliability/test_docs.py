"""docs/reliability.md names a test for every guarantee: each named test must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tests_in(path: Path) -> set[str]:
    """Test functions defined in, or imported into, a test module."""
    tree = ast.parse(path.read_text())
    names = {
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test_")
    }
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names if a.name.startswith("test_")}
    return names


def test_every_named_proof_exists() -> None:
    doc = (ROOT / "docs" / "reliability.md").read_text()
    refs = re.findall(r"`(tests/[\w/]+\.py)((?:::\w+)?)`((?:, `::\w+`)*)", doc)
    assert len(refs) >= 30, "expected a proof per guarantee"
    for path, first, more in refs:
        file = ROOT / path
        assert file.exists(), path
        names = [first.removeprefix("::")] if first else []
        names += re.findall(r"`::(\w+)`", more)
        defined = _tests_in(file)
        for name in names:
            assert name in defined, f"{path}::{name} named in docs/reliability.md does not exist"

"""Writes one benchmark's section of docs/benchmarks.md between `<!-- key:start/end -->` markers."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, key: str, heading: str, body: str) -> None:
    """Replace (or append) the section delimited by this key's markers; leave the rest alone."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n## {heading}\n\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)

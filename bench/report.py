"""Writes one benchmark's section of docs/benchmarks.md between `<!-- key:start/end -->` markers.

The one docs writer of every benchmark: `replace_section` takes a rendered section (its `## ...`
heading included), `write_section` a heading and a body.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"


def markers(key: str) -> tuple[str, str]:
    """The start and end markers of section `key`."""
    return f"<!-- {key}:start -->", f"<!-- {key}:end -->"


def replace_section(path: Path, key: str, section: str) -> None:
    """Replace (or append) the section delimited by this key's markers; leave the rest alone.

    `section` is the text between the markers (heading included); the file is created with a
    `# Benchmarks` title if missing.
    """
    start, end = markers(key)
    inner = section.strip("\n")
    block = f"{start}\n{inner}\n{end}" if inner else f"{start}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_section(path: Path, key: str, heading: str, body: str) -> None:
    """`replace_section` with `## heading`, a blank line and `body`."""
    replace_section(path, key, f"## {heading}\n\n{body.rstrip()}")

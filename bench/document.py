"""BENCHMARKS.md is shared by every benchmark: each rewrites only its own marked section.

A section sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; a benchmark whose
markers are not in the file yet appends its section at the end.
"""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, name: str, section: str) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    marked = f"{start}\n{section.strip(chr(10))}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        text = before + marked + after
    else:
        text = text.rstrip("\n") + "\n\n" + marked + "\n"
    path.write_text(text)

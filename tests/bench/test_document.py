"""Every benchmark rewrites only its own marked section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

from bench.document import write_section


def test_a_benchmark_replaces_its_own_section_and_keeps_every_other(tmp_path: Path) -> None:
    document = tmp_path / "BENCHMARKS.md"
    document.write_text(
        "# Benchmarks\n\n<!-- speed:start -->\n## Speed\nold\n<!-- speed:end -->\n\n"
        "<!-- pull:start -->\n## Sync pull\nkept\n<!-- pull:end -->\n"
    )

    write_section(document, "speed", "## Speed\n\nnew figures\n")

    assert document.read_text() == (
        "# Benchmarks\n\n<!-- speed:start -->\n## Speed\n\nnew figures\n<!-- speed:end -->\n\n"
        "<!-- pull:start -->\n## Sync pull\nkept\n<!-- pull:end -->\n"
    )


def test_a_benchmark_not_yet_in_the_document_is_appended(tmp_path: Path) -> None:
    document = tmp_path / "BENCHMARKS.md"
    document.write_text("# Benchmarks\n\nintro\n")

    write_section(document, "login", "## Login under load\n")

    assert document.read_text() == (
        "# Benchmarks\n\nintro\n\n<!-- login:start -->\n## Login under load\n<!-- login:end -->\n"
    )

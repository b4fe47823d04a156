"""The docs' walk through the course runs: every code block of docs/course.md is executed and
prints what the page shows (graphc.doctest_md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphc.doctest_md import blocks, check_page

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["course.md", "explain.md"]


@pytest.mark.parametrize("page", PAGES)
def test_every_block_prints_what_the_page_shows(page, tmp_path):
    mismatches = check_page(DOCS / page, tmp_path)
    assert not mismatches, "\n\n".join(str(m) for m in mismatches)


def test_the_course_page_has_checked_blocks():
    found = blocks((DOCS / "course.md").read_text())
    python = [b for b in found if b.lang == "python"]
    console = [b for b in found if b.lang == "console"]
    shown = [b for k, b in enumerate(found[1:], 1) if b.lang == "text"
             and found[k - 1].lang == "python"]
    assert len(python) >= 10 and len(console) >= 5 and len(shown) == len(python)


def test_a_wrong_output_is_reported_and_update_rewrites_it(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```python\nprint(6 * 7)\n```\n\n```text\n41\n```\n\n"
                    "```console\n$ graphc explain\nnothing\n```\n")
    mismatches = check_page(page, tmp_path)
    assert [m.want for m in mismatches][0] == "41\n"
    assert mismatches[0].got == "42\n" and mismatches[0].line == 8
    assert mismatches[1].code == "graphc explain" and "temperature" in mismatches[1].got
    check_page(page, tmp_path, update=True)
    assert check_page(page, tmp_path) == []
    assert "```text\n42\n```" in page.read_text()


def test_ellipsis_stands_for_any_text(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nprint('took 0.31 s')\nprint('done')\n```\n\n"
                    "```text\ntook ... s\ndone\n```\n")
    assert check_page(page, tmp_path) == []
    page.write_text("```python\nprint('took 0.31 s')\n```\n\n```text\nran ... s\n```\n")
    assert len(check_page(page, tmp_path)) == 1

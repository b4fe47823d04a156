"""Run the code of a Markdown page and check the output it shows, so that docs cannot rot.

A page is a sequence of fenced blocks:

- a ```` ```python ```` block runs (all of a page's Python blocks share one namespace, in one
  working folder); when the next block is ```` ```text ````, that is what it must print;
- a ```` ```console ```` block holds commands (``$ graphc ...``), each followed by what it
  prints; the command runs in-process (``graphc.cli.main``) in the same folder.

Outputs are compared line by line after stripping trailing spaces; ``...`` in a shown output
stands for any text (doctest's ELLIPSIS), for the few values that change from run to run
(timings). ``check_page(path, update=True)`` rewrites the shown outputs from a run instead.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    """A fenced block: its language, its text, and the line range of the text in the page."""

    lang: str
    text: str
    start: int  # index of the first line of text
    end: int  # index of the closing fence


@dataclass
class Mismatch:
    """A shown output that differs from what the code printed."""

    line: int  # 1-based line of the shown output in the page
    code: str
    want: str
    got: str

    def __str__(self) -> str:
        return (f"line {self.line}: {self.code.strip().splitlines()[0]!r}\n--- shown\n"
                f"{self.want}--- printed\n{self.got}")


def blocks(text: str) -> list[Block]:
    """Return the fenced blocks of a Markdown text."""
    lines = text.split("\n")
    found, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        found.append(Block(m.group(1), "\n".join(lines[i + 1:j]) + "\n", i + 1, j))
        i = j + 1
    return found


def _commands(text: str) -> Iterator[tuple[str, str]]:
    """Split a console block into (command, shown output) pairs."""
    command, shown = None, []
    for line in text.splitlines():
        if line.startswith("$ "):
            if command is not None:
                yield command, "".join(s + "\n" for s in shown)
            command, shown = line[2:], []
        elif command is not None:
            shown.append(line)
    if command is not None:
        yield command, "".join(s + "\n" for s in shown)


def _run_command(command: str, shown: str) -> str:
    """Run a ``graphc`` command; return what it printed on stdout, or, for a command the page
    shows failing (its output starts with ``graphc: error:``), its one error line."""
    from graphc.cli import main

    argv = shlex.split(command)
    if argv[:1] != ["graphc"]:
        raise ValueError(f"only graphc commands run in a page, not {command!r}")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv[1:])
        except SystemExit as stop:  # argparse's usage errors
            status = stop.code
    fails = shown.startswith("graphc: error:")
    if (status != 0) != fails:
        raise AssertionError(f"{command!r} exited {status}: {err.getvalue()}")
    return err.getvalue() if fails else out.getvalue()


def _same(want: str, got: str) -> bool:
    def clean(s: str) -> str:
        return "\n".join(line.rstrip() for line in s.rstrip("\n").splitlines()) + "\n"

    want, got = clean(want), clean(got)
    return want == got or ("..." in want and doctest.OutputChecker().check_output(
        want, got, doctest.ELLIPSIS))


def check_page(path: str | Path, workdir: str | Path, *, update: bool = False
               ) -> list[Mismatch]:
    """Run every block of the page ``path`` in ``workdir``; return the mismatches (and, with
    ``update``, write the printed outputs into the page instead)."""
    path = Path(path)
    text = path.read_text()
    lines = text.split("\n")
    found = blocks(text)
    namespace: dict = {"__name__": "__doc_page__"}
    mismatches: list[Mismatch] = []
    replacements: list[tuple[int, int, str]] = []
    here = os.getcwd()
    os.chdir(workdir)
    try:
        for k, block in enumerate(found):
            if block.lang == "python":
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    exec(compile(block.text, f"{path}:{block.start + 1}", "exec"), namespace)
                nxt = found[k + 1] if k + 1 < len(found) else None
                between = lines[block.end + 1:nxt.start - 1] if nxt else []
                if nxt is not None and nxt.lang == "text" and not any(s.strip()
                                                                       for s in between):
                    if not _same(nxt.text, out.getvalue()):
                        mismatches.append(Mismatch(nxt.start + 1, block.text, nxt.text,
                                                   out.getvalue()))
                        replacements.append((nxt.start, nxt.end, out.getvalue()))
            elif block.lang == "console":
                rebuilt, changed = [], False
                for command, shown in _commands(block.text):
                    got = _run_command(command, shown)
                    if not _same(shown, got):
                        changed = True
                        mismatches.append(Mismatch(block.start + 1, command, shown, got))
                    rebuilt.append(f"$ {command}\n{got if not _same(shown, got) else shown}")
                if changed:
                    replacements.append((block.start, block.end, "".join(rebuilt)))
    finally:
        os.chdir(here)
    if update and replacements:
        for start, end, new in sorted(replacements, reverse=True):
            lines[start:end] = new.rstrip("\n").split("\n")
        path.write_text("\n".join(lines))
    return mismatches

"""What the benchmark scripts in bench/ share: one thread, one core, timed rounds, markdown output.

Importing this module sets the thread-pool variables (``OMP_NUM_THREADS=1`` and its kin, see
``THREAD_VARS``) *before it imports numpy*. OpenMP and the BLAS libraries read them once, when
numpy (or onnxruntime, or torch) is first imported, so a script must import this module before
numpy or anything that imports numpy (graphc, onnx, onnxruntime, sympy, torch)::

    import argparse  # the standard library first: none of it imports numpy

    from harness import Case, fmt_s, ...  # then this module, before numpy
    import numpy as np

    import graphc

``python bench/x.py`` puts bench/ on ``sys.path``, which is what makes ``import harness`` work.
ruff's isort files ``harness`` with the third-party imports, where it sorts before ``networkx``,
``numpy``, ``onnx`` and ``sympy``: keep it that way. When numpy was already imported, importing
this module warns, because the measurements would then not run on one thread.

The pieces: ``pin_to_one_core()``; a timed case (``Stages``, ``Case``) and ``run_rounds()``,
which runs the cases interleaved round-robin after warm-up rounds; the formatters ``fmt_s()``,
``fmt_n()``, ``fmt_e()``, ``fmt_bytes()``, ``plural()``, ``verdict()``; the markdown builders
``md_table()``, ``timing_row()``, ``timing_table()``, ``heading()``; ``machine_lines()``, the
machine description at the end of a report; ``run_graphc()`` and ``train_digits()``, which
run graphc's own command line in this process, and ``workdir()``, their folder; the command
line (``arg_parser()``, ``parse_args()``, ``rounds()``); ``log()`` and ``import_optional()``.
"""

from __future__ import annotations

import os
import sys
import warnings

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")
if "numpy" in sys.modules:
    warnings.warn("harness was imported after numpy: the thread-pool variables it sets come "
                  "too late to limit numpy to one thread", RuntimeWarning, stacklevel=2)
for _var in THREAD_VARS:
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any, Protocol  # noqa: E402

import numpy as np  # noqa: E402

Timings = dict[str, float]
Info = dict[str, Any]
Row = Sequence[str]
TIMING_HEAD = ("case", "median", "min", "target", "verdict")


# ----- one thread, one core -----------------------------------------------------------------


def pin_to_one_core() -> int | None:
    """Restrict this process to the first core it may run on; return that core (or None)."""
    if not hasattr(os, "sched_setaffinity"):
        return None  # macOS and Windows: only the thread pools are limited
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def import_optional(name: str) -> ModuleType | None:
    """Return the module ``name``, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def log(msg: str) -> None:
    """Print a progress line to stderr (stdout is for the report)."""
    print(msg, file=sys.stderr, flush=True)


# ----- timed cases --------------------------------------------------------------------------


@dataclass
class Stages:
    """The seconds of each named stage over the recorded rounds, and the last round's facts."""

    samples: dict[str, list[float]] = field(default_factory=dict, kw_only=True)
    info: Info = field(default_factory=dict, kw_only=True)

    def record(self, timings: Timings, info: Info) -> None:
        for stage, seconds in timings.items():
            self.samples.setdefault(stage, []).append(seconds)
        self.info = info

    def median(self, stage: str) -> float:
        return statistics.median(self.samples[stage])

    def min(self, stage: str) -> float:
        return min(self.samples[stage])


@dataclass
class Case(Stages):
    """One benchmark case: ``run()`` times its stages and returns them with facts to report."""

    name: str
    run: Callable[[], tuple[Timings, Info]]


class Timed(Protocol):
    """What ``run_rounds()`` runs: a ``Case``, or a ``Stages`` with its own name and run()."""

    @property
    def name(self) -> str: ...

    def run(self) -> tuple[Timings, Info]: ...

    def record(self, timings: Timings, info: Info) -> None: ...


def run_rounds(cases: Sequence[Timed], repeats: int, warmup: int, *, collect: bool = True,
               fmt: Callable[[float], str] | None = None,
               show: Callable[[str], bool] | None = None) -> None:
    """Run every case once per round, round-robin; record all but the ``warmup`` first rounds.

    ``collect``: ``gc.collect()`` before each run, so that the previous case's garbage is not
    this case's cost (off for cases that collect inside ``run()``, outside their timing).
    Progress goes to stderr: each run's stages for which ``show(stage)`` holds (default all),
    formatted with ``fmt`` (default ``fmt_s``).
    """
    fmt = fmt or fmt_s
    for r in range(-warmup, repeats):
        label = "warm-up" if r < 0 else f"round {r + 1}/{repeats}"
        for case in cases:
            if collect:
                gc.collect()
            timings, info = case.run()
            if r >= 0:
                case.record(timings, info)
            log(f"{label}: {case.name}: " + ", ".join(
                f"{k} {fmt(v)}" for k, v in timings.items() if show is None or show(k)))


# ----- formatting ---------------------------------------------------------------------------


def fmt_s(seconds: float, us_digits: int | None = None) -> str:
    """Seconds as s, ms or (with ``us_digits`` decimals, under 1 ms) us; None: no us."""
    if us_digits is not None and seconds < 1e-3:
        return f"{seconds * 1e6:.{us_digits}f} us"
    if seconds < 0.01:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_n(n: int) -> str:
    return f"{n:,}"


def fmt_e(x: float | None) -> str:
    """A small error or difference: "0", "1.2e-07", or "-" for None (not measured)."""
    if x is None:
        return "-"
    return "0" if x == 0 else f"{x:.1e}"


def fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def plural(n: int, word: str) -> str:
    """``plural(1, "round")`` is "1 round", ``plural(7, "round")`` "7 rounds"."""
    return f"{n} {word}{'s' if n != 1 else ''}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


# ----- markdown -----------------------------------------------------------------------------


def md_table(head: Row, rows: Sequence[Row], align: str = "") -> str:
    """Return a markdown table; ``align`` has a letter per column, l(eft) or r(ight).

    Columns past the end of ``align`` are left-aligned.
    """
    align = align.ljust(len(head), "l")
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def timing_row(label: str, case: Stages, stage: str, target: float | None = None,
               fmt: Callable[[float], str] | None = None) -> tuple[str, str, str, str, str]:
    """A row of ``timing_table()``: the stage's median and min, and its target when it has one.

    The verdict compares the median with the target.
    """
    fmt = fmt or fmt_s
    med = case.median(stage)
    return (label, fmt(med), fmt(case.min(stage)),
            "" if target is None else f"<= {fmt(target)}",
            "" if target is None else verdict(med <= target))


def timing_table(rows: Sequence[Row]) -> str:
    """The table of ``TIMING_HEAD`` (case, median, min, target, verdict)."""
    return md_table(TIMING_HEAD, rows, "lrrll")


def heading(title: str, quick: bool, level: int = 2) -> str:
    """A markdown heading with today's date, marking a ``--quick`` run as no measurement."""
    return (f"{'#' * level} {title} ({datetime.date.today().isoformat()}"
            f"{', QUICK smoke run: not a measurement' if quick else ''})")


def machine_lines(core: int | None, versions: Sequence[ModuleType | str],
                  threads: str = "") -> list[str]:
    """The report's closing lines: the machine, the versions, the thread and core settings.

    ``versions``: modules (shown as their name and ``__version__``) or ready strings, after
    python's and numpy's; ``threads``: more about the threads, inside the parentheses.
    """
    shown = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    shown += [v if isinstance(v, str) else f"{v.__name__} {getattr(v, '__version__', '?')}"
              for v in versions]
    pinned = "not pinned (no sched_setaffinity)" if core is None else f"pinned to core {core}"
    return [f"- machine: {cpu_name()}, os.cpu_count() = {os.cpu_count()}, "
            f"{platform.system()} {platform.release()}",
            f"- versions: {', '.join(shown)}",
            f"- one thread ({THREAD_VARS[0]}=1 etc.{threads}), {pinned}"]


def cpu_name() -> str:
    name = platform.processor()
    if not name or name in ("x86_64", "aarch64", "arm", "i386"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
    return name or platform.machine()


# ----- graphc's command line, in this process -----------------------------------------------


def run_graphc(argv: list[str], logfile: Path) -> str:
    """Run ``graphc ARGV`` in this process; keep its output in ``logfile``; fail on an error."""
    from graphc.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = main(argv)
    text = out.getvalue()
    logfile.write_text(f"$ graphc {' '.join(argv)}\n{text}", encoding="utf-8")
    if status != 0:
        raise RuntimeError(f"graphc {' '.join(argv)} failed (exit {status}):\n{text}")
    return text


def train_digits(name: str, epochs: int, work: Path) -> Path:
    """Return a digits checkpoint of zoo model ``name``, trained now (or earlier in ``work``)."""
    ckpt = work / f"{name}-digits-e{epochs}.ckpt"
    if ckpt.exists():
        log(f"{name}: reusing {ckpt}")
        return ckpt
    log(f"{name}: graphc train {name} --data digits --epochs {epochs} --seed 0")
    run_graphc(["train", name, "--data", "digits", "--epochs", str(epochs), "--seed", "0",
                "-o", str(ckpt)], work / f"{name}-train.log")
    return ckpt


@contextlib.contextmanager
def workdir(path: str | None, name: str) -> Iterator[Path]:
    """Yield the folder a benchmark keeps its files in: ``path`` (created; its checkpoints are
    reused by the next run), or a temporary folder deleted at the end."""
    if path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix=f"graphc-bench-{name}-") as folder:
        yield Path(folder)


# ----- the command line ---------------------------------------------------------------------


def arg_parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """A parser with ``--repeats N`` (default 7) and ``--quick``; ``doc``'s first line describes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, metavar="N",
                        help="timed rounds after one warm-up round (default 7)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def repeats_and_warmup(args: argparse.Namespace) -> tuple[int, int]:
    """Return (timed rounds, warm-up rounds): (1, 0) for ``--quick``, else (--repeats, 1)."""
    return (1, 0) if args.quick else (args.repeats, 1)

"""Measure graphc's start-up: the whole-process wall time of each command, as a user runs it.

Each case is a fresh process of this interpreter (``sys.executable``), timed from start to exit
with its output thrown away:

- ``python -c pass`` and ``python -c "import onnx"``: the floor, and what onnx alone costs;
- ``graphc --version``, ``graphc models``, ``graphc show backprop_example``,
  ``graphc grad backprop_example --at x=-2,y=5,z=-4`` and ``graphc compile cnn -o TMP``, each
  run as ``python -c "from graphc.cli import main; ..."``: what the ``graphc`` console script
  runs, with this interpreter, so that ``/some/venv/bin/python bench/startup.py`` measures that
  environment's packages;
- ``graphc --version`` once more through the ``graphc`` found on PATH, when there is one: a
  pyenv shim or a wrapper adds its own start-up, shown apart.

The cases run round-robin (one of each per round) after a warm-up round, and the table gives the
median and the min over the rounds, with the issue's targets. The children see the environment
this script was started with, except that Python's bytecode cache goes to a fresh temporary
folder (``PYTHONPYCACHEPREFIX``, written in the warm-up round) even when
``PYTHONDONTWRITEBYTECODE`` is set: an installed graphc has its ``.pyc`` files, and compiling
graphc's sources again at every start is not what users see. ``--no-bytecode-cache`` measures
the environment as it is instead.

Run it from the repository root::

    python bench/startup.py               # 7 rounds after a warm-up round, about 1 minute
    python bench/startup.py --repeats 15  # steadier medians
    python bench/startup.py --quick       # smoke run: 1 round, no warm-up

``PYTHONPATH=DIR python bench/startup.py`` times another checkout's graphc (a ``graphc/``
folder with ``passes`` and ``models`` inside it). It prints a markdown table, the CPU and the
versions; progress goes to stderr. Results are recorded in docs/benchmarks.md (Start-up).
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# The commands run with the environment this script was started with: harness, imported next,
# sets one-thread variables for the in-process benchmarks, which a user's shell does not have.
START_ENV = dict(os.environ)

import harness  # noqa: E402
from harness import fmt_s, heading, md_table, plural, verdict  # noqa: E402

RUN_CLI = "import sys; from graphc.cli import main; sys.exit(main(sys.argv[1:]))"
VERSIONS = ("graphc", "numpy", "networkx", "sympy", "onnx", "ml_dtypes", "onnxruntime")


@dataclass
class Command:
    """One case: its label, the argv after the interpreter, and the issue's target in seconds."""

    label: str
    argv: list[str]
    target: float | None = None


def commands(out_dir: str) -> list[Command]:
    """Return the cases; the compiled file goes to ``out_dir``."""
    py = [sys.executable]
    cli = [*py, "-c", RUN_CLI]
    found = [
        Command('python -c "pass"', [*py, "-c", "pass"]),
        Command('python -c "import onnx"', [*py, "-c", "import onnx"]),
        Command("graphc --version", [*cli, "--version"], 0.5),
        Command("graphc models", [*cli, "models"], 0.5),
        Command("graphc show backprop_example", [*cli, "show", "backprop_example"], 1.5),
        Command("graphc grad backprop_example --at x=-2,y=5,z=-4",
                [*cli, "grad", "backprop_example", "--at", "x=-2,y=5,z=-4"], 2.0),
        Command("graphc compile cnn -o TMP/cnn.onnx",
                [*cli, "compile", "cnn", "-o", str(Path(out_dir) / "cnn.onnx")], 1.5),
    ]
    on_path = shutil.which("graphc")
    if on_path:
        found.append(Command(f"graphc --version (PATH: {on_path})", [on_path, "--version"]))
    return found


def run_once(command: Command, env: dict[str, str], cwd: str) -> float:
    """Return the wall time of one run of ``command``; stop the benchmark if it fails."""
    start = time.perf_counter()
    # Not in the repository root: `python -c` would import the graphc/ folder found there
    # before the one PYTHONPATH or the installation names.
    done = subprocess.run(command.argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{command.label} failed (exit {done.returncode}):\n{done.stderr}")
    return elapsed


def child_env(cache_dir: str | None) -> dict[str, str]:
    env = dict(START_ENV)
    if cache_dir is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache_dir
    return env


def measure(cases: list[Command], env: dict[str, str], cwd: str, repeats: int, warmup: int
            ) -> dict[str, list[float]]:
    """Run the cases round-robin; return each case's times over the timed rounds."""
    times: dict[str, list[float]] = {c.label: [] for c in cases}
    for r in range(warmup + repeats):
        timed = r >= warmup
        harness.log(f"round {r + 1 - warmup}/{repeats}" if timed else "warm-up round")
        for case in cases:
            t = run_once(case, env, cwd)
            if timed:
                times[case.label].append(t)
    return times


def table(cases: list[Command], times: dict[str, list[float]]) -> str:
    rows = []
    for case in cases:
        t = times[case.label]
        median = statistics.median(t)
        target = "" if case.target is None else f"<= {fmt_s(case.target)}"
        rows.append((case.label, fmt_s(median), fmt_s(min(t)), target,
                     "" if case.target is None else verdict(median <= case.target)))
    return md_table(("command (whole process)", "median", "min", "target", "verdict"), rows,
                    "lrrrl")


def version(name: str) -> str:
    try:
        return f"{name} {metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return f"{name} not installed"


def main(argv: list[str] | None = None) -> int:
    parser = harness.arg_parser(__doc__ or "", "smoke run: 1 round, no warm-up")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="run with the environment as it is (PYTHONDONTWRITEBYTECODE "
                             "and all), not with a fresh bytecode cache")
    args = harness.parse_args(parser, argv)
    repeats, warmup = harness.repeats_and_warmup(args)
    with tempfile.TemporaryDirectory(prefix="graphc-startup-") as tmp:
        cache = None if args.no_bytecode_cache else str(Path(tmp) / "pycache")
        cases = commands(tmp)
        times = measure(cases, child_env(cache), tmp, repeats, warmup)
    print(heading("Start-up", args.quick, level=3))
    print()
    print(table(cases, times))
    print()
    bytecode = ("as the environment has it" if args.no_bytecode_cache else
                "a fresh PYTHONPYCACHEPREFIX, written in the warm-up round")
    print(f"- CPU: {harness.cpu_name()}, os.cpu_count() = {os.cpu_count()}, "
          f"{platform.system()} {platform.release()}")
    print(f"- interpreter: {sys.executable} (python {platform.python_version()}); bytecode "
          f"cache: {bytecode}; {plural(repeats, 'round')}, median and min")
    print(f"- versions: {', '.join(version(n) for n in VERSIONS)}")
    pythonpath = START_ENV.get("PYTHONPATH")
    if pythonpath:
        print(f"- PYTHONPATH={pythonpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

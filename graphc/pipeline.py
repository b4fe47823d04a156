"""The pass manager: look passes up by name, run them on copies, verify, report, wrap errors.

Passes live in ``graphc.passes`` and are looked up only when a pipeline runs, so the core never
imports a pass at import time. A pass's CLI name is its function name in kebab-case
(``fold_batchnorm`` -> ``fold-batchnorm``).

>>> from graphc.models import load
>>> g, reports = run_pipeline(load("cnn").build(), resolve(pipeline="inference"))
>>> [(r.name, r.rewrites) for r in reports][:2]
[('remove-dropout', 1), ('fold-batchnorm', 3)]
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

from graphc.errors import GraphcError, UsageError, unknown
from graphc.ir import Graph
from graphc.rewrite import PassReport

PassFn = Callable[..., Graph]


class PassError(GraphcError):
    """A pass that failed, with the passes that ran before it."""


def cli_name(fn: PassFn) -> str:
    return fn.__name__.replace("_", "-")


def registry() -> dict[str, PassFn]:
    """Return the passes by CLI name, in the registry's order."""
    from graphc.passes import PASSES

    return {cli_name(fn): fn for fn in PASSES}


def pipelines() -> dict[str, list[str]]:
    """Return the named pipelines (lists of pass names)."""
    from graphc.passes import PIPELINES

    return dict(PIPELINES)


def doc_line(fn: PassFn) -> str:
    """Return the first line of a pass's module docstring (its one-line summary)."""
    module = inspect.getmodule(fn)
    text = (module.__doc__ if module else None) or fn.__doc__ or ""
    return text.strip().splitlines()[0] if text.strip() else ""


def resolve(passes: str | Sequence[str] | None = None, pipeline: str | None = None
            ) -> list[str]:
    """Return the pass names of ``--passes a,b`` and/or ``--pipeline NAME``, checked."""
    names: list[str] = []
    if pipeline:
        known = pipelines()
        if pipeline not in known:
            raise unknown("pipeline", pipeline, known, cls=UsageError)
        names += known[pipeline]
    if passes:
        items = passes.split(",") if isinstance(passes, str) else list(passes)
        names += [p.strip() for p in items if p.strip()]
    known_passes = registry()
    for name in names:
        if name not in known_passes:
            raise unknown("pass", name, known_passes, cls=UsageError)
    return names


def run_pipeline(g: Graph, names: Sequence[str], options: dict[str, dict[str, Any]] | None = None
                 ) -> tuple[Graph, list[PassReport]]:
    """Run the passes ``names`` in order; return the new graph and one report per pass.

    The input graph is never changed. Each pass's output is verified; a failure is raised as a
    ``PassError`` that names the pass and the ones before it.
    """
    known = registry()
    options = options or {}
    reports: list[PassReport] = []
    for k, name in enumerate(names):
        fn = known[name]
        report = PassReport(name, nodes_before=len(g.op_nodes()), params_before=g.num_params())
        start = time.perf_counter()
        try:
            new = fn(g, report=report, **options.get(name, {}))
            new.verify()
            if new.output_names() != g.output_names() or new.inputs != g.inputs:
                raise GraphcError("the pass changed the graph's interface",
                                  expected=f"inputs {g.inputs}, outputs {g.output_names()}",
                                  got=f"inputs {new.inputs}, outputs {new.output_names()}")
        except Exception as err:  # noqa: BLE001 - any failure is reported with the pass history
            history = ", ".join(names[:k]) or "none"
            detail = str(err) if isinstance(err, GraphcError) else f"{type(err).__name__}: {err}"
            detail = detail.rstrip(".")  # the message below ends the sentence
            raise PassError(f"pass {name!r} ({k + 1} of {len(names)}; before it: {history}) "
                            f"failed: {detail}") from err
        report.seconds = time.perf_counter() - start
        report.nodes_after = len(new.op_nodes())
        report.params_after = new.num_params()
        reports.append(report)
        g = new
    return g, reports


def format_reports(reports: Sequence[PassReport], verbose: bool = False,
                   explain: bool = False) -> str:
    """Return the per-pass report as text (refusals with ``verbose``, rewrites with ``explain``)."""
    lines = []
    for r in reports:
        lines.append(f"    {r.name:<20} nodes {r.nodes_before} -> {r.nodes_after}, parameters "
                     f"{r.params_before:,} -> {r.params_after:,}, {r.rewrites} rewrites, "
                     f"{r.seconds * 1000:.1f} ms")
        lines += [f"      {note}" for note in r.notes]
        if verbose:
            for where, reason in r.refusals:
                node = where.split("(")[0].strip()
                lines.append(f"      refused {node}: {reason}")
        if explain:
            for e in r.explanations:
                lines.append(f"    {e.rule}:")
                lines += [f"      before  {t}" for t in e.before]
                lines += [f"      after   {t}" for t in e.after]
                if e.formula:
                    lines += [f"      formula {t}" for t in e.formula.splitlines()]
    return "\n".join(lines)
